//! Who may call what, against the real coordinator over TCP: every RPC of both services, called
//! with no token, a bad one, a revoked one, and as a viewer, a member (on another's task and on
//! its own), an admin and a node, gets what the role table in README says; and every change is
//! in the audit.

use dispatch_proto::v1;
use dispatch_tests::{Cluster, client_with, hello_session};
use tonic::Code;

/// What a call is expected to get.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Want {
    /// Past authorization: it succeeds, or fails for a reason that is not about the caller.
    Allowed,
    /// `unauthenticated`.
    Unauth,
    /// `permission_denied`.
    Denied,
}
use Want::*;

fn got<T>(r: &Result<T, tonic::Status>) -> Want {
    match r {
        Ok(_) => Allowed,
        Err(s) if s.code() == Code::Unauthenticated => Unauth,
        Err(s) if s.code() == Code::PermissionDenied => Denied,
        Err(_) => Allowed,
    }
}

/// One caller and what the table grants it: reads as `read` (and whether it sees the other
/// user's task in full), acts as `act`, and so on.
struct Caller {
    who: &'static str,
    token: String,
    submit: Want,
    read: Want,
    full: bool,
    act: Want,
    logs: Want,
    nodes: Want,
    paths: bool,
    admin: Want,
    session: Want,
}

/// Opens an agent session as `name` with `token`; the result of the call (past Hello).
async fn session(url: &str, token: &str, name: &str) -> Result<(), tonic::Status> {
    let channel = dispatch_tests::channel(url, None).await.unwrap();
    hello_session(channel, token, name, 1).await.map(drop)
}

/// A task for the sim backend that takes its time (a minute per item unless answered or
/// cancelled).
fn submit_req(id: &str, prompt: &str) -> v1::SubmitRequest {
    v1::SubmitRequest {
        id: id.into(),
        prompt: prompt.into(),
        backend: "sim".into(),
        remote: "box".into(),
        steps: vec!["wait (sleep 60s)".into()],
        ..Default::default()
    }
}

#[test]
fn every_rpc_answers_each_role_as_the_table_says() {
    let c = Cluster::with_node("box");
    let bob = c.user_token("bob", "member", &[]);
    let alice = c.user_token("alice", "member", &[]);
    let viewer = c.user_token("vera", "viewer", &[]);
    // The agent `box` runs the tasks; the matrix's sessions connect as `spare`.
    let node = c.node_token("spare");
    let revoked = c.user_token("rex", "admin", &[]);
    let url = c.url.clone();
    c.block_on(async {
        let mut admin = client_with(&url, &c.admin_token).await.unwrap();
        // The task everyone reaches for: bob's, with a secret in its prompt.
        let mut b = client_with(&url, &bob).await.unwrap();
        b.submit(v1::SubmitRequest {
            steps: vec!["(ask: which SECRET-Q database?)".into()],
            ..submit_req("bob-task", "deploy with SECRET-42")
        })
        .await
        .expect("a member submits");
        let rex = admin
            .list_tokens(v1::ListTokensRequest {})
            .await
            .unwrap()
            .into_inner()
            .tokens
            .into_iter()
            .find(|t| t.name == "rex")
            .unwrap();
        admin
            .revoke_token(v1::RevokeTokenRequest { id: rex.id })
            .await
            .unwrap();
    });

    c.wait_task("bob-task", "bob's worker to ask", |t| {
        t.questions.iter().any(|q| q.answer.is_none())
    });

    let none = |who, token: &str, w: Want| Caller {
        who,
        token: token.into(),
        submit: w,
        read: w,
        full: false,
        act: w,
        logs: w,
        nodes: w,
        paths: false,
        admin: w,
        session: w,
    };
    let callers = [
        none("no token", "", Unauth),
        none("a bad token", "dsp_not-a-token", Unauth),
        none("a revoked token", &revoked, Unauth),
        Caller {
            session: Allowed,
            ..none("a node token", &node, Denied)
        },
        Caller {
            read: Allowed,
            nodes: Allowed,
            ..none("a viewer", &viewer, Denied)
        },
        Caller {
            who: "another member",
            token: alice.clone(),
            submit: Allowed,
            read: Allowed,
            full: false,
            act: Denied,
            logs: Denied,
            nodes: Allowed,
            paths: true,
            admin: Denied,
            session: Denied,
        },
        Caller {
            who: "the owner",
            token: bob.clone(),
            submit: Allowed,
            read: Allowed,
            full: true,
            act: Allowed,
            logs: Allowed,
            nodes: Allowed,
            paths: true,
            admin: Denied,
            session: Denied,
        },
        Caller {
            who: "an admin",
            token: c.admin_token.clone(),
            submit: Allowed,
            read: Allowed,
            full: true,
            act: Allowed,
            logs: Allowed,
            nodes: Allowed,
            paths: true,
            admin: Allowed,
            session: Denied,
        },
    ];

    let mut failures = Vec::new();
    for (n, k) in callers.iter().enumerate() {
        c.block_on(async {
            // Each caller cancels a task of bob's of its own.
            let target = format!("bob-cancel-{n}");
            let mut b = client_with(&url, &bob).await.unwrap();
            b.submit(submit_req(&target, "to cancel")).await.unwrap();
            let mut cl = client_with(&url, &k.token).await.unwrap();
            let mut check = |rpc: &str, want: Want, got: Want| {
                if want != got {
                    failures.push(format!("{}: {rpc}: expected {want:?}, got {got:?}", k.who));
                }
            };

            let r = cl.submit(submit_req(&format!("by-{n}"), "hello")).await;
            check("Submit", k.submit, got(&r));

            let r = cl
                .get_task(v1::GetTaskRequest {
                    id: "bob-task".into(),
                })
                .await;
            check("GetTask", k.read, got(&r));
            if let Ok(t) = &r {
                let t = t.get_ref();
                let full = t.prompt.contains("SECRET-42");
                assert_eq!(
                    t.title.contains("SECRET-42"),
                    full,
                    "{}: the title (the prompt's first line) is content",
                    k.who
                );
                check(
                    "GetTask in full",
                    if k.full { Allowed } else { Denied },
                    if full { Allowed } else { Denied },
                );
                assert_eq!(t.summary, !full, "{}: summary flag", k.who);
                assert_eq!(t.owner, "bob", "{}: the owner is shown", k.who);
            }

            let r = cl.list_tasks(v1::ListTasksRequest::default()).await;
            check("ListTasks", k.read, got(&r));
            if let Ok(l) = &r {
                let t = l
                    .get_ref()
                    .tasks
                    .iter()
                    .find(|t| t.id == "bob-task")
                    .unwrap();
                check(
                    "ListTasks in full",
                    if k.full { Allowed } else { Denied },
                    if t.prompt.contains("SECRET-42") {
                        Allowed
                    } else {
                        Denied
                    },
                );
            }

            let r = cl
                .watch(v1::WatchRequest {
                    task_id: "bob-task".into(),
                })
                .await;
            check("Watch", k.read, got(&r));
            if let Ok(s) = r {
                let ev = s.into_inner().message().await.unwrap().unwrap();
                let full = ev.task.unwrap().prompt.contains("SECRET-42");
                check(
                    "Watch in full",
                    if k.full { Allowed } else { Denied },
                    if full { Allowed } else { Denied },
                );
            }

            let r = cl.list_questions(v1::ListQuestionsRequest {}).await;
            check("ListQuestions", k.read, got(&r));
            if let Ok(l) = &r
                && let Some(q) = l
                    .get_ref()
                    .questions
                    .iter()
                    .find(|q| q.task_id == "bob-task")
            {
                check(
                    "ListQuestions in full",
                    if k.full { Allowed } else { Denied },
                    if q.text.contains("SECRET-Q") {
                        Allowed
                    } else {
                        Denied
                    },
                );
            }

            let r = cl
                .logs(v1::LogsRequest {
                    id: "bob-task".into(),
                    ..Default::default()
                })
                .await;
            check("Logs", k.logs, got(&r));

            let r = cl
                .answer(v1::AnswerRequest {
                    id: "bob-task".into(),
                    text: "yes".into(),
                    ..Default::default()
                })
                .await;
            check("Answer", k.act, got(&r));
            let r = cl
                .add_note(v1::AddNoteRequest {
                    id: "bob-task".into(),
                    text: "rm -rf".into(),
                })
                .await;
            check("AddNote", k.act, got(&r));
            let r = cl
                .retry(v1::RetryRequest {
                    id: "bob-task".into(),
                    ..Default::default()
                })
                .await;
            check("Retry", k.act, got(&r));
            let r = cl
                .clean(v1::CleanRequest {
                    id: "bob-task".into(),
                })
                .await;
            check("Clean", k.act, got(&r));
            let r = cl.cancel(v1::CancelRequest { id: target.clone() }).await;
            check("Cancel", k.act, got(&r));
            let cancelled = admin_state(&url, &c.admin_token, &target).await;
            assert_eq!(
                cancelled,
                k.act == Allowed,
                "{}: the cancel took effect only when allowed",
                k.who
            );

            let r = cl.list_nodes(v1::ListNodesRequest {}).await;
            check("ListNodes", k.nodes, got(&r));
            let r = cl.info(v1::InfoRequest {}).await;
            check("Info", k.nodes, got(&r));
            if let Ok(i) = &r {
                assert_eq!(
                    !i.get_ref().data_dir.is_empty(),
                    k.paths,
                    "{}: Info's data dir",
                    k.who
                );
            }

            let r = cl
                .create_token(v1::CreateTokenRequest {
                    user: format!("made-by-{n}"),
                    role: "viewer".into(),
                    ..Default::default()
                })
                .await;
            check("CreateToken", k.admin, got(&r));
            let r = cl.list_tokens(v1::ListTokensRequest {}).await;
            check("ListTokens", k.admin, got(&r));
            let r = cl
                .revoke_token(v1::RevokeTokenRequest {
                    id: "no-such-token".into(),
                })
                .await;
            check("RevokeToken", k.admin, got(&r));
            let r = cl
                .set_node_draining(v1::SetNodeDrainingRequest {
                    name: "no-such-node".into(),
                    draining: true,
                    stop_after_ms: 0,
                })
                .await;
            check("SetNodeDraining", k.admin, got(&r));
            let r = cl
                .forget_node(v1::ForgetNodeRequest {
                    name: "no-such-node".into(),
                })
                .await;
            check("ForgetNode", k.admin, got(&r));
            let r = cl.list_audit(v1::ListAuditRequest::default()).await;
            check("ListAudit", k.admin, got(&r));
            let r = cl.get_policy(v1::GetPolicyRequest {}).await;
            check("GetPolicy", k.nodes, got(&r));
            // An empty policy: an admin's call changes nothing here.
            let r = cl
                .set_policy(v1::SetPolicyRequest {
                    yaml: String::new(),
                    clear: true,
                })
                .await;
            check("SetPolicy", k.admin, got(&r));

            let r = session(&url, &k.token, "spare").await;
            check("AgentService.Session", k.session, got(&r));
        });
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// True when the admin sees task `id` cancelled.
async fn admin_state(url: &str, admin: &str, id: &str) -> bool {
    let mut a = client_with(url, admin).await.unwrap();
    let t = a
        .get_task(v1::GetTaskRequest { id: id.into() })
        .await
        .unwrap()
        .into_inner();
    t.state == v1::TaskState::Cancelled as i32
}

#[test]
fn a_node_token_connects_only_as_its_own_name() {
    let c = Cluster::new();
    let token = c.node_token("build-box");
    let pool = c.node_token("k8s-*");
    let url = c.url.clone();
    c.block_on(async {
        let err = session(&url, &token, "gpu-1")
            .await
            .expect_err("a build-box token cannot connect as gpu-1");
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(
            err.message().contains("build-box") && err.message().contains("gpu-1"),
            "the error names both: {}",
            err.message()
        );
        session(&url, &token, "build-box").await.unwrap();
        session(&url, &pool, "k8s-7").await.unwrap();
        let err = session(&url, &pool, "k8s").await.unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied);
    });
}

#[test]
fn a_member_submits_only_to_the_nodes_its_token_allows_and_changes_are_audited() {
    let c = Cluster::with_node("box-2");
    let m = c.user_token("mia", "member", &["box-*"]);
    let url = c.url.clone();
    c.block_on(async {
        let mut cl = client_with(&url, &m).await.unwrap();
        let err = cl
            .submit(v1::SubmitRequest {
                remote: "gpu-1".into(),
                ..submit_req("to-gpu", "hi")
            })
            .await
            .unwrap_err();
        assert_eq!(err.code(), Code::PermissionDenied, "{err:?}");
        assert!(err.message().contains("box-*"), "{}", err.message());
        cl.submit(v1::SubmitRequest {
            remote: "box-2".into(),
            ..submit_req("to-box", "hi")
        })
        .await
        .unwrap();
        cl.cancel(v1::CancelRequest {
            id: "to-box".into(),
        })
        .await
        .unwrap();
    });
    // Nothing was made of the refused submit.
    let out = c.run(&["status", "to-gpu"]);
    assert!(!out.status.success());
    // The audit names who did what to which task, newest first.
    let audit = c.ok(&["audit", "--json"]);
    let v: serde_json::Value = serde_json::from_str(&audit).unwrap();
    let rows: Vec<(String, String, String)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["who"].as_str().unwrap().to_string(),
                r["action"].as_str().unwrap().to_string(),
                r["task"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    let pos = |who: &str, action: &str, task: &str| {
        rows.iter()
            .position(|r| r.0 == who && r.1 == action && r.2 == task)
            .unwrap_or_else(|| panic!("no audit row {who} {action} {task} in {rows:?}"))
    };
    let cancel = pos("mia", "cancel", "to-box");
    let submit = pos("mia", "submit", "to-box");
    assert!(cancel < submit, "newest first: {rows:?}");
    assert!(
        !rows.iter().any(|r| r.2 == "to-gpu"),
        "a refused call changes nothing: {rows:?}"
    );
    // The token made for mia is audited too, and the table view names it.
    let table = c.ok(&["audit"]);
    assert!(table.contains("mia"), "{table}");
}

#[test]
fn quotas_limit_submits_a_minute_and_active_tasks_per_token_and_say_which() {
    let c = Cluster::with_coordinator_args(&["--max-active-tasks", "2"]);
    let mut c = c;
    c.add_agent(dispatch_tests::AgentOpts::new("box", 1));
    let member = c.user_token("mo", "member", &[]);
    // A token with its own rate.
    let burst = c.ok(&[
        "token",
        "create",
        "--user",
        "bo",
        "--role",
        "member",
        "--submits-per-minute",
        "2",
        "--json",
    ]);
    let burst: serde_json::Value = serde_json::from_str(&burst).unwrap();
    let burst = burst["token"].as_str().unwrap().to_string();
    let url = c.url.clone();
    c.block_on(async {
        let mut m = client_with(&url, &member).await.unwrap();
        m.submit(submit_req("m-1", "one")).await.unwrap();
        m.submit(submit_req("m-2", "two")).await.unwrap();
        let e = m.submit(submit_req("m-3", "three")).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("at most 2 active tasks") && e.message().contains("has 2"),
            "{}",
            e.message()
        );
        // Another user's tasks do not count against mo, and one ended frees a place.
        let mut admin = client_with(&url, &c.admin_token).await.unwrap();
        admin.submit(submit_req("a-1", "admin's")).await.unwrap();
        m.cancel(v1::CancelRequest { id: "m-1".into() })
            .await
            .unwrap();
        m.submit(submit_req("m-3", "three")).await.unwrap();

        let mut b = client_with(&url, &burst).await.unwrap();
        b.submit(submit_req("b-1", "one")).await.unwrap();
        b.cancel(v1::CancelRequest { id: "b-1".into() })
            .await
            .unwrap();
        b.submit(submit_req("b-2", "two")).await.unwrap();
        let e = b.submit(submit_req("b-3", "three")).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("may submit 2 tasks a minute"),
            "{}",
            e.message()
        );
    });
    // Nothing was stored of the refused submits.
    assert!(!c.run(&["status", "b-3"]).status.success());
    // The CLI shows the limit.
    let out = c
        .cli()
        .env("DISPATCH_TOKEN", &burst)
        .args([
            "run",
            "--backend",
            "sim",
            "--remote",
            "box",
            "--id",
            "b-4",
            "four",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        dispatch_tests::text(&out.stderr).contains("tasks a minute"),
        "{}",
        dispatch_tests::text(&out.stderr)
    );
}

#[test]
fn a_retry_counts_like_a_submit_and_goes_only_where_the_token_allows() {
    let mut c = Cluster::with_coordinator_args(&["--max-active-tasks", "2"]);
    c.add_agent(dispatch_tests::AgentOpts::new("box", 4));
    c.add_agent(dispatch_tests::AgentOpts::new("gpu", 4));
    let member = c.user_token("mo", "member", &["box"]);
    let burst = c.block_on(async {
        let mut a = client_with(&c.url, &c.admin_token).await.unwrap();
        a.create_token(v1::CreateTokenRequest {
            user: "bo".into(),
            role: "member".into(),
            submits_per_minute: 2,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner()
        .token
    });
    let url = c.url.clone();
    let retry = |id: &str, remote: &str| v1::RetryRequest {
        id: id.into(),
        remote: remote.into(),
        ..Default::default()
    };
    c.block_on(async {
        let mut m = client_with(&url, &member).await.unwrap();
        for id in ["m-1", "m-2"] {
            m.submit(submit_req(id, "one")).await.unwrap();
            m.cancel(v1::CancelRequest { id: id.into() }).await.unwrap();
        }
        m.submit(submit_req("m-3", "three")).await.unwrap();
        m.submit(submit_req("m-4", "four")).await.unwrap();
        // Two active: a retry would be a third.
        let e = m.retry(retry("m-1", "")).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("at most 2 active tasks") && e.message().contains("has 2"),
            "{}",
            e.message()
        );
        m.cancel(v1::CancelRequest { id: "m-3".into() })
            .await
            .unwrap();
        // A node the token does not allow (it exists and is connected) is refused, not queued.
        let e = m.retry(retry("m-1", "gpu")).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        assert!(
            e.message().contains("gpu") && e.message().contains("box"),
            "{}",
            e.message()
        );
        // An admin retrying mo's task cannot send it past the nodes mo's token allowed.
        let mut a = client_with(&url, &c.admin_token).await.unwrap();
        let e = a.retry(retry("m-1", "gpu")).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        let e = a.retry(retry("m-1", "ghost")).await.unwrap_err();
        assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
        a.submit(v1::SubmitRequest {
            remote: "gpu".into(),
            ..submit_req("a-1", "admin's")
        })
        .await
        .unwrap();
        a.cancel(v1::CancelRequest { id: "a-1".into() })
            .await
            .unwrap();
        // A node that does not exist is named as such.
        let e = a.retry(retry("a-1", "ghost")).await.unwrap_err();
        assert_eq!(e.code(), Code::NotFound, "{e:?}");
        assert!(e.message().contains("ghost"), "{}", e.message());
        // Within the limits it runs again.
        let t = m.retry(retry("m-1", "")).await.unwrap().into_inner();
        assert_eq!(t.attempt, 2, "{t:?}");

        // A retry takes from the token's submits a minute.
        let mut b = client_with(&url, &burst).await.unwrap();
        b.submit(submit_req("b-1", "one")).await.unwrap();
        b.cancel(v1::CancelRequest { id: "b-1".into() })
            .await
            .unwrap();
        b.retry(retry("b-1", "")).await.unwrap();
        b.cancel(v1::CancelRequest { id: "b-1".into() })
            .await
            .unwrap();
        let e = b.retry(retry("b-1", "")).await.unwrap_err();
        assert_eq!(e.code(), Code::ResourceExhausted, "{e:?}");
        assert!(
            e.message().contains("may submit 2 tasks a minute"),
            "{}",
            e.message()
        );
    });
    // Refused retries changed nothing.
    let s = c.ok(&["status", "b-1", "--json"]);
    let s: serde_json::Value = serde_json::from_str(&s).unwrap();
    assert_eq!(s["attempt"], 2, "{s}");
}

/// Issue 23 item 12: tokens never expired and never said when they were last used. A token
/// made with --expires stops working then, with an error that says so; `token list` shows
/// when each was last used (kept in memory, written in batches) and when it expires.
#[test]
fn a_token_expires_when_asked_and_says_when_it_was_last_used() {
    let c = dispatch_tests::Cluster::with_node("box");
    let out = c.ok(&[
        "token",
        "create",
        "--user",
        "ci",
        "--role",
        "member",
        "--expires",
        "3s",
        "--json",
    ]);
    let made: serde_json::Value = serde_json::from_str(&out).unwrap();
    let token = made["token"].as_str().unwrap().to_string();
    let id = made["id"].as_str().unwrap().to_string();
    assert!(made["expires_at_ms"].as_i64().unwrap() > 0, "{made}");
    let as_ci = |args: &[&str]| {
        c.cli()
            .env("DISPATCH_TOKEN", &token)
            .args(args)
            .output()
            .unwrap()
    };
    let used = as_ci(&["status"]);
    assert!(
        used.status.success(),
        "{}",
        dispatch_tests::text(&used.stderr)
    );
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["token", "list", "--json"])).unwrap();
    let row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == id.as_str())
        .unwrap()
        .clone();
    assert!(row["last_used_at_ms"].as_i64().unwrap() > 0, "{row}");
    let admin_row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "admin")
        .unwrap();
    assert!(admin_row["expires_at_ms"].is_null(), "{admin_row}");
    let table = c.ok(&["token", "list"]);
    assert!(
        table.contains("LAST USED") && table.contains("valid for"),
        "{table}"
    );
    // Expired: refused, saying so.
    let err = dispatch_tests::wait_until("the token to expire", || {
        let out = as_ci(&["status"]);
        (!out.status.success()).then(|| dispatch_tests::text(&out.stderr))
    });
    assert!(err.contains(&format!("token {id} expired")), "{err}");
    assert!(c.ok(&["token", "list"]).contains("expired"));
}

/// Issue 23 item 12: a registration token (`token create --node PATTERN --uses N`) registers at
/// most N nodes. The real agent, started with it, is given a token of its own for its name,
/// keeps it (DATA_DIR/node.token, 0600) and presents it from then on, so a restart needs no
/// use; a further node is refused for good (exit 78, saying why); a registration whose Welcome
/// was lost can be repeated for the same name without taking another use, until the node has
/// used what it was given; and every registration is in the audit.
#[test]
fn a_registration_token_registers_n_nodes_and_each_keeps_a_token_of_its_own() {
    use dispatch_tests::{AgentOpts, wait_until};
    use std::os::unix::fs::PermissionsExt;
    let mut c = Cluster::with_node("box");
    let made: serde_json::Value = serde_json::from_str(
        &c.ok(&["token", "create", "--node", "ci-*", "--uses", "1", "--json"]),
    )
    .unwrap();
    let reg = made["token"].as_str().unwrap().to_string();
    let reg_id = made["id"].as_str().unwrap().to_string();
    assert_eq!(made["uses_max"], 1, "{made}");
    // Only node tokens register nodes.
    let out = c.run(&[
        "token", "create", "--user", "u", "--role", "member", "--uses", "2",
    ]);
    assert!(!out.status.success());
    let with_reg = |name: &str| {
        let mut o = AgentOpts::new(name, 1);
        o.no_token = true;
        o.env.push(("DISPATCH_AGENT_TOKEN".into(), reg.clone()));
        o.args = vec!["--give-up-after".into(), "1s".into()];
        o
    };
    c.add_agent(with_reg("ci-1"));
    let own_file = c.dir.path().join("agent-ci-1").join("node.token");
    // The coordinator lists the node once its session opens; the agent keeps its token when
    // the welcome reaches it, a moment later.
    let own = wait_until("the registered node to keep its token", || {
        std::fs::read_to_string(&own_file).ok()
    });
    let own = own.trim();
    assert!(own.starts_with("dsp_") && own != reg, "{own}");
    assert_eq!(
        std::fs::metadata(&own_file).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["token", "list", "--json"])).unwrap();
    let rows = list.as_array().unwrap();
    let reg_row = rows.iter().find(|t| t["id"] == reg_id.as_str()).unwrap();
    assert_eq!(
        (reg_row["uses"].as_u64(), reg_row["uses_max"].as_u64()),
        (Some(1), Some(1))
    );
    let minted: Vec<_> = rows
        .iter()
        .filter(|t| t["created_by"] == format!("registration:{reg_id}").as_str())
        .collect();
    assert_eq!(minted.len(), 1, "{list}");
    assert_eq!(minted[0]["name"], "ci-1");
    assert!(own.starts_with(&format!("dsp_{}_", minted[0]["id"].as_str().unwrap())));
    assert!(
        c.ok(&["token", "list"])
            .contains("used up (1 of 1 nodes registered)")
    );

    // The token is spent: another node is refused for good, and told why.
    let mut second = c.spawn_agent(&with_reg("ci-2"));
    let status = wait_until("the second agent to give up", || {
        second.child.try_wait().unwrap()
    });
    let log = second.log_text();
    assert_eq!(status.code(), Some(78), "{log}");
    assert!(
        log.contains(&format!(
            "registration token {reg_id} has registered 1 of its 1 node"
        )),
        "{log}"
    );
    assert!(!c.dir.path().join("agent-ci-2").join("node.token").exists());

    // ci-1 restarts with the spent registration token still in its environment: it presents
    // its own.
    c.restart_agent("ci-1", with_reg("ci-1"));
    assert!(
        c.agent("ci-1")
            .log_text()
            .contains("using this node's own token")
    );
    // A registration's own name cannot be taken again once its node used its token.
    let url = c.url.clone();
    let e = c
        .block_on(session(&url, &reg, "ci-1"))
        .expect_err("ci-1 is registered");
    assert_eq!(e.code(), Code::PermissionDenied, "{e:?}");
    assert!(e.message().contains("has its own token"), "{}", e.message());

    // A Welcome lost on the way: the same name registers again without another use, and the
    // token minted first is replaced (revoked), not left behind.
    let two: serde_json::Value =
        serde_json::from_str(&c.ok(&["token", "create", "--node", "w-1", "--uses", "1", "--json"]))
            .unwrap();
    let (two_tok, two_id) = (
        two["token"].as_str().unwrap().to_string(),
        two["id"].as_str().unwrap().to_string(),
    );
    c.block_on(async {
        session(&url, &two_tok, "w-1").await.unwrap();
    });
    wait_until("w-1's first session to end", || {
        let nodes = c.ok(&["nodes", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&nodes).unwrap();
        v.as_array()
            .unwrap()
            .iter()
            .any(|n| n["name"] == "w-1" && n["connected"] == false)
            .then_some(())
    });
    c.block_on(async {
        session(&url, &two_tok, "w-1").await.unwrap();
    });
    let list: serde_json::Value =
        serde_json::from_str(&c.ok(&["token", "list", "--json"])).unwrap();
    let by_two: Vec<_> = list
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["created_by"] == format!("registration:{two_id}").as_str())
        .collect();
    assert_eq!(by_two.len(), 2, "{list}");
    assert_eq!(
        by_two.iter().filter(|t| t["revoked_at_ms"] == 0).count(),
        1,
        "{list}"
    );
    let two_row = list
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["id"] == two_id.as_str())
        .unwrap();
    assert_eq!(two_row["uses"], 1, "{two_row}");
    let audit = c.ok(&["audit"]);
    assert_eq!(audit.matches("node-register").count(), 3, "{audit}");
}
