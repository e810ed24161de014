//! Messages from the LLM agent on `/agent/stream`: progress, transcript and summary links.
//!
//! Each is applied exactly like the HTTP API would apply it (a `UpdateUser` command: stored,
//! `user_update` to admins, `progress` to the session's stream) and answered with an `ack`, or
//! with an `error` that changes nothing. Like an API request, a message is read here, its
//! command runs as a job, and [`finish`] builds the answer.

use crate::api::app_error;
use crate::api::input::valid_url;
use crate::app::{AppError, Command, Outcome, UserPatch};
use serde_json::{json, Value};
use std::rc::Rc;

/// What to do with one agent message. (Short-lived; see `api::Reply` on its size.)
#[derive(Debug)]
#[allow(clippy::large_enum_variant)]
pub enum Agent {
    /// Answer at once with this frame (a malformed message).
    Reply(Rc<[u8]>),
    /// Nothing to answer (a `pong`).
    Quiet,
    /// Run the command, then answer with [`finish`] and the message's `request_id`.
    Store(Command, Value),
}

/// Read one text message.
pub fn read(payload: &[u8]) -> Agent {
    let msg: Value = match serde_json::from_slice(payload) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => return Agent::Reply(error(&Value::Null, "message must be a JSON object")),
    };
    let request_id = msg.get("request_id").cloned().unwrap_or(Value::Null);
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
    if kind == "pong" {
        return Agent::Quiet;
    }
    // The type first: a message of no known type is told so, whatever else it lacks.
    let patch = match kind {
        "progress" => match msg.get("questions_answered").and_then(Value::as_i64) {
            Some(n) if n >= 0 => UserPatch {
                questions_answered: Some(n),
                ..UserPatch::default()
            },
            _ => {
                return Agent::Reply(error(
                    &request_id,
                    "questions_answered must be a whole number",
                ))
            }
        },
        "transcript" | "summary" => match msg.get("url").and_then(Value::as_str) {
            Some(url) if valid_url(url) => {
                let link = Some(Some(url.to_string()));
                if kind == "transcript" {
                    UserPatch {
                        transcript_url: link,
                        ..UserPatch::default()
                    }
                } else {
                    UserPatch {
                        summary_url: link,
                        ..UserPatch::default()
                    }
                }
            }
            _ => return Agent::Reply(error(&request_id, "url must be an http(s) URL")),
        },
        other => {
            return Agent::Reply(error(
                &request_id,
                &format!("unknown message type `{other}` (progress, transcript or summary)"),
            ))
        }
    };
    let Some(user_id) = msg.get("user_id").and_then(Value::as_i64) else {
        return Agent::Reply(error(&request_id, "user_id must be an integer"));
    };
    // The request id as JSON text is its identity (`7` and `"7"` are different ids).
    let key = (!request_id.is_null()).then(|| request_id.to_string());
    Agent::Store(
        Command::UpdateUser {
            id: user_id,
            patch,
            agent_request: Some(key),
        },
        request_id,
    )
}

/// The answer to a message whose command ran.
pub fn finish(request_id: &Value, result: Result<Outcome, AppError>) -> Rc<[u8]> {
    match result {
        Ok(_) => frame(&json!({ "type": "ack", "request_id": request_id })),
        Err(e) => error(request_id, &describe(e)),
    }
}

/// The answer to a message refused because the broadcast backlog is over its bound (API.md
/// limits): an `error` that changes nothing; the agent may send it again in a moment.
pub fn overloaded(request_id: &Value) -> Rc<[u8]> {
    error(
        request_id,
        "server overloaded: nothing changed, try again in a moment (Retry-After: 1)",
    )
}

fn describe(e: AppError) -> String {
    match e {
        AppError::NotFound => "no such user".into(),
        AppError::Invalid(msg) => msg,
        other => {
            let resp = app_error(other);
            format!("could not apply (HTTP {})", resp.status)
        }
    }
}

fn error(request_id: &Value, message: &str) -> Rc<[u8]> {
    frame(&json!({ "type": "error", "request_id": request_id, "message": message }))
}

fn frame(v: &Value) -> Rc<[u8]> {
    Rc::from(crate::ws::text_frame(v.to_string().as_bytes()))
}
