//! Who is asking and what they may do: roles, principals, tokens, registrations and the audit.

use serde::{Deserialize, Serialize};

/// What a user token may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, every task, tokens and the audit.
    Admin,
    /// Submit, and read and act on their own tasks; summaries of the others.
    Member,
    /// Summaries only.
    Viewer,
}

impl Role {
    /// Stable name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    /// The role called `s`.
    pub fn parse(s: &str) -> Option<Role> {
        Some(match s {
            "admin" => Role::Admin,
            "member" => Role::Member,
            "viewer" => Role::Viewer,
            _ => return None,
        })
    }
}

/// Who is asking: the local owner over the Unix socket, a user token, or a node token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// The user of the local daemon, over its Unix socket (checked by peer credentials).
    Local,
    /// A user token.
    User {
        /// The token's id (quotas are per token).
        token: String,
        /// User name.
        name: String,
        /// Role.
        role: Role,
        /// Nodes the user's tasks may run on (patterns; empty: any).
        nodes: Vec<String>,
    },
    /// A node token: it may open sessions for node names matching `pattern` only.
    Node {
        /// A node name, or a prefix followed by `*`.
        pattern: String,
        /// A registration token's id: the node's first session mints it a token of its own.
        register: Option<String>,
    },
}

impl Principal {
    /// The name written as a task's owner and in the audit.
    pub fn name(&self) -> String {
        match self {
            Principal::Local => "local".into(),
            Principal::User { name, .. } => name.clone(),
            Principal::Node { pattern, .. } => format!("node:{pattern}"),
        }
    }

    /// The id of the user token it presented ("" for the local user and nodes).
    pub fn token_id(&self) -> &str {
        match self {
            Principal::User { token, .. } => token,
            _ => "",
        }
    }

    /// True for the local owner and admins: every task is theirs.
    pub fn is_admin(&self) -> bool {
        matches!(
            self,
            Principal::Local
                | Principal::User {
                    role: Role::Admin,
                    ..
                }
        )
    }

    /// True when the principal may read everything of, and act on, a task owned by `owner`.
    pub fn owns(&self, owner: &str) -> bool {
        self.is_admin()
            || matches!(self, Principal::User { name, role: Role::Member, .. } if name == owner)
    }
}

/// True when `name` matches `pattern`: equal, or starting with what precedes a trailing `*`.
pub fn node_matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// True when node `name` is among `allowed` (patterns; empty: any node).
pub fn node_allowed(allowed: &[String], name: &str) -> bool {
    allowed.is_empty() || allowed.iter().any(|p| node_matches(p, name))
}

/// A token as stored (its secret is not: only a hash of it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TokenRecord {
    /// Public id (the part of the token before its secret).
    pub id: String,
    /// `user` or `node`.
    pub kind: String,
    /// User name, or node name pattern.
    pub name: String,
    /// admin, member, viewer, or node.
    pub role: String,
    /// A member's allowed nodes (patterns; empty: any).
    pub nodes: Vec<String>,
    /// SHA-256 of the secret.
    pub hash: [u8; 32],
    /// When it was made, and by whom.
    pub created_ms: i64,
    /// Who made it.
    pub created_by: String,
    /// When it was revoked.
    pub revoked_ms: Option<i64>,
    /// Submits a minute it may make (0: the coordinator's default).
    pub submits_per_minute: u32,
    /// Active tasks its user may have (0: the coordinator's default).
    pub max_active: u32,
    /// When it stops working, ms since the epoch (0: never).
    pub expires_ms: i64,
    /// When it was last used, as last written (the cache holds newer uses until its next
    /// batch), ms since the epoch (0: never).
    pub last_used_ms: i64,
    /// A registration token: how many nodes it may register (0: not one; an ordinary token).
    pub uses_max: u32,
    /// How many it has registered.
    pub uses: u32,
    /// Its budgets (none: the coordinator's config).
    pub budgets: dispatch_core::budget::TokenBudgets,
}

impl TokenRecord {
    /// The `created_by` of the tokens registration token `id` minted.
    pub fn minted_by(id: &str) -> String {
        format!("registration:{id}")
    }
}

/// What registering a node with a registration token did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Registered {
    /// The node's own token was stored (and `replaced`, a token minted for the same name by the
    /// same registration that was never used, revoked); one use was counted unless it replaced.
    Minted,
    /// The registration token has no use left (`uses` of `uses_max`).
    Exhausted {
        /// Nodes it registered.
        uses: u32,
    },
    /// It was revoked, or is unknown.
    Gone,
}

/// A change to record in the audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    /// Who made it.
    pub who: String,
    /// What: submit, answer, note, cancel, retry, clean, token-create, token-revoke.
    pub action: String,
    /// The task, when there is one.
    pub task_id: String,
    /// More, in a few words.
    pub detail: String,
}

impl AuditEntry {
    /// `who` did `action` to `task`.
    pub fn new(who: &Principal, action: &str, task: &str, detail: impl Into<String>) -> Self {
        AuditEntry {
            who: who.name(),
            action: action.to_string(),
            task_id: task.to_string(),
            detail: detail.into(),
        }
    }
}

/// An audit record as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditRecord {
    /// Increasing id.
    pub id: u64,
    /// When.
    pub at_ms: i64,
    /// The entry.
    pub entry: AuditEntry,
}

/// What taking a one-time answer link found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkTaken {
    /// It is used now.
    Taken,
    /// It was used before, at this time (ms since the epoch).
    Used(i64),
    /// It expired.
    Expired,
    /// No such link was handed out (for that question).
    Unknown,
}
