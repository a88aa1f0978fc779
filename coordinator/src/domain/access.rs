//! Tokens: who a caller is. A token is `dsp_<id>_<secret>`; the store keeps the id and a
//! SHA-256 of the secret, never the secret, and a presented secret is compared in constant time.
//! Every valid token is also in a cache here (the coordinator is the only writer of tokens), so
//! checking one costs no store read.

use crate::error::{CoordinatorError, Result};
use crate::model::{AuditEntry, AuditRecord, Principal, Registered, Role, TokenRecord};
use crate::{Coordinator, now_ms};
use dispatch_core::limits::check_name;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::path::Path;
use std::sync::RwLock;

/// Where a coordinator's first admin token comes from, at the first start of an empty store.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Bootstrap {
    /// None (the local daemon: its socket needs no token).
    #[default]
    Off,
    /// Made up and written to `DATA_DIR/admin.token` (0600).
    Generate,
    /// This token, given by the operator (`--bootstrap-token-file`).
    Given(String),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `n` random bytes from the system, in hex (tokens, dashboard sessions).
pub(crate) fn random_hex(n: usize) -> Result<String> {
    let mut b = vec![0u8; n];
    getrandom::fill(&mut b)
        .map_err(|e| CoordinatorError::Corrupt(format!("no system randomness for a token: {e}")))?;
    Ok(hex(&b))
}

fn hash(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

/// Equality of two secrets (or their hashes) in time that does not depend on where they differ.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// `(id, secret)` of a token string.
fn split(token: &str) -> Option<(&str, &str)> {
    let rest = token.trim().strip_prefix("dsp_")?;
    let (id, secret) = rest.split_once('_')?;
    (!id.is_empty() && !secret.is_empty()).then_some((id, secret))
}

/// Limits of a token: submits a minute, and active (queued or running) tasks of its user.
/// 0 is no limit. Member and viewer tokens get the coordinator's defaults unless they have
/// their own; admin tokens only their own; the local socket none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Submits a minute.
    pub submits_per_minute: u32,
    /// Active tasks.
    pub max_active: u32,
}

impl Default for Quota {
    /// 60 submits a minute, 200 active tasks.
    fn default() -> Self {
        Quota {
            submits_per_minute: 60,
            max_active: 200,
        }
    }
}

/// A token bucket per token: `per_minute` submits, refilled evenly over the minute. In memory:
/// a restart forgives, which is fine for a rate.
#[derive(Default)]
pub struct RateLimiter {
    buckets: std::sync::Mutex<HashMap<String, (f64, std::time::Instant)>>,
}

impl RateLimiter {
    /// Takes one submit for `token`; the wait until the next one otherwise.
    pub fn take(
        &self,
        token: &str,
        per_minute: u32,
    ) -> std::result::Result<(), std::time::Duration> {
        if per_minute == 0 {
            return Ok(());
        }
        let cap = f64::from(per_minute);
        let rate = cap / 60.0;
        let now = std::time::Instant::now();
        let mut b = self.buckets.lock().unwrap();
        let (level, at) = b.entry(token.to_string()).or_insert((cap, now));
        *level = (*level + now.duration_since(*at).as_secs_f64() * rate).min(cap);
        *at = now;
        if *level >= 1.0 {
            *level -= 1.0;
            Ok(())
        } else {
            Err(std::time::Duration::from_secs_f64((1.0 - *level) / rate))
        }
    }
}

/// The valid tokens, by id.
#[derive(Default)]
pub struct TokenCache {
    tokens: RwLock<HashMap<String, TokenRecord>>,
    /// When each token was last used since the last batch was written (id → ms).
    used: std::sync::Mutex<HashMap<String, i64>>,
    /// Submit rates, by token id.
    pub rates: RateLimiter,
}

impl TokenCache {
    /// The uses recorded since the last call, to write in one batch.
    pub fn take_used(&self) -> Vec<(String, i64)> {
        std::mem::take(&mut *self.used.lock().unwrap())
            .into_iter()
            .collect()
    }

    /// When token `id` was last used: the newer of the stored time and an unwritten use.
    pub fn last_used(&self, id: &str, stored: i64) -> i64 {
        self.used
            .lock()
            .unwrap()
            .get(id)
            .copied()
            .unwrap_or(0)
            .max(stored)
    }

    fn load(&self, all: Vec<TokenRecord>) {
        let mut map = self.tokens.write().unwrap();
        map.clear();
        for t in all.into_iter().filter(|t| t.revoked_ms.is_none()) {
            map.insert(t.id.clone(), t);
        }
    }

    /// Who a presented token is; an error that says what to do when it is no valid token.
    pub fn principal(&self, token: &str) -> Result<Principal> {
        let invalid = || {
            CoordinatorError::Unauthenticated(
                "the token is not valid here (revoked, mistyped, or from another coordinator); ask an admin for one (`dispatch token create`)".into(),
            )
        };
        let (id, secret) = split(token).ok_or_else(invalid)?;
        let map = self.tokens.read().unwrap();
        let t = map.get(id).ok_or_else(invalid)?;
        if !same(&t.hash, &hash(secret)) {
            return Err(invalid());
        }
        let now = now_ms();
        if t.expires_ms > 0 && now >= t.expires_ms {
            return Err(CoordinatorError::Unauthenticated(format!(
                "token {id} expired {}; ask an admin for a new one (`dispatch token create … --expires 90d`)",
                dispatch_core::duration::ago(t.expires_ms, now)
            )));
        }
        self.used.lock().unwrap().insert(id.to_string(), now);
        Ok(if t.kind == "node" {
            Principal::Node {
                pattern: t.name.clone(),
                register: (t.uses_max > 0).then(|| t.id.clone()),
            }
        } else {
            Principal::User {
                token: t.id.clone(),
                name: t.name.clone(),
                role: Role::parse(&t.role).unwrap_or(Role::Viewer),
                nodes: t.nodes.clone(),
            }
        })
    }

    /// The limits of token `id` (its own where set, else `default`; admins: only their own).
    pub fn quota(&self, id: &str, default: Quota) -> Quota {
        let map = self.tokens.read().unwrap();
        let Some(t) = map.get(id) else {
            return default;
        };
        let base = if t.role == "admin" {
            Quota {
                submits_per_minute: 0,
                max_active: 0,
            }
        } else {
            default
        };
        Quota {
            submits_per_minute: if t.submits_per_minute > 0 {
                t.submits_per_minute
            } else {
                base.submits_per_minute
            },
            max_active: if t.max_active > 0 {
                t.max_active
            } else {
                base.max_active
            },
        }
    }

    /// The budgets of token `id` (none when it has none, or is gone).
    pub fn budgets(&self, id: &str) -> dispatch_core::budget::TokenBudgets {
        let map = self.tokens.read().unwrap();
        map.get(id).map(|t| t.budgets).unwrap_or_default()
    }

    /// True when no token exists at all.
    pub fn is_empty(&self) -> bool {
        self.tokens.read().unwrap().is_empty()
    }
}

/// What `CreateToken` asks for.
#[derive(Debug, Clone, Default)]
pub struct NewToken {
    /// A user token: the user.
    pub user: String,
    /// Its role.
    pub role: String,
    /// A node token: the node name (or prefix*).
    pub node: String,
    /// A member's allowed nodes.
    pub nodes: Vec<String>,
    /// Its own submit rate (0: the coordinator's default).
    pub submits_per_minute: u32,
    /// Its own active-task limit (0: the coordinator's default).
    pub max_active: u32,
    /// How long it works (None: until revoked).
    pub expires_in: Option<std::time::Duration>,
    /// A registration token (node tokens only): how many nodes it may register (0: an
    /// ordinary token).
    pub uses: u32,
    /// Its budgets, as people write them ("" for the coordinator's config).
    pub task_budget: String,
    /// The daily budget of its user's submits made with it.
    pub day_budget: String,
}

/// Most nodes one registration token may register.
pub const MAX_USES: u32 = 10_000;

fn check_node_pattern(what: &str, p: &str) -> Result<()> {
    check_name(
        what,
        p.strip_suffix('*').filter(|s| !s.is_empty()).unwrap_or(p),
    )?;
    Ok(())
}

impl Coordinator {
    /// Loads the tokens into the cache and, on the first start of a store without any,
    /// makes the first admin token as configured.
    pub(crate) async fn load_tokens(&self) -> Result<()> {
        let all = self.store.tokens().await?;
        let empty = all.is_empty();
        self.tokens.load(all);
        if !empty {
            return Ok(());
        }
        let secret_token = match &self.config.bootstrap {
            Bootstrap::Off => return Ok(()),
            Bootstrap::Generate => None,
            Bootstrap::Given(t) => Some(t.clone()),
        };
        let spec = NewToken {
            user: "admin".into(),
            role: "admin".into(),
            ..Default::default()
        };
        let (info, token) = self
            .mint(&spec, &Principal::Local, secret_token.as_deref())
            .await?;
        if matches!(self.config.bootstrap, Bootstrap::Generate) {
            let path = self.config.data_dir.join("admin.token");
            dispatch_core::fs::write_private(&path, format!("{token}\n").as_bytes()).map_err(
                |e| CoordinatorError::Corrupt(format!("cannot write {}: {e}", path.display())),
            )?;
            tracing::warn!(
                token = %info.id,
                file = %path.display(),
                "no token existed: made the first admin token; it is in {} (0600) — use it, then make others with `dispatch token create` and delete the file",
                path.display()
            );
        } else {
            tracing::info!(token = %info.id, "made the first admin token from --bootstrap-token-file");
        }
        Ok(())
    }

    async fn mint(
        &self,
        spec: &NewToken,
        who: &Principal,
        given: Option<&str>,
    ) -> Result<(TokenRecord, String)> {
        let (kind, name, role) = match (spec.user.is_empty(), spec.node.is_empty()) {
            (false, true) => {
                check_name("user name", &spec.user)?;
                let role = Role::parse(&spec.role).ok_or_else(|| {
                    CoordinatorError::Invalid(format!(
                        "`{}` is not a role; use admin, member or viewer",
                        spec.role
                    ))
                })?;
                ("user", spec.user.clone(), role.as_str().to_string())
            }
            (true, false) => {
                check_node_pattern("node name", &spec.node)?;
                if !spec.nodes.is_empty() || !spec.role.is_empty() {
                    return Err(CoordinatorError::Invalid(
                        "a node token has no role and no node list; give --user for a user token"
                            .into(),
                    ));
                }
                if spec.submits_per_minute > 0
                    || spec.max_active > 0
                    || !spec.task_budget.is_empty()
                    || !spec.day_budget.is_empty()
                {
                    return Err(CoordinatorError::Invalid(
                        "a node token submits nothing; quotas and budgets are for user tokens"
                            .into(),
                    ));
                }
                if spec.uses > MAX_USES {
                    return Err(CoordinatorError::Invalid(format!(
                        "a registration token registers at most {MAX_USES} nodes; make more than one"
                    )));
                }
                ("node", spec.node.clone(), "node".to_string())
            }
            _ => {
                return Err(CoordinatorError::Invalid(
                    "say whom the token is for: --user NAME --role ROLE, or --node NAME".into(),
                ));
            }
        };
        if kind == "user" && spec.uses > 0 {
            return Err(CoordinatorError::Invalid(
                "--uses makes a registration token for nodes (--node NAME); a user token is used as often as its user likes".into(),
            ));
        }
        for n in &spec.nodes {
            check_node_pattern("allowed node", n)?;
        }
        let budget = |flag: &str, text: &str| {
            let text = text.trim();
            (!text.is_empty())
                .then(|| {
                    dispatch_core::budget::Budget::parse(text)
                        .map_err(|e| CoordinatorError::Invalid(format!("--{flag}: {e}")))
                })
                .transpose()
        };
        let budgets = dispatch_core::budget::TokenBudgets {
            task: budget("task-budget", &spec.task_budget)?,
            day: budget("day-budget", &spec.day_budget)?,
        };
        let (id, token) = match given.map(str::trim) {
            Some(t) => {
                let (id, _) = split(t).ok_or_else(|| {
                    CoordinatorError::Invalid(
                        "the bootstrap token must look like dsp_<id>_<secret> (make one with `dispatch-coordinator new-token`)".into(),
                    )
                })?;
                (id.to_string(), t.to_string())
            }
            None => {
                let id = random_hex(6)?;
                let token = format!("dsp_{id}_{}", random_hex(24)?);
                (id, token)
            }
        };
        let (_, secret) = split(&token).expect("made above");
        let now = now_ms();
        let record = TokenRecord {
            id: id.clone(),
            kind: kind.into(),
            name: name.clone(),
            role,
            nodes: spec.nodes.clone(),
            hash: hash(secret),
            created_ms: now,
            created_by: who.name(),
            revoked_ms: None,
            submits_per_minute: spec.submits_per_minute,
            max_active: spec.max_active,
            expires_ms: spec.expires_in.map_or(0, |d| {
                now.saturating_add(d.as_millis().min(i64::MAX as u128) as i64)
            }),
            last_used_ms: 0,
            uses_max: spec.uses,
            uses: 0,
            budgets,
        };
        let audit = AuditEntry::new(who, "token-create", "", format!("{id} {kind} {name}"));
        self.store.create_token(&record, &audit, now).await?;
        self.tokens
            .tokens
            .write()
            .unwrap()
            .insert(id, record.clone());
        Ok((record, token))
    }

    /// Makes a token (admins); returns it with its secret, shown this once.
    pub async fn create_token(
        &self,
        spec: &NewToken,
        who: &Principal,
    ) -> Result<(TokenRecord, String)> {
        let (t, token) = self.mint(spec, who, None).await?;
        tracing::info!(token = %t.id, kind = %t.kind, name = %t.name, by = %who.name(), "token created");
        Ok((t, token))
    }

    /// Revokes a token (admins); it stops working at once.
    pub async fn revoke_token(&self, id: &str, who: &Principal) -> Result<TokenRecord> {
        let audit = AuditEntry::new(who, "token-revoke", "", id);
        if !self.store.revoke_token(id, &audit, now_ms()).await? {
            return Err(CoordinatorError::NotFound(format!(
                "no valid token `{id}`; `dispatch token list` shows them"
            )));
        }
        self.tokens.tokens.write().unwrap().remove(id);
        tracing::info!(token = id, by = %who.name(), "token revoked");
        self.store
            .tokens()
            .await?
            .into_iter()
            .find(|t| t.id == id)
            .ok_or_else(|| CoordinatorError::NotFound(format!("no token `{id}`")))
    }

    /// Registers node `name` with registration token `registration` (its first session):
    /// mints the node a token of its own, for that name only, and returns it (the node keeps it
    /// and presents it from then on). A registration whose Welcome was lost may be repeated for
    /// the same name until the node has used what it was given; after that the name is taken.
    pub async fn register_node(&self, registration: &str, name: &str) -> Result<String> {
        check_name("node name", name)?;
        let (reg, earlier) = {
            let map = self.tokens.tokens.read().unwrap();
            let reg = map.get(registration).cloned();
            let by = TokenRecord::minted_by(registration);
            let earlier: Vec<TokenRecord> = map
                .values()
                .filter(|t| t.created_by == by && t.name == name)
                .cloned()
                .collect();
            (reg, earlier)
        };
        let Some(reg) = reg else {
            return Err(CoordinatorError::Unauthenticated(format!(
                "registration token {registration} was revoked; ask an admin for another (`dispatch token create --node {name} --uses 1`)"
            )));
        };
        let mut replace = None;
        for t in &earlier {
            if self.tokens.last_used(&t.id, t.last_used_ms) > 0 {
                return Err(CoordinatorError::PermissionDenied(format!(
                    "node `{name}` was registered with token {registration} already and has its own token ({}), in the agent's DATA_DIR/node.token; a registration token registers a name once (to register it again: `dispatch token revoke {}`, then restart the agent without that file)",
                    t.id, t.id
                )));
            }
            replace = Some(t.id.clone());
        }
        let id = random_hex(6)?;
        let token = format!("dsp_{id}_{}", random_hex(24)?);
        let (_, secret) = split(&token).expect("made above");
        let now = now_ms();
        let minted = TokenRecord {
            id: id.clone(),
            kind: "node".into(),
            name: name.to_string(),
            role: "node".into(),
            hash: hash(secret),
            created_ms: now,
            created_by: TokenRecord::minted_by(registration),
            expires_ms: reg.expires_ms,
            ..Default::default()
        };
        let who = Principal::Node {
            pattern: reg.name.clone(),
            register: Some(registration.to_string()),
        };
        let audit = AuditEntry::new(
            &who,
            "node-register",
            "",
            format!("{name} with {registration}: token {id}"),
        );
        match self
            .store
            .register_node(registration, &minted, replace.as_deref(), &audit, now)
            .await?
        {
            Registered::Minted => {}
            Registered::Exhausted { uses } => {
                return Err(CoordinatorError::PermissionDenied(format!(
                    "registration token {registration} has registered {uses} of its {} node{} and has no use left; ask an admin for another (`dispatch token create --node {name} --uses 1`)",
                    reg.uses_max,
                    if reg.uses_max == 1 { "" } else { "s" }
                )));
            }
            Registered::Gone => {
                return Err(CoordinatorError::Unauthenticated(format!(
                    "registration token {registration} was revoked; ask an admin for another (`dispatch token create --node {name} --uses 1`)"
                )));
            }
        }
        {
            let mut map = self.tokens.tokens.write().unwrap();
            if let Some(old) = &replace {
                map.remove(old);
            } else if let Some(r) = map.get_mut(registration) {
                r.uses += 1;
            }
            map.insert(id.clone(), minted);
        }
        tracing::info!(node = name, registration, token = %id, "node registered: it has a token of its own");
        Ok(token)
    }

    /// Every token, revoked ones too (admins).
    pub async fn list_tokens(&self) -> Result<Vec<TokenRecord>> {
        let mut all = self.store.tokens().await?;
        for t in &mut all {
            t.last_used_ms = self.tokens.last_used(&t.id, t.last_used_ms);
        }
        Ok(all)
    }

    /// Writes the tokens' last uses in one batch every 30 s (not a write per call).
    pub(crate) fn spawn_token_use_writer(self: &std::sync::Arc<Self>) {
        let me = std::sync::Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(std::time::Duration::from_secs(30));
            tick.tick().await;
            loop {
                tick.tick().await;
                let Some(c) = me.upgrade() else { return };
                let used = c.tokens.take_used();
                if let Err(e) = c.store.tokens_used(&used).await {
                    tracing::warn!(error = %e, tokens = used.len(), "could not record when tokens were last used");
                }
            }
        });
    }

    /// The active-task limit of `who`'s submits, if any.
    pub(crate) fn active_quota(&self, who: &Principal) -> Option<u32> {
        match who {
            Principal::User { token, .. } => {
                Some(self.tokens.quota(token, self.config.quota).max_active).filter(|m| *m > 0)
            }
            _ => None,
        }
    }

    /// Takes one submit from `who`'s rate; `ResourceExhausted` saying when the next one is
    /// allowed.
    pub(crate) fn take_submit(&self, who: &Principal) -> Result<()> {
        let Principal::User { token, name, .. } = who else {
            return Ok(());
        };
        let per_minute = self
            .tokens
            .quota(token, self.config.quota)
            .submits_per_minute;
        self.tokens.rates.take(token, per_minute).map_err(|wait| {
            CoordinatorError::ResourceExhausted(format!(
                "quota: `{name}`'s token may submit {per_minute} tasks a minute; the next is allowed in {} s (ask an admin for a token with a higher --submits-per-minute)",
                wait.as_secs() + 1
            ))
        })
    }

    /// Audit records, newest first (admins).
    pub async fn audit_records(
        &self,
        task: Option<&str>,
        before: Option<u64>,
        limit: u32,
    ) -> Result<Vec<AuditRecord>> {
        self.store.audit_records(task, before, limit).await
    }
}

/// Reads a bootstrap token from `path` (its first line).
pub fn read_bootstrap(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read --bootstrap-token-file {}: {e}", path.display()))?;
    let token = text.lines().next().unwrap_or("").trim().to_string();
    if split(&token).is_none() {
        return Err(format!(
            "{} does not hold a token of the form dsp_<id>_<secret>",
            path.display()
        ));
    }
    Ok(token)
}

/// A new token string, for operators who provision the first one themselves.
pub fn generate() -> Result<String> {
    Ok(format!("dsp_{}_{}", random_hex(6)?, random_hex(24)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_is_checked_by_its_hash() {
        let cache = TokenCache::default();
        let token = generate().unwrap();
        let (id, secret) = split(&token).unwrap();
        cache.load(vec![TokenRecord {
            id: id.into(),
            kind: "user".into(),
            name: "ann".into(),
            role: "member".into(),
            nodes: vec![],
            hash: hash(secret),
            created_ms: 0,
            created_by: "local".into(),
            revoked_ms: None,
            submits_per_minute: 0,
            max_active: 3,
            ..Default::default()
        }]);
        let q = cache.quota(id, Quota::default());
        assert_eq!((q.submits_per_minute, q.max_active), (60, 3));
        assert!(matches!(
            cache.principal(&token).unwrap(),
            Principal::User {
                role: Role::Member,
                ..
            }
        ));
        let wrong = format!("dsp_{id}_{}", "0".repeat(48));
        assert!(matches!(
            cache.principal(&wrong),
            Err(CoordinatorError::Unauthenticated(_))
        ));
        assert!(cache.principal("nonsense").is_err());
        assert!(same(&hash("a"), &hash("a")) && !same(&hash("a"), &hash("b")));
    }
}
