//! Who is calling and whether they may: the server's side of `spool-auth`.
//!
//! [`Access`] holds the tokens the server accepts, read from `tokens_file`
//! and swapped whole on reload (SIGHUP, a change of the file, or a token
//! created or revoked through `spool.v1.Admin`); a file that does not parse
//! leaves the previous set in force. Each token's principal is built once
//! per load, so resolving a call costs a SHA-256 of the token, a lookup and
//! an `Arc` clone, and no allocation.
//!
//! The edge (`auth_layer`) resolves a [`Caller`] for every call and puts it
//! in the request's extensions; each handler then asks [`Access::check`]
//! for the permission its call needs on the name it touches. Without a
//! token file authentication is off: every call is let through, as on a
//! loopback development server, and the caller's address is still known to
//! the audit trail.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use spool_auth::{Action, Grant, Principal, TokenFileError, Tokens, Unauthenticated};
use tonic::Status;

use crate::status::{denied, unauthenticated};

/// How a call reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    Grpc,
    /// The admin listener's HTTP API (the dashboard).
    Http,
}

impl Via {
    pub fn as_str(self) -> &'static str {
        match self {
            Via::Grpc => "grpc",
            Via::Http => "http",
        }
    }
}

/// The caller of one request, in its extensions.
#[derive(Debug, Clone)]
pub struct Caller {
    /// `None` when authentication is off.
    pub principal: Option<Arc<Principal>>,
    pub address: Option<SocketAddr>,
    pub via: Via,
}

impl Caller {
    /// The principal's name, or empty without authentication.
    pub fn name(&self) -> &str {
        self.principal.as_ref().map_or("", |p| p.name.as_str())
    }
}

/// The tokens of one load, with each principal built once.
#[derive(Debug, Default)]
struct TokenSet {
    tokens: Tokens,
    /// Parallel to `tokens.entries()`.
    principals: Vec<Arc<Principal>>,
    /// Every principal by name, with the grants of all its tokens: what a
    /// client certificate's subject resolves to.
    by_name: HashMap<String, Arc<Principal>>,
}

impl TokenSet {
    fn new(tokens: Tokens) -> TokenSet {
        let principals = tokens
            .entries()
            .iter()
            .map(|entry| Arc::new(Principal::new(entry.principal.clone(), entry.grants.clone())))
            .collect();
        let mut grants: HashMap<String, Vec<Grant>> = HashMap::new();
        for entry in tokens.entries() {
            grants
                .entry(entry.principal.clone())
                .or_default()
                .extend(entry.grants.iter().cloned());
        }
        let by_name = grants
            .into_iter()
            .map(|(name, grants)| (name.clone(), Arc::new(Principal::new(name, grants))))
            .collect();
        TokenSet {
            tokens,
            principals,
            by_name,
        }
    }
}

/// A token change through the server that could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TokenChangeError {
    #[error("this server has no token file (tokens_file), so it keeps no tokens to change")]
    NoTokenFile,
    #[error("{0}")]
    Invalid(String),
    #[error("no token has the id {id:?}")]
    UnknownId { id: String },
    #[error(transparent)]
    File(#[from] TokenFileError),
}

/// The server's tokens and whether it asks for them.
#[derive(Debug)]
pub struct Access {
    tokens_file: Option<PathBuf>,
    current: RwLock<Arc<TokenSet>>,
    /// Held across a read-modify-write of the file by the Admin service.
    editing: Mutex<()>,
}

impl Access {
    /// No authentication: every call is let through.
    pub fn open() -> Access {
        Access {
            tokens_file: None,
            current: RwLock::new(Arc::default()),
            editing: Mutex::new(()),
        }
    }

    /// Authentication with the tokens of `path`. A missing file is an
    /// empty set (nothing is let in until a token is created); a file that
    /// does not parse is an error.
    pub fn with_tokens_file(path: &Path) -> Result<Access, TokenFileError> {
        let tokens = Tokens::load(path)?;
        Ok(Access {
            tokens_file: Some(path.to_owned()),
            current: RwLock::new(Arc::new(TokenSet::new(tokens))),
            editing: Mutex::new(()),
        })
    }

    /// Whether calls must authenticate.
    pub fn enabled(&self) -> bool {
        self.tokens_file.is_some()
    }

    pub fn tokens_file(&self) -> Option<&Path> {
        self.tokens_file.as_deref()
    }

    fn set(&self) -> Arc<TokenSet> {
        Arc::clone(
            &self
                .current
                .read()
                .expect("never poisoned: no panics under the lock"),
        )
    }

    /// Reads the token file again; on error the tokens in force stay.
    /// Returns how many tokens are now accepted.
    pub fn reload(&self) -> Result<usize, TokenFileError> {
        let Some(path) = &self.tokens_file else {
            return Ok(0);
        };
        let tokens = Tokens::load(path)?;
        let count = tokens.entries().len();
        *self.current.write().expect("never poisoned") = Arc::new(TokenSet::new(tokens));
        Ok(count)
    }

    /// The principal of an `authorization` header's value
    /// (`Bearer <token>`, the scheme in any case).
    pub fn authenticate_header(&self, value: &[u8]) -> Result<Arc<Principal>, Unauthenticated> {
        let text = std::str::from_utf8(value).map_err(|_| Unauthenticated::Malformed)?;
        let (scheme, token) = text.trim().split_once(' ').ok_or(Unauthenticated::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(Unauthenticated::Malformed);
        }
        self.authenticate_token(token.trim())
    }

    /// The principal of a bearer token.
    pub fn authenticate_token(&self, token: &str) -> Result<Arc<Principal>, Unauthenticated> {
        let set = self.set();
        let index = set.tokens.verify(token)?;
        Ok(Arc::clone(&set.principals[index]))
    }

    /// The principal a verified client certificate's subject common name
    /// names: the token file's principal of that name, with the grants of
    /// all its tokens.
    pub fn authenticate_certificate(&self, common_name: &str) -> Option<Arc<Principal>> {
        self.set().by_name.get(common_name).cloned()
    }

    /// Whether `caller` may do `action` on `name` (a topic or queue; ignored
    /// for the cluster). Without authentication every call may.
    pub fn check(&self, caller: Option<&Caller>, action: Action, name: &str) -> Result<(), Status> {
        let Some(principal) = self.principal(caller)? else {
            return Ok(());
        };
        principal.authorize(action, name).map_err(denied)
    }

    /// Like [`check`](Self::check), for calls any of several permissions
    /// allow (reads of a topic or queue); a refusal names the first.
    pub fn check_any(&self, caller: Option<&Caller>, actions: &[Action], name: &str) -> Result<(), Status> {
        let Some(principal) = self.principal(caller)? else {
            return Ok(());
        };
        let mut first = None;
        for &action in actions {
            match principal.authorize(action, name) {
                Ok(()) => return Ok(()),
                Err(refusal) => {
                    first.get_or_insert(refusal);
                }
            }
        }
        Err(denied(first.expect("at least one action")))
    }

    /// Whether `caller` may see `name` in a listing: any of `actions`.
    pub fn sees(&self, caller: Option<&Caller>, actions: &[Action], name: &str) -> bool {
        self.check_any(caller, actions, name).is_ok()
    }

    /// The principal whose permissions decide a call: `None` lets the call
    /// through. That is every call without authentication, and a call made
    /// inside the process (the admin listener calling a service's method
    /// after its own check), which carries no [`Caller`]: the gRPC edge
    /// gives every call from the network one. A caller without a principal
    /// while authentication is on did not authenticate: UNAUTHENTICATED.
    fn principal<'a>(&self, caller: Option<&'a Caller>) -> Result<Option<&'a Arc<Principal>>, Status> {
        match caller {
            _ if !self.enabled() => Ok(None),
            None => Ok(None),
            Some(caller) => caller
                .principal
                .as_ref()
                .map(Some)
                .ok_or_else(|| unauthenticated(Unauthenticated::Missing)),
        }
    }

    /// The stored tokens, for listing.
    pub fn token_entries(&self) -> Vec<spool_auth::TokenEntry> {
        self.set().tokens.entries().to_vec()
    }

    /// Creates a token in the token file and puts it in force; returns its
    /// text and entry.
    pub fn create_token(
        &self,
        principal: &str,
        grants: &[String],
        now_ms: i64,
    ) -> Result<(String, spool_auth::TokenEntry), TokenChangeError> {
        let path = self.tokens_file.as_ref().ok_or(TokenChangeError::NoTokenFile)?;
        let grants = grants
            .iter()
            .map(|g| Grant::parse(g))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| TokenChangeError::Invalid(e.to_string()))?;
        let _editing = self.editing.lock().expect("never poisoned");
        let mut tokens = Tokens::load(path)?;
        let token = tokens
            .create(principal, grants, now_ms)
            .map_err(TokenChangeError::Invalid)?;
        tokens.save(path)?;
        let entry = tokens.entries().last().expect("just created").clone();
        *self.current.write().expect("never poisoned") = Arc::new(TokenSet::new(tokens));
        Ok((token, entry))
    }

    /// Revokes a token in the token file and takes it out of force.
    pub fn revoke_token(&self, id: &str) -> Result<spool_auth::TokenEntry, TokenChangeError> {
        let path = self.tokens_file.as_ref().ok_or(TokenChangeError::NoTokenFile)?;
        let _editing = self.editing.lock().expect("never poisoned");
        let mut tokens = Tokens::load(path)?;
        let entry = tokens
            .entries()
            .iter()
            .find(|e| e.id == id)
            .cloned()
            .ok_or_else(|| TokenChangeError::UnknownId { id: id.to_owned() })?;
        tokens.revoke(id);
        tokens.save(path)?;
        *self.current.write().expect("never poisoned") = Arc::new(TokenSet::new(tokens));
        Ok(entry)
    }
}

/// The caller of a tonic request, if the edge resolved one.
pub fn caller<T>(request: &tonic::Request<T>) -> Option<&Caller> {
    request.extensions().get::<Caller>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn access_with(grants: &[&str]) -> (Access, String, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let access = Access::with_tokens_file(&path).unwrap();
        let grants: Vec<String> = grants.iter().map(|g| g.to_string()).collect();
        let (token, _) = access.create_token("alice", &grants, 1).unwrap();
        (access, token, dir)
    }

    fn caller_of(principal: Arc<Principal>) -> Caller {
        Caller {
            principal: Some(principal),
            address: None,
            via: Via::Grpc,
        }
    }

    #[test]
    fn bearer_headers_resolve_or_are_refused() {
        let (access, token, _dir) = access_with(&["topic:orders=produce"]);
        let alice = access
            .authenticate_header(format!("Bearer {token}").as_bytes())
            .unwrap();
        assert_eq!(alice.name, "alice");
        assert!(
            access
                .authenticate_header(format!("bearer  {token} ").as_bytes())
                .is_ok()
        );
        for bad in [
            &b"Basic abc"[..],
            b"Bearer",
            b"",
            b"\xff\xfe",
            b"Bearer spool_x_y",
        ] {
            assert!(access.authenticate_header(bad).is_err(), "{bad:?}");
        }
        let caller = caller_of(alice);
        assert!(access.check(Some(&caller), Action::PRODUCE, "orders").is_ok());
        let refusal = access
            .check(Some(&caller), Action::CONSUME, "orders")
            .unwrap_err();
        assert_eq!(refusal.code(), tonic::Code::PermissionDenied);
        assert!(
            refusal.message().contains("lacks consume on topic \"orders\""),
            "{refusal:?}"
        );
        let anonymous = Caller {
            principal: None,
            address: None,
            via: Via::Grpc,
        };
        let refusal = access
            .check(Some(&anonymous), Action::PRODUCE, "orders")
            .unwrap_err();
        assert_eq!(refusal.code(), tonic::Code::Unauthenticated);
        assert!(
            access.check(None, Action::CLUSTER_ADMIN, "").is_ok(),
            "calls inside the process carry no caller"
        );
    }

    #[test]
    fn revoking_takes_a_token_out_of_force_and_a_bad_file_keeps_the_old_set() {
        let (access, token, dir) = access_with(&["cluster=admin"]);
        let path = dir.path().join("tokens.toml");
        std::fs::write(&path, "garbage = [").unwrap();
        assert!(access.reload().is_err());
        assert!(
            access.authenticate_token(&token).is_ok(),
            "the old set stays in force"
        );
        let id = token[6..14].to_owned();
        // The file is rewritten from what is on disk: repair it first.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            access.revoke_token(&id),
            Err(TokenChangeError::UnknownId { .. })
        ));
        let (second, entry) = access.create_token("bob", &["cluster=admin".into()], 2).unwrap();
        assert!(
            access.authenticate_token(&token).is_err(),
            "the file no longer holds it"
        );
        access.revoke_token(&entry.id).unwrap();
        assert!(access.authenticate_token(&second).is_err());
    }

    #[test]
    fn without_a_token_file_everything_is_let_through() {
        let access = Access::open();
        assert!(!access.enabled());
        assert!(access.check(None, Action::CLUSTER_ADMIN, "").is_ok());
        assert!(matches!(
            access.create_token("a", &[], 0),
            Err(TokenChangeError::NoTokenFile)
        ));
    }

    #[test]
    fn a_certificate_subject_gets_the_grants_of_all_tokens_of_its_principal() {
        let (access, _token, _dir) = access_with(&["topic:orders=produce"]);
        access
            .create_token("alice", &["queue:emails=work".into()], 2)
            .unwrap();
        let alice = access.authenticate_certificate("alice").unwrap();
        assert!(alice.authorize(Action::PRODUCE, "orders").is_ok());
        assert!(alice.authorize(Action::WORK, "emails").is_ok());
        assert!(access.authenticate_certificate("mallory").is_none());
    }
}
