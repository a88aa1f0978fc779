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
