//! The tool policy (issue 25): the config file's `policy:` section and the one admins set with
//! `dispatch policy set`, used together. The event path decides each tool call by it; the
//! scheduler puts a task under tool approvals when any scope names it.

use crate::error::{CoordinatorError, Result};
use crate::model::{AuditEntry, Principal, TaskRecord};
use crate::{Coordinator, now_ms};
use dispatch_core::policy::PolicyConfig;
use std::sync::Arc;

/// The policy as a caller sees it.
#[derive(Debug, Clone, Default)]
pub struct PolicyView {
    /// The coordinator's config file's.
    pub config: PolicyConfig,
    /// The one admins set.
    pub stored: PolicyConfig,
    /// Both together: what tasks run under.
    pub effective: PolicyConfig,
    /// When and by whom the stored one was set (0 and "" when never).
    pub updated_ms: i64,
    pub updated_by: String,
}

impl Coordinator {
    /// The tool policy tasks run under now.
    pub fn policy(&self) -> Arc<PolicyConfig> {
        Arc::clone(&self.policy.read().unwrap())
    }

    /// Whether `task` runs under tool approvals (some scope of the policy names it).
    pub fn under_approvals(&self, task: &TaskRecord) -> bool {
        self.policy().applies(&task.owner, &task.token, &task.pool)
    }

    /// Reads the stored policy and makes the effective one (at start: a replica that takes
    /// over reads what the last leader stored).
    pub(crate) async fn load_policy(&self) -> Result<()> {
        let stored = self.stored_policy().await?.0;
        *self.policy.write().unwrap() = Arc::new(self.config.policy.merged(&stored));
        Ok(())
    }

    async fn stored_policy(&self) -> Result<(PolicyConfig, i64, String)> {
        Ok(match self.store.stored_policy().await? {
            None => (PolicyConfig::default(), 0, String::new()),
            Some((yaml, at, by)) => (
                // Checked when it was set; a rule this version no longer reads is reported.
                PolicyConfig::from_yaml(&yaml).map_err(|e| {
                    CoordinatorError::Corrupt(format!(
                        "the stored tool policy no longer reads ({e}); set it again with `dispatch policy set FILE`"
                    ))
                })?,
                at,
                by,
            ),
        })
    }

    /// The config file's policy, the stored one and both together.
    pub async fn get_policy(&self) -> Result<PolicyView> {
        let (stored, updated_ms, updated_by) = self.stored_policy().await?;
        Ok(PolicyView {
            config: (*self.config.policy).clone(),
            effective: self.config.policy.merged(&stored),
            stored,
            updated_ms,
            updated_by,
        })
    }

    /// Replaces the policy admins set with `yaml` (the `policy:` section's content), or clears
    /// it; checked whole first (nothing changes on an error), audited, in force at once for
    /// every tool call decided after it.
    pub async fn set_policy(&self, yaml: Option<&str>, who: &Principal) -> Result<PolicyView> {
        if let Some(y) = yaml {
            dispatch_core::limits::check_len(
                "policy",
                y,
                dispatch_core::limits::MAX_MESSAGE_BYTES,
            )?;
        }
        let parsed = match yaml {
            Some(y) => Some(PolicyConfig::from_yaml(y).map_err(|e| {
                CoordinatorError::Invalid(format!("the policy: {e}; nothing was changed"))
            })?),
            None => None,
        };
        let body = parsed.as_ref().map(PolicyConfig::to_yaml);
        let (action, detail) = match &parsed {
            Some(p) => (
                "policy-set",
                format!(
                    "{} allow, {} ask, {} deny rules; {} pool, {} user and {} token scopes",
                    p.allow.len(),
                    p.ask.len(),
                    p.deny.len(),
                    p.pools.len(),
                    p.users.len(),
                    p.tokens.len()
                ),
            ),
            None => ("policy-clear", String::new()),
        };
        let audit = AuditEntry::new(who, action, "", detail);
        let body = body.filter(|b| !b.is_empty());
        self.store
            .set_policy(body.as_deref(), &who.name(), &audit, now_ms())
            .await?;
        self.load_policy().await?;
        tracing::info!(who = %who.name(), action, "tool policy changed");
        self.get_policy().await
    }
}
