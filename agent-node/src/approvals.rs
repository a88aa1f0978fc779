//! Tool approvals on this node (issue 25): a worker run under approvals has its CLI call a
//! hook before every tool call (Claude Code's `PreToolUse`, set with `--settings`; Codex's,
//! set with `-c hooks.PreToolUse=…` and `--dangerously-bypass-hook-trust`); the hook
//! asks this agent over a socket of the run's own, the agent reports the call to the
//! coordinator (`ToolCall`), whose policy — or a person it asks — decides (`ToolDecision`),
//! and the hook tells the CLI.
//!
//! The hook fails closed: whatever goes wrong (no agent, a broken reply, no decision within
//! its timeout) it denies the call and says why. The socket is in the abstract namespace (no
//! file to plant or to outgrow the 108-byte path limit) and serves only this user.

use dispatch_proto::v1;
use dispatch_proto::v1::task_event::Kind;
use std::collections::HashMap;
use std::io::{BufRead, Read, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, oneshot};

/// The most a hook may send: the CLI's hook input (the tool's input included).
pub const MAX_HOOK_INPUT: usize = 1024 * 1024;
/// The most of a tool's input the coordinator is sent (JSON); a cut one matches no rule.
pub const MAX_TOOL_INPUT: usize = dispatch_core::limits::MAX_TOOL_INPUT_BYTES;
/// Hook calls of one worker run waiting at once (a CLI runs a few tools in parallel at most).
pub const MAX_WAITING: usize = 16;
/// How long a hook waits for a decision before it denies the call (the seed's worker then
/// treats it as an unanswered question).
pub const APPROVAL_TIMEOUT: Duration = Duration::from_secs(30 * 60);

/// A decision for one call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// Run it.
    pub allow: bool,
    /// Why; a denial's reason is what the model is told.
    pub reason: String,
    /// The question a person answered (0: a rule decided).
    pub seq: u32,
}

/// The calls of one worker run that wait for a decision.
#[derive(Debug, Default)]
pub struct Pending {
    next: AtomicU64,
    waiting: std::sync::Mutex<HashMap<u64, oneshot::Sender<Decision>>>,
}

impl Pending {
    /// Hands `call` its decision; false when nothing waits for it (its hook gave up, or the
    /// decision was sent again after a reconnect).
    pub fn decide(&self, call: u64, d: Decision) -> bool {
        match self.waiting.lock().unwrap().remove(&call) {
            Some(tx) => tx.send(d).is_ok(),
            None => false,
        }
    }

    fn wait(&self) -> Option<(u64, oneshot::Receiver<Decision>)> {
        let mut waiting = self.waiting.lock().unwrap();
        if waiting.len() >= MAX_WAITING {
            return None;
        }
        let call = self.next.fetch_add(1, Ordering::SeqCst) + 1;
        let (tx, rx) = oneshot::channel();
        waiting.insert(call, tx);
        Some((call, rx))
    }

    /// A call waiting, as the hook's would be (tests elsewhere in the crate).
    #[cfg(test)]
    pub(crate) fn wait_for_test(&self) -> Option<(u64, oneshot::Receiver<Decision>)> {
        self.wait()
    }

    /// How many tool calls of this run its hook has asked about.
    pub fn calls(&self) -> u64 {
        self.next.load(Ordering::SeqCst)
    }

    fn forget(&self, call: u64) {
        self.waiting.lock().unwrap().remove(&call);
    }
}

/// The socket name of worker run `attempt` of `task` on the node whose data dir is `data_dir`
/// (abstract namespace; the same after an agent restart, so a re-attached worker's hook finds
/// the agent again).
pub fn socket_name(data_dir: &std::path::Path, task: &str, attempt: u32) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    data_dir.hash(&mut h);
    format!("dispatch-approve-{:016x}-{task}-{attempt}", h.finish())
}

/// The `--settings` a Claude Code worker under approvals runs with: a `PreToolUse` hook on
/// every tool that runs `exe approve-hook --socket NAME`.
pub fn claude_settings(exe: &str, socket: &str) -> String {
    let command = format!(
        "{} approve-hook --socket {}",
        crate::backends::shell_quote(exe),
        crate::backends::shell_quote(socket)
    );
    serde_json::json!({
        "hooks": {
            "PreToolUse": [{
                "matcher": "*",
                "hooks": [{
                    "type": "command",
                    "command": command,
                    // Claude Code's own limit on the hook, above the hook's: the hook
                    // answers (denying) before it is killed.
                    "timeout": APPROVAL_TIMEOUT.as_secs() + 60,
                }],
            }],
        },
    })
    .to_string()
}

/// The arguments a Codex worker under approvals runs with: hooks on (a user's
/// `[features] hooks = false` notwithstanding), a `PreToolUse` hook on every tool that runs
/// `exe approve-hook --socket NAME --cli codex`, and the flag that runs it without the trust a
/// person gives hooks in Codex's own UI (the hook is the node's, written for this run).
///
/// Codex lets a call through when its hook fails (a crash, a timeout, output it cannot
/// read), so the hook never does: it always answers, and Codex's limit on it is above its own.
pub fn codex_args(exe: &str, socket: &str) -> Vec<String> {
    let command = format!(
        "{} approve-hook --socket {} --cli codex",
        crate::backends::shell_quote(exe),
        crate::backends::shell_quote(socket)
    );
    // A TOML basic string: JSON's escapes (\", \\, \n, \uXXXX) are TOML's too.
    let quoted = serde_json::Value::String(command).to_string();
    vec![
        "--dangerously-bypass-hook-trust".into(),
        "-c".into(),
        "features.hooks=true".into(),
        "-c".into(),
        format!(
            "hooks.PreToolUse=[{{hooks=[{{type=\"command\",command={quoted},timeout={}}}]}}]",
            APPROVAL_TIMEOUT.as_secs() + 60
        ),
    ]
}

/// What the hook sends the agent: one JSON line.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Request {
    tool: String,
    input: serde_json::Value,
    cwd: String,
}

/// What the agent answers: one JSON line.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Reply {
    allow: bool,
    reason: String,
}

/// Serves the hook of worker run `attempt` of `task` on `socket` until the returned guard is
/// dropped: each call becomes a `ToolCall` event, and its hook gets the decision.
pub fn serve(
    socket: &str,
    task: &str,
    attempt: u32,
    events: mpsc::Sender<v1::TaskEvent>,
    pending: Arc<Pending>,
) -> std::io::Result<tokio::task::JoinHandle<()>> {
    use std::os::linux::net::SocketAddrExt;
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(socket.as_bytes())?;
    let std_listener = std::os::unix::net::UnixListener::bind_addr(&addr)?;
    std_listener.set_nonblocking(true)?;
    let listener = tokio::net::UnixListener::from_std(std_listener)?;
    let (task, me) = (task.to_string(), nix::unistd::geteuid().as_raw());
    Ok(tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            // Only this user's processes (the worker's CLI) may ask.
            if stream.peer_cred().ok().map(|c| c.uid()) != Some(me) {
                continue;
            }
            let (task, events, pending) = (task.clone(), events.clone(), Arc::clone(&pending));
            tokio::spawn(async move {
                if let Err(e) = one_call(stream, &task, attempt, &events, &pending).await {
                    tracing::warn!(%task, error = %e, "a tool approval request failed");
                }
            });
        }
    }))
}

async fn one_call(
    stream: tokio::net::UnixStream,
    task: &str,
    attempt: u32,
    events: &mpsc::Sender<v1::TaskEvent>,
    pending: &Pending,
) -> Result<(), String> {
    let (read, mut write) = stream.into_split();
    let mut line = Vec::new();
    let mut reader = tokio::io::BufReader::new(tokio::io::AsyncReadExt::take(
        read,
        MAX_HOOK_INPUT as u64 + 1,
    ));
    tokio::time::timeout(Duration::from_secs(10), reader.read_until(b'\n', &mut line))
        .await
        .map_err(|_| "the hook sent no request within 10 s".to_string())?
        .map_err(|e| e.to_string())?;
    let reply = match serde_json::from_slice::<Request>(&line) {
        Err(e) => Reply {
            allow: false,
            reason: format!("the hook's request is not one the agent reads: {e}"),
        },
        Ok(req) => match pending.wait() {
            None => Reply {
                allow: false,
                reason: format!(
                    "{MAX_WAITING} tool calls of this worker already wait for a decision"
                ),
            },
            Some((call, rx)) => {
                let mut input = req.input.to_string();
                if input.len() > MAX_TOOL_INPUT {
                    let mut cut = MAX_TOOL_INPUT;
                    while !input.is_char_boundary(cut) {
                        cut -= 1;
                    }
                    input.truncate(cut);
                }
                let ev = crate::runner::event(
                    task,
                    attempt,
                    Kind::ToolCall(v1::ToolCall {
                        call,
                        tool: req.tool,
                        input_json: input,
                        cwd: req.cwd,
                    }),
                );
                if events.send(ev).await.is_err() {
                    pending.forget(call);
                    return Err("the agent is stopping".into());
                }
                // The hook's connection going away (its own timeout) ends the wait: it sends
                // nothing after its request, so anything readable is its end.
                let mut probe = [0u8; 1];
                let d = tokio::select! {
                    d = rx => d.map_err(|_| "the decision was dropped".to_string())?,
                    _ = tokio::io::AsyncReadExt::read(&mut reader, &mut probe) => {
                        pending.forget(call);
                        return Err("the hook went away before a decision".into());
                    }
                };
                if d.seq != 0 {
                    let _ = events
                        .send(crate::runner::event(
                            task,
                            attempt,
                            Kind::AnswerDelivered(v1::AnswerDelivered { seq: d.seq }),
                        ))
                        .await;
                }
                Reply {
                    allow: d.allow,
                    reason: d.reason,
                }
            }
        },
    };
    let mut out = serde_json::to_vec(&reply).map_err(|e| e.to_string())?;
    out.push(b'\n');
    write.write_all(&out).await.map_err(|e| e.to_string())
}

/// `approve-hook --socket NAME [--cli codex]`: what a worker's CLI runs before each tool
/// call. It reads the CLI's hook input on stdin, asks the agent, and prints the decision the
/// way the CLI reads a `PreToolUse` hook's. It always exits 0 with a decision a failure is a
/// denial of, saying what failed (a hook that exits otherwise would let the call through).
pub fn hook_main(args: &[String]) -> i32 {
    let (reply, codex) = match args {
        [flag, socket] if flag == "--socket" => (ask(socket, APPROVAL_TIMEOUT), false),
        [flag, socket, cli, name] if flag == "--socket" && cli == "--cli" && name == "codex" => {
            (ask(socket, APPROVAL_TIMEOUT), true)
        }
        _ => (
            Err("usage: approve-hook --socket NAME [--cli codex] (run by the worker's CLI, not by hand)".into()),
            false,
        ),
    };
    let reply = reply.unwrap_or_else(|e| Reply {
        allow: false,
        reason: format!("dispatch could not have this tool call approved: {e}"),
    });
    if let Some(out) = hook_output(&reply, codex) {
        println!("{out}");
    }
    0
}

/// What the hook prints for `reply`: Claude Code reads `allow` or `deny`; Codex reads only
/// `deny` (an `allow` is an error to it), so a call it may make gets no output at all.
fn hook_output(reply: &Reply, codex: bool) -> Option<String> {
    if codex && reply.allow {
        return None;
    }
    Some(
        serde_json::json!({
            "hookSpecificOutput": {
                "hookEventName": "PreToolUse",
                "permissionDecision": if reply.allow { "allow" } else { "deny" },
                "permissionDecisionReason": reply.reason,
            }
        })
        .to_string(),
    )
}

fn ask(socket: &str, timeout: Duration) -> Result<Reply, String> {
    let mut input = Vec::new();
    std::io::stdin()
        .take(MAX_HOOK_INPUT as u64 + 1)
        .read_to_end(&mut input)
        .map_err(|e| format!("cannot read the hook input: {e}"))?;
    ask_with(&input, socket, timeout)
}

/// Asks the agent at `socket` about the call the CLI's hook `input` describes.
fn ask_with(input: &[u8], socket: &str, timeout: Duration) -> Result<Reply, String> {
    use std::os::linux::net::SocketAddrExt;
    if input.len() > MAX_HOOK_INPUT {
        return Err(format!(
            "the hook input is over {} KiB",
            MAX_HOOK_INPUT / 1024
        ));
    }
    let v: serde_json::Value =
        serde_json::from_slice(input).map_err(|e| format!("the hook input is not JSON: {e}"))?;
    let req = Request {
        tool: v["tool_name"]
            .as_str()
            .ok_or("the hook input names no tool_name")?
            .to_string(),
        input: v["tool_input"].clone(),
        cwd: v["cwd"].as_str().unwrap_or_default().to_string(),
    };
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(socket.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut stream = std::os::unix::net::UnixStream::connect_addr(&addr).map_err(|e| {
        format!("the node's agent is not there to ask ({e}); it may have restarted")
    })?;
    let mut line = serde_json::to_vec(&req).map_err(|e| e.to_string())?;
    line.push(b'\n');
    stream.write_all(&line).map_err(|e| e.to_string())?;
    stream
        .set_read_timeout(Some(timeout))
        .map_err(|e| e.to_string())?;
    let mut answer = Vec::new();
    let read = std::io::BufReader::new(&stream)
        .take(64 * 1024)
        .read_until(b'\n', &mut answer);
    match read {
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(format!(
                "nobody decided on it within {} minutes. Do as for a question nobody answered in time: write what you know to context.md, mark the item [?] and stop",
                timeout.as_secs() / 60
            ))
        }
        Err(e) => Err(e.to_string()),
        Ok(0) => Err("the node's agent went away before deciding".into()),
        Ok(_) => serde_json::from_slice(&answer).map_err(|e| format!("the agent's answer: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_decision_reaches_only_a_call_that_waits() {
        let p = Pending::default();
        let (call, mut rx) = p.wait().unwrap();
        assert_eq!(call, 1);
        let d = Decision {
            allow: true,
            reason: "ok".into(),
            seq: 0,
        };
        assert!(p.decide(call, d.clone()));
        assert_eq!(rx.try_recv().unwrap(), d);
        assert!(
            !p.decide(call, d.clone()),
            "a second decision finds nothing"
        );
        assert!(!p.decide(7, d), "nor one for a call never made");
    }

    #[test]
    fn no_more_than_so_many_calls_wait() {
        let p = Pending::default();
        let held: Vec<_> = (0..MAX_WAITING).map(|_| p.wait().unwrap()).collect();
        assert!(p.wait().is_none());
        p.forget(held[0].0);
        assert!(p.wait().is_some());
    }

    /// Codex's `-c` value is TOML that names the hook with the path and socket quoted twice
    /// over (shell in TOML), and its limit is above the hook's own.
    #[test]
    fn codex_gets_its_hook_as_toml_and_reads_its_decisions() {
        let a = codex_args("/opt/my \"agent\"/dispatch-agent", "s-1");
        assert_eq!(a[0], "--dangerously-bypass-hook-trust");
        assert_eq!(a[1..3], ["-c", "features.hooks=true"]);
        let (key, value) = a[4].split_once('=').unwrap();
        assert_eq!(key, "hooks.PreToolUse");
        let t: toml_edit::DocumentMut = format!("v = {value}").parse().unwrap();
        let first = |v: &toml_edit::Value| -> toml_edit::InlineTable {
            v.as_array()
                .unwrap()
                .get(0)
                .unwrap()
                .as_inline_table()
                .unwrap()
                .clone()
        };
        let group = first(t["v"].as_value().unwrap());
        assert!(group.get("matcher").is_none(), "no matcher: every tool");
        let hook = first(&group["hooks"]);
        assert_eq!(hook["type"].as_str(), Some("command"));
        assert_eq!(
            hook["command"].as_str().unwrap(),
            "'/opt/my \"agent\"/dispatch-agent' approve-hook --socket s-1 --cli codex"
        );
        assert!(hook["timeout"].as_integer().unwrap() as u64 > APPROVAL_TIMEOUT.as_secs());
        let yes = Reply {
            allow: true,
            reason: "allowed by Bash".into(),
        };
        let no = Reply {
            allow: false,
            reason: "the tool policy denies this call".into(),
        };
        assert_eq!(hook_output(&yes, true), None);
        let denied: serde_json::Value =
            serde_json::from_str(&hook_output(&no, true).unwrap()).unwrap();
        assert_eq!(denied["hookSpecificOutput"]["permissionDecision"], "deny");
        let allowed: serde_json::Value =
            serde_json::from_str(&hook_output(&yes, false).unwrap()).unwrap();
        assert_eq!(allowed["hookSpecificOutput"]["permissionDecision"], "allow");
    }

    #[test]
    fn the_settings_run_the_hook_on_every_tool() {
        let s: serde_json::Value =
            serde_json::from_str(&claude_settings("/opt/my agent/dispatch-agent", "s-1")).unwrap();
        let hook = &s["hooks"]["PreToolUse"][0];
        assert_eq!(hook["matcher"], "*");
        assert_eq!(
            hook["hooks"][0]["command"],
            "'/opt/my agent/dispatch-agent' approve-hook --socket s-1"
        );
        assert!(hook["hooks"][0]["timeout"].as_u64().unwrap() > APPROVAL_TIMEOUT.as_secs());
    }

    /// After an agent restart the re-attached run's socket is the same name, free again once
    /// the old agent's listener is gone, and a hook reaches the new one; with no agent there at
    /// all the hook refuses at once (fails closed).
    #[tokio::test]
    async fn a_restarted_agent_serves_the_same_socket_and_no_agent_means_no() {
        let dir = std::path::Path::new("/var/lib/dispatch-agent/runs");
        let name = socket_name(dir, "t", 1);
        assert_eq!(name, socket_name(dir, "t", 1));
        assert_ne!(name, socket_name(dir, "t", 2));
        assert_ne!(name, socket_name(std::path::Path::new("/other"), "t", 1));
        let name = format!("{name}-{}", std::process::id());
        let input = br#"{"tool_name": "Bash", "tool_input": {"command": "ls"}, "cwd": "/w"}"#;
        let refused = ask_with(input, &name, Duration::from_secs(5))
            .err()
            .unwrap_or_default();
        assert!(refused.contains("is not there to ask"), "{refused}");
        assert!(
            ask_with(b"not json", &name, Duration::from_secs(5))
                .unwrap_err()
                .contains("not JSON")
        );
        let (tx, _rx) = mpsc::channel(8);
        let first = serve(&name, "t", 1, tx.clone(), Default::default()).unwrap();
        assert!(
            serve(&name, "t", 1, tx.clone(), Default::default()).is_err(),
            "one agent at a time holds a run's socket"
        );
        first.abort();
        let _ = first.await;
        let again = serve(&name, "t", 1, tx, Default::default());
        assert!(
            again.is_ok(),
            "free again once the old listener is gone: {again:?}"
        );
        // Nobody decides: the hook gives up at its timeout and tells the model the seed's rule.
        let timed_out = tokio::task::spawn_blocking(move || {
            ask_with(input, &name, Duration::from_millis(300)).unwrap_err()
        })
        .await
        .unwrap();
        assert!(timed_out.contains("nobody decided on it"), "{timed_out}");
        assert!(timed_out.contains("mark the item [?]"), "{timed_out}");
    }

    /// The whole round trip on a real socket: the hook's request becomes a ToolCall event, a
    /// decision goes back, and a person's decision is reported delivered.
    #[tokio::test]
    async fn a_call_goes_out_as_an_event_and_its_decision_comes_back() {
        let (tx, mut rx) = mpsc::channel(8);
        let pending = Arc::new(Pending::default());
        let name = format!("dispatch-approve-test-{}", std::process::id());
        let _server = serve(&name, "t", 2, tx, Arc::clone(&pending)).unwrap();
        let ask_in = |input: serde_json::Value| {
            let name = name.clone();
            tokio::task::spawn_blocking(move || {
                use std::os::linux::net::SocketAddrExt;
                let addr =
                    std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
                let mut s = std::os::unix::net::UnixStream::connect_addr(&addr).unwrap();
                let req = Request {
                    tool: "Bash".into(),
                    input,
                    cwd: "/w".into(),
                };
                let mut line = serde_json::to_vec(&req).unwrap();
                line.push(b'\n');
                s.write_all(&line).unwrap();
                let mut out = String::new();
                std::io::BufReader::new(&s).read_line(&mut out).unwrap();
                serde_json::from_str::<Reply>(&out).unwrap()
            })
        };
        let hook = ask_in(serde_json::json!({"command": "git push"}));
        let ev = rx.recv().await.unwrap();
        assert_eq!((ev.task_id.as_str(), ev.attempt), ("t", 2));
        let Some(Kind::ToolCall(c)) = ev.kind else {
            panic!("{ev:?}")
        };
        assert_eq!((c.call, c.tool.as_str(), c.cwd.as_str()), (1, "Bash", "/w"));
        assert_eq!(c.input_json, r#"{"command":"git push"}"#);
        pending.decide(
            1,
            Decision {
                allow: false,
                reason: "alice said no".into(),
                seq: 1_000_000_001,
            },
        );
        let reply = hook.await.unwrap();
        assert!(!reply.allow);
        assert_eq!(reply.reason, "alice said no");
        let delivered = rx.recv().await.unwrap();
        assert!(matches!(
            delivered.kind,
            Some(Kind::AnswerDelivered(v1::AnswerDelivered {
                seq: 1_000_000_001
            }))
        ));
    }
}
