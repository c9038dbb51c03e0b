//! Browser sessions of the dashboard: a user logs in once with a bearer
//! token and gets a session cookie, so the token never sits in the page's
//! reach (the cookie is HTTP-only).
//!
//! A session holds the token it was opened with, which the server checks
//! again at every use: revoking the token, or removing it from the token
//! file, ends its sessions at once. It also holds a CSRF token that every
//! state-changing request made with the cookie must repeat in a header:
//! another site can make a browser send the cookie, but cannot read the
//! CSRF token to send with it. Sessions live in memory only (a restart
//! logs everyone out), expire after a fixed time, and are bounded in
//! number: past the bound the one closest to expiry goes first.
//!
//! Session ids and CSRF tokens are 256 random bits from the operating
//! system, written as hex. The map is keyed by the SHA-256 digest of the
//! id, so a lookup's time depends on the digest, not on how much of a
//! guessed id is right; CSRF tokens are compared in constant time.

use std::collections::HashMap;

use sha2::{Digest, Sha256};

const RANDOM_BYTES: usize = 32;

/// One logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// The bearer token the session was opened with.
    pub token: String,
    /// What state-changing requests must repeat.
    pub csrf_token: String,
    pub expires_at_ms: i64,
}

/// The open sessions; see the module documentation.
#[derive(Debug)]
pub struct Sessions {
    by_digest: HashMap<[u8; 32], Session>,
    max: usize,
    lifetime_ms: i64,
}

/// No randomness could be had from the operating system.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no randomness from the system: {0}")]
pub struct NoRandomness(String);

fn random_hex() -> Result<String, NoRandomness> {
    let mut bytes = [0u8; RANDOM_BYTES];
    getrandom::fill(&mut bytes).map_err(|e| NoRandomness(e.to_string()))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

fn digest(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    /// At most `max` sessions, each lasting `lifetime_ms`.
    pub fn new(max: usize, lifetime_ms: i64) -> Self {
        Sessions {
            by_digest: HashMap::new(),
            max: max.max(1),
            lifetime_ms,
        }
    }

    pub fn len(&self) -> usize {
        self.by_digest.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_digest.is_empty()
    }

    /// Opens a session for `token` (already authenticated by the caller) at
    /// `now_ms`; returns its id (the cookie's value) and the session.
    pub fn open(&mut self, token: &str, now_ms: i64) -> Result<(String, Session), NoRandomness> {
        self.by_digest.retain(|_, s| s.expires_at_ms > now_ms);
        while self.by_digest.len() >= self.max {
            let soonest = self
                .by_digest
                .iter()
                .min_by_key(|(_, s)| s.expires_at_ms)
                .map(|(key, _)| *key)
                .expect("not empty");
            self.by_digest.remove(&soonest);
        }
        let id = random_hex()?;
        let session = Session {
            token: token.to_owned(),
            csrf_token: random_hex()?,
            expires_at_ms: now_ms.saturating_add(self.lifetime_ms),
        };
        self.by_digest.insert(digest(&id), session.clone());
        Ok((id, session))
    }

    /// The live session with this id, if any.
    pub fn get(&self, id: &str, now_ms: i64) -> Option<&Session> {
        self.by_digest
            .get(&digest(id))
            .filter(|s| s.expires_at_ms > now_ms)
    }

    /// Ends the session with this id; false if there was none.
    pub fn close(&mut self, id: &str) -> bool {
        self.by_digest.remove(&digest(id)).is_some()
    }
}

impl Session {
    /// True when `presented` is this session's CSRF token; compared in
    /// constant time.
    pub fn csrf_matches(&self, presented: &str) -> bool {
        let (a, b) = (self.csrf_token.as_bytes(), presented.as_bytes());
        if a.len() != b.len() {
            return false;
        }
        let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
        std::hint::black_box(difference) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_by_its_id_until_it_expires_or_closes() {
        let mut sessions = Sessions::new(10, 1_000);
        let (id, session) = sessions.open("spool_tok", 0).unwrap();
        assert_eq!(id.len(), 64);
        assert_ne!(id, session.csrf_token);
        assert_eq!(sessions.get(&id, 999).unwrap().token, "spool_tok");
        assert!(sessions.get(&id, 1_000).is_none(), "expired");
        assert!(sessions.get("not-an-id", 0).is_none());
        let (other, _) = sessions.open("t", 0).unwrap();
        assert!(sessions.close(&other));
        assert!(!sessions.close(&other));
        assert!(sessions.get(&other, 1).is_none());
    }

    #[test]
    fn sessions_are_bounded_and_the_soonest_to_expire_goes_first() {
        let mut sessions = Sessions::new(2, 1_000);
        let (first, _) = sessions.open("a", 0).unwrap();
        let (second, _) = sessions.open("b", 10).unwrap();
        let (third, _) = sessions.open("c", 20).unwrap();
        assert_eq!(sessions.len(), 2);
        assert!(sessions.get(&first, 30).is_none());
        assert!(sessions.get(&second, 30).is_some() && sessions.get(&third, 30).is_some());
        // Expired sessions are swept before anyone is pushed out.
        let (_, _) = sessions.open("d", 1_015).unwrap();
        assert!(sessions.get(&third, 1_015).is_some());
        assert_eq!(sessions.len(), 2);
    }

    #[test]
    fn the_csrf_token_must_match_exactly() {
        let mut sessions = Sessions::new(1, 1_000);
        let (_, session) = sessions.open("a", 0).unwrap();
        assert!(session.csrf_matches(&session.csrf_token.clone()));
        assert!(!session.csrf_matches(""));
        assert!(!session.csrf_matches(&session.csrf_token[1..]));
        let mut wrong = session.csrf_token.clone().into_bytes();
        wrong[63] ^= 1;
        assert!(!session.csrf_matches(std::str::from_utf8(&wrong).unwrap()));
    }
}
