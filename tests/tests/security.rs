//! What a hostile worker, node or user can put in front of another user's eyes: nothing a
//! terminal would obey.

use dispatch_tests::{AgentOpts, Cluster, text};

/// An escape sequence that would set the reader's clipboard (OSC 52), and one that clears the
/// screen.
const OSC52: &str = "\u{1b}]52;c;cm0gLXJmIH4K\u{7}";
const CLEAR: &str = "\u{1b}[2J";

fn assert_inert(what: &str, out: &str) {
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\u{9b}'),
        "{what} printed a raw control character:\n{out:?}"
    );
}

#[test]
fn escape_sequences_in_every_printed_field_are_shown_escaped() {
    let mut c = Cluster::new();
    let mut o = AgentOpts::new("box", 2);
    o.labels = vec![format!("team=evil{OSC52}")];
    c.add_agent(o);
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "evil",
        "--title",
        &format!("title {OSC52}"),
        "--step",
        &format!("item {CLEAR}"),
        "--step",
        &format!("ask (ask: question {OSC52}?)"),
        "hostile text",
    ]);
    c.wait_task("evil", "the question", |t| {
        t.questions.iter().any(|q| q.answer.is_none())
    });
    for args in [
        &["status", "evil"][..],
        &["status"][..],
        &["inbox", "--list"][..],
        &["nodes"][..],
        &["wait", "evil"][..],
    ] {
        let out = c.run(args);
        let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_inert(&format!("dispatch {args:?}"), &shown);
        if args[0] != "nodes" {
            assert!(
                shown.contains("\\x1b]52;c;"),
                "{args:?} shows the escape:\n{shown}"
            );
        }
    }
    // An answer with an escape, then a failure reason with one.
    c.ok(&["answer", "evil", &format!("yes {CLEAR}")]);
    let t = c.wait_task("evil", "the end", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    let out = c.run(&["status", "evil"]);
    assert_inert("status after the answer", &text(&out.stdout));
    assert!(text(&out.stdout).contains("yes \\x1b[2J"));
    // JSON keeps the text, escaped the JSON way.
    let json = c.ok(&["status", "evil", "--json"]);
    assert_inert("status --json", &json);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["title"], format!("title {OSC52}"));

    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "fails",
        "--step",
        &format!("boom (fail: reason {OSC52})"),
        "fail",
    ]);
    c.wait_task("fails", "the failure", |t| t.task_state().is_terminal());
    let out = c.run(&["wait", "fails"]);
    assert_inert("wait on a failed task", &text(&out.stderr));
    let out = c.run(&["status", "fails"]);
    assert_inert("status of a failed task", &text(&out.stdout));
}

/// A repository with one commit in `root/src`, cloned to `root/mine` with `origin` set to
/// `origin`; returns `mine`.
fn checkout_with_origin(root: &std::path::Path, origin: &str) -> std::path::PathBuf {
    use dispatch_tests::git;
    let src = root.join("src");
    std::fs::create_dir_all(&src).unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    std::fs::write(src.join("a.txt"), "a\n").unwrap();
    git(&src, &["add", "."]);
    git(&src, &["commit", "-q", "-m", "a"]);
    let mine = root.join("mine");
    git(
        root,
        &["clone", "-q", src.to_str().unwrap(), mine.to_str().unwrap()],
    );
    git(&mine, &["remote", "set-url", "origin", origin]);
    mine
}

fn run_in(c: &Cluster, dir: &std::path::Path, id: &str) -> serde_json::Value {
    let out = c
        .cli()
        .current_dir(dir)
        .args(["--backend", "sim", "--id", id, "--step", "x", "--wait", "x"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", text(&out.stderr));
    c.status(id)
}

#[test]
fn a_node_clones_only_what_its_policy_allows_and_never_shows_credentials() {
    let c = Cluster::with_node("box");
    let root = c.dir.path();
    // A repository on the node itself (a path, or file://): refused by default.
    let mine = checkout_with_origin(root, root.join("src").to_str().unwrap());
    let t = run_in(&c, &mine, "local-path");
    let reason = t["reason"].as_str().unwrap();
    assert!(
        reason.contains("this node does not clone file repositories")
            && reason.contains("repositories.schemes"),
        "{reason}"
    );
    // The node probing its own network: http is not allowed, and https to a loopback host
    // is refused before git runs.
    dispatch_tests::git(
        &mine,
        &["remote", "set-url", "origin", "http://127.0.0.1:9/x.git"],
    );
    let t = run_in(&c, &mine, "probe-http");
    assert!(
        t["reason"]
            .as_str()
            .unwrap()
            .contains("does not clone http repositories"),
        "{t}"
    );
    // Every spelling of the node itself (what an outside red team tried): refused before git
    // runs, by the address it is — a listener there hears nothing.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let p = listener.local_addr().unwrap().port();
    for (i, url) in [
        format!("https://127.0.0.1:{p}/x.git"),
        format!("https://127.1:{p}/x.git"),
        format!("https://2130706433:{p}/x.git"),
        format!("https://0x7f000001:{p}/x.git"),
        format!("https://0177.0.0.1:{p}/x.git"),
        format!("https://0:{p}/x.git"),
        format!("https://localhost.:{p}/x.git"),
        format!("https://[::1%25lo]:{p}/x.git"),
        format!("https://[::ffff:127.0.0.1]:{p}/x.git"),
        format!("ssh://git@127.1:{p}/x.git"),
    ]
    .iter()
    .enumerate()
    {
        dispatch_tests::git(&mine, &["remote", "set-url", "origin", url]);
        let t = run_in(&c, &mine, &format!("probe-{i}"));
        let reason = t["reason"].as_str().unwrap();
        assert!(
            reason.contains("this node itself") && reason.contains("repositories.hosts"),
            "{url}: {reason}"
        );
    }
    assert!(
        listener.accept().is_err(),
        "something connected to the node's loopback"
    );
    // Credentials in the origin: never sent, stored, shown or logged.
    dispatch_tests::git(
        &mine,
        &[
            "remote",
            "set-url",
            "origin",
            "https://alice:s3cret-token@example.invalid/r.git",
        ],
    );
    let t = run_in(&c, &mine, "with-creds");
    let shown = t.to_string();
    assert!(!shown.contains("s3cret"), "{shown}");
    let detail = c.ok(&["status", "with-creds"]);
    assert!(!detail.contains("s3cret"), "{detail}");
    for log in [c.coordinator.log_text(), c.agents[0].1.log_text()] {
        assert!(!log.contains("s3cret"), "a log holds the token:\n{log}");
    }
}

#[test]
fn a_repository_that_carries_its_own_dispatch_directory_is_refused() {
    use dispatch_tests::git;
    let mut c = Cluster::new();
    let cfg = c.dir.path().join("agent.yaml");
    std::fs::write(&cfg, "repositories:\n  schemes: [https, ssh, file]\n").unwrap();
    let mut o = AgentOpts::new("box", 2);
    o.config = Some(cfg);
    c.add_agent(o);
    let root = c.dir.path();
    let keys = root.join("authorized_keys");
    std::fs::write(&keys, "ssh-ed25519 AAAA mine\n").unwrap();
    // The repository commits `.dispatch/tasks/planted/plan.md.tmp → authorized_keys`.
    let src = root.join("src");
    std::fs::create_dir_all(src.join(".dispatch/tasks/planted/ipc")).unwrap();
    std::os::unix::fs::symlink(&keys, src.join(".dispatch/tasks/planted/plan.md.tmp")).unwrap();
    std::fs::write(src.join("a.txt"), "a\n").unwrap();
    git(&src, &["init", "-q", "-b", "main"]);
    git(&src, &["add", "-f", "."]);
    git(&src, &["commit", "-q", "-m", "planted"]);
    let mine = root.join("mine");
    git(
        root,
        &["clone", "-q", src.to_str().unwrap(), mine.to_str().unwrap()],
    );
    let out = c
        .cli()
        .current_dir(&mine)
        .args([
            "--backend",
            "sim",
            "--id",
            "planted",
            "--step",
            "x",
            "--wait",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(12), "{}", text(&out.stderr));
    let reason = c.status("planted")["reason"].as_str().unwrap().to_string();
    assert!(reason.contains("carries its own .dispatch/"), "{reason}");
    assert_eq!(
        std::fs::read_to_string(&keys).unwrap(),
        "ssh-ed25519 AAAA mine\n",
        "the planted link's target is untouched"
    );
}

#[test]
fn the_unix_socket_serves_its_own_user_only() {
    use std::os::unix::fs::PermissionsExt;
    // Needs root: to start the client as another user, and to be sure file permissions are not
    // what stops it (the socket is opened up to everyone below; only the peer check remains).
    if !nix::unistd::Uid::effective().is_root()
        || !std::path::Path::new("/usr/bin/setpriv").exists()
    {
        eprintln!("skipped: needs root and setpriv to connect as another user");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let sock = dir.path().join("c.sock");
    let data = dir.path().join("data");
    let mut coordinator = std::process::Command::new(dispatch_tests::bin("dispatch-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(&data)
        .arg("--socket")
        .arg(&sock)
        .stderr(std::fs::File::create(dir.path().join("log")).unwrap())
        .spawn()
        .unwrap();
    dispatch_tests::wait_until("the socket", || sock.exists().then_some(()));
    assert_eq!(
        std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777,
        0o600
    );
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o666)).unwrap();
    let url = format!("unix:{}", sock.display());
    let as_user = |uid: &str| {
        let mut cmd = std::process::Command::new("/usr/bin/setpriv");
        cmd.args([
            &format!("--reuid={uid}"),
            &format!("--regid={uid}"),
            "--clear-groups",
        ])
        .arg(dispatch_tests::bin("dispatch"))
        .args(["--coordinator", &url, "nodes"])
        .env("DISPATCH_HOME", dir.path().join(format!("home-{uid}")))
        .env("HOME", dir.path());
        cmd.output().unwrap()
    };
    let mine = as_user("0");
    assert!(mine.status.success(), "{}", text(&mine.stderr));
    let theirs = as_user("65534");
    assert!(!theirs.status.success(), "another user was served");
    coordinator.kill().unwrap();
    let _ = coordinator.wait();
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap();
    assert!(
        log.contains("refused a connection to the socket from another user"),
        "{log}"
    );
}

/// A node whose `dump` backend writes its worker's environment to output.md, with `extra` in
/// its agent config.
fn env_dumping_node(c: &mut Cluster, name: &str, extra: &str) {
    let sh = c.dir.path().join(format!("{name}-dump.sh"));
    std::fs::write(
        &sh,
        format!(
            "#!/bin/sh\nenv > \"$DISPATCH_TASK_DIR/output.md\"\n{}",
            dispatch_tests::FINISH_PLAN_SH
        ),
    )
    .unwrap();
    let cfg = c.dir.path().join(format!("{name}.yaml"));
    std::fs::write(
        &cfg,
        format!(
            "backends:\n  dump:\n    command: sh {}\n{extra}",
            sh.display()
        ),
    )
    .unwrap();
    let mut o = AgentOpts::new(name, 1);
    o.config = Some(cfg);
    o.env = vec![
        (
            "DISPATCH_TOKEN".into(),
            "dsp_user_token_of_the_agent_host".into(),
        ),
        (
            "DISPATCH_WEBHOOK_SECRET".into(),
            "whsec_of_the_agent_host".into(),
        ),
        ("SOME_API_KEY".into(), "sk-the-cli-needs-this".into()),
        ("OTHER_SETTING".into(), "x".into()),
    ];
    c.add_agent(o);
}

#[test]
fn no_credential_of_the_node_reaches_a_worker() {
    let mut c = Cluster::new();
    env_dumping_node(&mut c, "open", "");
    env_dumping_node(&mut c, "strict", "worker_env: [SOME_*]\n");
    let node_token = c.node_token("open");
    for node in ["open", "strict"] {
        let id = format!("env-{node}");
        c.ok(&[
            "run",
            "--backend",
            "dump",
            "--remote",
            node,
            "--id",
            &id,
            "x",
        ]);
        c.wait_task(&id, "its end", |t| t.task_state().is_terminal());
        let env = c.ok(&["output", &id]);
        assert!(env.contains("DISPATCH_TASK_ID="), "{env}");
        for secret in [
            node_token.as_str(),
            "dsp_user_token_of_the_agent_host",
            "whsec_of_the_agent_host",
            "DISPATCH_AGENT_TOKEN",
            "DISPATCH_COORDINATOR",
        ] {
            assert!(
                !env.contains(secret),
                "{node}: `{secret}` reached the worker:\n{env}"
            );
        }
        assert!(env.contains("SOME_API_KEY=sk-the-cli-needs-this"), "{env}");
        assert!(env.contains("PATH="), "{env}");
        assert_eq!(
            env.contains("OTHER_SETTING=x"),
            node == "open",
            "{node}: only what worker_env lists passes:\n{env}"
        );
    }
}

/// Bytes of event history the coordinator's SQLite store holds for task `id`, by kind.
fn history_bytes(c: &Cluster, id: &str) -> Vec<(String, i64)> {
    let db = c.dir.path().join("coordinator").join("dispatch.db");
    c.block_on(async {
        use sqlx::Connection;
        let url = format!("sqlite://{}?mode=ro", db.display());
        let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
        sqlx::query_as::<_, (String, i64)>(
            "SELECT kind, SUM(LENGTH(body)) FROM events WHERE task_id = ?1 GROUP BY kind ORDER BY kind",
        )
        .bind(id)
        .fetch_all(&mut conn)
        .await
        .unwrap()
    })
}

#[test]
fn a_worker_rewriting_its_plan_in_a_loop_cannot_fill_the_store() {
    let mut c = Cluster::with_coordinator_args(&["--max-plan-history-bytes", "256KiB"]);
    let sh = c.dir.path().join("flood.sh");
    // 400 plans of ~16 KiB, each unlike the last (about 7 MiB of edits), then the end.
    std::fs::write(
        &sh,
        format!(
            "#!/bin/sh\nd=\"$DISPATCH_TASK_DIR\"\ni=0\nwhile [ $i -lt 400 ]; do\n  \
             {{ echo \"- [ ] flood $i\"; head -c 12000 /dev/urandom | base64 | sed 's/^/- [ ] /'; }} > \"$d/plan.tmp\" && mv \"$d/plan.tmp\" \"$d/plan.md\"\n  \
             i=$((i+1))\ndone\nprintf -- '- [ ] last\\n' > \"$d/plan.md\"\n{}",
            dispatch_tests::FINISH_PLAN_SH
        ),
    )
    .unwrap();
    let cfg = c.dir.path().join("flood.yaml");
    std::fs::write(
        &cfg,
        format!("backends:\n  flood:\n    command: sh {}\n", sh.display()),
    )
    .unwrap();
    let mut o = AgentOpts::new("box", 1);
    o.config = Some(cfg);
    c.add_agent(o);
    c.ok(&[
        "run",
        "--backend",
        "flood",
        "--remote",
        "box",
        "--id",
        "flood",
        "x",
    ]);
    let t = c.wait_task("flood", "its end", |t| t.task_state().is_terminal());
    let md = t
        .plan
        .as_ref()
        .map(|p| p.markdown.as_str())
        .unwrap_or_default();
    assert_eq!(md, "- [x] last\n", "the plan is current: {t:?}");
    let kinds = history_bytes(&c, "flood");
    let plan: i64 = kinds
        .iter()
        .filter(|(k, _)| k.starts_with("plan"))
        .map(|(_, b)| b)
        .sum();
    assert!(
        plan <= 256 * 1024 + 1024,
        "400 rewrites of plan.md stored {plan} bytes of plan history: {kinds:?}"
    );
    assert!(
        kinds.iter().any(|(k, _)| k == "plan-truncated"),
        "the history says it was cut: {kinds:?}"
    );
}

#[test]
fn a_repository_url_that_names_no_host_is_an_error_not_a_crash() {
    use dispatch_proto::v1;
    let c = Cluster::with_node("box");
    // parse() and redact() once called each other forever on such a URL: a stack overflow
    // that aborted the coordinator on one member's submit.
    for url in [
        "https:///x",
        "https://tok@/x",
        "ssh://:p@/r",
        "https://h:99999/x",
    ] {
        let e = c.block_on(async {
            let mut cl = dispatch_tests::client_with(&c.url, &c.admin_token)
                .await
                .unwrap();
            cl.submit(v1::SubmitRequest {
                prompt: "x".into(),
                backend: "sim".into(),
                repo: Some(v1::Repo {
                    url: url.into(),
                    branch: "main".into(),
                    commit: "a".repeat(40),
                }),
                ..Default::default()
            })
            .await
            .unwrap_err()
        });
        assert_eq!(e.code(), tonic::Code::InvalidArgument, "{url}: {e:?}");
        assert!(
            !e.message().contains("tok") && !e.message().contains(":p@"),
            "{}",
            e.message()
        );
    }
    c.ok(&["status"]);
}

/// Waits until every one of `socks` is closed by the far end (a read gives end of file or an
/// error), up to `within`; how many were.
fn closed_within(socks: &mut [std::net::TcpStream], within: std::time::Duration) -> usize {
    use std::io::Read;
    let deadline = std::time::Instant::now() + within;
    let mut closed = vec![false; socks.len()];
    while std::time::Instant::now() < deadline && closed.iter().any(|c| !c) {
        for (s, done) in socks.iter_mut().zip(closed.iter_mut()) {
            if *done {
                continue;
            }
            s.set_read_timeout(Some(std::time::Duration::from_millis(5)))
                .unwrap();
            let mut buf = [0u8; 1024];
            match s.read(&mut buf) {
                Ok(0) => *done = true,
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(_) => *done = true,
            }
        }
    }
    closed.iter().filter(|c| **c).count()
}

#[test]
fn idle_and_trickling_strangers_are_cut_and_users_are_still_served() {
    use std::io::Write;
    let c = Cluster::with_coordinator_args(&[
        "--http-listen",
        "127.0.0.1:0",
        "--metrics-listen",
        "127.0.0.1:0",
        "--auth-deadline",
        "2s",
        "--max-unauthenticated-per-address",
        "400",
    ]);
    let metrics = std::fs::read_to_string(c.dir.path().join("coordinator/metrics.addr"))
        .unwrap()
        .trim()
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string();
    // The metrics listener: a trickled scrape is cut after 10 s.
    let mut scrapes: Vec<std::net::TcpStream> = (0..10)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&metrics).unwrap();
            s.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Slow: a")
                .unwrap();
            s
        })
        .collect();
    let grpc = c.url.trim_start_matches("http://").to_string();
    let http = std::fs::read_to_string(c.dir.path().join("coordinator/http.addr"))
        .unwrap()
        .trim()
        .trim_start_matches("http://")
        .to_string();
    // 300 connections that never say a word to the gRPC port, 50 that trickle an HTTP
    // request's headers to the dashboard and never finish them.
    let mut socks: Vec<std::net::TcpStream> = (0..300)
        .map(|_| std::net::TcpStream::connect(&grpc).unwrap())
        .collect();
    let mut slow: Vec<std::net::TcpStream> = (0..50)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(&http).unwrap();
            s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: a")
                .unwrap();
            s
        })
        .collect();
    // A member is served meanwhile.
    let t0 = std::time::Instant::now();
    c.ok(&["status"]);
    let served = t0.elapsed();
    let mut trickle = 0;
    let cut = closed_within(&mut socks, std::time::Duration::from_secs(12));
    // One more header byte now and then: still cut at the deadline.
    for s in &mut slow {
        let _ = s.write_all(b"a");
        trickle += 1;
    }
    let cut_slow = closed_within(&mut slow, std::time::Duration::from_secs(12));
    let cut_scrapes = closed_within(&mut scrapes, std::time::Duration::from_secs(15));
    assert_eq!(cut, 300, "silent gRPC connections closed");
    assert_eq!(cut_scrapes, 10, "trickling scrapes closed");
    assert_eq!(
        cut_slow, 50,
        "trickling dashboard requests closed ({trickle} bytes sent)"
    );
    assert!(
        served < std::time::Duration::from_secs(5),
        "status took {served:?} among 350 strangers"
    );
    c.ok(&["status"]);
}

#[test]
fn a_token_holds_only_so_many_streams_and_gets_them_back_when_they_close() {
    use dispatch_proto::v1;
    let c = Cluster::with_coordinator_args(&["--max-streams-per-token", "3"]);
    let member = c.user_token("mo", "member", &[]);
    c.block_on(async {
        let mut cl = dispatch_tests::client_with(&c.url, &member).await.unwrap();
        let mut open = Vec::new();
        for _ in 0..3 {
            open.push(
                cl.watch(v1::WatchRequest::default())
                    .await
                    .unwrap()
                    .into_inner(),
            );
        }
        let e = cl.watch(v1::WatchRequest::default()).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("--max-streams-per-token") && e.message().contains("mo"),
            "{}",
            e.message()
        );
        // Another token is not limited by mo's streams.
        let mut admin = dispatch_tests::client_with(&c.url, &c.admin_token)
            .await
            .unwrap();
        admin.watch(v1::WatchRequest::default()).await.unwrap();
        // A closed stream gives its place back (as soon as the coordinator sees it gone).
        drop(open.pop());
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match cl.watch(v1::WatchRequest::default()).await {
                Ok(s) => {
                    open.push(s.into_inner());
                    break;
                }
                Err(e) if tokio::time::Instant::now() < deadline => {
                    assert_eq!(e.code(), tonic::Code::ResourceExhausted);
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => panic!("the closed stream's place never came back: {e:?}"),
            }
        }
    });
}
