//! Messages from the LLM agent on `/agent/stream`: progress, transcript and summary links.
//!
//! Each is applied exactly like the HTTP API would apply it (stored, `user_update` to admins,
//! `progress` to the session's stream) and answered with an `ack`, or with an `error` that
//! changes nothing.

use crate::api::{app_error, valid_url};
use crate::app::{App, AppError, Audience, Effect, UserPatch};
use serde_json::{json, Value};
use std::rc::Rc;

/// Handle one text message; returns the frame to answer with, if any.
pub fn handle(app: &mut App, payload: &[u8], effects: &mut Vec<Effect>) -> Option<Rc<[u8]>> {
    let msg: Value = match serde_json::from_slice(payload) {
        Ok(Value::Object(m)) => Value::Object(m),
        _ => return Some(error(&Value::Null, "message must be a JSON object")),
    };
    let request_id = msg.get("request_id").cloned().unwrap_or(Value::Null);
    let kind = msg.get("type").and_then(Value::as_str).unwrap_or("");
    if kind == "pong" {
        return None;
    }
    let Some(user_id) = msg.get("user_id").and_then(Value::as_i64) else {
        return Some(error(&request_id, "user_id must be an integer"));
    };
    let patch = match kind {
        "progress" => match msg.get("questions_answered").and_then(Value::as_i64) {
            Some(n) if n >= 0 => UserPatch {
                questions_answered: Some(n),
                ..UserPatch::default()
            },
            _ => {
                return Some(error(
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
            _ => return Some(error(&request_id, "url must be an http(s) URL")),
        },
        other => {
            return Some(error(
                &request_id,
                &format!("unknown message type `{other}`"),
            ))
        }
    };
    let before = effects.len();
    match app.update_user(user_id, patch, effects) {
        Ok(_) => {
            // The agent said it; echoing its own progress back would only confuse it.
            let mine = effects.split_off(before);
            effects.extend(
                mine.into_iter()
                    .filter(|e| !matches!(e, Effect::Broadcast(Audience::Agents, _))),
            );
            Some(frame(&json!({ "type": "ack", "request_id": request_id })))
        }
        Err(e) => Some(error(&request_id, &describe(e))),
    }
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
