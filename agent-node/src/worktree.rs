//! Worktree isolation: a task can run in `git worktree add` on branch `dispatch/<task-id>`,
//! at `<repo>/.dispatch/worktrees/<task-id>`, kept after the task for review.

use crate::egress::GitReach;
use dispatch_core::repo_url::RepoPolicy;
use std::path::{Path, PathBuf};

fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    GitReach::local().run(dir, args)
}

/// The repository root of `workdir`.
pub fn repo_root(workdir: &Path) -> Result<PathBuf, String> {
    git(workdir, &["rev-parse", "--show-toplevel"])
        .map(PathBuf::from)
        .map_err(|e| {
            format!(
                "{} is not in a git repository, which a worktree task needs ({e})",
                workdir.display()
            )
        })
}

/// Branch of a task's worktree.
pub fn branch(task: &str) -> String {
    format!("dispatch/{task}")
}

/// Where the worktree of `task` lives for `workdir`.
pub fn path(workdir: &Path, task: &str) -> Result<PathBuf, String> {
    Ok(repo_root(workdir)?
        .join(".dispatch")
        .join("worktrees")
        .join(task))
}

/// Creates (or reuses) the worktree of `task`; returns its path.
pub fn ensure(workdir: &Path, task: &str) -> Result<PathBuf, String> {
    let root = repo_root(workdir)?;
    let dir = root.join(".dispatch").join("worktrees").join(task);
    exclude_dispatch_dir(&root)?;
    if dir.join(".git").exists() {
        return Ok(dir);
    }
    let b = branch(task);
    let d = dir.display().to_string();
    let has_branch = git(
        &root,
        &[
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{b}"),
        ],
    )
    .is_ok();
    let res = if has_branch {
        git(&root, &["worktree", "add", &d, &b])
    } else {
        git(&root, &["worktree", "add", "-b", &b, &d])
    };
    res.map_err(|e| format!("git worktree add {d} failed: {e}"))?;
    refuse_planted(&root, &dir)?;
    Ok(dir)
}

/// A checkout that carries its own `.dispatch/` (committed to the repository) is refused: the
/// task directory would be the repository's, and its files could be links planted to make the
/// node read or write something else. The worktree is removed again.
fn refuse_planted(root: &Path, checkout: &Path) -> Result<(), String> {
    if std::fs::symlink_metadata(checkout.join(".dispatch")).is_err() {
        return Ok(());
    }
    let d = checkout.display().to_string();
    let _ = git(root, &["worktree", "remove", "--force", &d]);
    Err(
        "the repository's checkout carries its own .dispatch/ (it is committed there); dispatch does not run a task in it, since its task files could be planted links — remove .dispatch/ from the repository (and add it to .gitignore)"
            .to_string(),
    )
}

/// What a failed clone or fetch tells the submitter: the kind of failure, not git's text
/// (which could carry what a probe of the node's network found). git's own message is in the
/// node's log.
fn clone_failure(what: &str, url: &str, git_says: &str) -> String {
    tracing::warn!(%url, error = %git_says, "{what} failed");
    let e = git_says.to_ascii_lowercase();
    let kind = if e.contains("could not resolve host") {
        "the host name does not resolve from the node"
    } else if e.contains("authentication")
        || e.contains("permission denied")
        || e.contains("could not read username")
    {
        "the node has no access to it (its git credentials or SSH key)"
    } else if e.contains("not found")
        || e.contains("does not exist")
        || e.contains("does not appear to be a git repository")
    {
        "no such repository, or the node has no access to it"
    } else if e.contains("timed out")
        || e.contains("connection refused")
        || e.contains("unable to access")
    {
        "the node cannot reach it"
    } else {
        "git failed"
    };
    format!("{what} {url} failed: {kind}; the node's log has git's message")
}

/// Keeps `.dispatch/` (task files, worktrees) out of `git status` in the repository and all
/// its worktrees, through the shared `info/exclude`.
fn exclude_dispatch_dir(root: &Path) -> Result<(), String> {
    let common = PathBuf::from(git(root, &["rev-parse", "--git-common-dir"])?);
    let common = if common.is_absolute() {
        common
    } else {
        root.join(common)
    };
    let exclude = common.join("info").join("exclude");
    let current = std::fs::read_to_string(&exclude).unwrap_or_default();
    if current.lines().any(|l| {
        matches!(
            l.trim(),
            ".dispatch/" | "/.dispatch/" | ".dispatch" | "/.dispatch"
        )
    }) {
        return Ok(());
    }
    std::fs::create_dir_all(common.join("info")).map_err(|e| e.to_string())?;
    let mut body = current;
    if !body.is_empty() && !body.ends_with('\n') {
        body.push('\n');
    }
    body.push_str("# dispatch task files and worktrees\n.dispatch/\n");
    std::fs::write(&exclude, body).map_err(|e| format!("cannot update {}: {e}", exclude.display()))
}

/// Removes the worktree of `task` (its branch stays, with the work on it).
pub fn remove(workdir: &Path, task: &str) -> Result<(), String> {
    let root = repo_root(workdir)?;
    let dir = root.join(".dispatch").join("worktrees").join(task);
    if !dir.exists() {
        let _ = git(&root, &["worktree", "prune"]);
        return Ok(());
    }
    git(
        &root,
        &["worktree", "remove", "--force", &dir.display().to_string()],
    )
    .map(|_| ())
    .map_err(|e| format!("git worktree remove failed: {e}"))
}

fn normalize_url(url: &str) -> String {
    url.trim()
        .trim_end_matches('/')
        .trim_end_matches(".git")
        .to_string()
}

/// Remote workspaces: a worktree at `commit` of the repository at `url`, made from a checkout
/// the node has (one of `checkouts` whose `origin` matches) or from a clone in `cache`
/// (`git clone --filter=blob:none`). The worktree is `workspaces/<task>`. Errors carry git's
/// message.
pub fn repo_workspace(
    checkouts: &[PathBuf],
    cache: &Path,
    workspaces: &Path,
    policy: &RepoPolicy,
    url: &str,
    commit: &str,
    task: &str,
) -> Result<PathBuf, String> {
    let dest = workspaces.join(task);
    if dest.join(".git").exists() {
        return Ok(dest);
    }
    // Resolved and checked once: every clone and fetch below goes to that address.
    let net = crate::egress::reach(policy, url, &crate::egress::SystemNetwork)?;
    let shown = net.shown.clone();
    let want = normalize_url(&shown);
    let existing = checkouts.iter().find_map(|c| {
        let root = repo_root(c).ok()?;
        let origin = git(&root, &["remote", "get-url", "origin"]).ok()?;
        (normalize_url(&dispatch_core::repo_url::redact(&origin)) == want).then_some(root)
    });
    let base = match existing {
        Some(root) => root,
        None => {
            let name: String = want
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            let dir = cache.join(name);
            if !dir.join(".git").exists() && !dir.join("HEAD").exists() {
                std::fs::create_dir_all(cache)
                    .map_err(|e| format!("cannot create {}: {e}", cache.display()))?;
                let d = dir.display().to_string();
                net.run(
                    cache,
                    &[
                        "clone",
                        "--quiet",
                        "--filter=blob:none",
                        "--no-checkout",
                        "--",
                        url,
                        &d,
                    ],
                )
                .map_err(|e| clone_failure("git clone", &shown, &e))?;
                // The clone's origin keeps no credentials the URL carried.
                let _ = git(&dir, &["remote", "set-url", "origin", &shown]);
            }
            dir
        }
    };
    let have = |c: &str| git(&base, &["cat-file", "-e", &format!("{c}^{{commit}}")]).is_ok();
    if !have(commit) {
        net.run(&base, &["fetch", "--quiet", "--filter=blob:none", "origin"])
            .map_err(|e| clone_failure("git fetch from", &shown, &e))?;
        if !have(commit) {
            // A commit no branch points to any more can still be fetched by id from most servers.
            net.run(
                &base,
                &["fetch", "--quiet", "--filter=blob:none", "origin", commit],
            )
            .map_err(|_| {
                format!(
                    "commit {commit} is not in {shown}{}",
                    dispatch_core::repo_url::NOT_PUSHED
                )
            })?;
        }
    }
    std::fs::create_dir_all(workspaces)
        .map_err(|e| format!("cannot create {}: {e}", workspaces.display()))?;
    let d = dest.display().to_string();
    git(
        &base,
        &["worktree", "add", "--quiet", "--detach", &d, commit],
    )
    .map_err(|e| format!("git worktree add at {commit} failed: {e}"))?;
    exclude_dispatch_dir(&base)?;
    refuse_planted(&base, &dest)?;
    Ok(dest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_reuse_and_remove() {
        let repo = tempfile::tempdir().unwrap();
        let r = repo.path();
        for args in [
            vec!["init", "-q", "-b", "main"],
            vec![
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-q",
                "--allow-empty",
                "-m",
                "init",
            ],
        ] {
            git(r, &args).unwrap();
        }
        let sub = r.join("src");
        std::fs::create_dir_all(&sub).unwrap();
        let wt = ensure(&sub, "t1").unwrap();
        assert_eq!(
            wt,
            std::fs::canonicalize(r)
                .unwrap()
                .join(".dispatch/worktrees/t1")
        );
        assert_eq!(
            git(&wt, &["rev-parse", "--abbrev-ref", "HEAD"]).unwrap(),
            "dispatch/t1"
        );
        assert_eq!(ensure(&sub, "t1").unwrap(), wt, "reused");
        assert_eq!(
            git(r, &["status", "--porcelain"]).unwrap(),
            "",
            ".dispatch/ is excluded"
        );
        remove(&sub, "t1").unwrap();
        assert!(!wt.exists());
        assert!(
            git(r, &["rev-parse", "--verify", "dispatch/t1"]).is_ok(),
            "the branch stays"
        );
        let again = ensure(&sub, "t1").unwrap();
        assert!(
            again.exists(),
            "a worktree can be made again on the kept branch"
        );
    }
}
