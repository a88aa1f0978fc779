//! The binary's command line (also makes `cargo test` build it for the end-to-end tests).

use std::process::Command;

#[test]
fn help_and_flag_errors() {
    let exe = env!("CARGO_BIN_EXE_dispatch-agent");
    let help = String::from_utf8_lossy(&Command::new(exe).arg("--help").output().unwrap().stdout)
        .into_owned();
    for flag in [
        "--coordinator",
        "--name",
        "--label",
        "--max-tasks",
        "--workdir",
        "--data-dir",
        "DISPATCH_COORDINATOR",
    ] {
        assert!(help.contains(flag), "--help lacks {flag}:\n{help}");
    }
    let bad = Command::new(exe)
        .args(["--coordinator", "http://x", "--label", "novalue"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("label `novalue` is not key=value"));
    let zero = Command::new(exe)
        .args(["--coordinator", "http://x", "--max-tasks", "0"])
        .output()
        .unwrap();
    assert_eq!(zero.status.code(), Some(2));
}

#[test]
fn sim_worker_without_a_plan_says_so() {
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch-agent"))
        .args(["sim-worker", "hello"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("names no plan file"));
}
