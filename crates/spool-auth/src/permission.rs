//! What a principal may do: grants of permissions on name patterns of
//! topics and queues, and on the cluster, and the one check every call
//! goes through, [`Principal::authorize`]. Pure: no I/O, no clock, so the
//! check is the same wherever it runs and is cheap enough for every
//! request.

use std::fmt;

/// What a grant applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resource {
    Topic,
    Queue,
    /// The server itself: creating and deleting topics, managing tokens.
    Cluster,
}

impl Resource {
    pub fn as_str(self) -> &'static str {
        match self {
            Resource::Topic => "topic",
            Resource::Queue => "queue",
            Resource::Cluster => "cluster",
        }
    }

    /// The permissions that exist on this kind of resource.
    pub fn permissions(self) -> &'static [Permission] {
        match self {
            Resource::Topic => &[Permission::Produce, Permission::Consume, Permission::Admin],
            Resource::Queue => &[Permission::Enqueue, Permission::Work, Permission::Admin],
            Resource::Cluster => &[Permission::Admin],
        }
    }
}

/// One permission. `work` covers claim, heartbeat, complete and fail;
/// a queue's `admin` covers retry, purge, cancel and pause; a topic's
/// `admin` its configuration and checkpoints of others; the cluster's
/// `admin` creating and deleting topics and managing tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    Produce,
    Consume,
    Enqueue,
    Work,
    Admin,
}

impl Permission {
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::Produce => "produce",
            Permission::Consume => "consume",
            Permission::Enqueue => "enqueue",
            Permission::Work => "work",
            Permission::Admin => "admin",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Permission::Produce => 1,
            Permission::Consume => 2,
            Permission::Enqueue => 4,
            Permission::Work => 8,
            Permission::Admin => 16,
        }
    }

    fn parse(text: &str) -> Option<Permission> {
        [
            Permission::Produce,
            Permission::Consume,
            Permission::Enqueue,
            Permission::Work,
            Permission::Admin,
        ]
        .into_iter()
        .find(|p| p.as_str() == text)
    }
}

/// A name pattern: `orders`, `orders-*`, `*-eu`, `*`. `*` stands for any
/// run of characters (names hold none of their own: topic and queue names
/// are `[A-Za-z0-9._-]`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    text: String,
    /// The literal pieces between the stars.
    parts: Vec<String>,
}

impl Pattern {
    pub fn new(text: &str) -> Result<Pattern, GrantError> {
        let valid = !text.is_empty()
            && text.len() <= 249
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '*'));
        if !valid {
            return Err(GrantError::new(
                text,
                "a name pattern is 1 to 249 characters of A-Z a-z 0-9 . _ - and * (any run of characters)",
            ));
        }
        Ok(Pattern {
            text: text.to_owned(),
            parts: text.split('*').map(str::to_owned).collect(),
        })
    }

    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `name` matches: the pieces in order, the first at the start,
    /// the last at the end.
    pub fn matches(&self, name: &str) -> bool {
        let (first, rest) = self.parts.split_first().expect("split yields a piece");
        let Some(mut remaining) = name.strip_prefix(first.as_str()) else {
            return false;
        };
        let Some((last, middle)) = rest.split_last() else {
            return remaining.is_empty();
        };
        for part in middle {
            match remaining.find(part.as_str()) {
                Some(at) => remaining = &remaining[at + part.len()..],
                None => return false,
            }
        }
        remaining.len() >= last.len() && remaining.ends_with(last.as_str())
    }
}

/// Permissions on the names a pattern matches, or on the cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    pub resource: Resource,
    /// `None` for the cluster.
    pub pattern: Option<Pattern>,
    permissions: u8,
}

/// A grant that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid grant {text:?}: {reason}")]
pub struct GrantError {
    pub text: String,
    pub reason: String,
}

impl GrantError {
    fn new(text: &str, reason: impl Into<String>) -> GrantError {
        GrantError {
            text: text.to_owned(),
            reason: reason.into(),
        }
    }
}

const GRANT_FORM: &str = "write topic:PATTERN=PERMISSIONS, queue:PATTERN=PERMISSIONS or cluster=admin, for example topic:orders-*=produce,consume";

impl Grant {
    /// Parses `topic:orders-*=produce,consume`, `queue:emails=enqueue,work`,
    /// `queue:*=*` (every permission of the kind) or `cluster=admin`.
    pub fn parse(text: &str) -> Result<Grant, GrantError> {
        let (target, permissions) = text
            .split_once('=')
            .ok_or_else(|| GrantError::new(text, GRANT_FORM))?;
        let (resource, pattern) = match target.split_once(':') {
            Some(("topic", pattern)) => (Resource::Topic, Some(Pattern::new(pattern)?)),
            Some(("queue", pattern)) => (Resource::Queue, Some(Pattern::new(pattern)?)),
            None if target == "cluster" => (Resource::Cluster, None),
            _ => return Err(GrantError::new(text, GRANT_FORM)),
        };
        let mut bits = 0;
        for word in permissions.split(',').map(str::trim) {
            if word == "*" {
                bits |= resource.permissions().iter().fold(0, |all, p| all | p.bit());
                continue;
            }
            match Permission::parse(word).filter(|p| resource.permissions().contains(p)) {
                Some(permission) => bits |= permission.bit(),
                None => {
                    let known: Vec<&str> = resource.permissions().iter().map(|p| p.as_str()).collect();
                    return Err(GrantError::new(
                        text,
                        format!(
                            "{word:?} is not a permission on a {}; it has {} (or * for all)",
                            resource.as_str(),
                            known.join(", ")
                        ),
                    ));
                }
            }
        }
        Ok(Grant {
            resource,
            pattern,
            permissions: bits,
        })
    }

    pub fn allows(&self, permission: Permission) -> bool {
        self.permissions & permission.bit() != 0
    }

    fn covers(&self, action: Action, name: &str) -> bool {
        self.resource == action.resource
            && self.allows(action.permission)
            && self.pattern.as_ref().is_none_or(|pattern| pattern.matches(name))
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.resource.as_str())?;
        if let Some(pattern) = &self.pattern {
            write!(f, ":{}", pattern.as_str())?;
        }
        let permissions: Vec<&str> = self
            .resource
            .permissions()
            .iter()
            .filter(|p| self.allows(**p))
            .map(|p| p.as_str())
            .collect();
        write!(f, "={}", permissions.join(","))
    }
}

/// A permission on a kind of resource: what one call needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    pub resource: Resource,
    pub permission: Permission,
}

impl Action {
    pub const PRODUCE: Action = Action::new(Resource::Topic, Permission::Produce);
    pub const CONSUME: Action = Action::new(Resource::Topic, Permission::Consume);
    pub const TOPIC_ADMIN: Action = Action::new(Resource::Topic, Permission::Admin);
    pub const ENQUEUE: Action = Action::new(Resource::Queue, Permission::Enqueue);
    pub const WORK: Action = Action::new(Resource::Queue, Permission::Work);
    pub const QUEUE_ADMIN: Action = Action::new(Resource::Queue, Permission::Admin);
    pub const CLUSTER_ADMIN: Action = Action::new(Resource::Cluster, Permission::Admin);

    pub const fn new(resource: Resource, permission: Permission) -> Action {
        Action { resource, permission }
    }
}

/// Why a call was refused: the permission it lacks, or an internal name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Denied {
    #[error(
        "principal {principal:?} lacks {permission} on {resource} {name:?} (a grant such as {resource}:{name}={permission} allows it)",
        permission = .action.permission.as_str(),
        resource = .action.resource.as_str()
    )]
    Missing {
        principal: String,
        action: Action,
        name: String,
    },
    #[error("principal {principal:?} lacks admin on the cluster (a grant cluster=admin allows it)")]
    MissingClusterAdmin { principal: String },
    #[error(
        "{name:?} is internal: names starting with \"__\" belong to the server and no grant reaches them"
    )]
    Internal { name: String },
}

/// Who is calling, and what they were granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub name: String,
    pub grants: Vec<Grant>,
}

impl Principal {
    pub fn new(name: impl Into<String>, grants: Vec<Grant>) -> Principal {
        Principal {
            name: name.into(),
            grants,
        }
    }

    /// Whether this principal may do `action` on the topic or queue `name`
    /// (ignored for the cluster). Internal names are refused whatever the
    /// grants.
    pub fn authorize(&self, action: Action, name: &str) -> Result<(), Denied> {
        if action.resource != Resource::Cluster && name.starts_with("__") {
            return Err(Denied::Internal {
                name: name.to_owned(),
            });
        }
        if self.grants.iter().any(|grant| grant.covers(action, name)) {
            return Ok(());
        }
        Err(match action.resource {
            Resource::Cluster => Denied::MissingClusterAdmin {
                principal: self.name.clone(),
            },
            _ => Denied::Missing {
                principal: self.name.clone(),
                action,
                name: name.to_owned(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn principal(grants: &[&str]) -> Principal {
        Principal::new("alice", grants.iter().map(|g| Grant::parse(g).unwrap()).collect())
    }

    #[test]
    fn grants_parse_and_print_back() {
        for (text, printed) in [
            ("topic:orders-*=produce,consume", "topic:orders-*=produce,consume"),
            ("queue:emails=work,enqueue", "queue:emails=enqueue,work"),
            ("queue:*=*", "queue:*=enqueue,work,admin"),
            ("cluster=admin", "cluster=admin"),
        ] {
            assert_eq!(Grant::parse(text).unwrap().to_string(), printed);
        }
    }

    #[test]
    fn bad_grants_say_what_is_wrong() {
        for (text, reason) in [
            ("topic:orders", "write topic:PATTERN=PERMISSIONS"),
            ("table:x=admin", "write topic:PATTERN=PERMISSIONS"),
            (
                "topic:orders=enqueue",
                "\"enqueue\" is not a permission on a topic; it has produce, consume, admin",
            ),
            ("cluster=produce", "not a permission on a cluster"),
            ("topic:../x=produce", "a name pattern is"),
            ("topic:=produce", "a name pattern is"),
        ] {
            let error = Grant::parse(text).unwrap_err();
            assert!(error.to_string().contains(reason), "{text}: {error}");
        }
    }

    #[test]
    fn the_check_follows_resource_permission_and_pattern() {
        let alice = principal(&[
            "topic:orders-*=produce",
            "queue:emails=work",
            "topic:audit=consume",
        ]);
        assert_eq!(alice.authorize(Action::PRODUCE, "orders-eu"), Ok(()));
        assert_eq!(alice.authorize(Action::CONSUME, "audit"), Ok(()));
        assert_eq!(alice.authorize(Action::WORK, "emails"), Ok(()));
        let denied = alice.authorize(Action::CONSUME, "orders-eu").unwrap_err();
        assert_eq!(
            denied.to_string(),
            "principal \"alice\" lacks consume on topic \"orders-eu\" (a grant such as topic:orders-eu=consume allows it)"
        );
        assert!(
            alice.authorize(Action::PRODUCE, "orders").is_err(),
            "the pattern needs the dash"
        );
        assert!(alice.authorize(Action::PRODUCE, "audit").is_err());
        assert!(alice.authorize(Action::ENQUEUE, "emails").is_err());
        assert!(alice.authorize(Action::WORK, "emails-2").is_err());
        assert_eq!(
            alice
                .authorize(Action::CLUSTER_ADMIN, "")
                .unwrap_err()
                .to_string(),
            "principal \"alice\" lacks admin on the cluster (a grant cluster=admin allows it)"
        );
        // Topics and queues are separate even under the same name.
        assert!(
            principal(&["queue:orders-eu=*"])
                .authorize(Action::PRODUCE, "orders-eu")
                .is_err()
        );
        assert_eq!(
            principal(&["cluster=admin"]).authorize(Action::CLUSTER_ADMIN, ""),
            Ok(())
        );
    }

    #[test]
    fn internal_names_are_out_of_reach_of_every_grant() {
        let root = principal(&["topic:*=*", "queue:*=*", "cluster=admin"]);
        for action in [
            Action::CONSUME,
            Action::PRODUCE,
            Action::TOPIC_ADMIN,
            Action::WORK,
        ] {
            assert!(matches!(
                root.authorize(action, "__jobs"),
                Err(Denied::Internal { .. })
            ));
        }
        assert_eq!(root.authorize(Action::CONSUME, "orders"), Ok(()));
    }

    #[test]
    fn patterns_match_as_globs() {
        let cases = [
            ("orders", "orders", true),
            ("orders", "orders-eu", false),
            ("orders-*", "orders-", true),
            ("*", "", true),
            ("*-eu", "orders-eu", true),
            ("*-eu", "orders-us", false),
            ("a*b*c", "abc", true),
            ("a*b*c", "axxbyyc", true),
            ("a*b*c", "acb", false),
            ("ab*ba", "aba", false),
        ];
        for (pattern, name, expected) in cases {
            assert_eq!(
                Pattern::new(pattern).unwrap().matches(name),
                expected,
                "{pattern} ~ {name}"
            );
        }
    }

    /// A slow reference: does `pattern` match `name`, by trying every way
    /// the stars could split it.
    fn reference(pattern: &[u8], name: &[u8]) -> bool {
        match pattern.split_first() {
            None => name.is_empty(),
            Some((b'*', rest)) => (0..=name.len()).any(|i| reference(rest, &name[i..])),
            Some((c, rest)) => name.first() == Some(c) && reference(rest, &name[1..]),
        }
    }

    proptest! {
        #[test]
        fn patterns_agree_with_a_backtracking_reference(pattern in "[ab*]{1,8}", name in "[ab]{0,10}") {
            prop_assert_eq!(Pattern::new(&pattern).unwrap().matches(&name), reference(pattern.as_bytes(), name.as_bytes()));
        }
    }
}
