//! dispatch-bench: starts the real coordinator and agent on loopback and measures.
//!
//! ```text
//! cargo build --release --workspace --bins
//! ./target/release/dispatch-bench questions [--count 500] [--baseline 5] [--json FILE]
//! ./target/release/dispatch-bench dispatch [--count 1000] [--json FILE]
//! ./target/release/dispatch-bench handoff [--count 200] [--json FILE]
//! ./target/release/dispatch-bench throughput [--tasks 100] [--events 200] [--watchers 10] [--prompt-bytes 1]
//! ./target/release/dispatch-bench scale [--nodes 1000] [--seconds 20]
//! ./target/release/dispatch-bench footprint [--tasks 100000]
//! ./target/release/dispatch-bench idle [--tasks 10] [--seconds 10]
//! ./target/release/dispatch-bench security [--count 2000]
//! ./target/release/dispatch-bench strangers [--idle 20000] [--streams 10000] [--count 200]
//! ./target/release/dispatch-bench results [--events 20000] [--parse-mb 64]
//! ./target/release/dispatch-bench fallback [--count 5] [--api-retries 3]   # the real CLIs (tests/clis)
//! ./target/release/dispatch-bench overhead [--count 20]                    # the real CLIs (tests/clis)
//! ```
//!
//! All times are taken in this one process (same clock) except the worker start, which the
//! agent reports (same machine, same wall clock, millisecond resolution).

use dispatch_proto::v1;
use dispatch_tests::{AgentOpts, Cluster};
use std::path::Path;
use std::time::{Duration, Instant};

struct Stats {
    name: String,
    samples: Vec<f64>,
}

impl Stats {
    fn pct(&self, p: f64) -> f64 {
        let mut s = self.samples.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        if s.is_empty() {
            return f64::NAN;
        }
        let i = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
        s[i.min(s.len() - 1)]
    }

    fn row(&self) -> String {
        format!(
            "| {:<52} | {:>6} | {:>9.3} | {:>9.3} | {:>9.3} |",
            self.name,
            self.samples.len(),
            self.pct(50.0),
            self.pct(99.0),
            self.pct(100.0)
        )
    }

    fn json(&self) -> serde_json::Value {
        serde_json::json!({"name": self.name, "n": self.samples.len(), "p50_ms": self.pct(50.0), "p99_ms": self.pct(99.0), "max_ms": self.pct(100.0)})
    }
}

fn arg(args: &[String], name: &str, default: usize) -> usize {
    args.windows(2)
        .find(|w| w[0] == name)
        .and_then(|w| w[1].parse().ok())
        .unwrap_or(default)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn write_atomic(path: &Path, body: &str) {
    let tmp = path.with_extension("question.tmp");
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, path).unwrap();
}

/// The last lines of the coordinator's and the first agent's logs, for a failure message.
fn logs(c: &Cluster) -> String {
    let tail = |log: String| {
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(30)..].join("\n")
    };
    format!(
        "--- coordinator log:\n{}\n--- agent log:\n{}",
        tail(c.coordinator.log_text()),
        tail(c.agents[0].1.log_text())
    )
}

/// Waits for `path` to exist, checking every 50 µs (the resolution of the measurement); None
/// past `deadline`.
fn wait_file(path: &Path, deadline: Instant) -> Option<Instant> {
    loop {
        if path.exists() {
            return Some(Instant::now());
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_micros(50));
    }
}

/// A question renamed into place → posted to each of four receivers (Slack, Discord, Teams and
/// ntfy formats, an answer link made for it), on a loopback receiver that answers at once.
fn receivers(args: &[String]) -> Vec<Stats> {
    use std::io::{BufRead, BufReader, Read, Write};
    let count = arg(args, "--count", 200);
    let server = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let hooks = format!("http://{}", server.local_addr().unwrap());
    let (tx, rx) = std::sync::mpsc::channel::<(String, Instant)>();
    std::thread::spawn(move || {
        for conn in server.incoming() {
            let Ok(conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut w = conn.try_clone().unwrap();
                let mut r = BufReader::new(conn);
                let mut first = String::new();
                let _ = r.read_line(&mut first);
                let path = first.split(' ').nth(1).unwrap_or_default().to_string();
                let mut len = 0;
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                }
                let mut body = vec![0; len];
                let _ = r.read_exact(&mut body);
                let at = Instant::now();
                let _ = w.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
                let _ = tx.send((path, at));
            });
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("coordinator.yaml");
    std::fs::write(
        &cfg,
        format!(
            "notify:\n  public_url: http://127.0.0.1:9\n  targets:\n    - slack: {hooks}/slack\n    - discord: {hooks}/discord\n    - teams: {hooks}/teams\n    - ntfy: {hooks}/bench\n"
        ),
    )
    .unwrap();
    let mut c = Cluster::with_coordinator_args(&["--config", cfg.to_str().unwrap()]);
    c.add_agent(AgentOpts::new("bench", 4));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "notified",
        "--step",
        "hold (sleep 3600s)",
        "bench receivers",
    ]);
    c.wait_task("notified", "the worker to run", |t| {
        t.task_state().as_str() == "running"
    });
    let ipc = c.workdir().join(".dispatch/tasks/notified/ipc");
    let names = ["/slack", "/discord", "/teams", "/"];
    let labels = ["Slack", "Discord", "Teams", "ntfy"];
    let mut each: Vec<Stats> = labels
        .iter()
        .map(|l| Stats {
            name: format!("question renamed into place → posted to {l} (ms)"),
            samples: vec![],
        })
        .collect();
    let mut all = Stats {
        name: "  … → posted to all four (ms)".into(),
        samples: vec![],
    };
    c.block_on(async {
        let mut client = c.client().await.unwrap();
        for seq in 1..=count as u32 {
            let t0 = Instant::now();
            write_atomic(
                &ipc.join(format!("{seq:03}.question")),
                &format!("question {seq}?"),
            );
            let mut seen = [None; 4];
            while seen.iter().any(Option::is_none) {
                let Ok((path, at)) = rx.recv_timeout(Duration::from_secs(10)) else {
                    panic!(
                        "question {seq:03} did not reach every receiver within 10 s\n{}",
                        logs(&c)
                    );
                };
                if let Some(i) = names.iter().position(|n| *n == path) {
                    seen[i].get_or_insert(at);
                }
            }
            let mut last = t0;
            for (i, at) in seen.iter().enumerate() {
                let at = at.unwrap();
                each[i].samples.push(ms(at.saturating_duration_since(t0)));
                last = last.max(at);
            }
            all.samples.push(ms(last.saturating_duration_since(t0)));
            client
                .answer(v1::AnswerRequest {
                    id: "notified".into(),
                    seq,
                    text: format!("answer {seq}"),
                    request_id: String::new(),
                })
                .await
                .unwrap();
        }
    });
    each.push(all);
    each
}

fn questions(args: &[String]) -> Vec<Stats> {
    let count = arg(args, "--count", 500);
    let baseline = arg(args, "--baseline", 5);
    let mut c = Cluster::new();
    c.add_agent(AgentOpts::new("bench", 4));
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "security-review",
        "--step",
        "hold (sleep 3600s)",
        "bench questions",
    ]);
    c.wait_task("security-review", "the worker to run", |t| {
        t.task_state().as_str() == "running"
    });
    let ipc = c.workdir().join(".dispatch/tasks/security-review/ipc");
    // Baseline first, on the fresh task directory: the seed's own monitor (3 s polling),
    // verbatim, watching the same directory.
    let mut polled = None;
    if baseline > 0 {
        let monitor = concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/seed-monitor.sh");
        let mut st = Stats {
            name: "seed monitor script: question → monitor exits (ms)".into(),
            samples: vec![],
        };
        for i in 0..baseline {
            let seq = 1 + i as u32;
            let mut child = std::process::Command::new("bash")
                .arg(monitor)
                .current_dir(c.workdir())
                .spawn()
                .unwrap();
            // Write the question at different phases of the monitor's 3 s cycle.
            std::thread::sleep(Duration::from_millis(700 * (i as u64 % 4) + 100));
            let t0 = Instant::now();
            write_atomic(&ipc.join(format!("{seq:03}.question")), "baseline?");
            child.wait().unwrap();
            st.samples.push(ms(t0.elapsed()));
            std::fs::write(ipc.join(format!("{seq:03}.answer")), "x").unwrap();
        }
        polled = Some(st);
    }
    let first = baseline as u32 + 1;
    let mut seen = Stats {
        name: "question renamed into place → seen by a watcher (ms)".into(),
        samples: vec![],
    };
    let mut answered = Stats {
        name: "Answer RPC → NNN.answer on the node (ms)".into(),
        samples: vec![],
    };
    // The cost of a question must not grow with the task's history.
    let mut early = Stats {
        name: "  the same, questions 1–20 of the task (ms)".into(),
        samples: vec![],
    };
    let mut late = Stats {
        name: format!(
            "  the same, questions {}–{count} of the task (ms)",
            count.saturating_sub(19).max(21)
        ),
        samples: vec![],
    };
    c.block_on(async {
        let mut client = c.client().await.unwrap();
        let mut stream = client
            .watch(v1::WatchRequest {
                task_id: "security-review".into(),
            })
            .await
            .unwrap()
            .into_inner();
        for seq in first..first + count as u32 {
            let q = ipc.join(format!("{seq:03}.question"));
            let t0 = Instant::now();
            write_atomic(&q, &format!("question {seq}?"));
            let reported = async {
                loop {
                    let ev = stream.message().await.unwrap().expect("watch stream");
                    if ev.change == "question"
                        && ev
                            .task
                            .as_ref()
                            .is_some_and(|t| t.questions.iter().any(|x| x.seq == seq))
                    {
                        return;
                    }
                }
            };
            if tokio::time::timeout(Duration::from_secs(10), reported)
                .await
                .is_err()
            {
                panic!(
                    "question {seq:03} was not reported within 10 s\n{}",
                    logs(&c)
                );
            }
            seen.samples.push(ms(t0.elapsed()));
            let k = (seq - first) as usize;
            if k < 20 {
                early.samples.push(ms(t0.elapsed()));
            } else if k + 20 >= count {
                late.samples.push(ms(t0.elapsed()));
            }
            let t1 = Instant::now();
            client
                .answer(v1::AnswerRequest {
                    id: "security-review".into(),
                    seq,
                    text: format!("answer {seq}"),
                    request_id: String::new(),
                })
                .await
                .unwrap();
            let Some(at) = wait_file(
                &ipc.join(format!("{seq:03}.answer")),
                t1 + Duration::from_secs(10),
            ) else {
                panic!("{seq:03}.answer never appeared on the node\n{}", logs(&c));
            };
            answered.samples.push(ms(at - t1));
        }
    });
    let mut out = vec![seen, early, late, answered];
    out.extend(polled);
    c.ok(&["cancel", "security-review"]);
    out
}

fn dispatch(args: &[String]) -> Vec<Stats> {
    let count = arg(args, "--count", 1000);
    let mut c = Cluster::new();
    c.add_agent(AgentOpts::new("bench", 64));
    let mut lat = Stats {
        name: "Submit returns → worker process started (ms)".into(),
        samples: vec![],
    };
    c.block_on(async {
        let mut client = c.client().await.unwrap();
        for i in 0..count {
            let req = v1::SubmitRequest {
                id: format!("d-{i}"),
                prompt: "bench".into(),
                steps: vec!["noop".into()],
                backend: "sim".into(),
                ..Default::default()
            };
            client.submit(req).await.unwrap();
            let returned = dispatch_coordinator_now_ms();
            let mut stream = client
                .watch(v1::WatchRequest {
                    task_id: format!("d-{i}"),
                })
                .await
                .unwrap()
                .into_inner();
            // Keep the node from filling up: let this one finish before the next.
            let mut started = 0;
            loop {
                let t = stream.message().await.unwrap().unwrap().task.unwrap();
                if t.started_at_ms > 0 && started == 0 {
                    started = t.started_at_ms;
                }
                if t.task_state().is_terminal() {
                    break;
                }
            }
            lat.samples.push((started - returned).max(0) as f64);
        }
    });
    vec![lat]
}

fn handoff(args: &[String]) -> Vec<Stats> {
    let count = arg(args, "--count", 200);
    let mut c = Cluster::new();
    c.add_agent(AgentOpts::new("bench", 1));
    let mut st = Stats {
        name: "queued task: slot freed → next worker started (ms)".into(),
        samples: vec![],
    };
    c.block_on(async {
        let mut client = c.client().await.unwrap();
        for i in 0..count {
            let req = v1::SubmitRequest {
                id: format!("h-{i}"),
                prompt: "bench".into(),
                steps: vec!["work (sleep 20ms)".into()],
                backend: "sim".into(),
                ..Default::default()
            };
            client.submit(req).await.unwrap();
        }
        let last = format!("h-{}", count - 1);
        let mut stream = client
            .watch(v1::WatchRequest { task_id: last })
            .await
            .unwrap()
            .into_inner();
        while !stream
            .message()
            .await
            .unwrap()
            .unwrap()
            .task
            .unwrap()
            .task_state()
            .is_terminal()
        {}
        let tasks = client
            .list_tasks(v1::ListTasksRequest {
                states: vec![],
                limit: 1000,
                page_token: String::new(),
            })
            .await
            .unwrap()
            .into_inner()
            .tasks;
        let mut by_id: Vec<v1::Task> = tasks
            .into_iter()
            .filter(|t| t.id.starts_with("h-"))
            .collect();
        by_id.sort_by_key(|t| t.id.trim_start_matches("h-").parse::<usize>().unwrap());
        for w in by_id.windows(2) {
            st.samples
                .push((w[1].started_at_ms - w[0].ended_at_ms) as f64);
        }
    });
    vec![st]
}

/// Plan snapshots committed and fanned out: one light in-process node (a real gRPC stream)
/// runs 100 tasks and streams plan updates as fast as the coordinator acks them, while 10
/// watchers count what arrives.
fn throughput(args: &[String]) -> Vec<Stats> {
    use tokio_stream::wrappers::ReceiverStream;
    let tasks = arg(args, "--tasks", 100);
    let per_task = arg(args, "--events", 200);
    let watchers = arg(args, "--watchers", 10);
    // Every watch event carries the whole task, prompt included.
    let prompt_bytes = arg(args, "--prompt-bytes", 1).max(1);
    let total = tasks * per_task;
    let c = Cluster::new();
    let empty = c.store_bytes();
    let mut rate = Stats {
        name: "plan snapshots committed per second".into(),
        samples: vec![],
    };
    let mut fan = Stats {
        name: "per watcher: plan events received per second".into(),
        samples: vec![],
    };
    let mut lost = Stats {
        name: "per watcher: plan events missed (then resynced)".into(),
        samples: vec![],
    };
    let node_token = c.node_token("sim-node");
    c.block_on(async {
        let channel = tonic::transport::Endpoint::from_shared(c.url.clone())
            .unwrap()
            .tcp_nodelay(true)
            .connect()
            .await
            .unwrap();
        let mut agent = v1::agent_service_client::AgentServiceClient::new(channel.clone());
        let (out, rx) = tokio::sync::mpsc::channel::<v1::AgentMessage>(4096);
        let hello = v1::Hello {
            name: "sim-node".into(),
            capacity: tasks as u32,
            backends: vec![v1::Backend {
                name: "sim".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        out.send(v1::AgentMessage {
            kind: Some(v1::agent_message::Kind::Hello(hello)),
        })
        .await
        .unwrap();
        let mut inbound = agent
            .session(dispatch_tests::with_token(
                ReceiverStream::new(rx),
                &node_token,
            ))
            .await
            .unwrap()
            .into_inner();
        inbound.message().await.unwrap().unwrap(); // Welcome
        let mut client = v1::dispatch_service_client::DispatchServiceClient::with_interceptor(
            channel.clone(),
            dispatch_tests::Bearer::new(&c.admin_token),
        );
        for i in 0..tasks {
            let req = v1::SubmitRequest {
                id: format!("t-{i}"),
                prompt: "x".repeat(prompt_bytes),
                steps: vec!["x".into()],
                backend: "sim".into(),
                ..Default::default()
            };
            client.submit(req).await.unwrap();
        }
        // Ack the Assign commands.
        let mut assigned = 0;
        while assigned < tasks {
            if let Some(v1::CoordinatorMessage {
                kind: Some(v1::coordinator_message::Kind::Command(cmd)),
            }) = inbound.message().await.unwrap()
            {
                assigned += 1;
                let ack = v1::AgentMessage {
                    kind: Some(v1::agent_message::Kind::CommandAck(v1::CommandAck {
                        command_id: cmd.id,
                        error: String::new(),
                    })),
                };
                out.send(ack).await.unwrap();
            }
        }
        // Watchers.
        let mut handles = Vec::new();
        for _ in 0..watchers {
            let mut w = v1::dispatch_service_client::DispatchServiceClient::with_interceptor(
                channel.clone(),
                dispatch_tests::Bearer::new(&c.admin_token),
            );
            let mut stream = w
                .watch(v1::WatchRequest {
                    task_id: String::new(),
                })
                .await
                .unwrap()
                .into_inner();
            handles.push(tokio::spawn(async move {
                let start = Instant::now();
                let (mut got, mut resyncs) = (0usize, 0usize);
                let deadline = Instant::now() + Duration::from_secs(120);
                while got < total && Instant::now() < deadline {
                    match tokio::time::timeout(Duration::from_secs(5), stream.message()).await {
                        Ok(Ok(Some(ev))) if ev.change == "plan" => got += 1,
                        Ok(Ok(Some(ev))) if ev.change == "snapshot" => resyncs += 1,
                        Ok(Ok(Some(_))) => {}
                        _ => break,
                    }
                }
                let _ = resyncs;
                (got, start.elapsed())
            }));
        }
        let start = Instant::now();
        let sender = tokio::spawn(async move {
            for k in 1..=per_task as u64 {
                for i in 0..tasks {
                    let ev = v1::TaskEvent {
                        task_id: format!("t-{i}"),
                        seq: k,
                        at_ms: 0,
                        attempt: 1,
                        kind: Some(v1::task_event::Kind::Plan(v1::PlanUpdated {
                            markdown: format!("# x\n\n- [ ] step {k}\n"),
                        })),
                    };
                    if out
                        .send(v1::AgentMessage {
                            kind: Some(v1::agent_message::Kind::Event(ev)),
                        })
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            }
            // Keep the stream open until the acks are in.
            tokio::time::sleep(Duration::from_secs(3600)).await;
        });
        // An ack covers every event of its task up to its seq (the coordinator acks a group
        // commit once per task).
        let mut acked = std::collections::HashSet::new();
        while acked.len() < tasks {
            if let Some(v1::CoordinatorMessage {
                kind: Some(v1::coordinator_message::Kind::EventAck(a)),
            }) = inbound.message().await.unwrap()
                && a.seq == per_task as u64
            {
                acked.insert(a.task_id);
            }
        }
        let committed = start.elapsed();
        rate.samples.push(total as f64 / committed.as_secs_f64());
        for h in handles {
            let (got, took) = h.await.unwrap();
            fan.samples.push(got as f64 / took.as_secs_f64());
            lost.samples.push((total - got) as f64);
        }
        sender.abort();
    });
    println!(
        "({tasks} tasks × {per_task} snapshots = {total} events, {watchers} watchers; the columns are rates or counts here, not ms)"
    );
    // What the store grew by, per event (each is stored with its task's row updated):
    // SQLite's file and WAL (an upper bound: a page can be in both), or PostgreSQL's database
    // (with the row versions autovacuum has not reclaimed yet).
    let stored = c.store_bytes().saturating_sub(empty);
    println!("(the store grew by {stored} bytes from {empty})");
    let per_event = Stats {
        name: "store bytes per event".into(),
        samples: vec![stored as f64 / total as f64],
    };
    vec![rate, fan, lost, per_event]
}

/// (RSS in MiB, CPU ticks used so far) of a process, from /proc.
fn proc_usage(pid: u32) -> (f64, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|r| r.1.split_whitespace().collect())
        .unwrap_or_default();
    let ticks = fields
        .get(11)
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
    (rss_kb / 1024.0, ticks)
}

/// CPU of an agent (and its coordinator) while its workers sleep: an idle worker must cost
/// its agent about nothing.
fn idle(args: &[String]) -> Vec<Stats> {
    let tasks = arg(args, "--tasks", 10);
    let seconds = arg(args, "--seconds", 10) as u64;
    let mut c = Cluster::with_coordinator_args(&["--heartbeat-interval", "3s"]);
    c.add_agent(AgentOpts::new("idle", tasks as u32));
    for i in 0..tasks {
        c.ok(&[
            "--backend",
            "sim",
            "--id",
            &format!("sleeper-{i}"),
            "--step",
            "sleep (sleep 3600s)",
            "sleep",
        ]);
    }
    for i in 0..tasks {
        c.wait_task(&format!("sleeper-{i}"), "the worker to run", |t| {
            t.task_state().as_str() == "running"
        });
    }
    // Let the start settle, then count.
    std::thread::sleep(Duration::from_secs(2));
    let agent = c.agents[0].1.child.id();
    let coordinator = c.coordinator.child.id();
    let (_, a0) = proc_usage(agent);
    let (_, c0) = proc_usage(coordinator);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (rss, a1) = proc_usage(agent);
    let (_, c1) = proc_usage(coordinator);
    let wall = t0.elapsed().as_secs_f64();
    // Clock ticks are 1/100 s.
    let pct = |ticks: u64| ticks as f64 / 100.0 / wall * 100.0;
    for i in 0..tasks {
        c.ok(&["cancel", &format!("sleeper-{i}")]);
    }
    println!(
        "({tasks} sleeping sim workers, measured over {wall:.1} s; the columns are % of one core or MiB, not ms)"
    );
    vec![
        Stats {
            name: format!("agent CPU, {tasks} workers asleep (% of one core)"),
            samples: vec![pct(a1 - a0)],
        },
        Stats {
            name: "agent CPU per sleeping worker (% of one core)".into(),
            samples: vec![pct(a1 - a0) / tasks as f64],
        },
        Stats {
            name: "coordinator CPU meanwhile (% of one core)".into(),
            samples: vec![pct(c1 - c0)],
        },
        Stats {
            name: "agent RSS (MiB)".into(),
            samples: vec![rss],
        },
    ]
}

/// Many light nodes (real gRPC streams from this process, one connection each) connected and
/// heartbeating at the default interval: the coordinator's memory and CPU.
fn scale(args: &[String]) -> Vec<Stats> {
    let nodes = arg(args, "--nodes", 1000);
    let seconds = arg(args, "--seconds", 20);
    // One socket per node in this process, and in the coordinator (which inherits the limit).
    let want = nodes as u64 + 1024;
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct passed in.
    unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_cur.max(want).min(lim.rlim_max);
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    if lim.rlim_cur < want {
        eprintln!(
            "warning: {nodes} nodes need {want} file descriptors but the hard limit is {}; raise it (`ulimit -Hn`) or expect connection failures",
            lim.rlim_max
        );
    }
    let c = Cluster::with_coordinator_args(&["--heartbeat-interval", "5s"]);
    let pid = c.coordinator.child.id();
    let (idle_rss, _) = proc_usage(pid);
    let mut rss = Stats {
        name: format!("coordinator RSS with {nodes} nodes (MiB)"),
        samples: vec![],
    };
    let mut cpu = Stats {
        name: format!("coordinator CPU with {nodes} nodes heartbeating (% of one core)"),
        samples: vec![],
    };
    let mut base = Stats {
        name: "coordinator RSS with no node (MiB)".into(),
        samples: vec![idle_rss],
    };
    // One token for the whole pool of light nodes: `n-*`.
    let pool_token = c.node_token("n-*");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let url = c.url.clone();
        // Connected and authenticated before the storm: a connection opened during it is one
        // of a thousand unauthenticated ones from this address, and the per-address cap
        // closes it at once (the bench once died on that).
        let mut client = dispatch_tests::client_with(&url, &c.admin_token)
            .await
            .unwrap();
        client.info(v1::InfoRequest {}).await.unwrap();
        let mut tasks = Vec::new();
        // A light node reconnects after a jittered pause, as real agents do.
        let retried = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        for i in 0..nodes {
            let url = url.clone();
            let token = pool_token.clone();
            let retried = std::sync::Arc::clone(&retried);
            tasks.push(tokio::spawn(async move {
                loop {
                    // Comes back after a failed handshake or a dropped stream alike.
                    let _ = light_node(&url, i, &token).await;
                    retried.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(200 + (i % 800) as u64)).await;
                }
            }));
            if i % 200 == 199 {
                tokio::task::yield_now().await;
            }
        }
        let started = Instant::now();
        loop {
            let info = client.info(v1::InfoRequest {}).await.unwrap().into_inner();
            if info.connected_nodes as usize >= nodes {
                break;
            }
            if started.elapsed() > Duration::from_secs(300) {
                let log = c.coordinator.log_text();
                let warnings: Vec<&str> = log
                    .lines()
                    .filter(|l| l.contains("WARN") || l.contains("ERROR"))
                    .take(20)
                    .collect();
                panic!(
                    "only {} of {nodes} nodes connected after 300 s; the coordinator's first warnings:\n{}",
                    info.connected_nodes,
                    warnings.join("\n")
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "({nodes} nodes connected in {:.1} s; {} reconnects)",
            started.elapsed().as_secs_f64(),
            retried.load(std::sync::atomic::Ordering::Relaxed)
        );
        let (_, t0) = proc_usage(pid);
        let w0 = Instant::now();
        tokio::time::sleep(Duration::from_secs(seconds as u64)).await;
        let (r, t1) = proc_usage(pid);
        let hz = 100.0; // USER_HZ on Linux
        rss.samples.push(r);
        cpu.samples
            .push(100.0 * (t1 - t0) as f64 / hz / w0.elapsed().as_secs_f64());
        for t in tasks {
            t.abort();
        }
    });
    base.name = "coordinator RSS with no node (MiB)".into();
    vec![base, rss, cpu]
}

/// One light node: connects, says Hello, then heartbeats every 5 s until the stream ends
/// (`Ok`) or the connection or handshake fails (`Err`).
async fn light_node(url: &str, i: usize, token: &str) -> Result<(), tonic::Status> {
    use tokio_stream::wrappers::ReceiverStream;
    let channel = tonic::transport::Endpoint::from_shared(url.to_string())
        .map_err(|e| tonic::Status::internal(e.to_string()))?
        .connect()
        .await
        .map_err(|e| tonic::Status::unavailable(e.to_string()))?;
    let mut agent = v1::agent_service_client::AgentServiceClient::new(channel);
    let (out, rx) = tokio::sync::mpsc::channel::<v1::AgentMessage>(8);
    let hello = v1::Hello {
        name: format!("n-{i}"),
        capacity: 1,
        backends: vec![v1::Backend {
            name: "sim".into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let _ = out
        .send(v1::AgentMessage {
            kind: Some(v1::agent_message::Kind::Hello(hello)),
        })
        .await;
    let mut inbound = agent
        .session(dispatch_tests::with_token(ReceiverStream::new(rx), token))
        .await?
        .into_inner();
    inbound.message().await?; // Welcome
    let mut tick = tokio::time::interval(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let hb = v1::AgentMessage {
                    kind: Some(v1::agent_message::Kind::Heartbeat(v1::Heartbeat { running: 0, draining: false })),
                };
                if out.send(hb).await.is_err() {
                    return Ok(());
                }
            }
            m = inbound.message() => if !matches!(m, Ok(Some(_))) {
                return Ok(());
            },
        }
    }
}

/// Footprint: the agent's idle RSS, and a coordinator whose store holds many tasks: restart
/// to serving, and `dispatch status` wall time.
fn footprint(args: &[String]) -> Vec<Stats> {
    let n = arg(args, "--tasks", 100_000);
    let mut c = Cluster::with_coordinator_args(&["--metrics-listen", "127.0.0.1:0"]);
    c.add_agent(AgentOpts::new("idle", 2));
    let agent_pid = c.agents[0].1.child.id();
    std::thread::sleep(Duration::from_secs(2));
    let agent_rss = Stats {
        name: "agent idle RSS (MiB)".into(),
        samples: vec![proc_usage(agent_pid).0],
    };
    // Fill the store while the coordinator is down, then measure its restart (without the
    // agent, whose reconnect would race the probe).
    c.agents[0].1.terminate();
    c.coordinator.kill();
    let db = c.dir.path().join("coordinator/dispatch.db");
    let fill = Instant::now();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        use dispatch_coordinator::store::TaskStore;
        let store = dispatch_coordinator::store::SqliteStore::open(&db)
            .await
            .unwrap();
        let now = dispatch_coordinator_now_ms();
        for i in 0..n {
            let t = dispatch_coordinator::model::TaskRecord {
                id: format!("task-{i}"),
                state: dispatch_core::TaskState::Completed,
                title: format!("task {i}"),
                prompt: "a prompt of ordinary length that asks for a piece of work".into(),
                worker_prompt: "the worker prompt".into(),
                plan_md: "# task\n\n- [x] one\n- [x] two\n- [x] Write summary to output.md\n"
                    .into(),
                node: "idle".into(),
                backend: "sim".into(),
                created_ms: now,
                updated_ms: now,
                ended_ms: now,
                attempt: 1,
                ..Default::default()
            };
            let _ = store.insert_task(&t, None, None, None).await.unwrap();
        }
    });
    println!(
        "({n} tasks written in {:.1} s)",
        fill.elapsed().as_secs_f64()
    );
    // Serving = an `Info` RPC answers; probed every millisecond from another thread while the
    // harness restarts the process (its own readiness wait polls more coarsely).
    c.coordinator.kill();
    let url = c.url.clone();
    let token = c.admin_token.clone();
    let t0 = Instant::now();
    let probe = std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            loop {
                if let Ok(mut client) = dispatch_tests::client_with(&url, &token).await
                    && client.info(v1::InfoRequest {}).await.is_ok()
                {
                    return t0.elapsed();
                }
                assert!(
                    t0.elapsed() < Duration::from_secs(60),
                    "the coordinator did not come back within 60 s"
                );
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        })
    });
    c.restart_coordinator();
    let serving = probe.join().unwrap();
    let restart = Stats {
        name: format!("coordinator restart → serving, {n} tasks (ms)"),
        samples: vec![ms(serving)],
    };
    let mut status = Stats {
        name: format!("`dispatch status` wall time, {n} tasks (ms)"),
        samples: vec![],
    };
    for _ in 0..10 {
        let t = Instant::now();
        let out = c.run(&["status"]);
        assert!(out.status.success());
        status.samples.push(ms(t.elapsed()));
    }
    // A Prometheus scrape reads its gauges from the store: what that costs with n tasks.
    let mut scrape = Stats {
        name: format!("/metrics scrape, {n} tasks (ms)"),
        samples: vec![],
    };
    for _ in 0..20 {
        let t = Instant::now();
        dispatch_tests::scrape_metrics(&c.dir.path().join("coordinator/metrics.addr"));
        scrape.samples.push(ms(t.elapsed()));
    }
    vec![agent_rss, restart, status, scrape]
}

fn dispatch_coordinator_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// What the trust layer costs: a call with a token over plain HTTP/2 and over TLS, a new
/// connection (TCP, and the TLS handshake), and a submit unsigned and signed (the client signs,
/// the coordinator checks the spec).
fn security(args: &[String]) -> Vec<Stats> {
    let count = arg(args, "--count", 2000);
    let certs = tempfile::tempdir().unwrap();
    dispatch_coordinator::certs::init(certs.path(), &["localhost".into()], &[], 30, false).unwrap();
    let mut plain = Cluster::new();
    plain.add_agent(AgentOpts::new("bench", 64));
    let tls = Cluster::with_tls(certs.path(), &[]);
    let mut out = Vec::new();
    for (what, c) in [("plain HTTP/2", &plain), ("TLS", &tls)] {
        let mut call = Stats {
            name: format!("Info call, {what} + token (ms)"),
            samples: vec![],
        };
        let mut conn = Stats {
            name: format!("new connection + first call, {what} (ms)"),
            samples: vec![],
        };
        c.block_on(async {
            let mut client = c.client().await.unwrap();
            for _ in 0..count {
                let t = Instant::now();
                client.info(v1::InfoRequest {}).await.unwrap();
                call.samples.push(ms(t.elapsed()));
            }
            for _ in 0..(count / 10).max(1) {
                let t = Instant::now();
                let mut fresh = c.client().await.unwrap();
                fresh.info(v1::InfoRequest {}).await.unwrap();
                conn.samples.push(ms(t.elapsed()));
            }
        });
        out.push(call);
        out.push(conn);
    }
    let key = dispatch_core::signing::Key::generate().unwrap();
    for signed in [false, true] {
        let mut submit = Stats {
            name: format!(
                "Submit, {} (ms)",
                if signed {
                    "signed (sign + coordinator check)"
                } else {
                    "unsigned"
                }
            ),
            samples: vec![],
        };
        plain.block_on(async {
            let mut client = plain.client().await.unwrap();
            for i in 0..(count / 4).max(1) {
                let t = Instant::now();
                let id = format!("s-{signed}-{i}");
                let mut req = v1::SubmitRequest {
                    id: id.clone(),
                    prompt: "bench".into(),
                    steps: vec!["noop".into()],
                    backend: "sim".into(),
                    ..Default::default()
                };
                if signed {
                    let (plan, _) =
                        dispatch_core::plan::for_new_task(&id, "bench", &req.steps, "", "")
                            .unwrap();
                    let mut spec = dispatch_core::signing::TaskSpec {
                        backend: "sim".into(),
                        ..dispatch_core::signing::TaskSpec::new(&id, "bench", &plan, 0)
                    };
                    let (bytes, sig) = key.sign(&mut spec);
                    req.steps.clear();
                    req.plan_markdown = plan;
                    req.signed_spec = bytes;
                    req.signature = sig;
                }
                client.submit(req).await.unwrap();
                submit.samples.push(ms(t.elapsed()));
            }
        });
        out.push(submit);
    }
    out
}

/// Bytes of the coordinator's store (the database and its write-ahead log).
fn store_bytes(c: &Cluster) -> u64 {
    ["dispatch.db", "dispatch.db-wal"]
        .iter()
        .filter_map(|f| std::fs::metadata(c.dir.path().join("coordinator").join(f)).ok())
        .map(|m| m.len())
        .sum()
}

/// What results cost: a structured stream of `--events` tool uses read by the node into
/// activity lines and totals (agent and coordinator CPU per MB, bytes stored per line, end to
/// end), at 1/10 and the full size to show the growth; and the parser alone.
fn results(args: &[String]) -> Vec<Stats> {
    use dispatch_core::stream::{StreamFormat, StreamParser};
    let events = arg(args, "--events", 20_000);
    let mut out = Vec::new();
    // The parser alone, in this process.
    let fixture = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/claude-stream-json.jsonl"
    ))
    .unwrap();
    let big: Vec<u8> = fixture.repeat((arg(args, "--parse-mb", 64) << 20) / fixture.len() + 1);
    let t = Instant::now();
    let mut p = StreamParser::new(StreamFormat::ClaudeStreamJson);
    let mut lines = 0;
    for chunk in big.chunks(64 * 1024) {
        lines += p.feed(chunk).len();
    }
    let secs = t.elapsed().as_secs_f64();
    out.push(Stats {
        name: "parser alone (MB/s of claude stream-json)".into(),
        samples: vec![big.len() as f64 / 1e6 / secs],
    });
    out.push(Stats {
        name: "parser alone (activity lines/s)".into(),
        samples: vec![lines as f64 / secs],
    });
    for n in [events / 10, events] {
        let mut c = Cluster::new();
        let bin = c.dir.path().join("bin");
        std::fs::create_dir_all(&bin).unwrap();
        let stream = c.dir.path().join("stream.jsonl");
        let mut body = String::from(
            "{\"type\":\"system\",\"subtype\":\"init\",\"model\":\"claude-sonnet-4-5\",\"tools\":[\"Bash\"]}\n",
        );
        for i in 0..n {
            body.push_str(&format!(
                "{{\"type\":\"assistant\",\"message\":{{\"id\":\"msg_{i}\",\"model\":\"claude-sonnet-4-5\",\"content\":[{{\"type\":\"tool_use\",\"id\":\"toolu_{i}\",\"name\":\"Bash\",\"input\":{{\"command\":\"cargo test -p crate-{i} -- --nocapture\",\"description\":\"Run the tests of crate {i}\"}}}}],\"usage\":{{\"input_tokens\":3,\"cache_read_input_tokens\":20000,\"output_tokens\":80}}}},\"session_id\":\"s\"}}\n\
                 {{\"type\":\"user\",\"message\":{{\"role\":\"user\",\"content\":[{{\"tool_use_id\":\"toolu_{i}\",\"type\":\"tool_result\",\"content\":\"running 12 tests\\ntest result: ok. 12 passed\"}}]}},\"session_id\":\"s\"}}\n"
            ));
        }
        body.push_str(&format!("{{\"type\":\"result\",\"subtype\":\"success\",\"is_error\":false,\"duration_ms\":1000,\"num_turns\":{n},\"total_cost_usd\":1.5,\"usage\":{{\"input_tokens\":{},\"output_tokens\":{}}}}}\n", 3 * n, 80 * n));
        std::fs::write(&stream, &body).unwrap();
        let claude = bin.join("claude");
        std::fs::write(
            &claude,
            format!(
                "#!/bin/sh\ncat '{}'\n{}",
                stream.display(),
                dispatch_tests::FINISH_PLAN_SH
            ),
        )
        .unwrap();
        std::fs::set_permissions(&claude, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        let cfg = c.dir.path().join("node.yaml");
        std::fs::write(&cfg, "backends:\n  claude: { structured: true }\n").unwrap();
        let mut o = AgentOpts::new("streamer", 1);
        o.path_prefix = Some(bin);
        o.config = Some(cfg);
        c.add_agent(o);
        let agent = c.agents[0].1.child.id();
        let coordinator = c.coordinator.child.id();
        let (_, a0) = proc_usage(agent);
        let (_, c0) = proc_usage(coordinator);
        let before = store_bytes(&c);
        let t = Instant::now();
        c.ok(&[
            "--backend",
            "claude",
            "--id",
            "streamed",
            "--step",
            "work",
            "work",
        ]);
        let task = c.wait_task("streamed", "the stream to be read", |t| {
            t.task_state().is_terminal() && t.usage.as_ref().is_some_and(|u| u.cost_known)
        });
        let wall = t.elapsed().as_secs_f64();
        let (rss, a1) = proc_usage(agent);
        let (_, c1) = proc_usage(coordinator);
        let stored = store_bytes(&c).saturating_sub(before);
        let mb = body.len() as f64 / 1e6;
        let lines = 2 + n;
        assert_eq!(task.usage.as_ref().unwrap().turns as usize, n);
        let tick_ms = |t: u64| t as f64 * 10.0;
        println!(
            "({n} tool uses: {mb:.1} MB of stream, {lines} activity lines, {wall:.2} s end to end, agent RSS {rss:.0} MiB)"
        );
        out.push(Stats {
            name: format!("{n} tool uses: agent CPU per MB of stream (ms)"),
            samples: vec![tick_ms(a1 - a0) / mb],
        });
        out.push(Stats {
            name: format!("{n} tool uses: coordinator CPU per MB (ms)"),
            samples: vec![tick_ms(c1 - c0) / mb],
        });
        out.push(Stats {
            name: format!("{n} tool uses: store bytes per activity line"),
            samples: vec![stored as f64 / lines as f64],
        });
        out.push(Stats {
            name: format!("{n} tool uses: stream MB/s, submit to totals"),
            samples: vec![mb / wall],
        });
    }
    println!(
        "(results: the columns are rates, bytes or ms per MB as named; raw log bytes are stored too, up to --max-log-bytes)"
    );
    out
}

/// Replica takeover on PostgreSQL: two replicas and an agent; the leader SIGKILLed; how long
/// until the standby serves, and until the agent's session is back on it. Also what a
/// standby costs while it waits.
fn takeover(args: &[String]) -> Vec<Stats> {
    let Some(server) = args
        .windows(2)
        .find(|w| w[0] == "--store")
        .map(|w| w[1].clone())
    else {
        eprintln!(
            "takeover needs --store postgres://SERVER (a server the bench may create databases on)"
        );
        std::process::exit(2);
    };
    let trials = arg(args, "--count", 10);
    let mut serve = Vec::new();
    let mut agent = Vec::new();
    let mut standby_cpu = Vec::new();
    for _ in 0..trials {
        let store = dispatch_tests::scratch_database(&server, "takeover");
        let out = std::process::Command::new(dispatch_tests::bin("dispatch-coordinator"))
            .arg("new-token")
            .output()
            .unwrap();
        let token = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mut r = dispatch_tests::Replicas::start_on(&store, &token, 2, &[]);
        r.add_agent("t1", 1);
        // The standby's CPU over 2 s of waiting.
        let pid = r.replicas[1].child.id();
        let cpu = || -> f64 {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let f: Vec<&str> = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .collect();
            let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
                + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
            ticks * 10.0 // ms at 100 Hz
        };
        let before = cpu();
        std::thread::sleep(Duration::from_secs(2));
        standby_cpu.push((cpu() - before) / 2.0);
        r.replicas[0].kill();
        let killed = Instant::now();
        dispatch_tests::wait_until("the standby to serve", || r.serving(1).then_some(()));
        serve.push(ms(killed.elapsed()));
        dispatch_tests::wait_until("the agent to reconnect", || {
            let mut c = r.leader_client()?;
            let nodes = r.block_on(c.list_nodes(v1::ListNodesRequest {})).ok()?;
            nodes
                .into_inner()
                .nodes
                .iter()
                .any(|n| n.name == "t1" && n.connected)
                .then_some(())
        });
        agent.push(ms(killed.elapsed()));
    }
    vec![
        Stats {
            name: "leader SIGKILLed → standby serves (ms)".into(),
            samples: serve,
        },
        Stats {
            name: "leader SIGKILLed → agent's session on the new leader (ms)".into(),
            samples: agent,
        },
        Stats {
            name: "a waiting standby's CPU (ms per second)".into(),
            samples: standby_cpu,
        },
    ]
}

/// Raises this process's open-file limit as far as it may (its children, the coordinator
/// among them, inherit it); the limit it got.
fn raise_nofile(want: u64) -> u64 {
    use nix::sys::resource::{Resource, getrlimit, setrlimit};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap_or((1024, 1024));
    // Root may raise the hard limit too (up to fs.nr_open).
    if setrlimit(Resource::RLIMIT_NOFILE, want, want).is_ok() {
        return want;
    }
    let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    hard
}

/// `--idle` connections that never speak (spread over loopback source addresses, as from many
/// hosts) and `--streams` Watch streams of many member tokens against a TLS coordinator: how
/// long an authenticated `status` (a new connection and a ListTasks, as the CLI does) takes
/// meanwhile, and what the strangers and streams cost the coordinator (RSS, CPU) — and whether
/// the memory comes back when the streams close.
fn strangers(args: &[String]) -> Vec<Stats> {
    let idle = arg(args, "--idle", 20_000);
    let streams = arg(args, "--streams", 10_000);
    let count = arg(args, "--count", 200);
    let limit = raise_nofile((idle + streams + 10_000) as u64 * 2);
    println!("(open-file limit {limit})");
    let certs = tempfile::tempdir().unwrap();
    dispatch_coordinator::certs::init(certs.path(), &["localhost".into()], &[], 30, false).unwrap();
    // The strangers stay for the whole measure (a long deadline); the cap is what the
    // open-file limit allows.
    let c = Cluster::with_tls(
        certs.path(),
        &["--auth-deadline", "600s", "--max-streams-per-token", "64"],
    );
    let pid = c.coordinator.child.id();
    let addr: std::net::SocketAddr = c
        .url
        .trim_start_matches("https://")
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap();
    let status = |c: &Cluster, name: &str| -> Stats {
        let mut st = Stats {
            name: name.into(),
            samples: vec![],
        };
        c.block_on(async {
            for _ in 0..count {
                let t = Instant::now();
                let mut fresh = c.client().await.unwrap();
                fresh
                    .list_tasks(v1::ListTasksRequest::default())
                    .await
                    .unwrap();
                st.samples.push(ms(t.elapsed()));
            }
        });
        st
    };
    let cpu = |from: (f64, u64), secs: f64| -> f64 {
        let now = proc_usage(pid).1;
        (now.saturating_sub(from.1)) as f64 * 10.0 / secs
    };
    let mut out = vec![status(
        &c,
        "status (new TLS connection + ListTasks), quiet (ms)",
    )];
    let before = proc_usage(pid);
    // The strangers: 60 per source address (under the per-address cap of 64).
    let t = Instant::now();
    let socks: Vec<std::net::TcpStream> = (0..idle)
        .filter_map(|i| {
            let src = std::net::Ipv4Addr::new(
                127,
                0,
                (2 + i / 60 / 250) as u8,
                (2 + (i / 60) % 250) as u8,
            );
            let s = socket2_connect(src, addr)?;
            Some(s)
        })
        .collect();
    println!(
        "({} idle connections open in {:.1} s)",
        socks.len(),
        t.elapsed().as_secs_f64()
    );
    // What they cost while they only sit there (5 s, nothing else asked).
    let with_idle = proc_usage(pid);
    let held = std::time::Instant::now();
    std::thread::sleep(Duration::from_secs(5));
    let idle_cpu = cpu(with_idle, held.elapsed().as_secs_f64());
    out.push(status(
        &c,
        &format!("status among {} idle strangers (ms)", socks.len()),
    ));
    out.push(Stats {
        name: format!("coordinator RSS with {} idle strangers (MiB)", socks.len()),
        samples: vec![with_idle.0],
    });
    out.push(Stats {
        name: "coordinator RSS before them (MiB)".into(),
        samples: vec![before.0],
    });
    out.push(Stats {
        name: "coordinator CPU while they sit (ms per second)".into(),
        samples: vec![idle_cpu],
    });
    drop(socks);
    // The same flood against a coordinator whose cap it exceeds: the oldest strangers make room.
    let capped = Cluster::with_tls(
        certs.path(),
        &["--auth-deadline", "600s", "--max-connections", "2000"],
    );
    let caddr: std::net::SocketAddr = capped
        .url
        .trim_start_matches("https://")
        .replace("localhost", "127.0.0.1")
        .parse()
        .unwrap();
    let flood: Vec<std::net::TcpStream> = (0..idle)
        .filter_map(|i| {
            let src = std::net::Ipv4Addr::new(
                127,
                1,
                (2 + i / 60 / 250) as u8,
                (2 + (i / 60) % 250) as u8,
            );
            socket2_connect(src, caddr)
        })
        .collect();
    out.push(status(
        &capped,
        &format!(
            "status, {} strangers against --max-connections 2000 (ms)",
            flood.len()
        ),
    ));
    drop(flood);
    drop(capped);
    // The streams: member tokens of 50 Watch streams each, over one connection per token.
    let tokens: Vec<String> = (0..streams.div_ceil(50))
        .map(|i| c.user_token(&format!("watcher-{i}"), "member", &[]))
        .collect();
    let base = proc_usage(pid);
    let open = c.block_on(async {
        let mut open = Vec::new();
        for (i, tok) in tokens.iter().enumerate() {
            let mut cl = dispatch_tests::client_tls(&c.url, tok, c.ca.as_deref())
                .await
                .unwrap();
            for _ in 0..50.min(streams - i * 50) {
                open.push(
                    cl.watch(v1::WatchRequest::default())
                        .await
                        .unwrap()
                        .into_inner(),
                );
            }
        }
        open
    });
    let with_streams = proc_usage(pid);
    out.push(status(
        &c,
        &format!("status with {} Watch streams open (ms)", open.len()),
    ));
    out.push(Stats {
        name: format!(
            "coordinator RSS per Watch stream ({} open) (KiB)",
            open.len()
        ),
        samples: vec![(with_streams.0 - base.0) * 1024.0 / open.len().max(1) as f64],
    });
    let n = open.len();
    drop(open);
    // Let the coordinator see them gone (each stream's task ends when its client does).
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut after = proc_usage(pid);
    // The coordinator gives freed memory back every 10 s once many streams closed.
    while Instant::now() < deadline {
        // On the clients' runtime, so their connections send the streams' resets.
        c.block_on(async { tokio::time::sleep(Duration::from_millis(500)).await });
        after = proc_usage(pid);
        if after.0 < base.0 + (with_streams.0 - base.0) / 4.0 {
            break;
        }
    }
    out.push(Stats {
        name: format!("coordinator RSS after the {n} streams closed (MiB)"),
        samples: vec![after.0],
    });
    out.push(Stats {
        name: format!("coordinator RSS with the {n} streams open (MiB)"),
        samples: vec![with_streams.0],
    });
    out
}

/// A TCP connection from `src` (a loopback address) to `to`, or `None` when the system ran out
/// of something (ports, descriptors).
fn socket2_connect(
    src: std::net::Ipv4Addr,
    to: std::net::SocketAddr,
) -> Option<std::net::TcpStream> {
    let s = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .ok()?;
    let local = nix::sys::socket::SockaddrIn::from(std::net::SocketAddrV4::new(src, 0));
    nix::sys::socket::bind(std::os::fd::AsRawFd::as_raw_fd(&s), &local).ok()?;
    let std::net::SocketAddr::V4(to) = to else {
        return None;
    };
    nix::sys::socket::connect(
        std::os::fd::AsRawFd::as_raw_fd(&s),
        &nix::sys::socket::SockaddrIn::from(to),
    )
    .ok()?;
    Some(std::net::TcpStream::from(s))
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().map(String::as_str).unwrap_or("");
    // `--store postgres://SERVER`: every coordinator keeps its store in a new database there,
    // with `--replicas N` - 1 standbys beside it.
    if let Some(server) = args
        .windows(2)
        .find(|w| w[0] == "--store")
        .map(|w| w[1].clone())
    {
        dispatch_tests::on_postgres(&server, arg(&args, "--replicas", 1));
        println!(
            "(store: PostgreSQL at {server}, {} replica(s))",
            arg(&args, "--replicas", 1)
        );
    }
    let started = Instant::now();
    let stats = match scenario {
        "questions" => questions(&args),
        "receivers" => receivers(&args),
        "dispatch" => dispatch(&args),
        "handoff" => handoff(&args),
        "throughput" => throughput(&args),
        "scale" => scale(&args),
        "footprint" => footprint(&args),
        "idle" => idle(&args),
        "security" => security(&args),
        "strangers" => strangers(&args),
        "results" => results(&args),
        "takeover" => takeover(&args),
        "fallback" | "overhead" | "approvals" => {
            let samples = match scenario {
                "fallback" => dispatch_tests::bench_clis::fallback(&args),
                "overhead" => dispatch_tests::bench_clis::overhead(&args),
                _ => dispatch_tests::bench_clis::approvals(&args),
            };
            samples
                .into_iter()
                .map(|(name, samples)| Stats { name, samples })
                .collect()
        }
        _ => {
            eprintln!(
                "usage: dispatch-bench questions|receivers|dispatch|handoff|throughput|scale|footprint|idle|security|strangers|results|takeover|fallback|overhead|approvals [--count N] [--baseline N] [--json FILE] [--store postgres://SERVER [--replicas N]]"
            );
            std::process::exit(2);
        }
    };
    println!(
        "| {:<52} | {:>6} | {:>9} | {:>9} | {:>9} |",
        "measure", "n", "p50 ms", "p99 ms", "max ms"
    );
    println!(
        "|{}|{}|{}|{}|{}|",
        "-".repeat(54),
        "-".repeat(8),
        "-".repeat(11),
        "-".repeat(11),
        "-".repeat(11)
    );
    for s in &stats {
        println!("{}", s.row());
    }
    println!("({scenario}: {:.1} s)", started.elapsed().as_secs_f64());
    if let Some(path) = args
        .windows(2)
        .find(|w| w[0] == "--json")
        .map(|w| w[1].clone())
    {
        let v = serde_json::json!({"scenario": scenario, "results": stats.iter().map(Stats::json).collect::<Vec<_>>()});
        std::fs::write(&path, serde_json::to_string_pretty(&v).unwrap()).unwrap();
    }
}
