//! What a hostile worker, node or user can put in front of another user's eyes: nothing a
//! terminal would obey.

use dispatch_tests::{AgentOpts, Cluster, text};

/// An escape sequence that would set the reader's clipboard (OSC 52), and one that clears the
/// screen.
const OSC52: &str = "\u{1b}]52;c;cm0gLXJmIH4K\u{7}";
const CLEAR: &str = "\u{1b}[2J";

fn assert_inert(what: &str, out: &str) {
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{7}') && !out.contains('\u{9b}'),
        "{what} printed a raw control character:\n{out:?}"
    );
}

#[test]
fn escape_sequences_in_every_printed_field_are_shown_escaped() {
    let mut c = Cluster::new();
    let mut o = AgentOpts::new("box", 2);
    o.labels = vec![format!("team=evil{OSC52}")];
    c.add_agent(o);
    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "evil",
        "--title",
        &format!("title {OSC52}"),
        "--step",
        &format!("item {CLEAR}"),
        "--step",
        &format!("ask (ask: question {OSC52}?)"),
        "hostile text",
    ]);
    c.wait_task("evil", "the question", |t| {
        t.questions.iter().any(|q| q.answer.is_none())
    });
    for args in [
        &["status", "evil"][..],
        &["status"][..],
        &["inbox", "--list"][..],
        &["nodes"][..],
        &["wait", "evil"][..],
    ] {
        let out = c.run(args);
        let shown = format!("{}{}", text(&out.stdout), text(&out.stderr));
        assert_inert(&format!("dispatch {args:?}"), &shown);
        if args[0] != "nodes" {
            assert!(
                shown.contains("\\x1b]52;c;"),
                "{args:?} shows the escape:\n{shown}"
            );
        }
    }
    // An answer with an escape, then a failure reason with one.
    c.ok(&["answer", "evil", &format!("yes {CLEAR}")]);
    let t = c.wait_task("evil", "the end", |t| t.task_state().is_terminal());
    assert_eq!(t.task_state().as_str(), "completed", "{}", t.reason);
    let out = c.run(&["status", "evil"]);
    assert_inert("status after the answer", &text(&out.stdout));
    assert!(text(&out.stdout).contains("yes \\x1b[2J"));
    // JSON keeps the text, escaped the JSON way.
    let json = c.ok(&["status", "evil", "--json"]);
    assert_inert("status --json", &json);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["title"], format!("title {OSC52}"));

    c.ok(&[
        "--backend",
        "sim",
        "--id",
        "fails",
        "--step",
        &format!("boom (fail: reason {OSC52})"),
        "fail",
    ]);
    c.wait_task("fails", "the failure", |t| t.task_state().is_terminal());
    let out = c.run(&["wait", "fails"]);
    assert_inert("wait on a failed task", &text(&out.stderr));
    let out = c.run(&["status", "fails"]);
    assert_inert("status of a failed task", &text(&out.stdout));
}
