//! A stored user row as JSON, for the event log: each logged change carries the row it left
//! behind, so another node can apply the change to its view without reading `users` (whose
//! row may already be newer). The invite token is not in it: the reader derives it from the
//! server key and the nonce, as when it loads users.

use crate::auth;
use crate::model::User;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Row {
    id: i64,
    first_name: String,
    last_name: String,
    email: String,
    /// Hex.
    invite_nonce: String,
    invite_expires_at: i64,
    invite_expired: bool,
    token_activated: bool,
    session_started_at: Option<i64>,
    session_expires_at: Option<i64>,
    session_expired: bool,
    session_ended_at: Option<i64>,
    questions_answered: i64,
    questions_total: i64,
    transcript_url: Option<String>,
    summary_url: Option<String>,
    created_at: i64,
}

/// The row of `u` as JSON.
pub fn encode(u: &User) -> String {
    serde_json::to_string(&Row {
        id: u.id,
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        email: u.email.clone(),
        invite_nonce: auth::hex(&u.invite_nonce),
        invite_expires_at: u.invite_expires_at,
        invite_expired: u.invite_expired,
        token_activated: u.token_activated,
        session_started_at: u.session_started_at,
        session_expires_at: u.session_expires_at,
        session_expired: u.session_expired,
        session_ended_at: u.session_ended_at,
        questions_answered: u.questions_answered,
        questions_total: u.questions_total,
        transcript_url: u.transcript_url.clone(),
        summary_url: u.summary_url.clone(),
        created_at: u.created_at,
    })
    .unwrap_or_default()
}

/// The user of a JSON row, its token derived under `key`; `None` if the JSON is not a row.
pub fn decode(json: &str, key: &[u8; 32]) -> Option<User> {
    let r: Row = serde_json::from_str(json).ok()?;
    let invite_nonce = unhex(&r.invite_nonce)?;
    Some(User {
        id: r.id,
        invite_token: auth::invite_token(key, r.id, &invite_nonce),
        invite_nonce,
        first_name: r.first_name,
        last_name: r.last_name,
        email: r.email,
        invite_expires_at: r.invite_expires_at,
        invite_expired: r.invite_expired,
        token_activated: r.token_activated,
        session_started_at: r.session_started_at,
        session_expires_at: r.session_expires_at,
        session_expired: r.session_expired,
        session_ended_at: r.session_ended_at,
        questions_answered: r.questions_answered,
        questions_total: r.questions_total,
        transcript_url: r.transcript_url,
        summary_url: r.summary_url,
        created_at: r.created_at,
    })
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || s.len() > 256 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_round_trips_and_its_token_is_derived_again() {
        let key = [3u8; 32];
        let mut u = crate::model::tests::user();
        u.invite_nonce = vec![0xab, 0x01, 0xff];
        u.invite_token = auth::invite_token(&key, u.id, &u.invite_nonce);
        u.transcript_url = Some("https://x.io/t".into());
        u.session_ended_at = Some(5);
        let back = decode(&encode(&u), &key).unwrap();
        assert_eq!(back, u);
        assert!(decode("{}", &key).is_none());
        assert!(decode("not json", &key).is_none());
    }
}
