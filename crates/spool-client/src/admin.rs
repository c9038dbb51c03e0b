//! The `spool.v1.Admin` calls: bearer tokens kept by the server and the
//! audit trail. Every call needs a token with `cluster=admin`.

use tonic::Request;

use crate::client::Client;
use crate::error::{Error, Result};
use crate::proto;

/// A token the server keeps, without its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenInfo {
    /// 8 hex digits.
    pub id: String,
    pub principal: String,
    pub created_time_ms: i64,
    /// Grants as written, such as `topic:orders-*=consume`.
    pub grants: Vec<String>,
}

impl TokenInfo {
    fn from_proto(info: proto::TokenInfo) -> Self {
        TokenInfo {
            id: info.id,
            principal: info.principal,
            created_time_ms: info.created_time_ms,
            grants: info.grants,
        }
    }
}

/// Which audit records to read; empty fields match every record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AuditQuery {
    pub principal: String,
    pub action: String,
    /// Records at or after, Unix epoch milliseconds (0: any).
    pub since_time_ms: i64,
    /// Records before (0: any).
    pub until_time_ms: i64,
    /// 0 means 100; at most 1,000.
    pub limit: u32,
}

/// One administrative action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    pub offset: u64,
    pub time_ms: i64,
    pub action: String,
    /// Empty when the server ran without authentication.
    pub principal: String,
    pub address: String,
    /// `grpc` or `http`.
    pub via: String,
    /// What the action was done to, as JSON.
    pub target_json: String,
    pub count: u64,
}

impl Client {
    /// Creates a token on the server; returns its text (shown only now)
    /// and what the server keeps of it.
    pub async fn create_token(&self, principal: &str, grants: &[String]) -> Result<(String, TokenInfo)> {
        let request = proto::CreateTokenRequest {
            principal: principal.to_owned(),
            grants: grants.to_vec(),
        };
        let response = self.admin_client().create_token(Request::new(request)).await?;
        let response = response.into_inner();
        let info = response
            .info
            .ok_or_else(|| Error::protocol("CreateToken answered without the token's info"))?;
        Ok((response.token, TokenInfo::from_proto(info)))
    }

    /// The tokens the server keeps.
    pub async fn list_tokens(&self) -> Result<Vec<TokenInfo>> {
        let response = self
            .admin_client()
            .list_tokens(Request::new(proto::ListTokensRequest {}))
            .await?;
        Ok(response
            .into_inner()
            .tokens
            .into_iter()
            .map(TokenInfo::from_proto)
            .collect())
    }

    /// Revokes the token `id` on the server.
    pub async fn revoke_token(&self, id: &str) -> Result<()> {
        let request = proto::RevokeTokenRequest { id: id.to_owned() };
        self.admin_client().revoke_token(Request::new(request)).await?;
        Ok(())
    }

    /// Records of the audit trail, newest first.
    pub async fn read_audit(&self, query: AuditQuery) -> Result<Vec<AuditRecord>> {
        let request = proto::ReadAuditRequest {
            principal: query.principal,
            action: query.action,
            since_time_ms: query.since_time_ms,
            until_time_ms: query.until_time_ms,
            limit: query.limit,
        };
        let response = self.admin_client().read_audit(Request::new(request)).await?;
        Ok(response
            .into_inner()
            .records
            .into_iter()
            .map(|r| AuditRecord {
                offset: r.offset,
                time_ms: r.time_ms,
                action: r.action,
                principal: r.principal,
                address: r.address,
                via: r.via,
                target_json: r.target_json,
                count: r.count,
            })
            .collect())
    }
}
