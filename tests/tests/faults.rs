//! The fault-injection suite: a coordinator SIGKILLed every 2–4 s (and right around answers),
//! and a network that resets, stalls and delays at random, while sim tasks ask questions that
//! a scripted answerer answers. Every task must complete, every question be answered exactly
//! once (the node's `ipc/` files agree with the store), and nothing be lost or run twice.
//!
//! Seeds are printed; `DISPATCH_FAULT_SEED=N` replays one. `DISPATCH_FAULT_TASKS` sets the
//! number of tasks (default 100 for the crash loop, 50 for the network).

use dispatch_proto::v1;
use dispatch_tests::proxy::{Proxy, Rng, chaos};
use dispatch_tests::{AgentOpts, Cluster};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The longest a whole workload may take (it fails the test, naming what was left).
const WORKLOAD_DEADLINE: Duration = Duration::from_secs(420);

fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Where the coordinator is, and the admin token to reach it with.
#[derive(Clone)]
struct Target {
    url: String,
    token: String,
}

impl Target {
    fn of(c: &Cluster) -> Target {
        Target {
            url: c.url.clone(),
            token: c.admin_token.clone(),
        }
    }
}

/// A client whose calls may fail while the coordinator is down (a call gives up after 10 s).
async fn client(t: &Target) -> Option<dispatch_tests::Client> {
    let channel = tonic::transport::Endpoint::from_shared(t.url.clone())
        .ok()?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(10))
        .connect()
        .await
        .ok()?;
    Some(
        v1::dispatch_service_client::DispatchServiceClient::with_interceptor(
            channel,
            dispatch_tests::Bearer::new(&t.token),
        ),
    )
}

fn answer_text(task: &str, seq: u32) -> String {
    format!("answer to {task} question {seq:03}")
}

/// Submits `n` tasks that each ask two questions (retrying with the same request id through
/// coordinator restarts).
fn submit_all(url: &Target, prefix: &str, n: usize) -> Vec<String> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ids: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
    rt.block_on(async {
        for id in &ids {
            let req = v1::SubmitRequest {
                id: id.clone(),
                prompt: format!("fault workload {id}"),
                steps: vec![
                    "warm up (sleep 1500ms)".into(),
                    format!("first (ask: first question of {id}?)"),
                    "middle (sleep 1500ms)".into(),
                    format!("second (ask: second question of {id}?)"),
                ],
                backend: "sim".into(),
                request_id: format!("submit-{id}"),
                ..Default::default()
            };
            let start = Instant::now();
            loop {
                let res = match client(url).await {
                    Some(mut c) => c.submit(req.clone()).await.map(drop),
                    None => Err(tonic::Status::unavailable("down")),
                };
                match res {
                    Ok(()) => break,
                    Err(s) if s.code() == tonic::Code::AlreadyExists => break,
                    Err(s) => {
                        assert!(
                            start.elapsed() < Duration::from_secs(60),
                            "submit {id}: {s}"
                        );
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        }
    });
    ids
}

/// When around an answer the killer may strike.
#[derive(Debug, Clone, Copy)]
enum Moment {
    /// An Answer RPC is about to go out.
    Before,
    /// An answer was just stored.
    After,
}

/// Answers every open question until `stop`, each with one request id however often it is
/// retried. Returns (task, seq) → how many distinct answers were accepted.
fn answerer(
    url: Target,
    stop: Arc<AtomicBool>,
    moments: mpsc::Sender<Moment>,
) -> std::thread::JoinHandle<HashMap<(String, u32), u32>> {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async move {
            let mut accepted: HashMap<(String, u32), u32> = HashMap::new();
            while !stop.load(Ordering::Relaxed) {
                let Some(mut c) = client(&url).await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let open = match c.list_questions(v1::ListQuestionsRequest {}).await {
                    Ok(r) => r.into_inner().questions,
                    Err(_) => {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                for q in open {
                    let key = (q.task_id.clone(), q.seq);
                    if accepted.contains_key(&key) {
                        continue;
                    }
                    let req = v1::AnswerRequest {
                        id: q.task_id.clone(),
                        seq: q.seq,
                        text: answer_text(&q.task_id, q.seq),
                        request_id: format!("answer-{}-{}", q.task_id, q.seq),
                    };
                    let _ = moments.send(Moment::Before);
                    // The same request id through every retry: answered once, whatever dies.
                    let deadline = Instant::now() + Duration::from_secs(60);
                    loop {
                        let res = match client(&url).await {
                            Some(mut c) => c.answer(req.clone()).await.map(drop),
                            None => Err(tonic::Status::unavailable("down")),
                        };
                        match res {
                            Ok(()) => {
                                *accepted.entry(key.clone()).or_default() += 1;
                                let _ = moments.send(Moment::After);
                                break;
                            }
                            Err(s)
                                if matches!(
                                    s.code(),
                                    tonic::Code::Unavailable
                                        | tonic::Code::Unknown
                                        | tonic::Code::Cancelled
                                        | tonic::Code::DeadlineExceeded
                                ) && Instant::now() < deadline =>
                            {
                                tokio::time::sleep(Duration::from_millis(100)).await;
                            }
                            Err(s) => panic!("answering {key:?}: {s}"),
                        }
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            accepted
        })
    })
}

/// States of `ids` (None while the coordinator does not answer).
fn states(url: &Target, ids: &[String]) -> Option<BTreeMap<String, v1::Task>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut c = client(url).await?;
        let mut out = BTreeMap::new();
        let mut token = String::new();
        loop {
            let page = c
                .list_tasks(v1::ListTasksRequest {
                    states: vec![],
                    limit: 1000,
                    page_token: token,
                })
                .await
                .ok()?
                .into_inner();
            for t in page.tasks {
                if ids.contains(&t.id) {
                    out.insert(t.id.clone(), t);
                }
            }
            token = page.next_page_token;
            if token.is_empty() {
                return Some(out);
            }
        }
    })
}

fn all_ended(url: &Target, ids: &[String]) -> Option<BTreeMap<String, v1::Task>> {
    states(url, ids)
        .filter(|m| m.len() == ids.len() && m.values().all(|t| t.task_state().is_terminal()))
}

/// The checks every fault test ends with; returns (questions checked, worker starts).
fn check_outcome(
    c: &Cluster,
    tasks: &BTreeMap<String, v1::Task>,
    accepted: &HashMap<(String, u32), u32>,
    workdirs: &[std::path::PathBuf],
) -> (usize, usize) {
    let mut questions = 0;
    for (id, t) in tasks {
        assert_eq!(
            t.task_state().as_str(),
            "completed",
            "{id} ended {}: {}",
            t.task_state().as_str(),
            t.reason
        );
        assert_eq!(t.questions.len(), 2, "{id} asked {:?}", t.questions);
        for q in &t.questions {
            questions += 1;
            assert_eq!(
                q.answer.as_deref(),
                Some(answer_text(id, q.seq).as_str()),
                "{id} {:03}",
                q.seq
            );
            assert_eq!(
                accepted.get(&(id.clone(), q.seq)),
                Some(&1),
                "{id} {:03} was answered exactly once",
                q.seq
            );
            // The node's files agree with the store.
            let found: Vec<String> = workdirs
                .iter()
                .filter_map(|w| {
                    std::fs::read_to_string(
                        w.join(format!(".dispatch/tasks/{id}/ipc/{:03}.answer", q.seq)),
                    )
                    .ok()
                })
                .collect();
            assert_eq!(
                found,
                vec![format!("{}\n", answer_text(id, q.seq))],
                "{id}: ipc/{:03}.answer on the node",
                q.seq
            );
        }
        for w in workdirs {
            let ipc = w.join(format!(".dispatch/tasks/{id}/ipc"));
            if let Ok(entries) = std::fs::read_dir(&ipc) {
                let questions = entries
                    .filter_map(Result::ok)
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".question"))
                    .count();
                assert_eq!(questions, 2, "{id}: questions on the node");
            }
        }
    }
    // Each task's worker started once: no Assign ran twice.
    let mut starts: HashMap<String, usize> = HashMap::new();
    for entry in std::fs::read_dir(c.dir.path())
        .unwrap()
        .filter_map(Result::ok)
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with("agent-") && name.ends_with(".log") {
            let log = std::fs::read_to_string(entry.path()).unwrap_or_default();
            for line in log.lines().filter(|l| l.contains("worker started")) {
                if let Some(id) = line
                    .split("task=")
                    .nth(1)
                    .and_then(|r| r.split_whitespace().next())
                {
                    *starts.entry(id.to_string()).or_default() += 1;
                }
            }
        }
    }
    for id in tasks.keys() {
        assert_eq!(starts.get(id), Some(&1), "{id}: worker starts");
    }
    (questions, starts.values().sum())
}

/// Lines of the coordinator logs that report a healed gap.
fn gap_reports(c: &Cluster) -> usize {
    std::fs::read_dir(c.dir.path())
        .unwrap()
        .filter_map(Result::ok)
        .filter(|e| e.file_name().to_string_lossy().starts_with("coordinator-"))
        .map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .matches("event gap")
                .count()
        })
        .sum()
}

fn node_workdir(c: &Cluster, name: &str) -> std::path::PathBuf {
    let w = c.dir.path().join(format!("work-{name}"));
    std::fs::create_dir_all(&w).unwrap();
    w
}

#[test]
fn a_coordinator_killed_every_few_seconds_loses_no_task_and_no_answer() {
    let seed = Rng::seed_from_env();
    let n = env_count("DISPATCH_FAULT_TASKS", 100);
    println!("crash loop: seed {seed} (replay with DISPATCH_FAULT_SEED={seed}), {n} tasks");
    let mut rng = Rng::new(seed);
    let mut c = Cluster::new();
    let mut workdirs = Vec::new();
    for name in ["node-a", "node-b"] {
        let mut o = AgentOpts::new(name, 6);
        o.workdir = Some(node_workdir(&c, name));
        workdirs.push(o.workdir.clone().unwrap());
        c.add_agent(o);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (moments_tx, moments) = mpsc::channel();
    let answers = answerer(Target::of(&c), Arc::clone(&stop), moments_tx);
    let url = Target::of(&c);
    let submitter = std::thread::spawn(move || submit_all(&url, "crash", n));

    let start = Instant::now();
    let (mut kills, mut worst) = (0, 0);
    let ids = loop {
        if submitter.is_finished() {
            break submitter.join().unwrap();
        }
        std::thread::sleep(rng.between(Duration::from_secs(2), Duration::from_secs(4)));
        c.restart_coordinator();
        kills += 1;
    };
    let tasks = loop {
        assert!(
            start.elapsed() < WORKLOAD_DEADLINE,
            "not every task ended within {WORKLOAD_DEADLINE:?}: {:?}",
            states(&Target::of(&c), &ids).map(|m| m
                .values()
                .filter(|t| !t.task_state().is_terminal())
                .map(|t| format!("{} {}", t.id, t.task_state().as_str()))
                .collect::<Vec<_>>())
        );
        if let Some(done) = all_ended(&Target::of(&c), &ids) {
            break done;
        }
        // A third of the kills land right around an answer: just before the RPC goes out,
        // or just after it was stored.
        if rng.range(0, 2) == 0 {
            while moments.try_recv().is_ok() {}
            let want_after = rng.range(0, 1) == 1;
            let deadline = Instant::now() + Duration::from_secs(4);
            while Instant::now() < deadline {
                match moments.recv_timeout(Duration::from_millis(200)) {
                    Ok(Moment::After) if want_after => break,
                    Ok(Moment::Before) if !want_after => {
                        std::thread::sleep(Duration::from_millis(rng.range(0, 5)));
                        break;
                    }
                    _ => {}
                }
            }
            worst += 1;
        } else {
            std::thread::sleep(rng.between(Duration::from_secs(2), Duration::from_secs(4)));
        }
        c.restart_coordinator();
        kills += 1;
    };
    stop.store(true, Ordering::Relaxed);
    let accepted = answers.join().unwrap();
    let (questions, starts) = check_outcome(&c, &tasks, &accepted, &workdirs);
    println!(
        "crash loop: {} tasks, {questions} questions answered once each, {kills} SIGKILLs ({worst} around answers), \
         {starts} worker starts, {} gaps healed, lost 0, duplicated 0, {:.0} s (seed {seed})",
        tasks.len(),
        gap_reports(&c),
        start.elapsed().as_secs_f64()
    );
    // A floor, not a target: the loop kills every 2–4 s for as long as the work lasts.
    assert!(
        kills >= 5,
        "the loop killed the coordinator only {kills} times"
    );
}

#[test]
fn a_network_that_resets_stalls_and_delays_fails_no_task() {
    let seed = Rng::seed_from_env();
    let n = env_count("DISPATCH_FAULT_TASKS", 50);
    println!("network chaos: seed {seed} (replay with DISPATCH_FAULT_SEED={seed}), {n} tasks");
    // Heartbeats every second: a stall of more than 3 s ends a session (tasks `unreachable`)
    // and its grace of 60 s outlasts the longest stall (20 s): no task may be lost.
    let mut c =
        Cluster::with_coordinator_args(&["--heartbeat-interval", "1s", "--node-timeout", "60s"]);
    let proxy = Proxy::start(&c.url);
    let mut workdirs = Vec::new();
    for name in ["node-a", "node-b"] {
        let mut o = AgentOpts::new(name, 10);
        o.via = Some(proxy.url.clone());
        o.workdir = Some(node_workdir(&c, name));
        workdirs.push(o.workdir.clone().unwrap());
        c.add_agent(o);
    }
    let stop = Arc::new(AtomicBool::new(false));
    let (moments_tx, _moments) = mpsc::channel();
    let answers = answerer(Target::of(&c), Arc::clone(&stop), moments_tx);
    let start = Instant::now();
    let proxy = Arc::new(proxy);
    let schedule = {
        let proxy = Arc::clone(&proxy);
        let seconds = env_count("DISPATCH_FAULT_CHAOS_SECONDS", 45) as u64;
        std::thread::spawn(move || chaos(&proxy, seed, Duration::from_secs(seconds)))
    };
    let ids = submit_all(&Target::of(&c), "net", n);
    let unreachable_seen = Arc::new(Mutex::new(0usize));
    let tasks = loop {
        assert!(
            start.elapsed() < WORKLOAD_DEADLINE,
            "not every task ended within {WORKLOAD_DEADLINE:?}"
        );
        if let Some(m) = states(&Target::of(&c), &ids) {
            *unreachable_seen.lock().unwrap() += m
                .values()
                .filter(|t| t.task_state().as_str() == "unreachable")
                .count();
        }
        if schedule.is_finished()
            && let Some(done) = all_ended(&Target::of(&c), &ids)
        {
            break done;
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    let log = schedule.join().unwrap();
    stop.store(true, Ordering::Relaxed);
    let accepted = answers.join().unwrap();
    let (questions, _) = check_outcome(&c, &tasks, &accepted, &workdirs);
    let s = &proxy.stats;
    let longest = log
        .log
        .iter()
        .filter(|(what, _)| what == "stall")
        .map(|(_, d)| *d)
        .max()
        .unwrap_or_default();
    println!(
        "network chaos: {} tasks, {questions} questions answered once each, {} connections, {} resets, \
         {} stalls (longest {longest:?}), {} delay periods, {} gaps healed, lost 0, failed 0, {:.0} s (seed {seed})",
        tasks.len(),
        s.connections.load(Ordering::Relaxed),
        s.resets.load(Ordering::Relaxed),
        s.stalls.load(Ordering::Relaxed),
        s.delays.load(Ordering::Relaxed),
        gap_reports(&c),
        start.elapsed().as_secs_f64()
    );
    println!("network chaos schedule: {:?}", log.log);
}
