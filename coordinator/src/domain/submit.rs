//! Submitting a task: validation, the plan, the id, and whether any node could ever run it.

use crate::error::{CoordinatorError, Result};
use crate::model::{AuditEntry, NodeRecord, Principal, Repo, TaskRecord, node_allowed};
use crate::registry::NodeSlot;
use crate::router::{backend_on, can_run, in_pool, preferred_backend};
use crate::store::Inserted;
use crate::{Coordinator, now_ms};
use dispatch_core::limits::{self, check_len, check_name};
use dispatch_core::plan;
use dispatch_core::{TaskState, prompt, task_id};
use std::collections::BTreeMap;

/// How long after a coordinator starts (or a replica takes over) a task for a known node is
/// queued while no node is connected yet, rather than refused: long enough for agents to
/// come back (their reconnect backoff is at most 5 s, plus a connect).
pub const RECONNECT_GRACE_MS: i64 = 15_000;

/// A request to run a task, as the domain sees it.
#[derive(Debug, Clone, Default)]
pub struct SubmitSpec {
    /// Explicit task id ("" to derive one from the prompt).
    pub id: String,
    /// What the worker should do.
    pub prompt: String,
    /// Checklist items (empty: from the plan or the prompt).
    pub steps: Vec<String>,
    /// A whole plan.md, used verbatim.
    pub plan_markdown: String,
    /// Node to pin to ("" for any).
    pub remote: String,
    /// Backend ("" for the node's preferred).
    pub backend: String,
    /// Model ("" for the backend's default).
    pub model: String,
    /// Task to wait for ("" for none).
    pub after: String,
    /// Workdir on the node ("" for its default).
    pub workdir: String,
    /// Higher runs first.
    pub priority: i32,
    /// Title ("" to derive one).
    pub title: String,
    /// Run in a git worktree.
    pub worktree: bool,
    /// An alias's prompt, prepended to the worker prompt.
    pub alias_prompt: String,
    /// Label selector.
    pub pool: BTreeMap<String, String>,
    /// Repository the user ran in.
    pub repo: Option<Repo>,
    /// Client request id for an idempotent submit ("" for none).
    pub request_id: String,
    /// A signed task: the spec as signed (JSON bytes) and its ed25519 signature.
    pub signed_spec: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
    /// How a worktree or workspace task's branch comes home ("", "bundle", "push").
    pub deliver: String,
    /// Where it goes, once, when its CLI cannot start for quota or login (empty: nowhere).
    pub fallback: Vec<(String, String)>,
    /// What such a start failure says (empty: the defaults).
    pub fallback_on: Vec<String>,
    /// Its budget as a person wrote it ("" for the token's or the config's default).
    pub budget: String,
}

fn describe_backends(nodes: &[NodeRecord]) -> String {
    nodes
        .iter()
        .map(|n| {
            let b: Vec<String> = n
                .backends
                .iter()
                .map(|b| {
                    if b.error.is_empty() {
                        b.name.clone()
                    } else {
                        format!("{} (cannot run there: {})", b.name, b.error)
                    }
                })
                .collect();
            format!(
                "{}: {}",
                n.name,
                if b.is_empty() {
                    "none".to_string()
                } else {
                    b.join(", ")
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The nodes `who`'s token allows (empty: any), when `remote` ("" for any node) is one of them.
pub(crate) fn may_run_on(who: &Principal, remote: &str) -> Result<Vec<String>> {
    let allowed_nodes = match who {
        Principal::User { nodes, .. } => nodes.clone(),
        _ => Vec::new(),
    };
    if !remote.is_empty() && !node_allowed(&allowed_nodes, remote) {
        return Err(CoordinatorError::PermissionDenied(format!(
            "{} may run tasks only on {}; node `{remote}` is not among them",
            who.name(),
            allowed_nodes.join(", "),
        )));
    }
    Ok(allowed_nodes)
}

impl Coordinator {
    /// Validates and stores a new task, then runs a scheduling pass so the returned task
    /// already shows its node when one was free.
    pub async fn submit(&self, req: SubmitSpec, who: &Principal) -> Result<TaskRecord> {
        // Rate first: a flood costs no more than its refusals.
        self.take_submit(who)?;
        // The nodes the submitter's token allows (empty: any); a pinned node must be one.
        let allowed_nodes = may_run_on(who, &req.remote)?;
        // A retried request (same request id) gets the task the first one created.
        let request = (!req.request_id.is_empty()).then_some(req.request_id.as_str());
        if let Some(r) = request {
            check_len("request id", r, limits::MAX_REQUEST_ID_BYTES)?;
            if let Some(id) = self.store.request_task(r).await? {
                return self.task(&id).await;
            }
        }
        let Checked {
            prompt: prompt_text,
            pool,
            repo,
        } = check(&req)?;
        let probe = TaskRecord {
            remote: req.remote.clone(),
            backend: req.backend.clone(),
            model: req.model.clone(),
            pool: pool.clone(),
            allowed_nodes: allowed_nodes.clone(),
            ..Default::default()
        };
        self.check_placement(&probe).await?;
        if !req.after.is_empty() {
            self.check_after(&req.after).await?;
        }

        let id = self.new_task_id(&req.id, &prompt_text).await?;

        let (plan_md, title) = plan::for_new_task(
            &id,
            &prompt_text,
            &req.steps,
            &req.plan_markdown,
            &req.title,
        )
        .map_err(CoordinatorError::Invalid)?;

        let budget = self.budget_for(&req.budget, who)?;
        self.check_day_budget(who).await?;
        let mut record = new_record(
            &req,
            Checked {
                prompt: prompt_text,
                pool,
                repo,
            },
            &id,
            (plan_md, title),
            who,
            allowed_nodes,
        )?;
        record.budget = budget;
        let audit = AuditEntry::new(
            who,
            "submit",
            &id,
            format!(
                "remote={} backend={} model={}",
                record.remote, record.backend, record.model
            ),
        );
        match self
            .store
            .insert_task(&record, request, Some(&audit), self.active_quota(who))
            .await?
        {
            Inserted::New(changes) => self.committed(changes),
            Inserted::Existing(id) => return self.task(&id).await,
        }
        tracing::info!(task = %id, remote = %record.remote, backend = %record.backend, "submitted");
        self.scheduler.pass().await;
        Ok(self.store.get_task(&id).await?.unwrap_or(record))
    }

    /// A new task's budget: the one its submit gives, else its token's, else the config's.
    fn budget_for(
        &self,
        given: &str,
        who: &Principal,
    ) -> Result<Option<dispatch_core::budget::TaskBudget>> {
        use dispatch_core::budget::{Budget, TaskBudget};
        let given = given.trim();
        if !given.is_empty() {
            check_len("budget", given, 64)?;
            let b = Budget::parse(given)
                .map_err(|e| CoordinatorError::Invalid(format!("--budget: {e}")))?;
            return Ok(Some(TaskBudget::new(b)));
        }
        let token = match who {
            Principal::User { token, .. } => self.tokens.budgets(token).task,
            _ => None,
        };
        Ok(token.or(self.config.budgets.task).map(TaskBudget::new))
    }

    /// Refuses a submit of a user past their daily budget (UTC days; the token's, else the
    /// config's).
    async fn check_day_budget(&self, who: &Principal) -> Result<()> {
        let name = who.name();
        let token = match who {
            Principal::User { token, .. } => self.tokens.budgets(token).day,
            _ => None,
        };
        let Some(day) = token.or_else(|| self.config.budgets.day_for(&name)) else {
            return Ok(());
        };
        let today = dispatch_core::budget::day_of(now_ms());
        let (usd_micros, tokens) = self.store.day_spend(&name, today).await?;
        let spent = dispatch_core::budget::Spend {
            usd_micros,
            tokens,
            estimated: false,
        };
        if day.reached_by(&spent) {
            let next = (today + 1) * 86_400_000;
            return Err(CoordinatorError::ResourceExhausted(format!(
                "budget: `{name}` has spent {} today (UTC), their daily budget; submits are allowed again at {} (in {}), or an admin gives a token with a larger --day-budget",
                day.against(&spent),
                dispatch_core::signals::utc_text(next),
                dispatch_core::duration::human_secs((next - now_ms()).max(0) / 1000),
            )));
        }
        Ok(())
    }

    /// A task named by --after exists.
    async fn check_after(&self, after: &str) -> Result<()> {
        task_id::validate(after)?;
        if !self.store.task_exists(after).await? {
            return Err(CoordinatorError::NotFound(format!(
                "--after names task `{after}`, which does not exist; see `dispatch status`"
            )));
        }
        Ok(())
    }

    /// The new task's id: the one asked for (refused when taken), else one derived from the
    /// prompt with a suffix until it is free.
    async fn new_task_id(&self, wanted: &str, prompt: &str) -> Result<String> {
        Ok(if wanted.is_empty() {
            let base = task_id::derive(prompt);
            let mut candidate = base.clone();
            let mut n = 1;
            while self.store.task_exists(&candidate).await? {
                n += 1;
                candidate = task_id::with_suffix(&base, n);
            }
            candidate
        } else {
            if self.store.task_exists(wanted).await? {
                return Err(CoordinatorError::AlreadyExists(format!(
                    "task id `{}` already exists; choose another with --id, or see it with `dispatch status {}`",
                    wanted, wanted
                )));
            }
            wanted.to_string()
        })
    }

    /// Refuses a task that no connected node can ever run (pinned node, pool labels, backend,
    /// model), saying what the connected nodes have. While none is connected in the first
    /// [`RECONNECT_GRACE_MS`] after the coordinator starts, a task for a known node is queued
    /// instead: its nodes may still be reconnecting.
    pub(crate) async fn check_placement(&self, probe: &TaskRecord) -> Result<()> {
        let remote = probe.remote.as_str();
        let known = self.store.list_nodes().await?;
        if !remote.is_empty() {
            check_name("--remote node name", remote)?;
            if !known.iter().any(|n| n.name == remote) {
                return Err(self.unknown_node(remote, &known));
            }
        }
        let slots: Vec<NodeSlot> = self
            .registry
            .slots()
            .into_iter()
            .filter(|s| remote.is_empty() || s.name == remote)
            .collect();
        if slots.is_empty() {
            // Just started, or just took over from another replica: the nodes it knows are
            // still reconnecting (an agent's backoff is at most 5 s). A task for them waits in
            // the queue meanwhile, as it would for a busy node, instead of being refused.
            let reconnecting = now_ms() - self.started_ms < RECONNECT_GRACE_MS
                && known
                    .iter()
                    .any(|n| !n.cordoned && (remote.is_empty() || n.name == remote));
            if reconnecting {
                tracing::info!(
                    remote,
                    "no node connected yet since this coordinator started; queueing the task for the nodes that reconnect"
                );
                return Ok(());
            }
            return Err(CoordinatorError::FailedPrecondition(if remote.is_empty() {
                "no node is connected to this coordinator; start `dispatch-agent --coordinator URL` on a machine, then dispatch again".to_string()
            } else {
                format!(
                    "node `{remote}` is not connected; start its agent (`dispatch nodes` shows when it was last seen)"
                )
            }));
        }
        if slots.iter().any(|s| can_run(probe, s)) {
            return Ok(());
        }
        let records: Vec<NodeRecord> = known
            .into_iter()
            .filter(|n| slots.iter().any(|s| s.name == n.name))
            .collect();
        Err(not_runnable(probe, &slots, &records)?)
    }

    /// A --remote that names no node this coordinator knows: the nodes it does know, and
    /// whether each is connected.
    fn unknown_node(&self, remote: &str, known: &[NodeRecord]) -> CoordinatorError {
        let names: Vec<String> = known
            .iter()
            .map(|n| {
                format!(
                    "{} ({})",
                    n.name,
                    if self.registry.is_connected(&n.name) {
                        "connected"
                    } else {
                        "offline"
                    }
                )
            })
            .collect();
        CoordinatorError::NotFound(if names.is_empty() {
            format!(
                "no node named `{remote}`: no node has connected to this coordinator yet; start `dispatch-agent --name {remote} --coordinator URL` on that machine"
            )
        } else {
            format!(
                "no node named `{remote}`; known nodes: {}",
                names.join(", ")
            )
        })
    }

    /// Where a task that could not start on `node` could run instead, as advice.
    pub(crate) async fn alternatives(&self, node: &str, task: &str) -> Result<String> {
        let others: Vec<String> = self
            .store
            .list_nodes()
            .await?
            .into_iter()
            .filter(|n| n.name != node && self.registry.is_connected(&n.name))
            .map(|n| {
                format!(
                    "{}: {}",
                    n.name,
                    n.backends
                        .iter()
                        .map(|b| b.name.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            })
            .collect();
        Ok(if others.is_empty() {
            format!(
                "No other node is connected; install or fix the CLI (or its login) on `{node}`, or pick another backend, then `dispatch retry {task} [--backend B]`"
            )
        } else {
            format!(
                "Other nodes offer: {}. Run it there with `dispatch retry {task} --remote NODE [--backend B]`",
                others.join("; ")
            )
        })
    }

    /// A task by id, or a not-found error that says how to list tasks.
    pub async fn task(&self, id: &str) -> Result<TaskRecord> {
        task_id::validate(id)?;
        self.store.get_task(id).await?.ok_or_else(|| {
            CoordinatorError::NotFound(format!(
                "no task `{id}`; `dispatch status` lists every task"
            ))
        })
    }
}

/// What a checked submit request holds besides itself.
struct Checked {
    /// The prompt, without trailing blanks.
    prompt: String,
    /// Its pool labels.
    pool: BTreeMap<String, String>,
    /// Its repository (URL without credentials, branch, commit), or all empty.
    repo: (String, String, String),
}

/// Checks every field of a submit request against its limits and forms, before anything is
/// looked up: a bad request is refused naming the field.
fn check(req: &SubmitSpec) -> Result<Checked> {
    let prompt_text = req.prompt.trim_end().to_string();
    check_len("prompt", &prompt_text, limits::MAX_PROMPT_BYTES)?;
    check_len("plan", &req.plan_markdown, limits::MAX_PLAN_BYTES)?;
    check_len("title", &req.title, limits::MAX_STEP_BYTES)?;
    check_len("alias prompt", &req.alias_prompt, limits::MAX_PROMPT_BYTES)?;
    check_len("workdir", &req.workdir, limits::MAX_PATH_BYTES)?;
    if prompt_text.trim().is_empty() && req.plan_markdown.trim().is_empty() && req.steps.is_empty()
    {
        return Err(CoordinatorError::Invalid(
            "the prompt is empty: say what the worker should do, or give a plan with --plan or --step".into(),
        ));
    }
    if req.steps.len() > limits::MAX_PLAN_ITEMS {
        return Err(CoordinatorError::Invalid(format!(
            "{} steps given; the limit is {}",
            req.steps.len(),
            limits::MAX_PLAN_ITEMS
        )));
    }
    for (i, s) in req.steps.iter().enumerate() {
        check_len(&format!("step {}", i + 1), s, limits::MAX_STEP_BYTES)?;
        if s.trim().is_empty() {
            return Err(CoordinatorError::Invalid(format!(
                "step {} is empty",
                i + 1
            )));
        }
    }
    if !req.id.is_empty() {
        task_id::validate(&req.id)?;
    }
    if !req.model.is_empty() {
        check_name("model", &req.model)?;
    }
    if !matches!(req.deliver.as_str(), "" | "bundle" | "push") {
        return Err(CoordinatorError::Invalid(format!(
            "`{}` is not a way to deliver changes; use bundle or push",
            req.deliver
        )));
    }
    check_fallback(&req.fallback, &req.fallback_on)?;
    if !req.workdir.is_empty() && !req.workdir.starts_with('/') {
        return Err(CoordinatorError::Invalid(format!(
            "workdir `{}` is not an absolute path; give the full path of the directory on the node",
            req.workdir
        )));
    }
    let mut pool = std::collections::BTreeMap::new();
    for (k, v) in &req.pool {
        check_name("--pool label", k)?;
        check_len(&format!("--pool label `{k}`"), v, limits::MAX_VALUE_BYTES)?;
        pool.insert(k.clone(), v.clone());
    }
    let repo = match &req.repo {
        Some(r) if !r.url.is_empty() => check_repo(r)?,
        _ => Default::default(),
    };
    Ok(Checked {
        prompt: prompt_text,
        pool,
        repo,
    })
}

/// Where a task falls back to, and on what: names and patterns within their limits.
fn check_fallback(to: &[(String, String)], on: &[String]) -> Result<()> {
    if to.len() > limits::MAX_FALLBACK_TARGETS {
        return Err(CoordinatorError::Invalid(format!(
            "{} fallback targets; at most {} are allowed",
            to.len(),
            limits::MAX_FALLBACK_TARGETS
        )));
    }
    for (backend, model) in to {
        check_name("fallback backend", backend)?;
        if !model.is_empty() {
            check_name("fallback model", model)?;
        }
    }
    if on.len() > limits::MAX_FALLBACK_PATTERNS
        || on
            .iter()
            .any(|p| p.trim().is_empty() || p.len() > limits::MAX_NAME_BYTES * 4)
    {
        return Err(CoordinatorError::Invalid(format!(
            "fallback patterns: at most {} of them, each 1 to {} bytes",
            limits::MAX_FALLBACK_PATTERNS,
            limits::MAX_NAME_BYTES * 4
        )));
    }
    Ok(())
}

/// The repository a task runs in: its URL without credentials (stored, logged and shown so;
/// nodes clone with their own), branch and full commit id.
fn check_repo(r: &Repo) -> Result<(String, String, String)> {
    check_len("repository URL", &r.url, limits::MAX_PATH_BYTES)?;
    check_len("branch", &r.branch, limits::MAX_VALUE_BYTES)?;
    if !(r.commit.len() == 40 || r.commit.len() == 64)
        || !r.commit.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Err(CoordinatorError::Invalid(format!(
            "`{}` is not a full commit id",
            r.commit
        )));
    }
    // Stored, logged and shown without credentials; nodes clone with their own.
    let url = dispatch_core::repo_url::parse(&r.url)
        .map_err(CoordinatorError::Invalid)?
        .redacted;
    Ok((url, r.branch.clone(), r.commit.clone()))
}

/// Why no node of `slots` (connected, of the pinned node if any; `records` their stored
/// rows) can run `probe`, as the error the submitter sees: the labels, backend or model
/// missing, and what the nodes have instead. Err: a bad backend name.
fn not_runnable(
    probe: &TaskRecord,
    slots: &[NodeSlot],
    records: &[NodeRecord],
) -> Result<CoordinatorError> {
    let remote = probe.remote.as_str();
    let where_ = if remote.is_empty() {
        "no connected node".to_string()
    } else {
        format!("node `{remote}`")
    };
    // "no connected node has X" reads right; a named node "has no X".
    let lacks = |what: &str| {
        if remote.is_empty() {
            format!("{where_} has {what}")
        } else {
            format!("{where_} has no {what}")
        }
    };
    let pooled: Vec<&NodeSlot> = slots.iter().filter(|s| in_pool(probe, &s.labels)).collect();
    if pooled.is_empty() {
        let want: Vec<String> = probe.pool.iter().map(|(k, v)| format!("{k}={v}")).collect();
        return Ok(CoordinatorError::Invalid(format!(
            "{}; nodes and their labels: {}",
            lacks(&format!("the labels {}", want.join(","))),
            labels_by_node(slots)
        )));
    }
    let backend = probe.backend.as_str();
    if !backend.is_empty() {
        check_name("backend", backend)?;
        if !pooled
            .iter()
            .any(|s| s.backends.iter().any(|b| b == backend))
        {
            return Ok(CoordinatorError::Invalid(format!(
                "{}; nodes and their backends: {}",
                lacks(&format!("backend `{backend}`")),
                describe_backends(records)
            )));
        }
    } else if !pooled
        .iter()
        .any(|s| preferred_backend(&s.backends).is_some())
    {
        return Ok(CoordinatorError::Invalid(format!(
            "{} installed; nodes and their backends: {}. \
             Install one on a node, or pass --backend sim to run the scripted sim worker",
            if remote.is_empty() {
                format!("{where_} has an agent CLI (claude, agent, codex)")
            } else {
                format!("{where_} has no agent CLI (claude, agent, codex)")
            },
            describe_backends(records)
        )));
    }
    let lists: Vec<String> = pooled
        .iter()
        .filter_map(|s| {
            backend_on(probe, &s.backends).map(|b| {
                format!(
                    "{} ({b}): {}",
                    s.name,
                    s.models.get(&b).map(|m| m.join(", ")).unwrap_or_default()
                )
            })
        })
        .collect();
    let offers = if remote.is_empty() {
        format!("{where_} offers model `{}`", probe.model)
    } else {
        format!("{where_} does not offer model `{}`", probe.model)
    };
    Ok(CoordinatorError::Invalid(format!(
        "{offers}; models by node: {}",
        lists.join("; ")
    )))
}

/// Each node of `slots` with its labels, as the submitter reads them.
fn labels_by_node(slots: &[NodeSlot]) -> String {
    slots
        .iter()
        .map(|s| {
            format!(
                "{}: {}",
                s.name,
                if s.labels.is_empty() {
                    "no labels".to_string()
                } else {
                    s.labels
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(",")
                }
            )
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// The queued task a checked request becomes: its worker prompt, worktree choice, signature
/// (checked against exactly this task), fallback and owner.
fn new_record(
    req: &SubmitSpec,
    checked: Checked,
    id: &str,
    (plan_md, title): (String, String),
    who: &Principal,
    allowed_nodes: Vec<String>,
) -> Result<TaskRecord> {
    let Checked {
        prompt: prompt_text,
        pool,
        repo,
    } = checked;
    let now = now_ms();
    let worker_prompt = prompt::worker_prompt(
        id,
        &prompt_text,
        Some(req.alias_prompt.as_str()).filter(|p| !p.trim().is_empty()),
    );
    let worktree = req.worktree || prompt::wants_worktree(&req.prompt);
    let (signer, signed_spec) = check_signed(
        req,
        &dispatch_core::signing::Assigned {
            task_id: id,
            attempt: 1,
            worker_prompt: &worker_prompt,
            plan: &plan_md,
            backend: &req.backend,
            model: &req.model,
            workdir: &req.workdir,
            worktree,
            repo_url: &repo.0,
            commit: &repo.2,
            node: &req.remote,
            now_ms: now,
        },
    )?;
    Ok(TaskRecord {
        id: id.to_string(),
        state: TaskState::Queued,
        title,
        worker_prompt,
        prompt: prompt_text,
        plan_md,
        remote: req.remote.clone(),
        backend: req.backend.clone(),
        model: req.model.clone(),
        workdir: req.workdir.clone(),
        after: req.after.clone(),
        priority: req.priority,
        created_ms: now,
        updated_ms: now,
        attempt: 1,
        worktree,
        signer,
        signed_spec,
        signature: req.signature.clone(),
        deliver: req.deliver.clone(),
        trace: dispatch_telemetry::traceparent(&tracing::Span::current()),
        fallback: fallback_of(req),
        pool,
        repo,
        owner: who.name(),
        token: who.token_id().to_string(),
        allowed_nodes,
        ..Default::default()
    })
}

/// Where a task falls back to when its CLI cannot start for quota or login, and on which
/// messages (the defaults when the request names none); None when it names no target.
fn fallback_of(req: &SubmitSpec) -> Option<crate::model::Fallback> {
    (!req.fallback.is_empty()).then(|| crate::model::Fallback {
        to: req.fallback.clone(),
        on: if req.fallback_on.is_empty() {
            dispatch_core::config::DEFAULT_FALLBACK_ON
                .iter()
                .map(|s| s.to_string())
                .collect()
        } else {
            req.fallback_on.clone()
        },
        ..Default::default()
    })
}

/// A signed task's signer and spec (both empty for an unsigned one). The coordinator holds no
/// trusted keys (nodes do): it checks that the spec is intact and is this task, so a mistake
/// shows at submit and not on the node.
fn check_signed(
    req: &SubmitSpec,
    assigned: &dispatch_core::signing::Assigned<'_>,
) -> Result<(String, String)> {
    if req.signed_spec.is_empty() && req.signature.is_empty() {
        return Ok((String::new(), String::new()));
    }
    let bad = |e: String| CoordinatorError::Invalid(format!("signed task: {e}"));
    let spec =
        dispatch_core::signing::verify(&req.signed_spec, &req.signature, &[]).map_err(bad)?;
    if spec.remote != req.remote {
        return Err(bad("the signed node is not the one asked for".into()));
    }
    dispatch_core::signing::check(&spec, assigned)
        .map_err(|e| bad(format!("{e} (the spec and the request differ)")))?;
    let text = String::from_utf8(req.signed_spec.clone())
        .map_err(|_| bad("the spec is not UTF-8".into()))?;
    Ok((spec.key, text))
}
