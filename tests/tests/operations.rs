//! What an operator's tools see (issue 12): the standard gRPC health check and server
//! reflection, through Python's grpcio clients (tests/python/, installed by `.ci/run`).

use dispatch_tests::{Cluster, python_with, run_python, wait_until};

#[test]
fn health_is_serving_then_not_serving_while_the_coordinator_drains_and_reflection_lists_the_api() {
    let Some(py) = python_with(&["grpc", "grpc_health.v1", "grpc_reflection.v1alpha"]) else {
        return;
    };
    let mut c = Cluster::with_coordinator_args(&["--shutdown-grace", "3s"]);
    let addr = c.url.trim_start_matches("http://").to_string();
    for service in [
        "",
        "dispatch.v1.DispatchService",
        "dispatch.v1.AgentService",
    ] {
        let (code, out) = run_python(&py, "grpc_probe.py", &["health", &addr, service]);
        assert_eq!((code, out.trim()), (0, "SERVING"), "{service:?}: {out}");
    }
    let (code, out) = run_python(&py, "grpc_probe.py", &["health", &addr, "nope.Service"]);
    assert_eq!((code, out.trim()), (3, "NOT_FOUND"), "{out}");
    let (code, out) = run_python(&py, "grpc_probe.py", &["services", &addr]);
    assert_eq!(code, 0, "{out}");
    let listed: Vec<&str> = out.lines().collect();
    for s in [
        "dispatch.v1.DispatchService",
        "dispatch.v1.AgentService",
        "grpc.health.v1.Health",
    ] {
        assert!(listed.contains(&s), "reflection lists {s}: {out}");
    }

    // SIGTERM: NOT_SERVING while it drains, then it exits.
    let pid = nix::unistd::Pid::from_raw(c.coordinator.child.id() as i32);
    nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).unwrap();
    wait_until("health to say NOT_SERVING", || {
        let (code, out) = run_python(&py, "grpc_probe.py", &["health", &addr]);
        (code == 0 && out.trim() == "NOT_SERVING").then_some(())
    });
    c.coordinator.terminate();
}
