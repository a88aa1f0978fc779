//! Coordinator address lists (issue 13, the clients' half of failover): an agent and the CLI
//! given `URL1,URL2` reach the first coordinator that answers, at every (re)connect.

use dispatch_tests::{AgentOpts, Cluster, text};

/// A loopback address where nothing listens (connections are refused at once).
fn nobody() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    drop(l);
    format!("http://{addr}")
}

#[test]
fn an_agent_and_the_cli_reach_the_first_coordinator_of_a_list_that_answers() {
    let mut c = Cluster::new();
    let list = format!("{},{}", nobody(), c.url);
    let mut o = AgentOpts::new("listed", 1);
    o.via = Some(list.clone());
    c.add_agent(o);
    let out = c
        .cli()
        .env("DISPATCH_COORDINATOR", &list)
        .args(["--backend", "sim", "--id", "via-list", "--step", "a", "x"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let t = c.wait_task("via-list", "it to end", |t| t.task_state().is_terminal());
    assert_eq!(
        (t.task_state().as_str(), t.node.as_str()),
        ("completed", "listed")
    );

    // Nobody answers: every address and its failure, and what to check.
    let (a, b) = (nobody(), nobody());
    let out = c
        .cli()
        .env("DISPATCH_COORDINATOR", format!("{a}, {b}"))
        .args(["status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("no coordinator of {a}, {b} answered")),
        "{err}"
    );
    assert!(
        err.contains(&format!("cannot connect to the coordinator at {a}")),
        "{err}"
    );
    assert!(
        err.contains(&format!("cannot connect to the coordinator at {b}")),
        "{err}"
    );
    assert!(
        err.contains("Check --coordinator or DISPATCH_COORDINATOR"),
        "{err}"
    );
}

#[test]
fn a_task_sent_while_the_nodes_reconnect_to_a_restarted_coordinator_is_queued_not_refused() {
    // A coordinator that has never seen a node refuses at once, saying what to do.
    let mut c = Cluster::new();
    let out = c.run(&["run", "--backend", "sim", "--id", "nowhere", "x"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr)
            .contains("no node is connected to this coordinator; start `dispatch-agent"),
        "{}",
        text(&out.stderr)
    );

    // It knows `back` now; its agent is away while the coordinator restarts.
    c.add_agent(AgentOpts::new("back", 1));
    c.agent("back").terminate();
    c.agents.retain(|(n, _)| n != "back");
    c.restart_coordinator();
    // No node is connected yet: the task waits for the known ones instead of being refused.
    for (id, remote) in [("meanwhile", None), ("pinned-meanwhile", Some("back"))] {
        let mut args = vec!["--backend", "sim", "--id", id, "--step", "a"];
        if let Some(r) = remote {
            args.extend(["--remote", r]);
        }
        args.push("x");
        let out = c.run(&args);
        assert!(out.status.success(), "{id}: {}", text(&out.stderr));
        assert_eq!(c.status(id)["state"], "queued", "{id}");
    }
    // A node it has never seen is still unknown.
    let out = c.run(&["run", "--backend", "sim", "--remote", "stranger", "x"]);
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("no node named `stranger`"),
        "{}",
        text(&out.stderr)
    );
    // The node comes back and runs them.
    c.add_agent(AgentOpts::new("back", 1));
    for id in ["meanwhile", "pinned-meanwhile"] {
        let t = c.wait_task(id, "it to end", |t| t.task_state().is_terminal());
        assert_eq!(
            (t.task_state().as_str(), t.node.as_str()),
            ("completed", "back")
        );
    }
}
