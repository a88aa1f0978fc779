//! Notifications: a command (details in env vars only) and an http webhook, with retries.

use dispatch_tests::{AgentOpts, Cluster, text, wait_until};
use std::io::{BufRead, BufReader, Read, Write};

#[test]
fn the_notify_command_hears_of_questions_and_ended_tasks_without_running_their_text() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("notified.txt");
    let trap = dir.path().join("pwned");
    let cmd = format!(
        "printf '%s|%s|%s|%s|%s\\n' \"$DISPATCH_EVENT\" \"$DISPATCH_TASK_ID\" \"$DISPATCH_QUESTION_SEQ\" \"$DISPATCH_QUESTION\" \"$DISPATCH_STATE\" >> {}",
        log.display()
    );
    let mut c = Cluster::with_coordinator_args(&["--notify-command", &cmd]);
    c.add_agent(AgentOpts::new("box", 2));
    // (The sim's directive ends at the first closing parenthesis, so the hostile part uses
    // backticks.)
    let question = format!("Ok to run `touch {}` and $HOME now?", trap.display());
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "notified",
        "--step",
        &format!("(ask: {question})"),
        "notify me",
    ]);
    let line = wait_until("the question notification", || {
        std::fs::read_to_string(&log).ok().filter(|l| !l.is_empty())
    });
    assert_eq!(line, format!("question|notified|001|{question}|waiting\n"));
    c.ok(&["answer", "notified", "yes"]);
    wait_until("the task-ended notification", || {
        std::fs::read_to_string(&log)
            .ok()
            .filter(|l| l.lines().count() == 2)
    });
    let all = std::fs::read_to_string(&log).unwrap();
    assert_eq!(all.lines().nth(1), Some("task_ended|notified|||completed"));
    assert!(!trap.exists(), "the question's text was never run");
}

#[test]
fn the_webhook_gets_json_and_a_failed_post_is_retried() {
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hooks/dispatch", server.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // First request: 500 (must be retried); then 200s.
        for (i, conn) in server.incoming().enumerate() {
            let status = if i == 0 {
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let (head, body) = read_post(conn.unwrap(), status);
            tx.send((head, String::from_utf8(body).unwrap())).unwrap();
        }
    });
    let mut c = Cluster::with_coordinator_args(&["--notify-webhook", &url]);
    c.add_agent(AgentOpts::new("box", 2));
    let out = c.run(&[
        "--backend",
        "sim",
        "--id",
        "hooked",
        "--step",
        "(fail: no disk)",
        "--wait",
        "x",
    ]);
    assert_eq!(out.status.code(), Some(12), "{}", text(&out.stderr));
    let (head1, body1) = rx
        .recv_timeout(dispatch_tests::DEADLINE)
        .expect("the webhook was called");
    let (_, body2) = rx
        .recv_timeout(dispatch_tests::DEADLINE)
        .expect("the failed POST was retried");
    assert!(
        head1.starts_with("POST /hooks/dispatch HTTP/1.1\r\n"),
        "{head1}"
    );
    assert_eq!(body1, body2);
    let v: serde_json::Value = serde_json::from_str(&body1).unwrap();
    assert_eq!(v["event"], "task_ended");
    assert_eq!(v["task"], "hooked");
    assert_eq!(v["state"], "failed");
    assert!(v["reason"].as_str().unwrap().contains("no disk"));
}

#[test]
fn a_bad_notify_config_is_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("config.yaml");
    std::fs::write(&cfg, "notify:\n  webhok: http://x\n").unwrap();
    let out = std::process::Command::new(dispatch_tests::bin("dispatch-coordinator"))
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .arg("--config")
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("config.yaml")
            && err.contains("unknown field `webhok`")
            && err.contains("line 2"),
        "{err}"
    );
}

#[test]
fn an_https_webhook_is_verified_and_each_post_is_signed() {
    use tokio_rustls::rustls;
    use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer, pem::PemObject};
    let certs = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(dispatch_tests::bin("dispatch-coordinator"))
        .args(["certs", "init"])
        .arg(certs.path())
        .args(["--host", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let chain: Vec<CertificateDer<'static>> =
        CertificateDer::pem_file_iter(certs.path().join("server.pem"))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
    let key = PrivateKeyDer::from_pem_file(certs.path().join("server.key")).unwrap();
    let tls = std::sync::Arc::new(
        rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap(),
    );
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("https://{}/hook", server.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in server.incoming() {
            let conn = conn.unwrap();
            let session = rustls::ServerConnection::new(tls.clone()).unwrap();
            let mut stream = rustls::StreamOwned::new(session, conn);
            let mut reader = BufReader::new(&mut stream);
            let mut head = String::new();
            let mut len = 0;
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    break;
                }
                if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap();
                }
                head.push_str(&line);
                if line == "\r\n" || line.is_empty() {
                    break;
                }
            }
            let mut body = vec![0; len];
            reader.read_exact(&mut body).unwrap();
            stream
                .write_all(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
                .unwrap();
            stream.conn.send_close_notify();
            let _ = stream.flush();
            tx.send((head, body)).unwrap();
        }
    });
    let secret = "a-long-random-shared-secret";
    let cfg = certs.path().join("coordinator.yaml");
    std::fs::write(
        &cfg,
        format!(
            "notify:\n  webhook: {url}\n  secret: {secret}\n  ca: {}\n",
            certs.path().join("ca.pem").display()
        ),
    )
    .unwrap();
    let mut c = Cluster::with_coordinator_args(&["--config", cfg.to_str().unwrap()]);
    c.add_agent(AgentOpts::new("box", 2));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "signed",
        "--step",
        "one",
        "--wait",
        "x",
    ]);
    let (head, body) = rx
        .recv_timeout(dispatch_tests::DEADLINE)
        .expect("the https webhook was called");
    let want = dispatch_coordinator::notify::signature(secret, &body);
    let sig = head
        .lines()
        // Header names are case-insensitive (RFC 9110); the value is what counts.
        .find_map(|l| {
            l.split_once(':')
                .filter(|(k, _)| k.eq_ignore_ascii_case("x-dispatch-signature-256"))
                .map(|(_, v)| v.trim())
        })
        .unwrap_or_else(|| panic!("no signature header in {head}"));
    assert_eq!(sig, want);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["task"], "signed");
    assert_eq!(v["state"], "completed");
}

/// Reads one HTTP request (head and body) from `conn` and answers `status` (e.g. `200 OK`).
fn read_post(conn: std::net::TcpStream, status: &str) -> (String, Vec<u8>) {
    let mut w = conn.try_clone().unwrap();
    let mut reader = BufReader::new(conn);
    let mut head = String::new();
    let mut len = 0;
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).unwrap();
        if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
            len = v.trim().parse().unwrap();
        }
        head.push_str(&line);
        if line == "\r\n" || line.is_empty() {
            break;
        }
    }
    let mut body = vec![0; len];
    reader.read_exact(&mut body).unwrap();
    w.write_all(format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n").as_bytes())
        .unwrap();
    (head, body)
}

#[test]
#[ignore = "needs Python test clients; run with --run-ignored all (.ci/run does)"]
fn deliveries_follow_standard_webhooks_and_a_receiver_refuses_replays() {
    let Some(py) = dispatch_tests::python_with(&["standardwebhooks"]) else {
        return;
    };
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", server.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for conn in server.incoming() {
            let _ = tx.send(read_post(conn.unwrap(), "200 OK"));
        }
    });
    // A Standard Webhooks secret: whsec_ and the base64 of the key.
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("coordinator.yaml");
    std::fs::write(
        &cfg,
        format!("notify:\n  webhook: {url}\n  secret: {secret}\n"),
    )
    .unwrap();
    let mut c = Cluster::with_coordinator_args(&["--config", cfg.to_str().unwrap()]);
    c.add_agent(AgentOpts::new("box", 2));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "std",
        "--step",
        "one",
        "--wait",
        "x",
    ]);
    let (head, body) = rx
        .recv_timeout(dispatch_tests::DEADLINE)
        .expect("the webhook was called");
    let headers: serde_json::Map<String, serde_json::Value> = head
        .lines()
        .skip(1)
        .filter_map(|l| l.split_once(": "))
        .map(|(k, v)| (k.to_string(), serde_json::Value::String(v.to_string())))
        .collect();
    assert_eq!(
        headers.get("webhook-id").and_then(|v| v.as_str()),
        Some("msg_std_task_ended_1"),
        "{head}"
    );
    let body = String::from_utf8(body).unwrap();
    let delivery = serde_json::json!({"headers": headers, "body": body});
    let mut tampered = delivery.clone();
    tampered["body"] = serde_json::Value::String(body.replace("completed", "failed"));
    let mut stale = delivery.clone();
    stale["headers"]["webhook-timestamp"] = serde_json::Value::String("1614265330".into());
    let file = dir.path().join("deliveries.json");
    std::fs::write(
        &file,
        serde_json::to_string(&serde_json::json!([delivery, delivery, tampered, stale])).unwrap(),
    )
    .unwrap();
    let (code, out) =
        dispatch_tests::run_python(&py, "webhook_verify.py", &[secret, file.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
    let verdicts: Vec<&str> = out
        .lines()
        .map(|l| l.split_whitespace().next().unwrap_or(""))
        .collect();
    assert_eq!(
        verdicts,
        ["ok", "replay", "invalid", "invalid"],
        "the reference library's verdicts:\n{out}"
    );
}
