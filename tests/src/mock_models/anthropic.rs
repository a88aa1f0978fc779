//! The Anthropic Messages API as Claude Code uses it: `POST /v1/messages` with `stream: true`,
//! answered with `message_start`, content blocks (text, `tool_use` with `input_json_delta`),
//! `message_delta` (stop reason and output tokens) and `message_stop`; errors as
//! `{"type":"error","error":{"type":…,"message":…}}` with the API's status codes.

use super::worker::{ToolResult, Turn};
use super::{Conversation, Fault, Sent};
use serde_json::{Value, json};

/// The model the mock says it is (what the CLI asked for, or this).
const DEFAULT_MODEL: &str = "claude-sonnet-4-5";

fn text_of(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| b["text"].as_str())
            .collect::<Vec<_>>()
            .join("\n"),
        _ => String::new(),
    }
}

/// The prompt (all user text), the tool results in order, the model and whether to stream.
pub(crate) fn conversation(req: &Value) -> Conversation {
    let mut prompt = String::new();
    let mut results = Vec::new();
    for m in req["messages"].as_array().into_iter().flatten() {
        if m["role"] != "user" {
            continue;
        }
        match &m["content"] {
            Value::String(s) => {
                prompt.push_str(s);
                prompt.push('\n');
            }
            Value::Array(blocks) => {
                for b in blocks {
                    match b["type"].as_str() {
                        Some("text") => {
                            prompt.push_str(b["text"].as_str().unwrap_or(""));
                            prompt.push('\n');
                        }
                        Some("tool_result") => results.push(ToolResult {
                            output: text_of(&b["content"]),
                        }),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Conversation {
        model: req["model"].as_str().unwrap_or(DEFAULT_MODEL).to_string(),
        prompt,
        results,
        stream: req["stream"] == true,
    }
}

fn sse(event: &str, data: Value) -> String {
    format!("event: {event}\ndata: {data}\n\n")
}

/// The answer to `turn`: its content type and body chunks (one SSE event each when streaming).
pub(crate) fn answer(
    conv: &Conversation,
    turn: &Turn,
    usage: &Sent,
    id: u64,
) -> (String, Vec<String>) {
    let msg_id = format!("msg_mock{id:06}");
    let blocks: Vec<Value> = match turn {
        Turn::Shell {
            command,
            description,
            timeout_ms,
        } => vec![
            json!({"type": "text", "text": format!("{description}.")}),
            json!({
                "type": "tool_use",
                "id": format!("toolu_mock{id:06}"),
                "name": "Bash",
                "input": {"command": command, "description": description, "timeout": timeout_ms.min(&600_000)},
            }),
        ],
        // Claude's Bash tool waits for its command; nothing is left running to poll.
        Turn::Poll { .. } => vec![json!({"type": "text", "text": "Still waiting."})],
        Turn::Say(s) => vec![json!({"type": "text", "text": s})],
    };
    let stop = if matches!(turn, Turn::Shell { .. }) {
        "tool_use"
    } else {
        "end_turn"
    };
    let start_usage = json!({
        "input_tokens": usage.input,
        "cache_creation_input_tokens": usage.cache_write,
        "cache_read_input_tokens": usage.cache_read,
        "output_tokens": 1,
        "service_tier": "standard",
    });
    if !conv.stream {
        let body = json!({
            "id": msg_id, "type": "message", "role": "assistant", "model": conv.model,
            "content": blocks, "stop_reason": stop, "stop_sequence": null,
            "usage": {
                "input_tokens": usage.input,
                "cache_creation_input_tokens": usage.cache_write,
                "cache_read_input_tokens": usage.cache_read,
                "output_tokens": usage.output,
                "service_tier": "standard",
            },
        });
        return ("application/json".into(), vec![body.to_string()]);
    }
    let mut out = vec![
        sse(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": msg_id, "type": "message", "role": "assistant", "model": conv.model,
                "content": [], "stop_reason": null, "stop_sequence": null, "usage": start_usage,
            }}),
        ),
        sse("ping", json!({"type": "ping"})),
    ];
    for (i, b) in blocks.iter().enumerate() {
        match b["type"].as_str() {
            Some("text") => {
                out.push(sse(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}}),
                ));
                let text = b["text"].as_str().unwrap_or("");
                // Two deltas, as a model streams words.
                let mid = text
                    .char_indices()
                    .nth(text.chars().count() / 2)
                    .map_or(0, |(i, _)| i);
                for part in [&text[..mid], &text[mid..]] {
                    out.push(sse(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": part}}),
                    ));
                }
            }
            _ => {
                out.push(sse(
                    "content_block_start",
                    json!({"type": "content_block_start", "index": i, "content_block": {
                        "type": "tool_use", "id": b["id"], "name": b["name"], "input": {}}}),
                ));
                let input = b["input"].to_string();
                let mid = input.len() / 2;
                let mid = (0..=mid)
                    .rev()
                    .find(|m| input.is_char_boundary(*m))
                    .unwrap_or(0);
                for part in [&input[..mid], &input[mid..]] {
                    out.push(sse(
                        "content_block_delta",
                        json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": part}}),
                    ));
                }
            }
        }
        out.push(sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": i}),
        ));
    }
    out.push(sse(
        "message_delta",
        json!({"type": "message_delta", "delta": {"stop_reason": stop, "stop_sequence": null},
               "usage": {"output_tokens": usage.output}}),
    ));
    out.push(sse("message_stop", json!({"type": "message_stop"})));
    ("text/event-stream".into(), out)
}

/// The API's answer for `fault`: status, extra headers, body.
pub(crate) fn error(fault: &Fault, id: u64) -> (u16, Vec<(&'static str, String)>, String) {
    let (status, kind, message, headers) = match fault {
        Fault::Status(401) => (401, "authentication_error", "invalid x-api-key".to_string(), vec![]),
        Fault::Status(403) => (
            403,
            "permission_error",
            "Your API key does not have permission to use the specified resource.".to_string(),
            vec![],
        ),
        Fault::Status(429) => (
            429,
            "rate_limit_error",
            "This request would exceed the rate limit for your organization of 50 requests per minute. For details, refer to: https://docs.claude.com/en/api/rate-limits. You can see the response headers for current usage. Please reduce the prompt length or the maximum tokens requested, or try again later.".to_string(),
            vec![
                ("retry-after", "1".to_string()),
                ("anthropic-ratelimit-requests-limit", "50".to_string()),
                ("anthropic-ratelimit-requests-remaining", "0".to_string()),
            ],
        ),
        Fault::Status(529) => (529, "overloaded_error", "Overloaded".to_string(), vec![]),
        Fault::Status(s) => (*s, "api_error", "Internal server error".to_string(), vec![]),
        Fault::UsageLimit(at) => {
            let when = time_of(*at);
            (
                400,
                "invalid_request_error",
                format!("You have reached your specified API usage limits. You will regain access on {when} UTC."),
                vec![],
            )
        }
    };
    let body = json!({
        "type": "error",
        "error": {"type": kind, "message": message},
        "request_id": format!("req_mock{id:06}"),
    });
    (status, headers, body.to_string())
}

/// `2026-12-03 at 15:00` for a time in seconds since the epoch (UTC).
fn time_of(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = dispatch_core::signals::civil_from_days(days);
    format!(
        "{y:04}-{m:02}-{d:02} at {:02}:{:02}",
        rem / 3600,
        rem % 3600 / 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_read_like_the_api_writes_them() {
        assert_eq!(time_of(0), "1970-01-01 at 00:00");
        assert_eq!(time_of(1_796_310_000), "2026-12-03 at 15:00");
    }
}
