use super::*;

fn task(id: &str) -> TaskRecord {
    TaskRecord {
        id: id.into(),
        title: "T".into(),
        prompt: "p".into(),
        plan_md: "- [ ] a\n".into(),
        created_ms: 1,
        updated_ms: 1,
        ..Default::default()
    }
}

#[tokio::test]
async fn tasks_events_and_commands_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    {
        let s = Store::open(&path).await.unwrap();
        s.insert_task(&task("a")).await.unwrap();
        s.insert_task(&task("b")).await.unwrap();
        let dup = s.insert_task(&task("a")).await.unwrap_err();
        assert!(matches!(dup, CoordinatorError::AlreadyExists(_)), "{dup}");
        let q: Vec<_> = s
            .queued_tasks()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.id)
            .collect();
        assert_eq!(q, ["a", "b"]);

        let mut a = s.get_task("a").await.unwrap().unwrap();
        a.node = "n1".into();
        s.update_task(&a).await.unwrap();
        let ev = |task: &str, seq: u64, kind: &'static str, body: &[u8]| EventItem {
            task_id: task.into(),
            seq,
            kind,
            at_ms: 5,
            body: body.to_vec(),
            apply: Box::new(|_| None),
        };
        let mut first = ev("a", 1, "plan", b"x");
        first.apply = Box::new(|t| {
            t.plan_md = "- [x] a\n".into();
            None
        });
        // One group commit: applied, resent, a gap, an unknown task, another node's task, a log.
        let batch = vec![
            first,
            ev("a", 1, "plan", b"x"),
            ev("a", 3, "plan", b"x"),
            ev("zz", 1, "plan", b"x"),
            ev("b", 1, "plan", b"x"),
            ev("a", 2, "log", b"hello"),
        ];
        let out = s.record_events("n1", batch).await.unwrap();
        assert!(matches!(out[0], EventOutcome::Applied(_)));
        assert!(matches!(out[1], EventOutcome::Duplicate { committed: 1 }));
        assert!(matches!(out[2], EventOutcome::Gap { expected: 2 }));
        assert!(matches!(out[3], EventOutcome::UnknownTask));
        assert!(matches!(out[4], EventOutcome::NotOwner { .. }));
        assert!(matches!(out[5], EventOutcome::Applied(_)));

        let mut t = s.get_task("b").await.unwrap().unwrap();
        t.state = TaskState::Assigned;
        t.node = "n1".into();
        let cid = s.assign(&t, b"cmd").await.unwrap();
        assert_eq!(
            s.pending_commands("n1").await.unwrap(),
            vec![(cid, "b".to_string(), b"cmd".to_vec())]
        );
    }
    let s = Store::open(&path).await.unwrap();
    let a = s.get_task("a").await.unwrap().unwrap();
    assert_eq!(a.plan_md, "- [x] a\n");
    assert_eq!(a.last_seq, 2);
    assert_eq!(
        s.log_chunks("a", 0).await.unwrap(),
        vec![(2, b"hello".to_vec())]
    );
    assert_eq!(s.queued_tasks().await.unwrap().len(), 1);
    let pending = s.pending_commands("n1").await.unwrap();
    s.ack_command(pending[0].0, 9).await.unwrap();
    assert!(s.pending_commands("n1").await.unwrap().is_empty());
    assert_eq!(s.count_active().await.unwrap(), 2);
}

#[tokio::test]
async fn a_batch_larger_than_every_statement_chunk_is_recorded_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(&dir.path().join("d.db")).await.unwrap();
    // More tasks than one update statement takes, more events than one insert takes.
    let tasks = TASKS_PER_UPDATE * 2 + 3;
    let per_task = EVENTS_PER_STATEMENT / tasks + 3;
    for i in 0..tasks {
        let mut t = task(&format!("t-{i}"));
        t.node = "n1".into();
        s.insert_task(&t).await.unwrap();
    }
    let mut batch = Vec::new();
    for seq in 1..=per_task as u64 {
        for i in 0..tasks {
            batch.push(EventItem {
                task_id: format!("t-{i}"),
                seq,
                kind: "plan",
                at_ms: 5,
                body: format!("{i}/{seq}").into_bytes(),
                apply: Box::new(move |t| {
                    t.plan_md = format!("- [ ] step {seq}\n");
                    t.reason = format!("task {i}");
                    (seq == 2).then(|| QuestionRecord {
                        task_id: t.id.clone(),
                        seq: 1,
                        text: format!("q{i}"),
                        asked_ms: 7,
                        answer: None,
                        answered_ms: 0,
                    })
                }),
            });
        }
    }
    assert!(batch.len() > EVENTS_PER_STATEMENT);
    let out = s.record_events("n1", batch).await.unwrap();
    assert!(out.iter().all(|o| matches!(o, EventOutcome::Applied(_))));
    for i in 0..tasks {
        let t = s.get_task(&format!("t-{i}")).await.unwrap().unwrap();
        assert_eq!(t.last_seq, per_task as u64, "{}", t.id);
        assert_eq!(t.plan_md, format!("- [ ] step {per_task}\n"));
        assert_eq!(t.reason, format!("task {i}"));
        assert_eq!(t.title, "T", "columns the events did not change are kept");
        assert_eq!(t.prompt, "p", "the texts are kept");
        let qs = s.questions(&t.id).await.unwrap();
        assert_eq!(qs.len(), 1);
        assert_eq!(qs[0].text, format!("q{i}"));
    }
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events")
        .fetch_one(&s.reader)
        .await
        .unwrap();
    assert_eq!(n as usize, tasks * per_task);
    let body: Vec<u8> =
        sqlx::query_scalar("SELECT body FROM events WHERE task_id = 't-7' AND seq = 3")
            .fetch_one(&s.reader)
            .await
            .unwrap();
    assert_eq!(body, b"7/3");
}

#[tokio::test]
async fn a_version_6_store_moves_its_texts_out_of_the_task_rows() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("d.db");
    {
        // The schema as version 6 left it, with one task in it.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(options(&path))
            .await
            .unwrap();
        for sql in &MIGRATIONS[..6] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(*sql))
                .execute(&pool)
                .await
                .unwrap();
        }
        sqlx::raw_sql("PRAGMA user_version = 6")
            .execute(&pool)
            .await
            .unwrap();
        sqlx::query("INSERT INTO tasks (id, state, title, prompt, worker_prompt, plan_md, node, remote, backend, model, workdir, after_id, priority, reason, created_ms, updated_ms, started_ms, ended_ms, last_seq, submit_order) \
                     VALUES ('old', 'completed', 'Old', 'the prompt', 'the worker prompt', '- [x] a\n', 'n1', '', 'sim', '', '', '', 0, '', 1, 1, 1, 1, 3, 1)")
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    }
    let s = Store::open(&path).await.unwrap();
    let t = s.get_task("old").await.unwrap().unwrap();
    assert_eq!(
        (
            t.prompt.as_str(),
            t.worker_prompt.as_str(),
            t.plan_md.as_str()
        ),
        ("the prompt", "the worker prompt", "- [x] a\n")
    );
    assert_eq!(t.last_seq, 3);
    let columns: Vec<String> = sqlx::query_scalar("SELECT name FROM pragma_table_info('tasks')")
        .fetch_all(&s.reader)
        .await
        .unwrap();
    assert!(!columns.iter().any(|c| c.contains("prompt")), "{columns:?}");

    // A record from the event path (no texts) written back leaves the texts alone; a new
    // worker prompt is stored by the call that says so.
    let mut partial = t.clone();
    partial.prompt.clear();
    partial.worker_prompt.clear();
    partial.reason = "again".into();
    s.update_task(&partial).await.unwrap();
    let t = s.get_task("old").await.unwrap().unwrap();
    assert_eq!(
        (
            t.prompt.as_str(),
            t.worker_prompt.as_str(),
            t.reason.as_str()
        ),
        ("the prompt", "the worker prompt", "again")
    );
    let mut resumed = t.clone();
    resumed.worker_prompt = "resume from item 2".into();
    s.update_task_and_worker_prompt(&resumed).await.unwrap();
    assert_eq!(
        s.get_task("old").await.unwrap().unwrap().worker_prompt,
        "resume from item 2"
    );
}
