//! Code changes come home: when a worktree or remote-workspace task's worker ends, its work is
//! committed on branch `dispatch/<task>` (the worker's own commits kept; what it left
//! uncommitted in one commit "dispatch: <title>" by the node's identity) — never on another
//! branch — and delivered: as a `git bundle` of the branch through the coordinator (bounded),
//! or pushed to the repository's origin with the node's own credentials.

use dispatch_core::repo_url::RepoPolicy;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// How a task's branch leaves the node.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Deliver {
    /// A bundle through the coordinator.
    #[default]
    Bundle,
    /// `git push origin dispatch/<task>` with the node's credentials.
    Push,
}

impl Deliver {
    /// Parses `bundle` or `push`.
    pub fn parse(s: &str) -> Result<Deliver, String> {
        match s {
            "bundle" => Ok(Deliver::Bundle),
            "push" => Ok(Deliver::Push),
            other => Err(format!(
                "`{other}` is not a way to deliver changes; use bundle or push"
            )),
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Deliver::Bundle => "bundle",
            Deliver::Push => "push",
        }
    }
}

/// The node's side of delivering changes (its config's `changes:`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// How, unless the task says.
    pub deliver: Deliver,
    /// Largest bundle sent through the coordinator.
    pub max_bundle_bytes: u64,
    /// Committer of what a worker left uncommitted.
    pub name: String,
    /// Its email.
    pub email: String,
}

impl Policy {
    /// The config file's `changes:` over these defaults.
    pub fn apply(&mut self, file: &dispatch_core::agent_config::ChangesFile) -> Result<(), String> {
        if let Some(d) = &file.deliver {
            self.deliver = Deliver::parse(d)?;
        }
        if let Some(m) = file.max_bundle_bytes {
            self.max_bundle_bytes = m;
        }
        if let Some(n) = &file.name {
            self.name = n.clone();
        }
        if let Some(e) = &file.email {
            self.email = e.clone();
        }
        Ok(())
    }

    /// Bundles of up to 64 MiB, committed as "dispatch on NODE <dispatch@NODE>".
    pub fn for_node(node: &str) -> Policy {
        Policy {
            deliver: Deliver::Bundle,
            max_bundle_bytes: 64 * 1024 * 1024,
            name: format!("dispatch on {node}"),
            email: format!("dispatch@{node}"),
        }
    }
}

/// Where a task's changes are and what they start from, kept with its run record so a
/// re-attached worker's changes come home too.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Spec {
    /// The worktree or workspace the worker ran in.
    pub dir: PathBuf,
    /// The commit a remote workspace started from; for a worktree task, "" (its fork point
    /// from the checkout's HEAD is used).
    pub base: String,
    /// The repository checkout a worktree belongs to ("" for a workspace).
    pub root: PathBuf,
    /// The commit message of uncommitted work: "dispatch: <title>".
    pub title: String,
    /// How to deliver (the task's choice, else the node's).
    pub deliver: Deliver,
}

/// What came of it (sent to the coordinator as `ChangesReady`, the bundle in chunks).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Collected {
    /// `dispatch/<task>`.
    pub branch: String,
    /// The commit the changes start from.
    pub base: String,
    /// The branch's head.
    pub head: String,
    /// Commits on the branch since `base`.
    pub commits: u32,
    /// Files changed, lines added and removed.
    pub files: u32,
    /// Lines added.
    pub insertions: u64,
    /// Lines removed.
    pub deletions: u64,
    /// `git diff base head`, its first `max_diff` bytes.
    pub diff: String,
    /// Whether the diff was cut.
    pub diff_truncated: bool,
    /// `bundle`, `push`, or "" when there is nothing to deliver.
    pub delivery: String,
    /// Where it was pushed (the origin URL without credentials).
    pub pushed_to: String,
    /// The bundle.
    pub bundle: Vec<u8>,
    /// What went wrong delivering (the changes stay on the node's branch).
    pub error: String,
}

fn git(dir: &Path, config: &[String], args: &[&str]) -> Result<Vec<u8>, String> {
    dispatch_core::git::Git {
        config: config.to_vec(),
        env: Vec::new(),
    }
    .output(dir, args)
    .map_err(|e| e.to_string())
}

fn text(dir: &Path, args: &[&str]) -> Result<String, String> {
    git(dir, &[], args).map(|o| String::from_utf8_lossy(&o).trim().to_string())
}

/// Puts a detached workspace on branch `dispatch/<task>` before the worker starts, so its
/// commits land there.
pub fn start_branch(dir: &Path, task: &str) -> Result<(), String> {
    let branch = crate::worktree::branch(task);
    if text(dir, &["symbolic-ref", "-q", "--short", "HEAD"])
        .ok()
        .as_deref()
        == Some(branch.as_str())
    {
        return Ok(());
    }
    text(dir, &["checkout", "-q", "-B", &branch]).map(drop)
}

/// `N files changed, A insertions(+), D deletions(-)` → (N, A, D).
fn shortstat(s: &str) -> (u32, u64, u64) {
    let mut out = (0, 0, 0);
    for part in s.split(',') {
        let mut words = part.split_whitespace();
        let n: u64 = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
        match words.next().unwrap_or("") {
            w if w.starts_with("file") => out.0 = n as u32,
            w if w.starts_with("insertion") => out.1 = n,
            w if w.starts_with("deletion") => out.2 = n,
            _ => {}
        }
    }
    out
}

/// Commits what the worker left, then delivers the branch; `max_diff` bounds the diff text
/// kept for `dispatch diff`. Never fails: what went wrong is in `error`.
pub fn collect(
    spec: &Spec,
    task: &str,
    policy: &Policy,
    repos: &RepoPolicy,
    max_diff: usize,
) -> Collected {
    let mut c = Collected {
        branch: crate::worktree::branch(task),
        ..Default::default()
    };
    if let Err(e) = commit_and_measure(spec, policy, &mut c, max_diff) {
        c.error = format!("{e}; the work stays in {} on the node", spec.dir.display());
        return c;
    }
    if c.commits == 0 {
        return c;
    }
    c.delivery = spec.deliver.as_str().to_string();
    let r = match spec.deliver {
        Deliver::Bundle => bundle(spec, policy, &mut c),
        Deliver::Push => push(spec, repos, &mut c),
    };
    if let Err(e) = r {
        c.error = e;
    }
    c
}

fn commit_and_measure(
    spec: &Spec,
    policy: &Policy,
    c: &mut Collected,
    max_diff: usize,
) -> Result<(), String> {
    let dir = &spec.dir;
    start_branch(dir, task_of(&c.branch))?;
    // .dispatch/ is excluded (info/exclude): task files never enter the branch.
    text(dir, &["add", "-A"])?;
    if git(dir, &[], &["diff", "--cached", "--quiet"]).is_err() {
        let ident = [
            format!("user.name={}", policy.name),
            format!("user.email={}", policy.email),
        ];
        let message = format!("dispatch: {}", spec.title.trim());
        git(
            dir,
            &ident,
            &["commit", "-q", "--no-verify", "-m", &message],
        )?;
    }
    c.head = text(dir, &["rev-parse", "HEAD"])?;
    c.base = if spec.base.is_empty() {
        // A worktree: where its branch left the checkout's current branch.
        let root_head = text(&spec.root, &["rev-parse", "HEAD"])?;
        text(&spec.root, &["merge-base", &root_head, &c.head])?
    } else {
        spec.base.clone()
    };
    if c.base == c.head {
        return Ok(());
    }
    let range = format!("{}..{}", c.base, c.head);
    c.commits = text(dir, &["rev-list", "--count", &range])?
        .parse()
        .unwrap_or(0);
    let (files, ins, del) = shortstat(&text(dir, &["diff", "--shortstat", &c.base, &c.head])?);
    (c.files, c.insertions, c.deletions) = (files, ins, del);
    let diff = git(dir, &[], &["diff", "--binary", &c.base, &c.head])?;
    c.diff_truncated = diff.len() > max_diff;
    let mut kept = &diff[..diff.len().min(max_diff)];
    if c.diff_truncated {
        // Cut at a line.
        if let Some(i) = kept.iter().rposition(|b| *b == b'\n') {
            kept = &kept[..=i];
        }
    }
    c.diff = String::from_utf8_lossy(kept).into_owned();
    Ok(())
}

fn task_of(branch: &str) -> &str {
    branch.strip_prefix("dispatch/").unwrap_or(branch)
}

fn bundle(spec: &Spec, policy: &Policy, c: &mut Collected) -> Result<(), String> {
    let file = std::env::temp_dir().join(format!(
        "dispatch-{}-{}.bundle",
        task_of(&c.branch),
        std::process::id()
    ));
    let f = file.display().to_string();
    let r = git(
        &spec.dir,
        &[],
        &[
            "bundle",
            "create",
            "-q",
            &f,
            &c.branch,
            &format!("^{}", c.base),
        ],
    )
    .and_then(|_| std::fs::read(&file).map_err(|e| format!("cannot read the bundle: {e}")));
    let _ = std::fs::remove_file(&file);
    let data = r?;
    if data.len() as u64 > policy.max_bundle_bytes {
        return Err(format!(
            "the branch's bundle is {}, over this node's limit of {}: the changes stay on the node in {}. Deliver such changes by push instead: dispatch with --deliver push (or set `changes: {{ deliver: push }}` in the node's config), with credentials for the repository's origin on the node",
            dispatch_core::fs::human_bytes(data.len() as u64),
            dispatch_core::fs::human_bytes(policy.max_bundle_bytes),
            spec.dir.display()
        ));
    }
    c.bundle = data;
    Ok(())
}

fn push(spec: &Spec, repos: &RepoPolicy, c: &mut Collected) -> Result<(), String> {
    // Where a push of origin would go (its push URL, when it has one), checked and pinned, and
    // pushed to by URL.
    let origin = text(&spec.dir, &["remote", "get-url", "--push", "origin"])
        .map_err(|_| "the repository has no origin to push to; deliver by bundle".to_string())?;
    let net = crate::egress::reach(repos, &origin, &crate::egress::SystemNetwork)?;
    let shown = net.shown.clone();
    net.run(
        &spec.dir,
        &[
            "push",
            "-q",
            "--",
            &origin,
            &format!("+{}:refs/heads/{}", c.head, c.branch),
        ],
    )
    .map_err(|e| {
        format!(
            "pushing {} to {shown} failed ({}); the changes stay on the node in {}",
            c.branch,
            dispatch_core::text::printable_line(&e),
            spec.dir.display()
        )
    })?;
    c.pushed_to = shown;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shortstat_reads_gits_summary() {
        assert_eq!(
            shortstat(" 3 files changed, 10 insertions(+), 2 deletions(-)"),
            (3, 10, 2)
        );
        assert_eq!(shortstat(" 1 file changed, 1 insertion(+)"), (1, 1, 0));
        assert_eq!(shortstat(""), (0, 0, 0));
    }
}
