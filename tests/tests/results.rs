//! Results come home: a task's output.md reaches the user through the coordinator (`dispatch
//! output`, `status`, `wait`), cut at its limit with a note saying where the rest is, and
//! followed while the worker rewrites it.

use dispatch_tests::{AgentOpts, Cluster, text, wait_until};
use std::io::{BufRead, BufReader};
use std::process::Stdio;

/// An agent config with a `stub` backend running `script` (it gets the worker prompt as $1,
/// in the task's workdir).
fn stub_agent(c: &Cluster, name: &str, script: &str) -> AgentOpts {
    let path = c.dir.path().join(format!("{name}-stub.sh"));
    std::fs::write(&path, format!("#!/bin/sh\nset -e\n{script}\n")).unwrap();
    std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let cfg = c.dir.path().join(format!("{name}.yaml"));
    std::fs::write(
        &cfg,
        format!("backends:\n  stub:\n    command: sh {}\n", path.display()),
    )
    .unwrap();
    let mut o = AgentOpts::new(name, 2);
    o.config = Some(cfg);
    o
}

#[test]
fn the_summary_comes_back_through_the_coordinator() {
    let c = Cluster::with_node("box");
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "summed",
        "--step",
        "look around",
        "--wait",
        "review the SECRET-FREE docs",
    ]);
    let out = c.ok(&["output", "summed"]);
    assert!(
        out.contains("review the SECRET-FREE docs"),
        "the sim's summary quotes its prompt: {out}"
    );
    let s = c.status("summed");
    assert!(s["output"]["bytes"].as_u64().unwrap() > 0, "{s}");
    assert_eq!(s["output"]["truncated"], false);
    assert!(
        c.ok(&["status", "summed"])
            .contains("dispatch output summed")
    );
    let waited = c.ok(&["wait", "summed"]);
    assert!(
        waited.contains("Read its summary: dispatch output summed"),
        "{waited}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&c.ok(&["output", "summed", "--json"])).unwrap();
    assert_eq!(json["node"], "box");
    assert_eq!(json["markdown"].as_str().unwrap(), out);

    // A task that has not written one yet says so, and exits 1.
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "busy",
        "--step",
        "(sleep 60s)",
        "wait a minute",
    ]);
    let r = c.run(&["output", "busy"]);
    assert_eq!(r.status.code(), Some(1));
    assert!(
        text(&r.stderr).contains("no output.md yet"),
        "{}",
        text(&r.stderr)
    );
    c.ok(&["cancel", "busy"]);
}

#[test]
fn a_large_output_is_cut_and_says_where_the_rest_is() {
    let mut c = Cluster::new();
    let script = "d=.dispatch/tasks/big\nmkdir -p $d/ipc\nhead -c 3000000 /dev/zero | tr '\\0' 'x' > $d/output.md\ntouch $d/ipc/.done";
    c.add_agent(stub_agent(&c, "box", script));
    c.ok(&[
        "--backend",
        "stub",
        "--id",
        "big",
        "--step",
        "write a lot",
        "--wait",
        "big",
    ]);
    let out = c.run(&["output", "big"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        out.stdout.len(),
        1024 * 1024 + 1,
        "the kept part and a newline"
    );
    let err = text(&out.stderr);
    assert!(
        err.contains("node `box`")
            && err.contains(".dispatch/tasks/big/output.md")
            && err.contains("2.9 MiB"),
        "{err}"
    );
    assert_eq!(c.status("big")["output"]["truncated"], true);
}

#[test]
fn output_follow_prints_each_version_until_the_task_ends() {
    let mut c = Cluster::new();
    let go = c.dir.path().join("go");
    let script = format!(
        "d=.dispatch/tasks/twice\nmkdir -p $d/ipc\nprintf 'first draft\\n' > $d/output.md.tmp && mv $d/output.md.tmp $d/output.md\nwhile [ ! -e {} ]; do sleep 0.05; done\nprintf 'final words\\n' > $d/output.md.tmp && mv $d/output.md.tmp $d/output.md\ntouch $d/ipc/.done",
        go.display()
    );
    c.add_agent(stub_agent(&c, "box", &script));
    c.ok(&[
        "--backend",
        "stub",
        "--id",
        "twice",
        "--step",
        "draft twice",
        "twice",
    ]);
    wait_until("the first draft to be stored", || {
        c.run(&["output", "twice"]).status.success().then_some(())
    });
    let mut follow = c
        .cli()
        .args(["output", "twice", "--follow"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(follow.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "first draft");
    std::fs::write(&go, "").unwrap();
    let rest: Vec<String> = lines.map(|l| l.unwrap()).collect();
    assert!(follow.wait().unwrap().success());
    assert_eq!(
        rest.last().map(String::as_str),
        Some("final words"),
        "{rest:?}"
    );
    assert!(rest.iter().any(|l| l.contains("rewritten")), "{rest:?}");
}

/// An origin (bare) made from a first commit, and the user's clone of it.
fn repos(root: &std::path::Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use dispatch_tests::git;
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    std::fs::write(src.join("hello.txt"), "v1\n").unwrap();
    git(&src, &["add", "."]);
    git(
        &src,
        &[
            "-c",
            "user.name=u",
            "-c",
            "user.email=u@x",
            "commit",
            "-q",
            "-m",
            "v1",
        ],
    );
    let bare = root.join("origin.git");
    git(
        root,
        &[
            "clone",
            "-q",
            "--bare",
            src.to_str().unwrap(),
            bare.to_str().unwrap(),
        ],
    );
    let mine = root.join("mine");
    git(
        root,
        &[
            "clone",
            "-q",
            bare.to_str().unwrap(),
            mine.to_str().unwrap(),
        ],
    );
    git(&mine, &["config", "user.name", "me"]);
    git(&mine, &["config", "user.email", "me@x"]);
    (bare, mine)
}

/// A worker that commits one change itself, leaves another uncommitted, and finishes.
const EDITING_WORKER: &str = "printf 'from the worker\\n' >> hello.txt\ngit -c user.name=worker -c user.email=w@x commit -q -am 'worker: hello'\nprintf 'notes\\n' > notes.txt\nprintf 'done\\n' > \"$DISPATCH_TASK_DIR/output.md\"\ntouch \"$DISPATCH_TASK_DIR/ipc/.done\"";

fn workspace_agent(c: &Cluster, extra: &str) -> AgentOpts {
    let mut o = stub_agent(c, "box", EDITING_WORKER);
    let cfg = o.config.clone().unwrap();
    let mut text = std::fs::read_to_string(&cfg).unwrap();
    text.push_str("repositories:\n  schemes: [https, ssh, file]\n");
    text.push_str(extra);
    std::fs::write(&cfg, text).unwrap();
    o.config = Some(cfg);
    o
}

#[test]
fn a_remote_workspace_tasks_changes_come_back_as_a_bundle_and_apply_exactly() {
    use dispatch_tests::git;
    let mut c = Cluster::new();
    c.add_agent(workspace_agent(&c, ""));
    let (_, mine) = repos(c.dir.path());
    let run = |args: &[&str]| {
        let out = c.cli().current_dir(&mine).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "dispatch {args:?}: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        (text(&out.stdout), text(&out.stderr))
    };
    run(&[
        "--backend",
        "stub",
        "--id",
        "fix",
        "--step",
        "fix it",
        "--wait",
        "fix the flaky test",
    ]);
    let s = c.status("fix");
    let ch = &s["changes"];
    assert_eq!(ch["commits"], 2, "{s}");
    assert_eq!(ch["delivery"], "bundle");
    assert_eq!(ch["branch"], "dispatch/fix");
    assert_eq!(ch["error"], "");

    let (patch, counts) = run(&["diff", "fix"]);
    assert!(
        patch.contains("+from the worker") && patch.contains("notes.txt"),
        "{patch}"
    );
    assert!(counts.contains("2 commits, 2 files"), "{counts}");

    // The user's branch is untouched until they apply.
    let before = git(&mine, &["rev-parse", "HEAD"]);
    // A `dispatch/fix` of the user's own (not this task's work as fetched before) is never
    // replaced: fetch says so and changes nothing.
    git(&mine, &["checkout", "-q", "-b", "dispatch/fix"]);
    std::fs::write(
        mine.join("mine.txt"),
        "mine
",
    )
    .unwrap();
    git(&mine, &["add", "mine.txt"]);
    git(&mine, &["commit", "-q", "-m", "my own work"]);
    let own = git(&mine, &["rev-parse", "HEAD"]);
    git(&mine, &["checkout", "-q", "-"]);
    let out = c
        .cli()
        .current_dir(&mine)
        .args(["fetch", "fix"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(err.contains("dispatch/fix already exists here"), "{err}");
    assert_eq!(git(&mine, &["rev-parse", "dispatch/fix"]), own);
    git(&mine, &["branch", "-q", "-D", "dispatch/fix"]);
    let (fetched, _) = run(&["fetch", "fix"]);
    assert!(fetched.contains("Fetched dispatch/fix"), "{fetched}");
    assert_eq!(git(&mine, &["rev-parse", "HEAD"]), before);
    assert_eq!(
        git(&mine, &["rev-parse", "dispatch/fix"]),
        ch["head"].as_str().unwrap()
    );
    let log = git(
        &mine,
        &["log", "--format=%an|%s", &format!("{before}..dispatch/fix")],
    );
    assert_eq!(
        log, "dispatch on box|dispatch: fix the flaky test\nworker|worker: hello",
        "the worker's own commit is kept"
    );

    run(&["apply", "fix"]);
    assert_eq!(
        std::fs::read_to_string(mine.join("hello.txt")).unwrap(),
        "v1\nfrom the worker\n"
    );
    assert_eq!(
        std::fs::read_to_string(mine.join("notes.txt")).unwrap(),
        "notes\n"
    );
    assert!(
        !mine.join(".dispatch").exists(),
        "task files never enter the branch"
    );

    // Issue 23 item 7: after apply, HEAD is a commit origin does not have. The next remote
    // submit used to be accepted and fail on the node; it is refused here, nothing stored.
    let unpushed = git(&mine, &["rev-parse", "HEAD"]);
    let out = c
        .cli()
        .current_dir(&mine)
        .args([
            "--backend",
            "stub",
            "--id",
            "next",
            "--step",
            "a",
            "the next task",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!(
            "commit {} (HEAD of `main`) is on no branch of origin",
            &unpushed[..12]
        )) && err.contains("Push it first (`git push`), or give --workdir DIR"),
        "{err}"
    );
    assert!(c.run(&["status", "next"]).status.code() != Some(0));
    git(&mine, &["push", "-q", "origin", "main"]);
    run(&[
        "--backend",
        "stub",
        "--id",
        "next",
        "--step",
        "a",
        "--wait",
        "the next task",
    ]);
    assert_eq!(c.status("next")["state"], "completed");
    // Still possible (a commit pushed and then force-pushed away, a program calling the API):
    // the node's failure advises a push, not another node.
    let origin = git(&mine, &["remote", "get-url", "origin"]);
    c.block_on(async {
        let mut client = c.client().await.unwrap();
        client
            .submit(dispatch_proto::v1::SubmitRequest {
                id: "gone-commit".into(),
                prompt: "work on a commit origin lacks".into(),
                backend: "stub".into(),
                repo: Some(dispatch_proto::v1::Repo {
                    url: origin,
                    branch: "main".into(),
                    commit: "0123456789abcdef0123456789abcdef01234567".into(),
                }),
                ..Default::default()
            })
            .await
            .unwrap();
    });
    let t = c.wait_task("gone-commit", "its start to fail", |t| {
        t.task_state().is_terminal()
    });
    assert!(
        t.reason
            .contains("Push that commit to origin (`git push`), then `dispatch retry gone-commit`")
            && !t.reason.contains("--remote NODE"),
        "{}",
        t.reason
    );
}

#[test]
fn push_mode_puts_the_branch_on_origin_and_fetch_takes_it_from_there() {
    use dispatch_tests::git;
    let mut c = Cluster::new();
    c.add_agent(workspace_agent(&c, ""));
    let (bare, mine) = repos(c.dir.path());
    let out = c
        .cli()
        .current_dir(&mine)
        .args([
            "--backend",
            "stub",
            "--id",
            "pushed",
            "--deliver",
            "push",
            "--step",
            "fix",
            "--wait",
            "fix it",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let s = c.status("pushed");
    assert_eq!(s["changes"]["delivery"], "push", "{s}");
    assert_eq!(s["changes"]["error"], "");
    let head = s["changes"]["head"].as_str().unwrap().to_string();
    assert_eq!(
        git(&bare, &["rev-parse", "refs/heads/dispatch/pushed"]),
        head
    );
    // Another clone, made before the push: fetch takes the branch from origin.
    let out = c
        .cli()
        .current_dir(&mine)
        .args(["fetch", "pushed"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(git(&mine, &["rev-parse", "dispatch/pushed"]), head);
}

#[test]
fn a_bundle_over_the_nodes_limit_says_to_push_instead() {
    let mut c = Cluster::new();
    c.add_agent(workspace_agent(&c, "changes:\n  max_bundle_bytes: 100\n"));
    let (_, mine) = repos(c.dir.path());
    let out = c
        .cli()
        .current_dir(&mine)
        .args([
            "--backend",
            "stub",
            "--id",
            "huge",
            "--step",
            "fix",
            "--wait",
            "fix it",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "the task itself completes: {}",
        text(&out.stderr)
    );
    let err = c.status("huge")["changes"]["error"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(
        err.contains("over this node's limit of 100 bytes") && err.contains("--deliver push"),
        "{err}"
    );
    let out = c
        .cli()
        .current_dir(&mine)
        .args(["fetch", "huge"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("--deliver push"),
        "{}",
        text(&out.stderr)
    );
    // The diff still shows what it changed.
    let out = c
        .cli()
        .current_dir(&mine)
        .args(["diff", "huge"])
        .output()
        .unwrap();
    assert!(text(&out.stdout).contains("+from the worker"));
}
