//! Who may call what. Every request is authenticated before its handler runs (an interceptor
//! puts the caller, a [`Principal`], in its extensions); every handler asks [`permit`] with its
//! RPC, and the table below is the whole policy:
//!
//! | RPC | admin, local | member | viewer | node |
//! |---|---|---|---|---|
//! | Submit | ✓ | ✓ (on the nodes its token allows) | – | – |
//! | GetTask, Watch, ListTasks, ListQuestions | ✓ | own in full, others as summaries | summaries | – |
//! | Logs | ✓ | own | – | – |
//! | Cancel, Answer, AddNote, Retry, Clean | ✓ | own | – | – |
//! | ListNodes, Info | ✓ | ✓ | ✓ (no paths or commands) | – |
//! | tokens, audit | ✓ | – | – | – |
//! | AgentService.Session | local | – | – | its own name only |
//!
//! "own" is checked by the domain on the task row, inside the write's transaction.

use crate::Coordinator;
use crate::model::{Principal, Role};
use dispatch_proto::v1;
use std::sync::Arc;
use tonic::{Request, Status};

/// What a caller asks to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rpc {
    /// Submit.
    Submit,
    /// GetTask, Watch, ListTasks, ListQuestions.
    Read,
    /// Logs.
    Logs,
    /// Cancel, Answer, AddNote, Retry, Clean.
    Act,
    /// ListNodes, Info.
    Nodes,
    /// CreateToken, ListTokens, RevokeToken, ListAudit, SetNodeDraining.
    Admin,
    /// AgentService.Session.
    Session,
}

/// How much of a task the caller may see.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sight {
    /// Everything.
    All,
    /// Its own tasks in full, the others' as summaries.
    Own,
    /// Summaries only.
    Summaries,
}

fn denied(who: &Principal, what: &str) -> Status {
    let role = match who {
        Principal::User { role, .. } => role.as_str(),
        Principal::Node { .. } => "node",
        Principal::Local => "local",
    };
    Status::permission_denied(format!(
        "{} ({role}) may not {what}; ask an admin for a token with the right role",
        who.name()
    ))
}

/// Whether `who` may make a call of kind `rpc`, and how much of tasks it then sees.
pub fn permit(who: &Principal, rpc: Rpc) -> Result<Sight, Status> {
    use Role::*;
    let user = |r: Role| matches!(who, Principal::User { role, .. } if *role == r);
    let admin = who.is_admin();
    match rpc {
        Rpc::Session => match who {
            Principal::Node { .. } | Principal::Local => Ok(Sight::All),
            _ => Err(denied(
                who,
                "connect as an agent node (that takes a node token)",
            )),
        },
        Rpc::Submit | Rpc::Act | Rpc::Logs if admin => Ok(Sight::All),
        Rpc::Submit if user(Member) => Ok(Sight::Own),
        Rpc::Submit => Err(denied(who, "submit tasks")),
        Rpc::Act | Rpc::Logs if user(Member) => Ok(Sight::Own),
        Rpc::Act => Err(denied(who, "act on tasks")),
        Rpc::Logs => Err(denied(who, "read worker output")),
        Rpc::Read if admin => Ok(Sight::All),
        Rpc::Read if user(Member) => Ok(Sight::Own),
        Rpc::Read if user(Viewer) => Ok(Sight::Summaries),
        Rpc::Read => Err(denied(who, "read tasks")),
        Rpc::Nodes if admin || user(Member) => Ok(Sight::All),
        Rpc::Nodes if user(Viewer) => Ok(Sight::Summaries),
        Rpc::Nodes => Err(denied(who, "list nodes")),
        Rpc::Admin if admin => Ok(Sight::All),
        Rpc::Admin => Err(denied(
            who,
            "manage tokens, nodes and the tool policy or read the audit",
        )),
    }
}

/// The caller of a request (put there by [`authenticate`]).
pub fn caller<T>(req: &Request<T>) -> Result<Principal, Status> {
    req.extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("the request was not authenticated"))
}

/// The node a verified client certificate names (mTLS): a connection that carries one may be
/// an agent session of that node only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertName(pub String);

/// The interceptor: a connection over the Unix socket is the local owner (the socket serves
/// its own user only); anyone else must present a valid token as `authorization: Bearer …`,
/// or a client certificate of the `--client-ca` (which names a node).
pub fn authenticate(
    c: Arc<Coordinator>,
) -> impl FnMut(Request<()>) -> Result<Request<()>, Status> + Clone {
    move |mut req: Request<()>| {
        let local = req
            .extensions()
            .get::<tonic::transport::server::UdsConnectInfo>()
            .is_some();
        // rustls has verified the chain against --client-ca before any request is read.
        let cert = req
            .peer_certs()
            .and_then(|certs| certs.first().and_then(|c| crate::certs::node_name(c)));
        let header = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let who = if local {
            Principal::Local
        } else if let Some(header) = header {
            let token = header.strip_prefix("Bearer ").unwrap_or(header);
            c.tokens.principal(token).map_err(Status::from)?
        } else if let Some(name) = &cert {
            Principal::Node {
                pattern: name.clone(),
                register: None,
            }
        } else {
            return Err(Status::unauthenticated(
                "this coordinator needs a token: the CLI reads DISPATCH_TOKEN, --token-file or `token:` in its config.yaml; an agent DISPATCH_AGENT_TOKEN or --token-file; an admin makes one with `dispatch token create`",
            ));
        };
        if let Some(name) = cert {
            req.extensions_mut().insert(CertName(name));
        }
        // The connection is no stranger any more: no deadline, and it cannot be evicted.
        if let Some(peer) = req.remote_addr() {
            c.config.gate.authenticated(peer);
        }
        req.extensions_mut().insert(who);
        Ok(req)
    }
}

/// True when `who`, seeing as `sight`, sees the task owned by `owner` in full.
pub fn sees_all(who: &Principal, sight: Sight, owner: &str) -> bool {
    match sight {
        Sight::All => true,
        Sight::Own => who.owns(owner),
        Sight::Summaries => false,
    }
}

/// A task as a summary: its id, owner, state, node and how far it got; none of its content
/// (title, which may be the prompt's first line, prompt, plan texts, questions, answers,
/// reason, the worker's activity line, the fallback's note) and no paths.
pub fn summarize(t: &mut v1::Task) {
    *t = summary_of(t);
}

/// The summary of `t`, built from the fields a summary may show — an allow-list: every field
/// of `Task` is named here (no `..`), so a new one does not compile until it is decided.
fn summary_of(t: &v1::Task) -> v1::Task {
    v1::Task {
        id: t.id.clone(),
        state: t.state,
        title: String::new(),
        prompt: String::new(),
        node: t.node.clone(),
        remote: t.remote.clone(),
        backend: t.backend.clone(),
        model: t.model.clone(),
        workdir: String::new(),
        after: t.after.clone(),
        // How far it got: each item's state and depth, never its text or note.
        plan: t.plan.as_ref().map(|p| v1::Plan {
            title: String::new(),
            markdown: String::new(),
            items: p
                .items
                .iter()
                .map(|i| v1::PlanItem {
                    text: String::new(),
                    status: i.status,
                    note: String::new(),
                    depth: i.depth,
                })
                .collect(),
        }),
        // That questions were asked and answered, never what.
        questions: t
            .questions
            .iter()
            .map(|q| v1::Question {
                seq: q.seq,
                text: String::new(),
                answer: q.answer.as_ref().map(|_| String::new()),
                asked_at_ms: q.asked_at_ms,
                answered_at_ms: q.answered_at_ms,
                kind: q.kind.clone(),
            })
            .collect(),
        reason: String::new(),
        exit_code: t.exit_code,
        created_at_ms: t.created_at_ms,
        updated_at_ms: t.updated_at_ms,
        started_at_ms: t.started_at_ms,
        ended_at_ms: t.ended_at_ms,
        queue_position: t.queue_position,
        priority: t.priority,
        branch: String::new(),
        worktree: t.worktree,
        cleaned: t.cleaned,
        pool: t.pool.clone(),
        repo: None,
        attempt: t.attempt,
        owner: t.owner.clone(),
        summary: true,
        signer: t.signer.clone(),
        output_bytes: t.output_bytes,
        output_truncated: t.output_truncated,
        changes: None,
        deliver: t.deliver.clone(),
        usage: t.usage.clone(),
        // What it spends against its budget (how much, never on what).
        budget: t.budget,
        budget_step: t.budget_step,
        spend: t.spend,
        activity: String::new(),
        fallback: String::new(),
        trouble: t.trouble.clone(),
        limit_until_ms: t.limit_until_ms,
        // Names only the node, which a summary shows anyway.
        waiting: t.waiting.clone(),
        // What was said to the worker is content.
        notes: Vec::new(),
    }
}

/// A node as a viewer sees it: no commands, no host name.
pub fn summarize_node(n: &mut v1::Node) {
    n.hostname.clear();
    n.session_address.clear();
    for b in &mut n.backends {
        b.command.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every field of a task, its content marked SECRET (no `..`: a new field must be listed
    /// here, and in `summary_of`, before this compiles).
    fn full_task() -> v1::Task {
        let s = |what: &str| format!("SECRET {what}");
        v1::Task {
            id: "t1".into(),
            state: v1::TaskState::Running as i32,
            title: s("title"),
            prompt: s("prompt"),
            node: "box".into(),
            remote: "box".into(),
            backend: "claude".into(),
            model: "opus".into(),
            workdir: s("workdir"),
            after: "t0".into(),
            plan: Some(v1::Plan {
                title: s("plan title"),
                items: vec![v1::PlanItem {
                    text: s("item"),
                    status: v1::ItemStatus::Done as i32,
                    note: s("note"),
                    depth: 1,
                }],
                markdown: s("markdown"),
            }),
            questions: vec![v1::Question {
                seq: 1,
                text: s("question"),
                answer: Some(s("answer")),
                asked_at_ms: 1,
                answered_at_ms: 2,
                kind: "budget".into(),
            }],
            reason: s("reason"),
            exit_code: Some(1),
            created_at_ms: 1,
            updated_at_ms: 2,
            started_at_ms: 3,
            ended_at_ms: 4,
            queue_position: 0,
            priority: 2,
            branch: s("branch"),
            worktree: true,
            cleaned: false,
            pool: [("gpu".to_string(), "a100".to_string())].into(),
            repo: Some(v1::Repo {
                url: s("repo"),
                branch: s("repo branch"),
                commit: s("commit"),
            }),
            attempt: 2,
            owner: "alice".into(),
            summary: false,
            signer: "ed25519:key".into(),
            output_bytes: 10,
            output_truncated: false,
            changes: Some(v1::ChangesInfo {
                branch: s("changes branch"),
                error: s("changes error"),
                ..Default::default()
            }),
            deliver: "bundle".into(),
            usage: Some(v1::Usage {
                model: "claude-opus-5-5".into(),
                ..Default::default()
            }),
            budget: Some(v1::Budget {
                usd_micros: 5_000_000,
                tokens: 0,
            }),
            budget_step: Some(v1::Budget {
                usd_micros: 5_000_000,
                tokens: 0,
            }),
            spend: Some(v1::Spend {
                usd_micros: 1,
                tokens: 2,
                estimated: true,
            }),
            activity: s("activity: asked what is the staging DB password?"),
            fallback: s("fallback note"),
            trouble: "auth".into(),
            limit_until_ms: 0,
            waiting: "node `box` is cordoned".into(),
            notes: vec![v1::Note {
                text: s("note"),
                author: s("author"),
                at_ms: 1,
            }],
        }
    }

    #[test]
    fn a_summary_shows_only_what_its_allow_list_names() {
        let mut t = full_task();
        summarize(&mut t);
        let shown = format!("{t:?}");
        assert!(!shown.contains("SECRET"), "a summary leaks: {shown}");
        assert!(t.summary);
        // What it may show is kept: how far it got, that a question was answered.
        assert_eq!(
            (t.id.as_str(), t.owner.as_str(), t.node.as_str()),
            ("t1", "alice", "box")
        );
        assert_eq!(
            t.plan.as_ref().unwrap().items[0].status,
            v1::ItemStatus::Done as i32
        );
        assert_eq!(t.questions[0].answer.as_deref(), Some(""));
    }
}
