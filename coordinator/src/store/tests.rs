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
