//! The CLI's help and its errors before any coordinator is involved (also makes `cargo test`
//! build the binary for the end-to-end tests).

use std::process::Command;

fn dispatch() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_dispatch"));
    c.env_remove("DISPATCH_COORDINATOR")
        .env("DISPATCH_HOME", "/nonexistent/dispatch-home");
    c
}

#[test]
fn help_lists_every_command_and_run_flag() {
    let help =
        String::from_utf8_lossy(&dispatch().arg("--help").output().unwrap().stdout).into_owned();
    for word in [
        "run",
        "status",
        "watch",
        "logs",
        "cancel",
        "nodes",
        "demo",
        "daemon",
        "--remote",
        "--backend",
        "--model",
        "--id",
        "--step",
        "--plan",
        "--after",
        "--workdir",
        "--wait",
        "--coordinator",
        "--json",
    ] {
        assert!(help.contains(word), "--help lacks {word}:\n{help}");
    }
    assert!(!help.contains("sim-worker"), "the sim worker is hidden");
}

#[test]
fn invalid_input_fails_before_contacting_anyone() {
    let out = dispatch()
        .args(["--id", "UPPER", "do it"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("must be kebab-case"));
    let big = "x".repeat(65 * 1024 + 1);
    let out = dispatch().args(["run", &big]).output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("over the limit"));
    // A lone word is refused as a command that does not exist, and not echoed in full.
    let out = dispatch().arg(&big).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not a dispatch command"));
    assert!(out.stderr.len() < 1024, "{} bytes", out.stderr.len());
    let out = dispatch().output().unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("say what to dispatch"));
}
