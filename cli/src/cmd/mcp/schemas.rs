//! The JSON schemas of what the tools return (MCP `outputSchema`), so a host knows the shape
//! of a result before it calls, and a client may check each result against it. They describe
//! the CLI's own `--json` objects (`render::task_json`, `render::node_json`): the same fields,
//! for the same reader. Open-ended where the CLI may add fields (objects allow more
//! properties); closed lists of words are described, not enumerated, so a newer coordinator's
//! state never makes an older server's result invalid.

use serde_json::{Value, json};

/// `t` or null, spelled with `anyOf` of single types: portable to hosts that map tool schemas
/// onto a one-`type` dialect (the MCP Inspector's `--strict` flags a type list).
fn nullable(t: &str) -> Value {
    json!({"anyOf": [{"type": t}, {"type": "null"}]})
}

/// [`nullable`] with a description and an object's properties.
fn nullable_object(description: &str, properties: Option<Value>) -> Value {
    let mut object = json!({"type": "object"});
    if let Some(p) = properties {
        object["properties"] = p;
    }
    json!({"anyOf": [object, {"type": "null"}], "description": description})
}

/// A task, as `dispatch status ID --json` prints it.
pub(super) fn task() -> Value {
    let mut t = task_fields();
    t["properties"]["items"] = json!({
        "type": "array",
        "description": "The checklist, in order.",
        "items": {
            "type": "object",
            "properties": {
                "text": {"type": "string"},
                "status": {"type": "string", "description": "pending, done, blocked ([?]) or error ([!])"},
                "note": {"type": "string"}
            },
            "required": ["text", "status"]
        }
    });
    t["properties"]["questions"] = json!({
        "type": "array",
        "items": {
            "type": "object",
            "properties": {
                "seq": {"type": "integer"},
                "text": {"type": "string"},
                "answer": nullable("string")
            },
            "required": ["seq", "text"]
        }
    });
    t
}

/// A task's fields but its checklist and questions (one `json!` of all of them is past the
/// macro's recursion limit).
fn task_fields() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "state": {"type": "string", "description": "queued, assigned, running, waiting (a question is open), completed, failed, blocked, cancelled, lost or unreachable"},
            "title": {"type": "string"},
            "owner": {"type": "string"},
            "summary": {"type": "boolean", "description": "True when only a summary may be shown to the caller (another member's task, or a viewer): texts are empty."},
            "node": {"type": "string", "description": "The node that runs or ran it; empty until assigned."},
            "remote": {"type": "string"},
            "backend": {"type": "string"},
            "model": {"type": "string"},
            "workdir": {"type": "string", "description": "The directory it runs in on its node (empty while it is to run in a checkout of `repository`)."},
            "repository": nullable_object("The repository a remote task works on: its origin URL, branch and commit (null for a task run in `workdir`).", Some(json!({"url": {"type": "string"}, "branch": {"type": "string"}, "commit": {"type": "string"}}))),
            "after": {"type": "string"},
            "reason": {"type": "string", "description": "Why it ended the way it did."},
            "exit_code": nullable("integer"),
            "attempt": {"type": "integer"},
            "queue_position": {"type": "integer"},
            "priority": {"type": "integer"},
            "created_at_ms": {"type": "integer"},
            "updated_at_ms": {"type": "integer"},
            "started_at_ms": {"type": "integer"},
            "ended_at_ms": {"type": "integer"},
            "pool": {"type": "object", "additionalProperties": {"type": "string"}},
            "worktree": {"type": "boolean"},
            "branch": {"type": "string"},
            "cleaned": {"type": "boolean"},
            "signer": {"type": "string"},
            "activity": {"type": "string"},
            "fallback": {"type": "string"},
            "output": nullable_object("output.md's size once written.", Some(json!({"bytes": {"type": "integer"}, "truncated": {"type": "boolean"}}))),
            "usage": nullable_object("Tokens and cost, when the backend streams them.", None),
            "changes": nullable_object("What it changed in its repository, once it ended.", None),
            "notice": {"type": "string", "description": "dispatch_task: said when your default model was used (the seed's confirmation)."}
        },
        "required": ["id", "state", "items", "questions"]
    })
}

/// `task_status`: one task, or `tasks` when no id was given.
pub(super) fn status() -> Value {
    let mut one = task();
    one["properties"]["tasks"] = json!({"type": "array", "items": task()});
    one.as_object_mut().map(|o| o.remove("required"));
    one
}

/// `wait_for_task`.
pub(super) fn waited() -> Value {
    json!({
        "type": "object",
        "properties": {
            "why": {"type": "string", "description": "question, completed, blocked, failed, cancelled or timeout"},
            "exit_code": {"type": "integer", "description": "`dispatch wait`'s exit status for the same outcome."},
            "message": {"type": "string"},
            "task": task()
        },
        "required": ["why", "exit_code", "message", "task"]
    })
}

/// `task_output`.
pub(super) fn output() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "markdown": {"type": "string"},
            "bytes": {"type": "integer", "description": "Its whole size on the node."},
            "truncated": {"type": "boolean", "description": "True when the coordinator keeps only its first part."}
        },
        "required": ["id", "markdown", "bytes", "truncated"]
    })
}

/// `task_diff`.
pub(super) fn diff() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "diff": {"type": "string", "description": "The patch; empty when there is none."},
            "none": {"type": "string", "description": "Why there is no patch, when there is none."}
        },
        "required": ["id", "diff", "none"]
    })
}

/// `fetch_changes` and `apply_changes`.
pub(super) fn changes() -> Value {
    json!({
        "type": "object",
        "properties": {
            "id": {"type": "string"},
            "branch": {"type": "string", "description": "The task's branch, now in `repository`: dispatch/<id>."},
            "base": {"type": "string", "description": "The commit the task started from."},
            "head": {"type": "string", "description": "The branch's last commit."},
            "commits": {"type": "integer"},
            "summary": {"type": "string", "description": "Commits, files, insertions and deletions, in words."},
            "repository": {"type": "string", "description": "The repository it was fetched into (or applied in)."},
            "applied": {"type": "string", "description": "apply_changes: merge or cherry-pick, into the repository's current branch."}
        },
        "required": ["id", "branch", "head", "repository"]
    })
}

/// `list_nodes`.
pub(super) fn nodes() -> Value {
    json!({
        "type": "object",
        "properties": {
            "nodes": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "name": {"type": "string"},
                        "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                        "backends": {"type": "array", "items": {"type": "string"}},
                        "running": {"type": "integer"},
                        "capacity": {"type": "integer"},
                        "connected": {"type": "boolean"},
                        "draining": {"type": "boolean"}
                    },
                    "required": ["name", "connected"]
                }
            }
        },
        "required": ["nodes"]
    })
}

/// `inbox`.
pub(super) fn inbox() -> Value {
    json!({
        "type": "object",
        "properties": {
            "questions": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "task": {"type": "string"},
                        "node": {"type": "string"},
                        "seq": {"type": "integer"},
                        "text": {"type": "string"},
                        "asked_at_ms": {"type": "integer"},
                        "title": {"type": "string"}
                    },
                    "required": ["task", "seq", "text"]
                }
            }
        },
        "required": ["questions"]
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every result the tools build validates against its schema (the Python client in
    /// tests/tests/mcp.rs checks the live ones too).
    #[test]
    fn the_clis_json_objects_fit_their_schemas() {
        use dispatch_proto::v1;
        let mut t = v1::Task {
            id: "fix-tests".into(),
            title: "fix the tests".into(),
            exit_code: Some(0),
            output_bytes: 12,
            plan: Some(v1::Plan {
                title: "fix".into(),
                items: vec![v1::PlanItem {
                    text: "look".into(),
                    ..Default::default()
                }],
                markdown: "- [ ] look\n".into(),
            }),
            questions: vec![v1::Question {
                seq: 1,
                text: "which?".into(),
                answer: None,
                ..Default::default()
            }],
            ..Default::default()
        };
        t.pool.insert("gpu".into(), "yes".into());
        let task = crate::render::task_json(&t);
        let node = crate::render::node_json(&v1::Node {
            name: "box".into(),
            connected: true,
            ..Default::default()
        });
        let cases = [
            (super::task(), task.clone()),
            (status(), task.clone()),
            (status(), json!({"tasks": [task.clone()]})),
            (
                waited(),
                json!({"why": "question", "exit_code": 10, "message": "m", "task": task}),
            ),
            (
                output(),
                json!({"id": "a", "markdown": "# x", "bytes": 3, "truncated": false}),
            ),
            (diff(), json!({"id": "a", "diff": "", "none": "no changes"})),
            (nodes(), json!({"nodes": [node]})),
            (
                inbox(),
                json!({"questions": [{"task": "a", "node": "box", "seq": 1, "text": "q", "asked_at_ms": 1, "title": "t"}]}),
            ),
        ];
        for (schema, value) in cases {
            let v = jsonschema::validator_for(&schema).expect("a valid schema");
            let errors: Vec<String> = v.iter_errors(&value).map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{errors:?}\n{value}");
        }
        // And they can fail: a task without its id does not fit.
        let v = jsonschema::validator_for(&super::task()).unwrap();
        assert!(!v.is_valid(&json!({"state": "queued", "items": [], "questions": []})));
    }
}
