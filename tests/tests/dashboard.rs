//! The web dashboard (issue 14) in a real browser: Debian's chromium driven by Playwright
//! (tests/python/dashboard.py). Needs `playwright` in DISPATCH_TEST_PYTHON and chromium
//! (DISPATCH_TEST_CHROMIUM, else /usr/bin/chromium); `.ci/run` installs both. Without them the
//! test says it skips; under CI it fails.

use dispatch_tests::{AgentOpts, Cluster, python_with, run_python, text};
use std::path::PathBuf;

fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("DISPATCH_TEST_CHROMIUM")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/chromium"));
    if path.exists() {
        return Some(path);
    }
    let why = format!(
        "no chromium at {} (apt-get install chromium, or set DISPATCH_TEST_CHROMIUM)",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{why}");
    }
    eprintln!("skipped: {why}");
    None
}

#[test]
fn the_dashboard_ticks_live_takes_an_answer_and_shows_a_viewer_no_answer_box() {
    let (Some(python), Some(chromium)) = (python_with(&["playwright"]), chromium()) else {
        return;
    };
    let mut c = Cluster::with_coordinator_args(&["--http-listen", "127.0.0.1:0"]);
    c.add_agent(AgentOpts::new("web1", 2));
    let viewer = c.user_token("vera", "viewer", &[]);
    let out = c
        .cli()
        .args([
            "--backend",
            "sim",
            "--id",
            "web-task",
            "--step",
            "get going (ask: may the worker start?)",
            "--step",
            "read the code (sleep 2500ms)",
            "--step",
            "write the fix (sleep 2500ms)",
            "--step",
            "finish",
            "fix the bug",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let url = std::fs::read_to_string(c.dir.path().join("coordinator/http.addr"))
        .unwrap()
        .trim()
        .to_string();
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/test-artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shot = artifacts.join("dashboard.png");
    let (code, said) = run_python(
        &python,
        "dashboard.py",
        &[
            &url,
            &c.admin_token,
            &viewer,
            "web-task",
            shot.to_str().unwrap(),
            chromium.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{said}");
    assert!(said.contains("dashboard ok"), "{said}");
    assert!(shot.exists());
    eprintln!("screenshot: {}", shot.display());
}

/// One plain HTTP/1.1 GET: (status, headers and body).
fn get(url: &str, cookie: Option<&str>) -> (u16, String) {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let mut s = std::net::TcpStream::connect(host).unwrap();
    let cookie = cookie
        .map(|c| format!("Cookie: {c}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\n{cookie}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out[9..12].parse().unwrap();
    (status, out)
}

#[test]
fn the_local_daemon_logs_its_owner_in_with_a_one_time_link() {
    let home = tempfile::tempdir().unwrap();
    let dispatch = || {
        let mut c = std::process::Command::new(dispatch_tests::bin("dispatch"));
        c.env_remove("DISPATCH_COORDINATOR")
            .env("DISPATCH_HOME", home.path())
            .current_dir(home.path());
        c
    };
    let out = dispatch()
        .args(["dashboard", "--no-open"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let said = text(&out.stdout);
    let link = said.lines().next().unwrap().to_string();
    assert!(
        link.starts_with("http://127.0.0.1:") && link.contains("/login?once="),
        "{said}"
    );
    let base = link.split("/login").next().unwrap().to_string();
    // Nothing without logging in.
    let (code, _) = get(&format!("{base}/"), None);
    assert_eq!(code, 303);
    let (code, answer) = get(&link, None);
    assert_eq!(code, 303, "{answer}");
    let cookie = answer
        .lines()
        .find_map(|l| l.strip_prefix("set-cookie: "))
        .and_then(|c| c.split(';').next())
        .expect("a session cookie")
        .to_string();
    // Good once.
    assert_eq!(get(&link, None).0, 401);
    let (code, page) = get(&format!("{base}/nodes"), Some(&cookie));
    assert_eq!(code, 200, "{page}");
    assert!(page.contains(">local<"), "{page}");
    let _ = dispatch().args(["daemon", "stop"]).output();
}
