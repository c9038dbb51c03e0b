//! `spool.v1.Admin`: tokens and the audit trail over gRPC, for cluster
//! admins. Token changes rewrite the server's token file
//! ([`Access::create_token`]) and take effect for the next call; each is
//! recorded in the audit trail.

use std::sync::Arc;

use spool_auth::{Action, TokenEntry};
use spool_proto::v1::{self, admin_server::Admin};
use tonic::{Request, Response, Status};

use crate::access::{Access, TokenChangeError, caller};
use crate::audit::{Audit, AuditFilter, now_ms};
use crate::status::join_error;

#[derive(Debug, Clone)]
pub struct AdminService {
    access: Arc<Access>,
    audit: Audit,
}

impl AdminService {
    pub fn new(access: Arc<Access>, audit: Audit) -> Self {
        AdminService { access, audit }
    }
}

fn info(entry: &TokenEntry) -> v1::TokenInfo {
    v1::TokenInfo {
        id: entry.id.clone(),
        principal: entry.principal.clone(),
        created_time_ms: entry.created_time_ms,
        grants: entry.grants.iter().map(ToString::to_string).collect(),
    }
}

fn change_status(error: TokenChangeError) -> Status {
    match error {
        TokenChangeError::NoTokenFile => Status::failed_precondition(error.to_string()),
        TokenChangeError::Invalid(_) => Status::invalid_argument(error.to_string()),
        TokenChangeError::UnknownId { .. } => Status::not_found(error.to_string()),
        TokenChangeError::File(_) => Status::internal(error.to_string()),
    }
}

#[tonic::async_trait]
impl Admin for AdminService {
    async fn create_token(
        &self,
        request: Request<v1::CreateTokenRequest>,
    ) -> Result<Response<v1::CreateTokenResponse>, Status> {
        let caller = caller(&request).cloned();
        self.access.check(caller.as_ref(), Action::CLUSTER_ADMIN, "")?;
        let request = request.into_inner();
        let access = Arc::clone(&self.access);
        let (token, entry) = tokio::task::spawn_blocking(move || {
            access.create_token(&request.principal, &request.grants, now_ms())
        })
        .await
        .map_err(join_error)?
        .map_err(change_status)?;
        let info = info(&entry);
        let target = serde_json::json!({ "id": info.id, "principal": info.principal, "grants": info.grants });
        self.audit
            .record_call(caller.as_ref(), "create_token", target, 1)
            .await?;
        Ok(Response::new(v1::CreateTokenResponse {
            token,
            info: Some(info),
        }))
    }

    async fn list_tokens(
        &self,
        request: Request<v1::ListTokensRequest>,
    ) -> Result<Response<v1::ListTokensResponse>, Status> {
        self.access.check(caller(&request), Action::CLUSTER_ADMIN, "")?;
        Ok(Response::new(v1::ListTokensResponse {
            tokens: self.access.token_entries().iter().map(info).collect(),
        }))
    }

    async fn revoke_token(
        &self,
        request: Request<v1::RevokeTokenRequest>,
    ) -> Result<Response<v1::RevokeTokenResponse>, Status> {
        let caller = caller(&request).cloned();
        self.access.check(caller.as_ref(), Action::CLUSTER_ADMIN, "")?;
        let id = request.into_inner().id;
        let access = Arc::clone(&self.access);
        let entry = tokio::task::spawn_blocking(move || access.revoke_token(&id))
            .await
            .map_err(join_error)?
            .map_err(change_status)?;
        let target = serde_json::json!({ "id": entry.id, "principal": entry.principal });
        self.audit
            .record_call(caller.as_ref(), "revoke_token", target, 1)
            .await?;
        Ok(Response::new(v1::RevokeTokenResponse {}))
    }

    async fn read_audit(
        &self,
        request: Request<v1::ReadAuditRequest>,
    ) -> Result<Response<v1::ReadAuditResponse>, Status> {
        self.access.check(caller(&request), Action::CLUSTER_ADMIN, "")?;
        let request = request.into_inner();
        let filter = AuditFilter {
            principal: request.principal,
            action: request.action,
            since_time_ms: request.since_time_ms,
            until_time_ms: request.until_time_ms,
            limit: match request.limit {
                0 => 100,
                n => n as usize,
            },
        };
        let audit = self.audit.clone();
        let records = tokio::task::spawn_blocking(move || audit.read(&filter))
            .await
            .map_err(join_error)?
            .map_err(crate::status::status)?;
        let text = |record: &serde_json::Value, key: &str| {
            record
                .get(key)
                .and_then(serde_json::Value::as_str)
                .unwrap_or_default()
                .to_owned()
        };
        let records = records
            .iter()
            .map(|record| v1::AuditRecord {
                offset: record
                    .get("offset")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
                time_ms: record
                    .get("time_ms")
                    .and_then(serde_json::Value::as_i64)
                    .unwrap_or(0),
                action: text(record, "action"),
                principal: text(record, "principal"),
                address: text(record, "address"),
                // Records written before `via` existed came from the dashboard.
                via: match text(record, "via") {
                    via if via.is_empty() => "http".to_owned(),
                    via => via,
                },
                target_json: record.get("target").map(ToString::to_string).unwrap_or_default(),
                count: record
                    .get("count")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(0),
            })
            .collect();
        Ok(Response::new(v1::ReadAuditResponse { records }))
    }
}
