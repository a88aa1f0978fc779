//! A worker may write anything into its task files, NUL bytes included; PostgreSQL's text
//! cannot hold one. Events carrying NULs are stored (as U+FFFD) on both stores, and never
//! fail their batch — which would stall the node's stream. Users get a clear refusal.

use dispatch_coordinator::domain::SubmitSpec;
use dispatch_coordinator::model::{
    BackendRecord, EventKind, IncomingEvent, NodeHello, NodeRecord, Principal, TaskEvent,
};
use dispatch_coordinator::{Coordinator, CoordinatorConfig};
use std::sync::Arc;
use std::time::{Duration, Instant};

async fn coordinator(dir: &tempfile::TempDir, postgres: Option<&str>) -> Arc<Coordinator> {
    let mut config = CoordinatorConfig::new(dir.path().to_path_buf());
    config.notify = Default::default();
    match postgres {
        None => Coordinator::start(config).await.unwrap(),
        Some(server) => {
            let url = dispatch_coordinator::store::postgres::scratch_database(server, "nul")
                .await
                .unwrap();
            let store = dispatch_coordinator::store::PgStore::open(&url)
                .await
                .unwrap();
            Coordinator::with_store(config, Arc::new(store))
                .await
                .unwrap()
        }
    }
}

async fn nul_events_are_kept_and_user_nuls_refused(postgres: Option<&str>) {
    let dir = tempfile::tempdir().unwrap();
    let c = coordinator(&dir, postgres).await;
    let hello = NodeHello {
        node: NodeRecord {
            name: "n".into(),
            capacity: 1,
            backends: vec![BackendRecord {
                name: "sim".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
        cursors: vec![],
    };
    let session = c.open_session(&hello, "test").await.unwrap();
    let spec = |id: &str, prompt: &str| SubmitSpec {
        id: id.into(),
        prompt: prompt.into(),
        steps: vec!["a".into()],
        backend: "sim".into(),
        ..Default::default()
    };
    c.submit(spec("t", "p"), &Principal::Local).await.unwrap();
    let start = Instant::now();
    while c.task("t").await.unwrap().node != "n" {
        assert!(start.elapsed() < Duration::from_secs(30), "never assigned");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let ev = |seq: u64, task: &str, kind: EventKind| IncomingEvent {
        event: TaskEvent {
            task_id: task.into(),
            seq,
            at_ms: 1,
            attempt: 0,
            kind,
        },
    };
    let done = c
        .record_agent_events(
            &session.key,
            vec![
                ev(
                    1,
                    "t",
                    EventKind::Plan {
                        markdown: "- [x] a\0b\n".into(),
                    },
                ),
                ev(
                    2,
                    "t",
                    EventKind::Question {
                        seq: 1,
                        text: "which\0one?".into(),
                    },
                ),
                ev(
                    1,
                    "no\0such",
                    EventKind::Plan {
                        markdown: "x".into(),
                    },
                ),
            ],
        )
        .await
        .expect("a batch with NULs is recorded");
    assert!(
        done.acks.iter().any(|a| a.0 == "t" && a.1 == 2),
        "{:?}",
        done.acks
    );
    let t = c.task("t").await.unwrap();
    assert_eq!(t.plan_md, "- [x] a\u{FFFD}b\n");
    let q = c.store.questions_of(&["t"]).await.unwrap();
    assert_eq!(q["t"][0].text, "which\u{FFFD}one?");

    // What a user sends with a NUL is refused, naming the field, and changes nothing.
    let e = c
        .submit(spec("u", "bad\0prompt"), &Principal::Local)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("NUL byte"), "{e}");
    assert!(!c.store.task_exists("u").await.unwrap());
    let e = c
        .answer("t", 1, "ye\0s", "", &Principal::Local)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("NUL byte"), "{e}");
    c.begin_shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite() {
    nul_events_are_kept_and_user_nuls_refused(None).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL; run with --run-ignored all (.ci/run does)"]
async fn on_postgres() {
    let server = match std::env::var("DISPATCH_TEST_POSTGRES") {
        Ok(url) if !url.is_empty() => url,
        _ if std::env::var_os("CI").is_some() => {
            panic!("CI runs this on PostgreSQL: set DISPATCH_TEST_POSTGRES (.ci/run does)")
        }
        _ => {
            eprintln!("skipped on PostgreSQL: set DISPATCH_TEST_POSTGRES (see .ci/postgres)");
            return;
        }
    };
    nul_events_are_kept_and_user_nuls_refused(Some(&server)).await;
}
