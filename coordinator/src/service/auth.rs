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
        Rpc::Admin => Err(denied(who, "manage tokens and nodes or read the audit")),
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
            }
        } else {
            return Err(Status::unauthenticated(
                "this coordinator needs a token: set DISPATCH_TOKEN (or `token:` in ~/.dispatch/config.yaml, or the agent's --token-file); an admin makes one with `dispatch token create`",
            ));
        };
        if let Some(name) = cert {
            req.extensions_mut().insert(CertName(name));
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
/// reason) and no paths.
pub fn summarize(t: &mut v1::Task) {
    t.summary = true;
    t.title.clear();
    t.prompt.clear();
    t.reason.clear();
    t.workdir.clear();
    t.branch.clear();
    t.repo = None;
    t.changes = None;
    if let Some(p) = &mut t.plan {
        p.markdown.clear();
        p.title.clear();
        for i in &mut p.items {
            i.text.clear();
            i.note.clear();
        }
    }
    for q in &mut t.questions {
        q.text.clear();
        if q.answer.is_some() {
            q.answer = Some(String::new());
        }
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
