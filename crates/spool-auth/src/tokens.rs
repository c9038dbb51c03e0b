//! Bearer tokens: each names a principal and its grants, and only the
//! SHA-256 of its secret is stored. A token reads
//! `spool_<id>_<secret>`: the id (8 hex digits) finds the entry without
//! looking at the secret, the secret (64 hex digits, 256 random bits) is
//! hashed and compared in constant time. A secret of 256 random bits needs
//! no slow hash: nothing can be guessed from its digest.
//!
//! The file (TOML, written with mode 0600 by a temporary file, fsync and
//! rename, so a reader sees the old or the new list):
//!
//! ```toml
//! [[token]]
//! id = "3f9a0c12"
//! principal = "billing"
//! sha256 = "<64 hex digits>"
//! created_time_ms = 1796270000000
//! grants = ["topic:orders-*=consume", "queue:emails=enqueue"]
//! ```

use std::fmt::Write as _;
use std::io::Write as _;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::permission::{Grant, Principal};

const PREFIX: &str = "spool_";
const ID_BYTES: usize = 4;
const SECRET_BYTES: usize = 32;

/// One stored token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenEntry {
    pub id: String,
    pub principal: String,
    /// SHA-256 of the whole token text.
    pub sha256: [u8; 32],
    pub created_time_ms: i64,
    pub grants: Vec<Grant>,
}

/// Every token the server accepts.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tokens {
    entries: Vec<TokenEntry>,
}

/// A request without a usable credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unauthenticated {
    #[error("no credentials: send `authorization: Bearer <token>`")]
    Missing,
    #[error("the credentials are not a Spool token (spool_<id>_<secret>)")]
    Malformed,
    /// Unknown id, revoked token or wrong secret: the caller learns no more.
    #[error("the token is not valid (unknown, revoked, or a wrong secret)")]
    Invalid,
}

/// A token file that cannot be read or written.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    #[error("token file {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("token file {path}: {reason}")]
    Invalid { path: String, reason: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FileForm {
    #[serde(default)]
    token: Vec<EntryForm>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryForm {
    id: String,
    principal: String,
    sha256: String,
    created_time_ms: i64,
    #[serde(default)]
    grants: Vec<String>,
}

/// A principal's name: what audit lines and refusals show.
pub fn validate_principal_name(name: &str) -> Result<(), String> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'));
    if valid {
        Ok(())
    } else {
        Err(format!(
            "principal {name:?}: 1 to 128 characters of A-Z a-z 0-9 . _ - @"
        ))
    }
}

impl Tokens {
    /// Parses a token file's text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Tokens, TokenFileError> {
        let invalid = |reason: String| TokenFileError::Invalid {
            path: origin.to_owned(),
            reason,
        };
        let form: FileForm = toml::from_str(text).map_err(|e| invalid(e.to_string()))?;
        let mut entries = Vec::with_capacity(form.token.len());
        for entry in form.token {
            let context = |reason: String| invalid(format!("token {:?}: {reason}", entry.id));
            if entry.id.len() != ID_BYTES * 2 || !entry.id.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Err(context("the id is not 8 hex digits".into()));
            }
            if entries.iter().any(|e: &TokenEntry| e.id == entry.id) {
                return Err(context("the id appears twice".into()));
            }
            validate_principal_name(&entry.principal).map_err(context)?;
            let sha256 = decode_hex::<32>(&entry.sha256)
                .ok_or_else(|| context("sha256 is not 64 hex digits".into()))?;
            let grants = entry
                .grants
                .iter()
                .map(|g| Grant::parse(g))
                .collect::<Result<_, _>>()
                .map_err(|e| context(e.to_string()))?;
            entries.push(TokenEntry {
                id: entry.id,
                principal: entry.principal,
                sha256,
                created_time_ms: entry.created_time_ms,
                grants,
            });
        }
        Ok(Tokens { entries })
    }

    /// Reads a token file; a missing file is an empty list.
    pub fn load(path: &Path) -> Result<Tokens, TokenFileError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Tokens::parse(&text, &path.display().to_string()),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => Ok(Tokens::default()),
            Err(source) => Err(TokenFileError::Io {
                path: path.display().to_string(),
                source,
            }),
        }
    }

    /// The file's text. Every value was validated (hex, principal names,
    /// grants), so none needs escaping.
    pub fn to_toml(&self) -> String {
        let mut out = String::new();
        for entry in &self.entries {
            let grants: Vec<String> = entry.grants.iter().map(|g| format!("\"{g}\"")).collect();
            let _ = write!(
                out,
                "[[token]]\nid = \"{}\"\nprincipal = \"{}\"\nsha256 = \"{}\"\ncreated_time_ms = {}\ngrants = [{}]\n\n",
                entry.id,
                entry.principal,
                hex(&entry.sha256),
                entry.created_time_ms,
                grants.join(", ")
            );
        }
        out
    }

    /// Writes the file atomically with mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), TokenFileError> {
        let io = |source| TokenFileError::Io {
            path: path.display().to_string(),
            source,
        };
        let temporary = path.with_extension("tmp");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode_0600()
            .open(&temporary)
            .map_err(io)?;
        file.write_all(self.to_toml().as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)?;
        drop(file);
        std::fs::rename(&temporary, path).map_err(io)?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::File::open(dir).and_then(|d| d.sync_all()).map_err(io)?;
        }
        Ok(())
    }

    pub fn entries(&self) -> &[TokenEntry] {
        &self.entries
    }

    /// Adds a token for `principal` with `grants` and returns its text,
    /// the only time the secret exists outside the caller's hands.
    pub fn create(&mut self, principal: &str, grants: Vec<Grant>, now_ms: i64) -> Result<String, String> {
        validate_principal_name(principal)?;
        let mut random = [0u8; ID_BYTES + SECRET_BYTES];
        getrandom::fill(&mut random).map_err(|e| format!("no randomness from the system: {e}"))?;
        let mut id = hex(&random[..ID_BYTES]);
        // Four random bytes collide once in tens of thousands of tokens.
        while self.entries.iter().any(|e| e.id == id) {
            let mut more = [0u8; ID_BYTES];
            getrandom::fill(&mut more).map_err(|e| format!("no randomness from the system: {e}"))?;
            id = hex(&more);
        }
        let token = format!("{PREFIX}{id}_{}", hex(&random[ID_BYTES..]));
        self.entries.push(TokenEntry {
            id,
            principal: principal.to_owned(),
            sha256: Sha256::digest(token.as_bytes()).into(),
            created_time_ms: now_ms,
            grants,
        });
        Ok(token)
    }

    /// Removes the token with this id; false if there is none.
    pub fn revoke(&mut self, id: &str) -> bool {
        let before = self.entries.len();
        self.entries.retain(|e| e.id != id);
        self.entries.len() != before
    }

    /// The principal a bearer token stands for.
    pub fn authenticate(&self, token: &str) -> Result<Principal, Unauthenticated> {
        let entry = &self.entries[self.verify(token)?];
        Ok(Principal::new(entry.principal.clone(), entry.grants.clone()))
    }

    /// The position in [`entries`](Self::entries) of the token `token`
    /// stands for: what a server that keeps each entry's principal built
    /// once uses, so a request costs no allocation.
    pub fn verify(&self, token: &str) -> Result<usize, Unauthenticated> {
        let rest = token.strip_prefix(PREFIX).ok_or(Unauthenticated::Malformed)?;
        let (id, secret) = rest.split_once('_').ok_or(Unauthenticated::Malformed)?;
        if id.len() != ID_BYTES * 2 || secret.len() != SECRET_BYTES * 2 {
            return Err(Unauthenticated::Malformed);
        }
        let index = self
            .entries
            .iter()
            .position(|e| e.id == id)
            .ok_or(Unauthenticated::Invalid)?;
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        if !constant_time_eq(&digest, &self.entries[index].sha256) {
            return Err(Unauthenticated::Invalid);
        }
        Ok(index)
    }
}

/// Equal without an early exit: the time taken says nothing of where two
/// digests differ.
fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .fold(String::with_capacity(bytes.len() * 2), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

fn decode_hex<const N: usize>(text: &str) -> Option<[u8; N]> {
    if text.len() != N * 2 {
        return None;
    }
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(i * 2..i * 2 + 2)?, 16).ok()?;
    }
    Some(out)
}

/// Owner-only permissions on Unix for the token file.
trait OwnerOnly {
    fn mode_0600(&mut self) -> &mut Self;
}

impl OwnerOnly for std::fs::OpenOptions {
    fn mode_0600(&mut self) -> &mut Self {
        use std::os::unix::fs::OpenOptionsExt;
        self.mode(0o600)
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;
    use crate::permission::Action;

    fn grants(list: &[&str]) -> Vec<Grant> {
        list.iter().map(|g| Grant::parse(g).unwrap()).collect()
    }

    #[test]
    fn a_created_token_authenticates_as_its_principal_until_revoked() {
        let mut tokens = Tokens::default();
        let token = tokens
            .create("billing", grants(&["topic:orders-*=consume"]), 1_000)
            .unwrap();
        assert!(
            token.starts_with("spool_") && token.len() == 6 + 8 + 1 + 64,
            "{token}"
        );
        let principal = tokens.authenticate(&token).unwrap();
        assert_eq!(principal.name, "billing");
        assert_eq!(principal.authorize(Action::CONSUME, "orders-eu"), Ok(()));
        let id = tokens.entries()[0].id.clone();
        assert!(tokens.revoke(&id));
        assert!(!tokens.revoke(&id));
        assert_eq!(tokens.authenticate(&token), Err(Unauthenticated::Invalid));
    }

    #[test]
    fn wrong_and_malformed_tokens_are_refused() {
        let mut tokens = Tokens::default();
        let token = tokens.create("a", vec![], 0).unwrap();
        let mut wrong = token.clone().into_bytes();
        let last = wrong.len() - 1;
        wrong[last] = if wrong[last] == b'0' { b'1' } else { b'0' };
        let wrong = String::from_utf8(wrong).unwrap();
        assert_eq!(tokens.authenticate(&wrong), Err(Unauthenticated::Invalid));
        let unknown = format!("spool_00000000_{}", &token[15..]);
        assert_eq!(tokens.authenticate(&unknown), Err(Unauthenticated::Invalid));
        for malformed in [
            "",
            "Bearer x",
            "spool_",
            "spool_abc_def",
            &token[..token.len() - 1],
            "spool_zzzzzzzz",
        ] {
            assert_eq!(
                tokens.authenticate(malformed),
                Err(Unauthenticated::Malformed),
                "{malformed:?}"
            );
        }
    }

    #[test]
    fn the_file_keeps_hashes_only_and_reads_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tokens.toml");
        let mut tokens = Tokens::load(&path).unwrap();
        let first = tokens
            .create(
                "billing",
                grants(&["topic:orders-*=consume", "queue:emails=enqueue"]),
                7,
            )
            .unwrap();
        let second = tokens
            .create("ops@example", grants(&["cluster=admin"]), 8)
            .unwrap();
        tokens.save(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains(&first[15..]) && !text.contains(&second[15..]),
            "a secret on disk:\n{text}"
        );
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let read = Tokens::load(&path).unwrap();
        assert_eq!(read, tokens);
        assert_eq!(read.authenticate(&second).unwrap().name, "ops@example");
    }

    #[test]
    fn bad_files_name_the_token_and_the_fault() {
        let entry = |id: &str, principal: &str, sha: &str, grant: &str| {
            format!(
                "[[token]]\nid = \"{id}\"\nprincipal = \"{principal}\"\nsha256 = \"{sha}\"\ncreated_time_ms = 1\ngrants = [\"{grant}\"]\n"
            )
        };
        let sha = "ab".repeat(32);
        for (text, reason) in [
            (
                entry("xyz", "a", &sha, "cluster=admin"),
                "the id is not 8 hex digits",
            ),
            (
                entry("0011aabb", "a b", &sha, "cluster=admin"),
                "principal \"a b\"",
            ),
            (
                entry("0011aabb", "a", "12", "cluster=admin"),
                "sha256 is not 64 hex digits",
            ),
            (
                entry("0011aabb", "a", &sha, "topic:x=enqueue"),
                "not a permission on a topic",
            ),
            (
                entry("0011aabb", "a", &sha, "cluster=admin").repeat(2),
                "the id appears twice",
            ),
            ("[[token]]\nid = 1\n".to_owned(), "invalid type"),
            ("secret = \"x\"\n".to_owned(), "unknown field"),
        ] {
            let error = Tokens::parse(&text, "tokens.toml").unwrap_err().to_string();
            assert!(
                error.starts_with("token file tokens.toml") && error.contains(reason),
                "{error}"
            );
        }
    }
}
