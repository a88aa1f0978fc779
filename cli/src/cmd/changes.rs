//! `dispatch diff`, `fetch` and `apply`: a worktree or remote-workspace task's branch, brought
//! into the user's repository from the bundle its node sent through the coordinator, or from
//! origin when the node pushed it.

use crate::client::{Target, connect};
use crate::settings::Settings;
use anyhow::{Context, Result, anyhow, bail};
use dispatch_core::task_id;
use dispatch_core::text::{printable, printable_line};
use dispatch_proto::v1;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};

fn git(dir: &Path, args: &[&str]) -> Result<String> {
    dispatch_core::git::Git::local()
        .run(dir, args)
        .map_err(|e| match e {
            dispatch_core::git::GitError::Spawn(e) => {
                anyhow!("cannot run git ({e}); dispatch fetch and apply need git installed")
            }
            failed => anyhow!(failed.to_string()),
        })
}

fn short(commit: &str) -> &str {
    &commit[..commit.len().min(12)]
}

/// One line: "2 commits, 3 files (+10 −2) on dispatch/x".
fn summary(i: &v1::ChangesInfo) -> String {
    format!(
        "{} commit{}, {} file{} (+{} −{}) on {}",
        i.commits,
        if i.commits == 1 { "" } else { "s" },
        i.files,
        if i.files == 1 { "" } else { "s" },
        i.insertions,
        i.deletions,
        printable_line(&i.branch)
    )
}

/// The task's changes, or why it has none to show.
async fn lookup(t: &mut Target, id: &str) -> Result<Result<(v1::ChangesInfo, String), String>> {
    task_id::validate(id)?;
    let r = t
        .client
        .get_changes(v1::GetChangesRequest { id: id.to_string() })
        .await?
        .into_inner();
    Ok(match r.info {
        Some(info) => Ok((info, r.diff)),
        None => Err(r.none),
    })
}

async fn changes(t: &mut Target, id: &str) -> Result<(v1::ChangesInfo, String)> {
    lookup(t, id)
        .await?
        .map_err(|why| anyhow!("{}", printable(&why)))
}

pub(crate) async fn diff(g: &Settings, id: &str) -> Result<crate::exit::Exit> {
    let mut t = connect(g).await?;
    let (info, diff) = match lookup(&mut t, id).await? {
        Ok(found) => found,
        // Nothing to show is an answer, not an error.
        Err(why) => {
            if g.json {
                println!(
                    "{}",
                    serde_json::json!({"task": id, "changes": null, "why": why})
                );
            } else {
                eprintln!("{}", printable(&why));
            }
            return Ok(crate::exit::Exit::Success);
        }
    };
    if g.json {
        println!(
            "{}",
            serde_json::json!({"task": id, "branch": info.branch, "base": info.base, "head": info.head, "commits": info.commits, "files": info.files, "insertions": info.insertions, "deletions": info.deletions, "delivery": info.delivery, "pushed_to": info.pushed_to, "error": info.error, "diff": diff, "diff_truncated": info.diff_truncated})
        );
        return Ok(crate::exit::Exit::Success);
    }
    if info.commits == 0 {
        eprintln!("`{id}` changed nothing in its repository.");
        return Ok(crate::exit::Exit::Success);
    }
    eprintln!(
        "`{id}`: {} ({}..{})",
        summary(&info),
        short(&info.base),
        short(&info.head)
    );
    let mut out = std::io::stdout().lock();
    // The patch is the worker's text: on a terminal no escape sequence takes effect.
    if std::io::stdout().is_terminal() {
        out.write_all(printable(&diff).as_bytes())?;
    } else {
        out.write_all(diff.as_bytes())?;
    }
    out.flush()?;
    if info.diff_truncated {
        eprintln!(
            "(the diff is cut at {}; `dispatch fetch {id}` then `git diff {}..{}` shows all of it)",
            dispatch_core::fs::human_bytes(dispatch_core::limits::MAX_DIFF_BYTES as u64),
            short(&info.base),
            printable_line(&info.branch)
        );
    }
    Ok(crate::exit::Exit::Success)
}

/// The repository of `dir` (None: the current directory).
fn here(dir: Option<&Path>) -> Result<PathBuf> {
    let cwd = match dir {
        Some(d) => d.to_path_buf(),
        None => std::env::current_dir().context("cannot read the current directory")?,
    };
    git(&cwd, &["rev-parse", "--show-toplevel"])
        .map(PathBuf::from)
        .map_err(|_| {
            anyhow!(
                "{} is not in a git repository; run this in a clone of the task's repository",
                cwd.display()
            )
        })
}

/// Brings the task's branch into the repository of `dir` (None: the current directory);
/// returns its info and the repository.
pub(crate) async fn fetch(
    g: &Settings,
    id: &str,
    dir: Option<&Path>,
) -> Result<(v1::ChangesInfo, PathBuf)> {
    let mut t = connect(g).await?;
    let (info, _) = changes(&mut t, id).await?;
    if info.commits == 0 {
        bail!("`{id}` changed nothing in its repository; there is no branch to fetch");
    }
    let repo = here(dir)?;
    // The task's own branch, and no other: what a node or coordinator names is not trusted.
    task_id::validate(id)?;
    let branch = format!("dispatch/{id}");
    if info.branch != branch {
        bail!(
            "the coordinator names branch `{}` for `{id}`; only `{branch}` is taken (nothing was changed)",
            printable_line(&info.branch)
        );
    }
    // Fetched into a ref of dispatch's own first: a branch here is only ever moved forward.
    let scratch = format!("refs/dispatch-fetch/{id}");
    let current = git(&repo, &["symbolic-ref", "-q", "--short", "HEAD"]).unwrap_or_default();
    if current == branch {
        bail!("you are on {branch}; switch to another branch to fetch it");
    }
    let have_head = git(
        &repo,
        &["cat-file", "-e", &format!("{}^{{commit}}", info.head)],
    )
    .is_ok();
    if !have_head {
        match info.delivery.as_str() {
            "bundle" => fetch_bundle(&mut t, id, &info, &repo, &scratch).await?,
            "push" => {
                git(
                    &repo,
                    &["fetch", "-q", "origin", &format!("+refs/heads/{branch}:{scratch}")],
                )
                .map_err(|e| {
                    anyhow!(
                        "{e}\nThe node pushed {branch} to {}; this repository's origin must be that repository",
                        printable_line(&info.pushed_to)
                    )
                })?;
            }
            _ if !info.error.is_empty() => {
                bail!(
                    "`{id}`'s changes did not come home: {}",
                    printable(&info.error)
                )
            }
            other => {
                bail!("`{id}`'s changes came home by `{other}`, which this dispatch cannot fetch")
            }
        }
    }
    // The branch points at exactly what the task made (a local-mode worktree task's branch is
    // already here, checked out in its worktree).
    let at = git(
        &repo,
        &[
            "rev-parse",
            "-q",
            "--verify",
            &format!("refs/heads/{branch}"),
        ],
    )
    .ok();
    let _ = git(&repo, &["update-ref", "-d", &scratch]);
    match at {
        Some(at) if at == info.head => {}
        None => {
            git(
                &repo,
                &[
                    "update-ref",
                    &format!("refs/heads/{branch}"),
                    &info.head,
                    "",
                ],
            )?;
        }
        // The task's branch from an earlier fetch: moved forward to its new head, never
        // rewound or replaced.
        Some(at) if git(&repo, &["merge-base", "--is-ancestor", &at, &info.head]).is_ok() => {
            git(
                &repo,
                &[
                    "update-ref",
                    &format!("refs/heads/{branch}"),
                    &info.head,
                    &at,
                ],
            )?;
        }
        Some(at) => bail!(
            "{branch} already exists here at {} and is not behind the task's head {}: it is not this task's work as fetched before, so it is left as it is (nothing was changed); rename or delete it, then fetch again",
            short(&at),
            short(&info.head)
        ),
    }
    Ok((info, repo))
}

async fn fetch_bundle(
    t: &mut Target,
    id: &str,
    info: &v1::ChangesInfo,
    repo: &Path,
    scratch: &str,
) -> Result<()> {
    let mut stream = t
        .client
        .get_bundle(v1::GetBundleRequest { id: id.to_string() })
        .await?
        .into_inner();
    let file = tempfile::Builder::new()
        .prefix(&format!("dispatch-{id}-"))
        .suffix(".bundle")
        .tempfile()
        .context("cannot make a temporary file for the bundle")?;
    let mut f = file.reopen()?;
    while let Some(chunk) = stream.message().await? {
        f.write_all(&chunk.data)?;
    }
    f.flush()?;
    let path = file.path().display().to_string();
    git(repo, &["bundle", "verify", "-q", &path]).map_err(|_| {
        anyhow!(
            "this repository does not have commit {} that `{id}`'s changes start from; run this in a clone of the task's repository (fetch its origin first)",
            short(&info.base)
        )
    })?;
    git(
        repo,
        &[
            "fetch",
            "-q",
            &path,
            &format!("+refs/heads/dispatch/{id}:{scratch}"),
        ],
    )?;
    Ok(())
}

pub(crate) async fn fetch_cmd(g: &Settings, id: &str) -> Result<crate::exit::Exit> {
    let (info, _) = fetch(g, id, None).await?;
    println!(
        "Fetched {}: {} at {}. Read it with `git log -p {}..{}`, merge it with `dispatch apply {id}`.",
        printable_line(&info.branch),
        summary(&info),
        short(&info.head),
        short(&info.base),
        printable_line(&info.branch)
    );
    Ok(crate::exit::Exit::Success)
}

pub(crate) async fn apply(g: &Settings, id: &str, cherry_pick: bool) -> Result<crate::exit::Exit> {
    let (info, _) = apply_in(g, id, None, cherry_pick).await?;
    println!(
        "Applied {} ({}) to your branch.",
        printable_line(&info.branch),
        summary(&info)
    );
    Ok(crate::exit::Exit::Success)
}

/// Fetches the task's branch into the repository of `dir` (None: the current directory) and
/// merges (or cherry-picks) it into its current branch; a conflict is undone and reported.
/// Returns the task's changes and the repository.
pub(crate) async fn apply_in(
    g: &Settings,
    id: &str,
    dir: Option<&Path>,
    cherry_pick: bool,
) -> Result<(v1::ChangesInfo, PathBuf)> {
    let repo = here(dir)?;
    if !git(&repo, &["status", "--porcelain", "--untracked-files=no"])?.is_empty() {
        bail!(
            "the working tree of {} has uncommitted changes; commit or stash them, then apply `{id}` again",
            repo.display()
        );
    }
    let (info, repo) = fetch(g, id, Some(&repo)).await?;
    let r = if cherry_pick {
        git(
            &repo,
            &["cherry-pick", &format!("{}..{}", info.base, info.head)],
        )
    } else {
        // The task's own branch, by its full name: never another ref a report named.
        git(
            &repo,
            &["merge", "--no-edit", &format!("refs/heads/dispatch/{id}")],
        )
    };
    if let Err(e) = r {
        let _ = git(
            &repo,
            &[if cherry_pick { "cherry-pick" } else { "merge" }, "--abort"],
        );
        bail!(
            "{e}\nApplying {} conflicts with the current branch of {}; nothing was changed. The branch is fetched: merge it yourself (`git merge {}`)",
            printable_line(&info.branch),
            repo.display(),
            printable_line(&info.branch)
        );
    }
    Ok((info, repo))
}

/// What a fetch or apply did, for `--json` readers and the MCP tools.
pub(crate) fn changes_json(id: &str, info: &v1::ChangesInfo, repo: &Path) -> serde_json::Value {
    serde_json::json!({
        "id": id,
        "branch": info.branch,
        "base": info.base,
        "head": info.head,
        "commits": info.commits,
        "summary": summary(info),
        "repository": repo.display().to_string(),
    })
}
