//! The OpenAI Responses API as Codex uses it: `POST /v1/responses` with `stream: true`,
//! answered with `response.created`, output items (`message`, or a `function_call` of Codex's
//! `exec_command`/`write_stdin` tools), and `response.completed` carrying the usage; errors as
//! `{"error":{"message":…,"type":…,"code":…}}` with the API's status codes, and a ChatGPT
//! plan's usage limit as `usage_limit_reached` with `resets_at`.

use super::worker::{ToolResult, Turn};
use super::{Conversation, Fault, Sent};
use serde_json::{Value, json};

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        Value::Object(_) => v["content"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| text_of(&v["content"])),
        _ => String::new(),
    }
}

/// The prompt (all user text), the tool results in order, the model and whether to stream.
pub(crate) fn conversation(req: &Value) -> Conversation {
    let mut prompt = String::new();
    let mut results = Vec::new();
    for item in req["input"].as_array().into_iter().flatten() {
        match item["type"].as_str() {
            Some("message") if item["role"] == "user" => {
                prompt.push_str(&text_of(&item["content"]));
                prompt.push('\n');
            }
            Some("function_call_output") => results.push(ToolResult {
                output: text_of(&item["output"]),
            }),
            _ => {}
        }
    }
    Conversation {
        model: req["model"].as_str().unwrap_or("gpt-5.3-codex").to_string(),
        prompt,
        results,
        stream: req["stream"] != false,
    }
}

fn sse(data: Value) -> String {
    format!(
        "event: {}\ndata: {data}\n\n",
        data["type"].as_str().unwrap_or("")
    )
}

/// The answer to `turn`: its content type and SSE chunks.
pub(crate) fn answer(
    conv: &Conversation,
    turn: &Turn,
    usage: &Sent,
    id: u64,
) -> (String, Vec<String>) {
    let resp_id = format!("resp_mock{id:06}");
    let item = match turn {
        Turn::Shell {
            command,
            timeout_ms,
            ..
        } => json!({
            "type": "function_call", "id": format!("fc_mock{id:06}"), "status": "completed",
            "call_id": format!("call_mock{id:06}"), "name": "exec_command",
            "arguments": json!({"cmd": command, "yield_time_ms": (*timeout_ms).clamp(250, 30_000)}).to_string(),
        }),
        Turn::Poll { session } => json!({
            "type": "function_call", "id": format!("fc_mock{id:06}"), "status": "completed",
            "call_id": format!("call_mock{id:06}"), "name": "write_stdin",
            "arguments": json!({"session_id": session, "chars": "", "yield_time_ms": 30_000}).to_string(),
        }),
        Turn::Say(s) => json!({
            "type": "message", "id": format!("msg_mock{id:06}"), "status": "completed",
            "role": "assistant", "content": [{"type": "output_text", "text": s, "annotations": []}],
        }),
    };
    let response = |status: &str, output: Value, usage: Value| {
        json!({
            "id": resp_id, "object": "response", "created_at": super::now_ms() / 1000,
            "status": status, "model": conv.model, "output": output, "usage": usage,
        })
    };
    let mut seq = 0;
    let mut next = |mut v: Value| {
        v["sequence_number"] = json!(seq);
        seq += 1;
        sse(v)
    };
    let mut out = vec![
        next(
            json!({"type": "response.created", "response": response("in_progress", json!([]), Value::Null)}),
        ),
        next(
            json!({"type": "response.in_progress", "response": response("in_progress", json!([]), Value::Null)}),
        ),
    ];
    let mut added = item.clone();
    added["status"] = json!("in_progress");
    if added["type"] == "function_call" {
        added["arguments"] = json!("");
    } else {
        added["content"] = json!([]);
    }
    out.push(next(
        json!({"type": "response.output_item.added", "output_index": 0, "item": added}),
    ));
    if let Turn::Say(s) = turn {
        out.push(next(
            json!({"type": "response.output_text.delta", "item_id": item["id"],
            "output_index": 0, "content_index": 0, "delta": s}),
        ));
        out.push(next(
            json!({"type": "response.output_text.done", "item_id": item["id"],
            "output_index": 0, "content_index": 0, "text": s}),
        ));
    } else {
        let args = item["arguments"].as_str().unwrap_or("").to_string();
        out.push(next(
            json!({"type": "response.function_call_arguments.delta", "item_id": item["id"],
            "output_index": 0, "delta": args}),
        ));
        out.push(next(
            json!({"type": "response.function_call_arguments.done", "item_id": item["id"],
            "output_index": 0, "arguments": args}),
        ));
    }
    out.push(next(
        json!({"type": "response.output_item.done", "output_index": 0, "item": item}),
    ));
    let usage = json!({
        // The Responses API counts cached input inside input_tokens.
        "input_tokens": usage.input + usage.cache_read,
        "input_tokens_details": {"cached_tokens": usage.cache_read},
        "output_tokens": usage.output,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": usage.input + usage.cache_read + usage.output,
    });
    out.push(next(json!({"type": "response.completed", "response": response("completed", json!([item]), usage)})));
    ("text/event-stream".into(), out)
}

/// The API's answer for `fault`: status, extra headers, body.
pub(crate) fn error(fault: &Fault, id: u64) -> (u16, Vec<(&'static str, String)>, String) {
    let rid = ("x-request-id", format!("req_mock{id:06}"));
    let body = |message: &str, kind: &str, code: Value| {
        json!({"error": {"message": message, "type": kind, "param": null, "code": code}})
            .to_string()
    };
    match fault {
        Fault::Status(401) => (
            401,
            vec![rid],
            body(
                "Incorrect API key provided: sk-mock***. You can find your API key at https://platform.openai.com/account/api-keys.",
                "invalid_request_error",
                json!("invalid_api_key"),
            ),
        ),
        Fault::Status(403) => (
            403,
            vec![rid],
            body(
                "You have insufficient permissions for this operation. Missing scopes: api.responses.write.",
                "invalid_request_error",
                Value::Null,
            ),
        ),
        Fault::Status(429) => (
            429,
            vec![rid, ("retry-after", "1".to_string())],
            body(
                "Rate limit reached for gpt-5.3-codex in organization org-mock on tokens per min (TPM): Limit 30000, Used 30000, Requested 1200. Please try again in 2.4s. Visit https://platform.openai.com/account/rate-limits to learn more.",
                "tokens",
                json!("rate_limit_exceeded"),
            ),
        ),
        // OpenAI has no 529: an overloaded server answers 503.
        Fault::Status(529) | Fault::Status(503) => (
            503,
            vec![rid],
            body(
                "The server is overloaded. Please try again later.",
                "server_error",
                json!("server_is_overloaded"),
            ),
        ),
        Fault::Status(s) => (
            *s,
            vec![rid],
            body(
                "The server had an error while processing your request. Sorry about that!",
                "server_error",
                Value::Null,
            ),
        ),
        Fault::UsageLimit(at) => (
            429,
            vec![rid],
            json!({"error": {"type": "usage_limit_reached", "message": "The usage limit has been reached",
                "plan_type": "plus", "resets_at": at}})
            .to_string(),
        ),
    }
}
