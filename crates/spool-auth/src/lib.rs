//! `spool-auth`: who may do what on a Spool server.
//!
//! Layout: [`permission`] (principals, grants of permissions on topic and
//! queue name patterns or on the cluster, and the check
//! [`Principal::authorize`], a pure function of principal, action and name)
//! and [`tokens`] (bearer tokens naming a principal and its grants, stored
//! as SHA-256 digests, compared in constant time).
//!
//! What it is not: it reads no request and no credential. The server
//! resolves a call's principal at its edge and hands it to the handlers,
//! which ask [`Principal::authorize`] before they act.

#![deny(unsafe_code)]

pub mod permission;
pub mod sessions;
pub mod tokens;

pub use permission::{Action, Denied, Grant, GrantError, Pattern, Permission, Principal, Resource};
pub use sessions::{NoRandomness, Session, Sessions};
pub use tokens::{TokenEntry, TokenFileError, Tokens, Unauthenticated};
