//! The binary's command line (also makes `cargo test` build it for the end-to-end tests).

use std::process::Command;

#[test]
fn help_names_every_flag_and_bad_flags_fail() {
    let exe = env!("CARGO_BIN_EXE_dispatch-coordinator");
    let help = Command::new(exe).arg("--help").output().unwrap();
    let text = String::from_utf8_lossy(&help.stdout);
    for flag in [
        "--listen",
        "--data-dir",
        "--socket",
        "--heartbeat-interval",
        "--node-timeout",
        "DISPATCH_LISTEN",
    ] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
    let bad = Command::new(exe)
        .args(["--data-dir", "/tmp/x", "--node-timeout", "soon"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("`soon` is not a duration"));
}

#[test]
fn an_address_in_use_is_a_clear_error() {
    let busy = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = busy.local_addr().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_dispatch-coordinator"))
        .args(["--listen", &addr, "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("cannot listen on {addr}")), "{err}");
}
