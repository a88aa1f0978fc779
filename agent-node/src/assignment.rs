//! One worker run the coordinator assigned to this node, as the agent works on it: converted
//! from the wire's `v1::Assign` once, at the edge (the connection loop), and checked there —
//! as the coordinator converts its own messages in `convert.rs`.

use crate::changes::Deliver;
use dispatch_proto::v1;
use std::path::PathBuf;

/// A worker run to start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    /// The task id (valid: checked at the edge).
    pub task: String,
    /// Which worker run of the task (1 for the first; the wire's 0 is read as 1).
    pub attempt: u32,
    /// The backend to run.
    pub backend: String,
    /// The model, when the task names one.
    pub model: Option<String>,
    /// The full worker prompt (the seed's template, filled in).
    pub prompt: String,
    /// The plan.md to start from.
    pub plan: String,
    /// The task's own workdir (None: the node's default).
    pub workdir: Option<PathBuf>,
    /// Run in a git worktree of the workdir's repository on branch `dispatch/<task>`.
    pub worktree: bool,
    /// Run in a worktree of this repository at its commit (used when `workdir` is None).
    pub repo: Option<RepoAt>,
    /// The highest event seq the coordinator has committed for the task.
    pub last_seq: u64,
    /// How the task's branch comes home (None: the node's default).
    pub deliver: Option<Deliver>,
    /// The spec exactly as its submitter signed it, and the signature.
    pub signed: Option<Signed>,
    /// The W3C traceparent of the coordinator's assignment span ("" when not traced).
    pub traceparent: String,
    /// Run the worker under tool approvals (its CLI asks before each tool call).
    pub approvals: bool,
    /// The task has a budget: its tool calls go through the coordinator too, where its CLI
    /// has a hook for it (Claude Code), with its permission mode as without approvals.
    pub tool_hook: bool,
}

/// A repository at a commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoAt {
    /// Its URL (not empty).
    pub url: String,
    /// The commit.
    pub commit: String,
}

/// A signed task's spec (JSON, as signed) and ed25519 signature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signed {
    /// The spec.
    pub spec: Vec<u8>,
    /// The signature.
    pub signature: Vec<u8>,
}

/// Where a worker runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// In the workdir itself.
    Dir,
    /// In a worktree of the workdir's repository.
    Worktree,
    /// In a workspace made from [`Assignment::repo`].
    Repo,
}

impl Assignment {
    /// Where the worker runs.
    pub fn place(&self) -> Place {
        match (&self.workdir, &self.repo, self.worktree) {
            (None, Some(_), _) => Place::Repo,
            (_, _, true) => Place::Worktree,
            _ => Place::Dir,
        }
    }

    /// What a signed spec is checked against: the assignment as the wire carried it.
    pub fn assigned<'a>(
        &'a self,
        node: &'a str,
        now_ms: i64,
    ) -> dispatch_core::signing::Assigned<'a> {
        dispatch_core::signing::Assigned {
            task_id: &self.task,
            attempt: self.attempt,
            worker_prompt: &self.prompt,
            plan: &self.plan,
            backend: &self.backend,
            model: self.model.as_deref().unwrap_or(""),
            workdir: self
                .workdir
                .as_deref()
                .and_then(|w| w.to_str())
                .unwrap_or(""),
            worktree: self.worktree,
            repo_url: self.repo.as_ref().map_or("", |r| &r.url),
            commit: self.repo.as_ref().map_or("", |r| &r.commit),
            node,
            now_ms,
        }
    }
}

/// Why an Assign cannot become an [`Assignment`]; `task` and `attempt` are those it named,
/// for reporting (`task_ok`: the id is valid, so the failure can be reported as the task's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadAssign {
    /// What is wrong, with what to do.
    pub reason: String,
    /// The task it named.
    pub task: String,
    /// The worker run it named.
    pub attempt: u32,
    /// The task id is valid (the failure is reported as the task's start failure).
    pub task_ok: bool,
}

impl TryFrom<v1::Assign> for Assignment {
    type Error = BadAssign;

    fn try_from(a: v1::Assign) -> Result<Assignment, BadAssign> {
        let attempt = a.attempt.max(1);
        let bad = |reason: String, task_ok: bool| BadAssign {
            reason,
            task: a.task_id.clone(),
            attempt,
            task_ok,
        };
        dispatch_core::task_id::validate(&a.task_id).map_err(|e| bad(e.to_string(), false))?;
        let deliver = match a.deliver.as_str() {
            "" => None,
            d => Some(Deliver::parse(d).map_err(|e| bad(e, true))?),
        };
        let nonempty = |s: String| (!s.is_empty()).then_some(s);
        Ok(Assignment {
            attempt,
            backend: a.backend,
            model: nonempty(a.model),
            prompt: a.worker_prompt,
            plan: a.plan_markdown,
            workdir: nonempty(a.workdir).map(PathBuf::from),
            worktree: a.worktree,
            repo: a.repo.filter(|r| !r.url.is_empty()).map(|r| RepoAt {
                url: r.url,
                commit: r.commit,
            }),
            last_seq: a.last_seq,
            deliver,
            signed: (!a.signed_spec.is_empty()).then_some(Signed {
                spec: a.signed_spec,
                signature: a.signature,
            }),
            traceparent: a.traceparent,
            approvals: a.approvals,
            tool_hook: a.tool_hook,
            task: a.task_id,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wire() -> v1::Assign {
        v1::Assign {
            task_id: "fix-login".into(),
            backend: "claude".into(),
            worker_prompt: "do it".into(),
            plan_markdown: "# Fix\n- [ ] a\n".into(),
            ..Default::default()
        }
    }

    #[test]
    fn an_assign_is_read_once_into_what_the_agent_works_on() {
        let a = Assignment::try_from(wire()).unwrap();
        assert_eq!(a.attempt, 1, "the wire's 0 is the first run");
        assert_eq!(a.place(), Place::Dir);
        assert_eq!(
            (a.model, a.workdir, a.deliver, a.signed),
            (None, None, None, None)
        );

        let mut w = wire();
        w.workdir = String::new();
        w.repo = Some(v1::Repo {
            url: "https://example.com/r.git".into(),
            branch: String::new(),
            commit: "abc".into(),
        });
        w.deliver = "push".into();
        w.attempt = 3;
        let a = Assignment::try_from(w).unwrap();
        assert_eq!(
            (a.place(), a.deliver, a.attempt),
            (Place::Repo, Some(Deliver::Push), 3)
        );

        // A workdir wins over a repository; a worktree of it when asked.
        let mut w = wire();
        w.workdir = "/src/app".into();
        w.worktree = true;
        w.repo = Some(v1::Repo {
            url: "https://example.com/r.git".into(),
            ..Default::default()
        });
        let a = Assignment::try_from(w).unwrap();
        assert_eq!(a.place(), Place::Worktree);
        let s = a.assigned("n", 0);
        assert_eq!(
            (s.workdir, s.repo_url, s.model),
            ("/src/app", "https://example.com/r.git", "")
        );
    }

    #[test]
    fn a_bad_assign_says_what_and_whether_the_task_can_be_told() {
        let mut w = wire();
        w.task_id = "../etc".into();
        let e = Assignment::try_from(w).unwrap_err();
        assert!(!e.task_ok, "{e:?}");
        let mut w = wire();
        w.deliver = "carrier-pigeon".into();
        let e = Assignment::try_from(w).unwrap_err();
        assert!(e.task_ok && e.reason.contains("bundle or push"), "{e:?}");
    }
}
