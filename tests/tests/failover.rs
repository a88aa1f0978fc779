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
