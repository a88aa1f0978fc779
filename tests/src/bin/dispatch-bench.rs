//! dispatch-bench: starts the real coordinator and agent on loopback and measures.
//!
//! ```text
//! cargo build --release --workspace --bins
//! ./target/release/dispatch-bench questions [--count 500] [--baseline 5] [--json FILE]
//! ./target/release/dispatch-bench dispatch [--count 1000] [--json FILE]
//! ./target/release/dispatch-bench handoff [--count 200] [--json FILE]
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

/// Waits for `path` to exist, checking every 50 µs (the resolution of the measurement).
fn wait_file(path: &Path, deadline: Instant) -> Instant {
    loop {
        if path.exists() {
            return Instant::now();
        }
        assert!(
            Instant::now() < deadline,
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_micros(50));
    }
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
            loop {
                let ev = stream.message().await.unwrap().expect("watch stream");
                if ev.change == "question"
                    && ev
                        .task
                        .as_ref()
                        .is_some_and(|t| t.questions.iter().any(|x| x.seq == seq))
                {
                    seen.samples.push(ms(t0.elapsed()));
                    break;
                }
            }
            let t1 = Instant::now();
            client
                .answer(v1::AnswerRequest {
                    id: "security-review".into(),
                    seq,
                    text: format!("answer {seq}"),
                })
                .await
                .unwrap();
            let at = wait_file(
                &ipc.join(format!("{seq:03}.answer")),
                t1 + Duration::from_secs(10),
            );
            answered.samples.push(ms(at - t1));
        }
    });
    let mut out = vec![seen, answered];
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
                limit: 0,
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

fn dispatch_coordinator_now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let scenario = args.first().map(String::as_str).unwrap_or("");
    let started = Instant::now();
    let stats = match scenario {
        "questions" => questions(&args),
        "dispatch" => dispatch(&args),
        "handoff" => handoff(&args),
        _ => {
            eprintln!(
                "usage: dispatch-bench questions|dispatch|handoff [--count N] [--baseline N] [--json FILE]"
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
