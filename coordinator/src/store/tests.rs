use super::sqlite::SqliteStore;
use super::*;
use crate::error::CoordinatorError;
use crate::model::{BackendRecord, Change, EventKind, TaskCursor, WorkerExit};

fn task(id: &str) -> TaskRecord {
    TaskRecord {
        id: id.into(),
        title: "T".into(),
        prompt: "p".into(),
        worker_prompt: "wp".into(),
        plan_md: "- [ ] a\n".into(),
        created_ms: 1,
        updated_ms: 1,
        attempt: 1,
        ..Default::default()
    }
}

fn hello(name: &str, cursors: &[(&str, bool)]) -> NodeHello {
    NodeHello {
        node: NodeRecord {
            name: name.into(),
            capacity: 4,
            backends: vec![BackendRecord {
                name: "sim".into(),
                ..Default::default()
            }],
            ..Default::default()
        },
        cursors: cursors
            .iter()
            .map(|(t, running)| TaskCursor {
                task_id: t.to_string(),
                seq: 0,
                running: *running,
            })
            .collect(),
    }
}

/// The rules of the domain, as the store runs them (kept here so the store is tested alone).
struct TestRules;

impl EventRules for TestRules {
    fn prices(&self) -> &dispatch_core::budget::Prices {
        static PRICES: std::sync::LazyLock<dispatch_core::budget::Prices> =
            std::sync::LazyLock::new(Default::default);
        &PRICES
    }

    fn apply(&self, t: &mut TaskRecord, ev: &TaskEvent, f: &EventFacts<'_>) -> Applied {
        match &ev.kind {
            EventKind::Plan { markdown } => {
                t.plan_md = markdown.clone();
                Applied {
                    kind: Some(ChangeKind::Plan),
                    freed_slot: false,
                }
            }
            EventKind::Question { .. } if f.new_question => {
                t.state = TaskState::Waiting;
                Applied {
                    kind: Some(ChangeKind::Question),
                    freed_slot: false,
                }
            }
            EventKind::Exited(_) => {
                t.state = TaskState::Completed;
                t.ended_ms = ev.at_ms;
                Applied {
                    kind: Some(ChangeKind::State),
                    freed_slot: true,
                }
            }
            EventKind::Activity { usage: Some(u), .. } => {
                t.usage.insert(ev.attempt.max(1), u.clone());
                Applied {
                    kind: Some(ChangeKind::Activity),
                    freed_slot: false,
                }
            }
            _ => Applied::default(),
        }
    }

    fn decide_tool(
        &self,
        _t: &TaskRecord,
        call: &dispatch_core::policy::ToolCall<'_>,
        granted: &[String],
    ) -> dispatch_core::policy::Verdict {
        dispatch_core::policy::Policy::parse(&dispatch_core::policy::PolicySpec {
            allow: vec!["Bash(ls:*)".into()],
            ask: vec!["Bash(git push:*)".into()],
            deny: vec!["Bash(rm:*)".into()],
            default: None,
        })
        .unwrap()
        .decide_with(call, granted)
    }
}

fn ev(task: &str, seq: u64, kind: EventKind) -> IncomingEvent {
    IncomingEvent {
        event: TaskEvent {
            task_id: task.into(),
            seq,
            at_ms: 5,
            attempt: 1,
            kind,
        },
    }
}

fn plan(md: &str) -> EventKind {
    EventKind::Plan {
        markdown: md.into(),
    }
}

/// Which store a test runs on: every test of the suite runs on both.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Sqlite,
    Postgres,
}

/// A test's own empty store: a temporary SQLite file, or a new database on the PostgreSQL
/// server of `DISPATCH_TEST_POSTGRES` (`.ci/postgres start DIR` prints one).
struct TestDb {
    dir: tempfile::TempDir,
    postgres: Option<String>,
}

impl TestDb {
    /// None (and a line saying the test skips) when PostgreSQL is asked for but not given;
    /// under CI (`CI` set) that fails instead.
    async fn new(kind: Kind, name: &str) -> Option<TestDb> {
        let dir = tempfile::tempdir().unwrap();
        let postgres = match kind {
            Kind::Sqlite => None,
            Kind::Postgres => match std::env::var("DISPATCH_TEST_POSTGRES") {
                Ok(url) if !url.is_empty() => Some(
                    super::postgres::scratch_database(&url, name)
                        .await
                        .unwrap_or_else(|e| panic!("PostgreSQL at DISPATCH_TEST_POSTGRES: {e}")),
                ),
                _ if std::env::var_os("CI").is_some() => panic!(
                    "CI runs the store suite on PostgreSQL: set DISPATCH_TEST_POSTGRES (.ci/run starts a server with .ci/postgres)"
                ),
                _ => {
                    eprintln!(
                        "skipped on PostgreSQL: set DISPATCH_TEST_POSTGRES (export DISPATCH_TEST_POSTGRES=$(.ci/postgres start /tmp/dispatch-pg))"
                    );
                    return None;
                }
            },
        };
        Some(TestDb { dir, postgres })
    }

    /// Opens the store (again, for a reopen).
    async fn open(&self) -> std::sync::Arc<dyn Store> {
        match &self.postgres {
            Some(url) => std::sync::Arc::new(super::postgres::PgStore::open(url).await.unwrap()),
            None => std::sync::Arc::new(
                SqliteStore::open(&self.dir.path().join("d.db"))
                    .await
                    .unwrap(),
            ),
        }
    }

    /// The stored history of `task`: (seq, body), by seq.
    async fn events_of(&self, task: &str) -> Vec<(i64, Vec<u8>)> {
        const SQL: &str = "SELECT seq, body FROM events WHERE task_id = $1 ORDER BY seq";
        match &self.postgres {
            Some(url) => {
                let s = super::postgres::PgStore::open(url).await.unwrap();
                sqlx::query_as(SQL)
                    .bind(task)
                    .fetch_all(s.raw())
                    .await
                    .unwrap()
            }
            None => {
                let s = SqliteStore::open(&self.dir.path().join("d.db"))
                    .await
                    .unwrap();
                sqlx::query_as(SQL)
                    .bind(task)
                    .fetch_all(s.raw())
                    .await
                    .unwrap()
            }
        }
    }
}

async fn open(db: &TestDb) -> std::sync::Arc<dyn Store> {
    db.open().await
}

/// A queued task given to `node` (session `epoch`).
async fn assigned(s: &dyn Store, id: &str, node: &str, epoch: u64) {
    let _ = s.insert_task(&task(id), None, None, None).await.unwrap();
    let w = AssignWrite {
        task_id: id.into(),
        node: node.into(),
        epoch,
        backend: "sim".into(),
    };
    let cmd = |t: &TaskRecord| NodeCommand::Cancel {
        task_id: t.id.clone(),
        attempt: 0,
    };
    assert!(s.assign(&w, 2, &cmd).await.unwrap().is_some());
}

/// A store with node `n1`'s first session open; returns the store and the session's epoch.
async fn with_node(dir: &TestDb) -> (std::sync::Arc<dyn Store>, u64) {
    let s = open(dir).await;
    let epoch = s
        .open_session(&hello("n1", &[]), "a:1", 1)
        .await
        .unwrap()
        .epoch;
    (s, epoch)
}

fn key(node: &str, epoch: u64) -> SessionKey {
    SessionKey {
        node: node.into(),
        epoch,
    }
}

async fn tasks_events_and_commands_survive_reopen(kind: Kind) {
    let Some(dir) = TestDb::new(kind, "tasks_events_and_commands_survive_reopen").await else {
        return;
    };
    {
        let (s, epoch) = with_node(&dir).await;
        assert_eq!(epoch, 1);
        assigned(&*s, "a", "n1", epoch).await;
        let _ = s.insert_task(&task("b"), None, None, None).await.unwrap();
        let dup = s
            .insert_task(&task("a"), None, None, None)
            .await
            .unwrap_err();
        assert!(matches!(dup, CoordinatorError::AlreadyExists(_)), "{dup}");
        assert_eq!(s.queued_ids().await.unwrap(), ["b"]);

        // One group commit: applied, resent, a gap, an unknown task, another node's task, a log.
        let batch = vec![
            ev("a", 1, plan("- [x] a\n")),
            ev("a", 1, plan("- [x] a\n")),
            ev("a", 3, plan("nope")),
            ev("zz", 1, plan("x")),
            ev("b", 1, plan("x")),
            ev(
                "a",
                2,
                EventKind::Log {
                    data: b"hello".to_vec(),
                },
            ),
        ];
        let out = s
            .record_events(
                &key("n1", epoch),
                batch,
                &TestRules,
                HistoryCaps::both(1 << 20),
            )
            .await
            .unwrap();
        assert_eq!(out.gaps, vec![("a".to_string(), 2, 3)]);
        let ack = |t: &str| out.acks.iter().find(|a| a.0 == t).map(|a| a.1);
        assert_eq!(ack("a"), Some(2));
        assert_eq!(
            ack("zz"),
            Some(1),
            "an unknown task's event is acked so it is dropped"
        );
        assert_eq!(
            ack("b"),
            Some(1),
            "so is an event for a task the node does not run"
        );
        assert!(matches!(
            &out.changes.0[..],
            [Change::Task(_), Change::Log { .. }]
        ));

        // Commands: only their own node acks them.
        let pending = s.pending_commands("n1", 0, 10).await.unwrap();
        assert_eq!(pending.len(), 1);
        s.ack_commands("n2", &[pending[0].id], 9).await.unwrap();
        assert_eq!(s.pending_commands("n1", 0, 10).await.unwrap().len(), 1);
    }
    let s = open(&dir).await;
    let a = s.get_task("a").await.unwrap().unwrap();
    assert_eq!((a.plan_md.as_str(), a.last_seq), ("- [x] a\n", 2));
    assert_eq!(a.prompt, "p", "the texts are kept");
    assert_eq!(
        s.log_page("a", crate::model::LogStream::Raw, 0, 1 << 20)
            .await
            .unwrap(),
        vec![(2, b"hello".to_vec())],
        "output comes back as the bytes the worker wrote"
    );
    let pending = s.pending_commands("n1", 0, 10).await.unwrap();
    s.ack_commands("n1", &[pending[0].id], 9).await.unwrap();
    assert!(s.pending_commands("n1", 0, 10).await.unwrap().is_empty());
    assert_eq!(s.count_active().await.unwrap(), 2);
}

async fn a_batch_larger_than_every_statement_chunk_is_recorded_whole(kind: Kind) {
    let Some(dir) = TestDb::new(
        kind,
        "a_batch_larger_than_every_statement_chunk_is_recorded_whole",
    )
    .await
    else {
        return;
    };
    let (s, epoch) = with_node(&dir).await;
    let tasks = 403;
    let per_task = 3;
    for i in 0..tasks {
        assigned(&*s, &format!("t-{i}"), "n1", epoch).await;
    }
    let mut batch = Vec::new();
    for seq in 1..=per_task as u64 {
        for i in 0..tasks {
            batch.push(ev(
                &format!("t-{i}"),
                seq,
                plan(&format!("- [ ] {i}/{seq}\n")),
            ));
        }
    }
    for seq in 1..=per_task as u64 {
        batch.push(ev(
            "t-7",
            per_task as u64 + seq,
            EventKind::Question {
                seq: seq as u32,
                text: format!("q{seq}"),
            },
        ));
    }
    let out = s
        .record_events(
            &key("n1", epoch),
            batch,
            &TestRules,
            HistoryCaps::both(1 << 20),
        )
        .await
        .unwrap();
    assert!(out.gaps.is_empty());
    for i in 0..tasks {
        let t = s.get_task(&format!("t-{i}")).await.unwrap().unwrap();
        assert_eq!(t.plan_md, format!("- [ ] {i}/{per_task}\n"));
        assert_eq!(t.title, "T", "columns the events do not own are kept");
    }
    let t7 = s.get_task("t-7").await.unwrap().unwrap();
    assert_eq!((t7.last_seq, t7.state), (6, TaskState::Waiting));
    assert_eq!(s.questions_of(&["t-7"]).await.unwrap()["t-7"].len(), 3);
}

async fn tokens_keep_their_expiry_and_latest_use_and_gone_nodes_can_be_forgotten(kind: Kind) {
    let Some(dir) = TestDb::new(kind, "tokens_keep_their_expiry_and_latest_use").await else {
        return;
    };
    let (s, epoch) = with_node(&dir).await;
    let t = crate::model::TokenRecord {
        id: "abc123".into(),
        kind: "user".into(),
        name: "ci".into(),
        role: "member".into(),
        created_ms: 1,
        created_by: "admin".into(),
        expires_ms: 1_000,
        ..Default::default()
    };
    let audit = crate::model::AuditEntry {
        who: "admin".into(),
        action: "token-create".into(),
        task_id: String::new(),
        detail: String::new(),
    };
    s.create_token(&t, &audit, 1).await.unwrap();
    s.tokens_used(&[("abc123".into(), 500)]).await.unwrap();
    // A batch that arrives late with an older use does not move it back.
    s.tokens_used(&[("abc123".into(), 400), ("no-such".into(), 9)])
        .await
        .unwrap();
    let got = s.tokens().await.unwrap();
    assert_eq!((got[0].expires_ms, got[0].last_used_ms), (1_000, 500));

    // A node with an unended task is kept; once it ended, forgotten with its commands.
    assigned(&*s, "t1", "n1", epoch).await;
    let forget = crate::model::AuditEntry {
        action: "node-forget".into(),
        ..audit.clone()
    };
    assert_eq!(
        s.forget_node("n1", &forget, 2).await.unwrap(),
        crate::model::Forgot::Busy(vec!["t1".into()])
    );
    assert_eq!(
        s.forget_node("nobody", &forget, 2).await.unwrap(),
        crate::model::Forgot::Unknown
    );
    s.transition("t1", 3, None, &|_| {
        Ok(Transition {
            set: TaskUpdate {
                state: Some(dispatch_core::TaskState::Cancelled),
                ..Default::default()
            },
            ..Default::default()
        })
    })
    .await
    .unwrap();
    assert_eq!(
        s.forget_node("n1", &forget, 4).await.unwrap(),
        crate::model::Forgot::Forgotten
    );
    assert!(s.list_nodes().await.unwrap().is_empty());
    assert!(s.pending_commands("n1", 0, 10).await.unwrap().is_empty());
}

async fn plan_history_costs_the_change_not_the_plan(kind: Kind) {
    let Some(dir) = TestDb::new(kind, "plan_history_costs_the_change_not_the_plan").await else {
        return;
    };
    let (s, epoch) = with_node(&dir).await;
    assigned(&*s, "big", "n1", epoch).await;
    let mut md: String = (0..1000)
        .map(|i| format!("- [ ] step {i:04} of a long plan\n"))
        .collect();
    let mut events = vec![ev("big", 1, plan(&md))];
    for i in 0..1000 {
        md = md.replacen("- [ ] step", "- [x] step", 1);
        events.push(ev("big", i + 2, plan(&md)));
    }
    for chunk in events.chunks(100) {
        let batch: Vec<IncomingEvent> = chunk
            .iter()
            .map(|e| ev(&e.event.task_id, e.event.seq, e.event.kind.clone()))
            .collect();
        let _ = s
            .record_events(
                &key("n1", epoch),
                batch,
                &TestRules,
                HistoryCaps::both(1 << 20),
            )
            .await
            .unwrap();
    }
    let rows = dir.events_of("big").await;
    let bytes: usize = rows
        .iter()
        .filter(|(seq, _)| *seq > 1)
        .map(|(_, body)| body.len())
        .sum();
    assert!(
        bytes < 1000 * 64,
        "1,000 ticks of a {} KiB plan stored {bytes} bytes",
        md.len() / 1024
    );
    // The history replays to the plan.
    let mut replay = "- [ ] a\n".to_string();
    for (_, body) in rows {
        let p: patch::Patch = serde_json::from_slice(&body).unwrap();
        replay = patch::apply(&replay, &p).unwrap();
    }
    assert_eq!(replay, md);
    assert_eq!(s.get_task("big").await.unwrap().unwrap().plan_md, md);
}

/// A worker that rewrites plan.md in a loop (every version different): the history stops at the
/// cap with one marker, the plan itself stays current, the store grows no further.
async fn plan_history_stops_at_its_cap_and_the_plan_stays_current(kind: Kind) {
    let Some(dir) = TestDb::new(
        kind,
        "plan_history_stops_at_its_cap_and_the_plan_stays_current",
    )
    .await
    else {
        return;
    };
    let (s, epoch) = with_node(&dir).await;
    assigned(&*s, "flood", "n1", epoch).await;
    const CAP: u64 = 64 * 1024;
    // 200 plans of 8 KiB, each unlike the one before: every edit is the whole plan.
    let version = |v: usize| -> String {
        (0..200)
            .map(|i| format!("- [ ] rewrite {v:05} line {i:03} {}\n", "x".repeat(20)))
            .collect()
    };
    let mut last = String::new();
    for chunk in (0..200).collect::<Vec<usize>>().chunks(20) {
        let batch: Vec<IncomingEvent> = chunk
            .iter()
            .map(|&v| {
                last = version(v);
                ev("flood", v as u64 + 1, plan(&last))
            })
            .collect();
        let _ = s
            .record_events(
                &key("n1", epoch),
                batch,
                &TestRules,
                HistoryCaps {
                    log_bytes: 1 << 20,
                    plan_bytes: CAP,
                },
            )
            .await
            .unwrap();
    }
    let rows = dir.events_of("flood").await;
    let stored: usize = rows.iter().map(|(_, body)| body.len()).sum();
    assert!(
        stored as u64 <= CAP + 1024,
        "200 rewrites of an 8 KiB plan stored {stored} bytes of history (cap {CAP})"
    );
    let markers: Vec<&(i64, Vec<u8>)> = rows
        .iter()
        .filter(|(_, b)| String::from_utf8_lossy(b).contains("plan history"))
        .collect();
    assert_eq!(markers.len(), 1, "one marker: {markers:?}");
    let t = s.get_task("flood").await.unwrap().unwrap();
    assert_eq!(t.plan_md, last, "the plan is current");
    assert_eq!(t.last_seq, 200, "every event counted");
    assert!(t.plan_bytes > CAP);
}

async fn output_past_the_cap_leaves_a_marker_and_nothing_more(kind: Kind) {
    let Some(dir) = TestDb::new(kind, "output_past_the_cap_leaves_a_marker_and_nothing_more").await
    else {
        return;
    };
    let (s, epoch) = with_node(&dir).await;
    assigned(&*s, "chatty", "n1", epoch).await;
    let batch = (1..=10)
        .map(|i| {
            ev(
                "chatty",
                i,
                EventKind::Log {
                    data: vec![b'x'; 400],
                },
            )
        })
        .collect();
    let _ = s
        .record_events(
            &key("n1", epoch),
            batch,
            &TestRules,
            HistoryCaps::both(1000),
        )
        .await
        .unwrap();
    let mut all = Vec::new();
    let mut last = 0;
    loop {
        let page = s
            .log_page("chatty", crate::model::LogStream::Raw, last, 100)
            .await
            .unwrap();
        let Some((seq, _)) = page.last() else { break };
        last = *seq;
        for (_, data) in page {
            all.extend(data);
        }
    }
    let text = String::from_utf8(all).unwrap();
    assert!(text.starts_with(&"x".repeat(1000)));
    assert!(!text.starts_with(&"x".repeat(1001)));
    assert!(
        text.contains("keeps the first 1000 bytes of this task's output"),
        "{text}"
    );
    assert_eq!(s.get_task("chatty").await.unwrap().unwrap().last_seq, 10);
}

async fn an_ended_task_keeps_its_state_and_a_question_is_asked_once(kind: Kind) {
    let Some(dir) = TestDb::new(
        kind,
        "an_ended_task_keeps_its_state_and_a_question_is_asked_once",
    )
    .await
    else {
        return;
    };
    let (s, epoch) = with_node(&dir).await;
    assigned(&*s, "t", "n1", epoch).await;
    let q = |seq: u64| {
        ev(
            "t",
            seq,
            EventKind::Question {
                seq: 1,
                text: "which?".into(),
            },
        )
    };
    let out = s
        .record_events(
            &key("n1", epoch),
            vec![q(1), q(2)],
            &TestRules,
            HistoryCaps::both(1 << 20),
        )
        .await
        .unwrap();
    assert_eq!(
        out.changes.0.len(),
        1,
        "the second report of question 001 changes nothing"
    );
    let exit = ev("t", 3, EventKind::Exited(WorkerExit::default()));
    let _ = s
        .record_events(
            &key("n1", epoch),
            vec![exit],
            &TestRules,
            HistoryCaps::both(1 << 20),
        )
        .await
        .unwrap();
    let late = vec![ev("t", 4, plan("- [ ] undone\n")), ev("t", 9, plan("x"))];
    let out = s
        .record_events(
            &key("n1", epoch),
            late,
            &TestRules,
            HistoryCaps::both(1 << 20),
        )
        .await
        .unwrap();
    assert!(out.changes.0.is_empty());
    assert_eq!(out.fenced.len(), 2);
    assert_eq!(out.acks, vec![("t".to_string(), 9)]);
    let t = s.get_task("t").await.unwrap().unwrap();
    assert_eq!(
        (t.state, t.plan_md.as_str()),
        (TaskState::Completed, "- [ ] a\n")
    );
}

async fn record_calls(s: &dyn Store, k: &SessionKey, events: Vec<IncomingEvent>) -> EventBatch {
    s.record_events(k, events, &TestRules, HistoryCaps::both(1 << 20))
        .await
        .unwrap()
}

/// The ToolDecision commands stored for `n1` after command `after`: (id, call, allow, seq).
async fn tool_decisions(s: &dyn Store, after: u64) -> Vec<(u64, u64, bool, u32)> {
    s.pending_commands("n1", after, 100)
        .await
        .unwrap()
        .into_iter()
        .filter_map(|c| match c.command {
            NodeCommand::ToolDecision {
                call, allow, seq, ..
            } => Some((c.id, call, allow, seq)),
            _ => None,
        })
        .collect()
}

/// Issue 25: a worker's tool call is decided in the event's transaction — allowed or denied by
/// the policy (a ToolDecision command stored for the node, the pump woken), or asked (an
/// approval question numbered above every worker question, carrying the call); a call a
/// person allowed "always" is allowed after that, the same call only.
async fn a_tool_call_is_decided_or_asked_and_always_sticks(kind: Kind) {
    let Some(dir) = TestDb::new(kind, "a_tool_call_is_decided_or_asked_and_always_sticks").await
    else {
        return;
    };
    let (s, epoch) = with_node(&dir).await;
    assigned(&*s, "t", "n1", epoch).await;
    let call = |seq: u64, call: u64, command: &str| {
        ev(
            "t",
            seq,
            EventKind::ToolCall {
                call,
                tool: "Bash".into(),
                input_json: serde_json::json!({ "command": command }).to_string(),
                cwd: "/w".into(),
            },
        )
    };
    let k = key("n1", epoch);
    let out = record_calls(
        &*s,
        &k,
        vec![
            call(1, 1, "ls -la"),
            call(2, 2, "rm -rf target"),
            call(3, 3, "git push origin main"),
        ],
    )
    .await;
    assert_eq!(out.acks, vec![("t".to_string(), 3)]);
    assert_eq!(out.command_nodes, vec!["n1".to_string()]);
    let d = tool_decisions(&*s, 0).await;
    assert_eq!(
        d.iter().map(|x| (x.1, x.2, x.3)).collect::<Vec<_>>(),
        vec![(1, true, 0), (2, false, 0)],
        "ls allowed, rm denied; git push not decided by a rule"
    );
    let t = s.get_task("t").await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Waiting);
    let qs = s.questions_of(&["t"]).await.unwrap().remove("t").unwrap();
    assert_eq!(qs.len(), 1);
    let q = &qs[0];
    assert_eq!(q.seq, crate::model::APPROVAL_SEQ_BASE + 1);
    assert!(
        q.text.contains("Bash: git push origin main (in /w)"),
        "{}",
        q.text
    );
    let asked = q.tool_call().unwrap();
    assert_eq!((asked.attempt, asked.call), (1, 3));
    assert_eq!(asked.rules, vec!["Bash(git push origin main)".to_string()]);
    // A person answers "always".
    s.answer(
        "t",
        "always",
        None,
        6,
        None,
        &|_t: &TaskRecord, qs: &[QuestionRecord]| Ok((qs[0].seq, Default::default())),
    )
    .await
    .unwrap();
    let last = d.last().unwrap().0;
    let out = record_calls(
        &*s,
        &k,
        vec![
            call(4, 4, "git push origin main"),
            call(5, 5, "git push --force origin main"),
        ],
    )
    .await;
    assert_eq!(out.command_nodes, vec!["n1".to_string()]);
    assert_eq!(
        tool_decisions(&*s, last)
            .await
            .iter()
            .map(|x| (x.1, x.2))
            .collect::<Vec<_>>(),
        vec![(4, true)],
        "the same call again is allowed; another one asks"
    );
    let qs = s.questions_of(&["t"]).await.unwrap().remove("t").unwrap();
    assert_eq!(
        qs.iter().map(|q| q.seq).collect::<Vec<_>>(),
        vec![
            crate::model::APPROVAL_SEQ_BASE + 1,
            crate::model::APPROVAL_SEQ_BASE + 2
        ]
    );
}

/// Issue 25 (budgets): the event path counts each owner's spend per UTC day as usage comes in
/// (what a run adds, not its running total again), and a task past its budget asks at its
/// next tool call — a budget question carrying the call, no decision for the node — while a
/// call the policy refuses is refused all the same.
async fn a_task_past_its_budget_asks_and_its_spend_is_counted_once(kind: Kind) {
    let Some(dir) = TestDb::new(
        kind,
        "a_task_past_its_budget_asks_and_its_spend_is_counted_once",
    )
    .await
    else {
        return;
    };
    let s = open(&dir).await;
    let epoch = s
        .open_session(&hello("n1", &[]), "a:1", 1)
        .await
        .unwrap()
        .epoch;
    let mut t = task("t");
    t.owner = "ann".into();
    t.budget = Some(dispatch_core::budget::TaskBudget::new(
        dispatch_core::budget::Budget::parse("1k").unwrap(),
    ));
    let _ = s.insert_task(&t, None, None, None).await.unwrap();
    // The submitting token's id is kept with the task (the policy's `tokens:` scopes).
    t.token = "8b63ccce3a8f".into();
    let _ = s
        .insert_task(
            &{
                let mut u = t.clone();
                u.id = "tok".into();
                u
            },
            None,
            None,
            None,
        )
        .await
        .unwrap();
    assert_eq!(
        s.get_task("tok").await.unwrap().unwrap().token,
        "8b63ccce3a8f"
    );
    let w = AssignWrite {
        task_id: "t".into(),
        node: "n1".into(),
        epoch,
        backend: "sim".into(),
    };
    let cmd = |t: &TaskRecord| NodeCommand::Cancel {
        task_id: t.id.clone(),
        attempt: 0,
    };
    assert!(s.assign(&w, 2, &cmd).await.unwrap().is_some());
    let usage = |seq: u64, input: u64| {
        ev(
            "t",
            seq,
            EventKind::Activity {
                lines: vec![],
                usage: Some(dispatch_core::stream::Usage {
                    input_tokens: input,
                    model: "claude-sonnet-4-5".into(),
                    ..Default::default()
                }),
            },
        )
    };
    let call = |seq: u64, call: u64, command: &str| {
        ev(
            "t",
            seq,
            EventKind::ToolCall {
                call,
                tool: "Bash".into(),
                input_json: serde_json::json!({ "command": command }).to_string(),
                cwd: "/w".into(),
            },
        )
    };
    let k = key("n1", epoch);
    let today = dispatch_core::budget::day_of(crate::now_ms());
    record_calls(&*s, &k, vec![usage(1, 600), call(2, 1, "ls")]).await;
    assert_eq!(s.day_spend("ann", today).await.unwrap().1, 600);
    assert_eq!(
        tool_decisions(&*s, 0).await.len(),
        1,
        "under budget: decided"
    );
    // The run's total grows to 1,200: 600 more, counted once.
    record_calls(
        &*s,
        &k,
        vec![usage(3, 1200), call(4, 2, "rm -rf x"), call(5, 3, "ls -la")],
    )
    .await;
    let (usd, tokens) = s.day_spend("ann", today).await.unwrap();
    assert_eq!(tokens, 1200);
    assert_eq!(usd, 3600, "1,200 input tokens at $3 per million");
    assert_eq!(s.day_spend("bob", today).await.unwrap(), (0, 0));
    let d = tool_decisions(&*s, 0).await;
    assert_eq!(
        d.iter().map(|x| (x.1, x.2)).collect::<Vec<_>>(),
        vec![(1, true), (2, false)],
        "the refused call is refused; the allowed one past the budget is not decided"
    );
    let t = s.get_task("t").await.unwrap().unwrap();
    assert_eq!(t.state, TaskState::Waiting);
    let qs = s.questions_of(&["t"]).await.unwrap().remove("t").unwrap();
    assert_eq!(qs.len(), 1);
    assert_eq!(qs[0].kind(), "budget");
    assert!(
        qs[0].text.contains("`t` has used 1.2k of 1k tokens"),
        "{}",
        qs[0].text
    );
    let asked = qs[0].tool_call().unwrap();
    assert_eq!(asked.call, 3);
    assert_eq!(asked.budget.unwrap().spent.tokens, 1200);
    // The inbox (every open question) reads it as a budget question too, with its task's node.
    let open = s.open_questions().await.unwrap();
    assert_eq!(open.len(), 1);
    assert_eq!(open[0].question.kind(), "budget");
    assert_eq!(open[0].node, "n1");
    assert_eq!(open[0].owner, "ann");
}

/// Issue 25 (answer links): of many uses of one link at once, exactly one takes it, on either
/// store; a link is bound to its question and expires.
async fn an_answer_link_is_taken_once(kind: Kind) {
    use crate::model::LinkTaken;
    let Some(dir) = TestDb::new(kind, "an_answer_link_is_taken_once").await else {
        return;
    };
    let s = open(&dir).await;
    let key = s.secret("k", "first").await.unwrap();
    assert_eq!(key, "first");
    assert_eq!(s.secret("k", "second").await.unwrap(), "first", "made once");
    let now = crate::now_ms();
    s.add_answer_link("l1", "t", 2, now + 1_000).await.unwrap();
    assert_eq!(
        s.take_answer_link("l1", "t", 3, now).await.unwrap(),
        LinkTaken::Unknown
    );
    assert_eq!(
        s.take_answer_link("l1", "u", 2, now).await.unwrap(),
        LinkTaken::Unknown
    );
    assert_eq!(
        s.take_answer_link("l1", "t", 2, now + 1_000).await.unwrap(),
        LinkTaken::Expired
    );
    let tries: Vec<_> = (0..12)
        .map(|_| {
            let s = std::sync::Arc::clone(&s);
            tokio::spawn(async move { s.take_answer_link("l1", "t", 2, now + 500).await.unwrap() })
        })
        .collect();
    let mut taken = 0;
    for t in tries {
        match t.await.unwrap() {
            LinkTaken::Taken => taken += 1,
            LinkTaken::Used(at) => assert_eq!(at, now + 500),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(taken, 1);
}

async fn sessions_fence_their_tasks(kind: Kind) {
    let Some(dir) = TestDb::new(kind, "sessions_fence_their_tasks").await else {
        return;
    };
    let (s, e1) = with_node(&dir).await;
    assigned(&*s, "kept", "n1", e1).await;
    assigned(&*s, "dropped", "n1", e1).await;
    // The Assign commands are acked: only a Hello that names a task claims it now.
    let ids: Vec<u64> = s
        .pending_commands("n1", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    s.ack_commands("n1", &ids, 3).await.unwrap();

    let silent = s.session_silent("n1", e1, 10).await.unwrap();
    assert_eq!(silent.0.len(), 2);
    assert_eq!(
        s.get_task("kept").await.unwrap().unwrap().state,
        TaskState::Unreachable
    );
    // A new session: it claims `kept` (back to its state) and `dropped` is lost.
    let opened = s
        .open_session(&hello("n1", &[("kept", true)]), "a:2", 20)
        .await
        .unwrap();
    assert_eq!(opened.epoch, 2);
    assert!(opened.holding.contains_key("kept"));
    let kept = s.get_task("kept").await.unwrap().unwrap();
    assert_eq!((kept.state, kept.epoch), (TaskState::Assigned, 2));
    assert_eq!(
        s.get_task("dropped").await.unwrap().unwrap().state,
        TaskState::Lost
    );
    // The old session's events are neither recorded nor acked; the old grace is a no-op.
    let out = s
        .record_events(
            &key("n1", e1),
            vec![ev("kept", 1, plan("x"))],
            &TestRules,
            HistoryCaps::both(1 << 20),
        )
        .await
        .unwrap();
    assert!(out.acks.is_empty());
    assert_eq!(s.get_task("kept").await.unwrap().unwrap().last_seq, 0);
    assert!(
        s.session_expired("n1", e1, "gone", 30)
            .await
            .unwrap()
            .0
            .is_empty()
    );
    // An assign for a session that is gone does nothing.
    let _ = s
        .insert_task(&task("late"), None, None, None)
        .await
        .unwrap();
    let w = AssignWrite {
        task_id: "late".into(),
        node: "n1".into(),
        epoch: e1,
        backend: "sim".into(),
    };
    let cmd = |t: &TaskRecord| NodeCommand::Cancel {
        task_id: t.id.clone(),
        attempt: 0,
    };
    assert!(s.assign(&w, 31, &cmd).await.unwrap().is_none());

    // Session 2 falls silent and its grace runs out: lost, and told to stop if it returns.
    let _ = s.session_silent("n1", 2, 40).await.unwrap();
    let lost = s
        .session_expired("n1", 2, "gone for good", 50)
        .await
        .unwrap();
    assert_eq!(lost.0.len(), 1);
    let kept = s.get_task("kept").await.unwrap().unwrap();
    assert_eq!(
        (kept.state, kept.reason.as_str()),
        (TaskState::Lost, "gone for good")
    );
    let pending = s.pending_commands("n1", 0, 10).await.unwrap();
    assert!(matches!(
        &pending[..],
        [StoredCommand { command: NodeCommand::Cancel { task_id, attempt: 1 }, .. }] if task_id == "kept"
    ));
    // Restarting: no session is live; the node with active tasks is listed.
    assert!(s.reset_sessions().await.unwrap().is_empty());
}

async fn compaction_keeps_what_a_user_reads(kind: Kind) {
    let Some(dir) = TestDb::new(kind, "compaction_keeps_what_a_user_reads").await else {
        return;
    };
    let (s, epoch) = with_node(&dir).await;
    assigned(&*s, "old", "n1", epoch).await;
    let batch = vec![
        ev("old", 1, plan("- [x] a\n")),
        ev(
            "old",
            2,
            EventKind::Log {
                data: b"out".to_vec(),
            },
        ),
        ev(
            "old",
            3,
            EventKind::Activity {
                lines: vec!["Bash: cargo test".into(), "says: done".into()],
                usage: None,
            },
        ),
        ev("old", 4, EventKind::Exited(WorkerExit::default())),
    ];
    let _ = s
        .record_events(
            &key("n1", epoch),
            batch,
            &TestRules,
            HistoryCaps::both(1 << 20),
        )
        .await
        .unwrap();
    let ids: Vec<u64> = s
        .pending_commands("n1", 0, 10)
        .await
        .unwrap()
        .iter()
        .map(|c| c.id)
        .collect();
    s.ack_commands("n1", &ids, 6).await.unwrap();
    assert_eq!(
        s.compact(1).await.unwrap(),
        Compacted::default(),
        "nothing that old"
    );
    let done = s.compact(i64::MAX).await.unwrap();
    assert_eq!((done.events, done.commands), (2, 1));
    assert_eq!(
        s.log_page("old", crate::model::LogStream::Raw, 0, 100)
            .await
            .unwrap()
            .len(),
        1
    );
    let activity = s
        .log_page("old", crate::model::LogStream::Activity, 0, 100)
        .await
        .unwrap();
    assert_eq!(
        activity,
        vec![(3, b"Bash: cargo test\nsays: done\n".to_vec())]
    );
    assert_eq!(
        s.get_task("old").await.unwrap().unwrap().plan_md,
        "- [x] a\n"
    );
}

async fn list_tasks_pages_newest_first(kind: Kind) {
    let Some(dir) = TestDb::new(kind, "list_tasks_pages_newest_first").await else {
        return;
    };
    let s = open(&dir).await;
    for i in 0..25 {
        let _ = s
            .insert_task(&task(&format!("t-{i:02}")), None, None, None)
            .await
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .list_tasks(&TaskQuery {
                states: vec![TaskState::Queued],
                limit: 10,
                before,
                count: before.is_none(),
            })
            .await
            .unwrap();
        if before.is_none() {
            assert_eq!(page.total, 25);
        }
        seen.extend(page.tasks.into_iter().map(|t| t.id));
        match page.next {
            Some(n) => before = Some(n),
            None => break,
        }
    }
    let want: Vec<String> = (0..25).rev().map(|i| format!("t-{i:02}")).collect();
    assert_eq!(seen, want);
}

async fn a_request_id_makes_one_task_and_one_answer(kind: Kind) {
    let Some(dir) = TestDb::new(kind, "a_request_id_makes_one_task_and_one_answer").await else {
        return;
    };
    let s = open(&dir).await;
    assert!(matches!(
        s.insert_task(&task("one"), Some("req-1"), None, None)
            .await
            .unwrap(),
        Inserted::New(_)
    ));
    match s
        .insert_task(&task("two"), Some("req-1"), None, None)
        .await
        .unwrap()
    {
        Inserted::Existing(id) => assert_eq!(id, "one"),
        other => panic!("{other:?}"),
    }
    assert!(!s.task_exists("two").await.unwrap());
}

#[tokio::test]
async fn a_version_7_store_gets_its_bodies_converted() {
    use dispatch_proto::v1;
    use prost::Message;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    {
        // The schema as version 7 left it: events and commands stored as wire messages.
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(super::sqlite::options(&path))
            .await
            .unwrap();
        for sql in &super::sqlite::MIGRATIONS[..7] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::raw_sql("PRAGMA user_version = 7")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO tasks (id, state, title, plan_md, node, remote, backend, model, workdir, after_id, priority, reason, created_ms, updated_ms, started_ms, ended_ms, last_seq, submit_order) \
                     VALUES ('old', 'running', 'Old', '- [x] a\n', 'n1', '', 'sim', '', '', '', 0, '', 1, 1, 1, 0, 3, 1)")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query(
            "INSERT INTO task_texts (task_id, prompt, worker_prompt) VALUES ('old', 'p', 'wp')",
        )
        .execute(&pool)
        .await
        .unwrap();
        let event = |seq: u64, kind: v1::task_event::Kind| {
            v1::TaskEvent {
                task_id: "old".into(),
                seq,
                at_ms: 2,
                attempt: 0,
                kind: Some(kind),
            }
            .encode_to_vec()
        };
        let rows = [
            (
                1,
                "plan",
                event(
                    1,
                    v1::task_event::Kind::Plan(v1::PlanUpdated {
                        markdown: "- [x] a\n".into(),
                    }),
                ),
            ),
            (
                2,
                "log",
                event(
                    2,
                    v1::task_event::Kind::Log(v1::LogChunk {
                        data: b"raw output\n".to_vec(),
                    }),
                ),
            ),
        ];
        for (seq, kind, body) in rows {
            sqlx::query("INSERT INTO events (task_id, seq, kind, at_ms, body) VALUES ('old', ?1, ?2, 2, ?3)")
                .bind(seq)
                .bind(kind)
                .bind(body)
                .execute(&pool)
                .await
                .unwrap();
        }
        let cmd = v1::Command {
            id: 0,
            kind: Some(v1::command::Kind::Note(v1::AppendNote {
                task_id: "old".into(),
                text: "hello".into(),
            })),
        };
        sqlx::query(
            "INSERT INTO commands (node, task_id, body, created_ms) VALUES ('n1', 'old', ?1, 1)",
        )
        .bind(cmd.encode_to_vec())
        .execute(&pool)
        .await
        .unwrap();
        pool.close().await;
    }
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        s.log_page("old", crate::model::LogStream::Raw, 0, 1 << 20)
            .await
            .unwrap(),
        vec![(2, b"raw output\n".to_vec())],
        "old output reads back as the bytes the worker wrote, without wire framing"
    );
    let plan: Vec<u8> = sqlx::query_scalar("SELECT body FROM events WHERE seq = 1")
        .fetch_one(s.raw())
        .await
        .unwrap();
    let p: patch::Patch = serde_json::from_slice(&plan).unwrap();
    assert_eq!(patch::apply("", &p).unwrap(), "- [x] a\n");
    let pending = s.pending_commands("n1", 0, 10).await.unwrap();
    assert!(matches!(
        &pending[..],
        [StoredCommand { command: NodeCommand::Note { text, .. }, .. }] if text == "hello"
    ));
    let t = s.get_task("old").await.unwrap().unwrap();
    assert_eq!((t.epoch, t.log_bytes, t.last_seq), (0, 0, 3));
}

async fn concurrent_submits_cannot_pass_the_active_task_quota_together(kind: Kind) {
    let Some(dir) = TestDb::new(
        kind,
        "concurrent_submits_cannot_pass_the_active_task_quota_together",
    )
    .await
    else {
        return;
    };
    let s = open(&dir).await;
    let mut joins = Vec::new();
    for i in 0..24 {
        let s = std::sync::Arc::clone(&s);
        joins.push(tokio::spawn(async move {
            let mut t = task(&format!("q-{i:02}"));
            // Two owners, racing: each may have 5 active tasks.
            t.owner = if i % 2 == 0 { "ann" } else { "bob" }.into();
            s.insert_task(&t, None, None, Some(5)).await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for j in joins {
        match j.await.unwrap() {
            Ok(_) => ok += 1,
            Err(CoordinatorError::ResourceExhausted(m)) => {
                assert!(m.contains("at most 5 active tasks"), "{m}");
                refused += 1;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok, refused), (10, 14));
}

/// Registrations racing for a registration token's uses: exactly `uses_max` nodes get a token;
/// the store's transaction is the one writer of the count. Replacing an unused minted token
/// takes no use; a used one cannot be replaced.
async fn concurrent_registrations_cannot_pass_the_token_uses(kind: Kind) {
    use crate::model::{Registered, TokenRecord};
    let Some(dir) = TestDb::new(kind, "concurrent_registrations_cannot_pass_uses").await else {
        return;
    };
    let s = open(&dir).await;
    let audit = crate::model::AuditEntry {
        who: "admin".into(),
        action: "token-create".into(),
        task_id: String::new(),
        detail: String::new(),
    };
    let reg = TokenRecord {
        id: "reg".into(),
        kind: "node".into(),
        name: "ci-*".into(),
        role: "node".into(),
        created_by: "admin".into(),
        uses_max: 3,
        ..Default::default()
    };
    s.create_token(&reg, &audit, 1).await.unwrap();
    let minted = |i: usize| TokenRecord {
        id: format!("m{i}"),
        kind: "node".into(),
        name: format!("ci-{i}"),
        role: "node".into(),
        hash: [i as u8; 32],
        created_by: TokenRecord::minted_by("reg"),
        ..Default::default()
    };
    let mut joins = Vec::new();
    for i in 0..12 {
        let s = std::sync::Arc::clone(&s);
        let (t, a) = (minted(i), audit.clone());
        joins.push(tokio::spawn(async move {
            s.register_node("reg", &t, None, &a, 2).await
        }));
    }
    let mut got = Vec::new();
    for j in joins {
        got.push(j.await.unwrap().unwrap());
    }
    let ok = got.iter().filter(|r| **r == Registered::Minted).count();
    assert_eq!(ok, 3, "{got:?}");
    assert!(
        got.iter()
            .all(|r| matches!(r, Registered::Minted | Registered::Exhausted { .. })),
        "{got:?}"
    );
    let all = s.tokens().await.unwrap();
    assert_eq!(all.iter().find(|t| t.id == "reg").unwrap().uses, 3);
    let mine: Vec<&TokenRecord> = all
        .iter()
        .filter(|t| t.created_by == TokenRecord::minted_by("reg"))
        .collect();
    assert_eq!(mine.len(), 3);
    // A lost Welcome: the unused token is replaced, no use taken.
    let first = mine[0].id.clone();
    let mut again = minted(99);
    again.name = mine[0].name.clone();
    assert_eq!(
        s.register_node("reg", &again, Some(&first), &audit, 3)
            .await
            .unwrap(),
        Registered::Minted
    );
    let all = s.tokens().await.unwrap();
    assert!(
        all.iter()
            .find(|t| t.id == first)
            .unwrap()
            .revoked_ms
            .is_some()
    );
    assert_eq!(all.iter().find(|t| t.id == "reg").unwrap().uses, 3);
    // A used token is not replaced (and then there is no use left).
    s.tokens_used(&[("m99".into(), 5)]).await.unwrap();
    let mut third = minted(100);
    third.name = again.name.clone();
    assert!(matches!(
        s.register_node("reg", &third, Some("m99"), &audit, 6)
            .await
            .unwrap(),
        Registered::Exhausted { uses: 3 }
    ));
    let audit_rows = s.audit_records(None, None, 100).await.unwrap();
    assert_eq!(audit_rows.len(), 1 + 3 + 1);
    assert_eq!(
        s.register_node("nope", &minted(101), None, &audit, 7)
            .await
            .unwrap(),
        Registered::Gone
    );
}

/// Every test of the suite, on each backend.
macro_rules! on_both {
    ($($name:ident),* $(,)?) => {
        mod on_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(super::Kind::Sqlite).await
                }
            )*
        }
        mod on_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                #[ignore = "needs PostgreSQL; run with --run-ignored all (.ci/run does)"]
                async fn $name() {
                    super::$name(super::Kind::Postgres).await
                }
            )*
        }
    };
}

on_both!(
    tasks_events_and_commands_survive_reopen,
    tokens_keep_their_expiry_and_latest_use_and_gone_nodes_can_be_forgotten,
    a_batch_larger_than_every_statement_chunk_is_recorded_whole,
    plan_history_costs_the_change_not_the_plan,
    plan_history_stops_at_its_cap_and_the_plan_stays_current,
    output_past_the_cap_leaves_a_marker_and_nothing_more,
    an_ended_task_keeps_its_state_and_a_question_is_asked_once,
    a_tool_call_is_decided_or_asked_and_always_sticks,
    a_task_past_its_budget_asks_and_its_spend_is_counted_once,
    an_answer_link_is_taken_once,
    sessions_fence_their_tasks,
    compaction_keeps_what_a_user_reads,
    list_tasks_pages_newest_first,
    a_request_id_makes_one_task_and_one_answer,
    concurrent_submits_cannot_pass_the_active_task_quota_together,
    concurrent_registrations_cannot_pass_the_token_uses,
);

/// Fencing (PostgreSQL, where replicas share a store): once another replica raises the lease
/// epoch, every write of the old leader fails and commits nothing, and it learns it is deposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL; run with --run-ignored all (.ci/run does)"]
async fn a_deposed_leader_commits_nothing() {
    let Some(db) = TestDb::new(Kind::Postgres, "fenced").await else {
        return;
    };
    let url = db.postgres.clone().unwrap();
    let admin = super::postgres::PgStore::open(&url).await.unwrap();
    sqlx::query("UPDATE coordinator_lease SET epoch = 1, leader = 'old'")
        .execute(admin.raw())
        .await
        .unwrap();
    let old = super::postgres::PgStore::open_fenced(&url, 1)
        .await
        .unwrap();
    let _ = old
        .insert_task(&task("before"), None, None, None)
        .await
        .unwrap();
    let epoch = old
        .open_session(&hello("n1", &[]), "a:1", 1)
        .await
        .unwrap()
        .epoch;

    // A new leader takes the lease.
    sqlx::query("UPDATE coordinator_lease SET epoch = 2, leader = 'new'")
        .execute(admin.raw())
        .await
        .unwrap();
    let deposed = tokio::spawn(old.deposed());
    let e = old
        .insert_task(&task("after"), None, None, None)
        .await
        .unwrap_err();
    assert!(matches!(e, CoordinatorError::Fenced(_)), "{e}");
    assert!(e.to_string().contains("no longer the leader"), "{e}");
    assert!(!old.task_exists("after").await.unwrap());
    let refused = old
        .record_events(
            &key("n1", epoch),
            vec![ev("before", 1, plan("- [x] a\n"))],
            &TestRules,
            HistoryCaps::both(1 << 20),
        )
        .await;
    assert!(matches!(refused, Err(CoordinatorError::Fenced(_))));
    assert!(old.touch_node("n1", 9).await.is_err());
    assert_eq!(old.get_task("before").await.unwrap().unwrap().last_seq, 0);
    tokio::time::timeout(std::time::Duration::from_secs(5), deposed)
        .await
        .expect("the old leader learns it is deposed")
        .unwrap();
    // The new leader writes as usual.
    let new = super::postgres::PgStore::open_fenced(&url, 2)
        .await
        .unwrap();
    let _ = new
        .insert_task(&task("after"), None, None, None)
        .await
        .unwrap();
}

/// The two schemas stay in step: every table a store holds has the same columns on SQLite
/// and on PostgreSQL (a migration added to one only fails here), at the same version.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs PostgreSQL; run with --run-ignored all (.ci/run does)"]
async fn both_schemas_have_the_same_tables_and_columns() {
    let Some(db) = TestDb::new(Kind::Postgres, "schema").await else {
        return;
    };
    let pg = super::postgres::PgStore::open(db.postgres.as_deref().unwrap())
        .await
        .unwrap();
    let lite = SqliteStore::open(&db.dir.path().join("s.db"))
        .await
        .unwrap();
    let version: i64 = sqlx::query_scalar("PRAGMA user_version")
        .fetch_one(lite.raw())
        .await
        .unwrap();
    assert_eq!(version, super::postgres::SCHEMA_VERSION);
    // migrate-store copies every table there is.
    let mut tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'",
    )
    .fetch_all(lite.raw())
    .await
    .unwrap();
    tables.sort();
    let mut copied: Vec<&str> = super::migrate::TABLES.to_vec();
    copied.sort();
    assert_eq!(tables, copied, "a table migrate-store would leave behind");
    // Each column's kind of value: the rows are read by the same code on both.
    // The columns read as i32 (the rest are read as i64, which an INT4 column fails).
    const INT4: [(&str, &str); 2] = [("tasks", "priority"), ("tasks", "exit_code")];
    fn pg_kind(table: &str, column: &str, t: &str) -> &'static str {
        match t {
            "bigint" => "integer",
            "integer" if INT4.contains(&(table, column)) => "integer",
            "text" => "text",
            // SQLite keeps a boolean as an integer (sqlx reads `bool` from either).
            "boolean" => "integer",
            "bytea" => "bytes",
            other => panic!(
                "PostgreSQL column {table}.{column} is {other}: integers read as i64 are BIGINT"
            ),
        }
    }
    fn sqlite_kind(t: &str) -> &'static str {
        match t.to_ascii_uppercase().as_str() {
            "INTEGER" | "BIGINT" | "INT" => "integer",
            "TEXT" => "text",
            "BOOLEAN" => "integer",
            "BLOB" => "bytes",
            other => panic!("SQLite type {other} has no PostgreSQL counterpart here"),
        }
    }
    for table in super::migrate::TABLES {
        let on_pg: Vec<(String, String)> = sqlx::query_as(
            "SELECT column_name::TEXT, data_type::TEXT FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1",
        )
        .bind(table)
        .fetch_all(pg.raw())
        .await
        .unwrap();
        let on_sqlite: Vec<(String, String)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT name, type FROM pragma_table_info('{table}')"
        )))
        .fetch_all(lite.raw())
        .await
        .unwrap();
        let mut on_pg: Vec<(String, &str)> = on_pg
            .iter()
            .map(|(c, t)| (c.clone(), pg_kind(table, c, t)))
            .collect();
        let mut on_sqlite: Vec<(String, &str)> = on_sqlite
            .iter()
            .map(|(c, t)| (c.clone(), sqlite_kind(t)))
            .collect();
        on_pg.sort();
        on_sqlite.sort();
        assert!(!on_pg.is_empty(), "{table}");
        assert_eq!(on_pg, on_sqlite, "the columns of `{table}` and their types");
    }
}
