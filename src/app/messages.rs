//! The JSON messages of the streams, in one place, fields in the contract's order.
//!
//! Everything here returns bytes or strings; framing them (`ws::text_frame`) and deciding who
//! receives them is the caller's business. Messages that are logged (admin and agent changes)
//! are built once, in the command that stores them, and kept verbatim.
//!
//! Field order is the contract's (`type` first, then as API.md writes them), and tests compare
//! some messages byte for byte: the shapes are structs (serde keeps declaration order) or
//! `json!`, which keeps the order written because `serde_json`'s `preserve_order` feature is on
//! (Cargo.toml). The user object comes from `model::UserView`, the one place its fields and
//! their order are written down.
//!
//! Who gets what (API.md "WebSocket streams"):
//! * admins: `initial`, `resumed`, `user_added` / `user_update` / `user_deleted` with `seq`,
//!   `presence`;
//! * agents: `initial` (running sessions only), `resumed`, `session_started`, `progress` (with
//!   `seq` and `user_id`), `session_expired`, each with the `seq` of the change that caused it;
//! * a session's page: `time_update`, `progress` (without `seq`), `session_expired`.

use super::event::{Cause, UserChange};
use crate::hub::Presence;
use crate::model::{User, UserView};
use serde::Serialize;
use serde_json::json;

/// `{"type":…,"seq":…,"data":…}`: the shape of every numbered change. `type` comes first so a
/// client can dispatch before reading the rest.
#[derive(Serialize)]
struct Numbered<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    seq: u64,
    data: T,
}

/// `{"type":"initial","epoch":…,"seq":…,"data":[…]}`. `epoch` names the log's history, so a
/// client can tell a resume point of this database from one of a database that was replaced.
#[derive(Serialize)]
struct Initial<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    epoch: &'a str,
    seq: u64,
    data: T,
}

/// Serialising our own types cannot fail (no maps with non-string keys, no failing `Serialize`
/// impls); an empty object keeps the stream valid if it did, rather than a panic on the loop.
fn to_vec(value: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec())
}

/// As [`to_vec`], for the messages stored in the log (text columns).
fn to_string(value: &impl Serialize) -> String {
    serde_json::to_string(value).unwrap_or_else(|_| "{}".to_string())
}

/// The admin stream message of change number `seq` at `now` (wall ms).
pub fn admin(change: &UserChange, seq: u64, public_url: &str, now: i64) -> String {
    match change {
        UserChange::Added(u) => to_string(&Numbered {
            kind: "user_added",
            seq,
            data: u.view(public_url, now),
        }),
        UserChange::Updated(u, _) => to_string(&Numbered {
            kind: "user_update",
            seq,
            data: u.view(public_url, now),
        }),
        UserChange::Deleted(id) => to_string(&Numbered {
            kind: "user_deleted",
            seq,
            data: json!({ "id": id }),
        }),
    }
}

/// The agent stream message change number `seq` causes, if any: a session started, progress
/// the agent did not report itself, a session that ran out.
/// Progress the agent reported itself (`by_agent`) is not echoed back: it knows, and an echo
/// would look like a second change. Edits that do not move the counts, new links and invite
/// expiries are the admins' business only.
pub fn agent(change: &UserChange, seq: u64, public_url: &str, now: i64) -> Option<String> {
    let UserChange::Updated(u, cause) = change else {
        return None;
    };
    match cause {
        Cause::Activated => Some(to_string(&Numbered {
            kind: "session_started",
            seq,
            data: u.view(public_url, now),
        })),
        Cause::Answered
        | Cause::Edited {
            progressed: true,
            by_agent: false,
        } => Some(
            json!({
                "type": "progress",
                "seq": seq,
                "user_id": u.id,
                "questions_answered": u.questions_answered,
                "questions_total": u.questions_total,
            })
            .to_string(),
        ),
        Cause::SessionExpired => Some(to_string(&Numbered {
            kind: "session_expired",
            seq,
            data: json!({ "id": u.id }),
        })),
        _ => None,
    }
}

/// `initial` of the admin stream (every user) or of the agent stream (the running sessions).
/// `seq` is the number of the last change the list reflects: a client resumes from it.
pub fn initial(epoch: &str, seq: u64, users: &[UserView<'_>]) -> Vec<u8> {
    to_vec(&Initial {
        kind: "initial",
        epoch,
        seq,
        data: users,
    })
}

/// `resumed`: the events after `seq` follow, and no `initial` (the client keeps its list).
pub fn resumed(epoch: &str, seq: u64) -> Vec<u8> {
    to_vec(&json!({ "type": "resumed", "epoch": epoch, "seq": seq }))
}

/// `{"sessions":{"<id>":K,…},"admins":[{"email":E,"streams":K},…]}`: the body of
/// `GET /api/presence` and, with `"type":"presence"` first, the admin stream message.
/// Full state every time (no diffs, no `seq`): a client that missed one is right again at the
/// next. Keys are ordered (`BTreeMap`), so equal states encode to equal bytes and the reactor
/// can skip a telling that would say the same.
pub fn presence(p: &Presence, as_message: bool) -> Vec<u8> {
    let mut body = serde_json::Map::new();
    if as_message {
        body.insert("type".into(), json!("presence"));
    }
    let sessions: serde_json::Map<String, serde_json::Value> = p
        .sessions
        .iter()
        .map(|(id, n)| (id.to_string(), json!(n)))
        .collect();
    body.insert("sessions".into(), sessions.into());
    let admins: Vec<_> = p
        .admins
        .iter()
        .map(|(email, n)| json!({ "email": email, "streams": n }))
        .collect();
    body.insert("admins".into(), admins.into());
    to_vec(&body)
}

/// `time_update` of a session stream: seconds left, rounded up (0 once over, never negative),
/// so the page never shows 0:00 while the session still runs.
pub fn time_update(remaining_seconds: i64) -> Vec<u8> {
    to_vec(&json!({ "type": "time_update", "remaining_seconds": remaining_seconds }))
}

/// `progress` of a session stream: no `seq` and no `user_id` (the page knows whose it is).
pub fn session_progress(u: &User) -> Vec<u8> {
    to_vec(&json!({
        "type": "progress",
        "questions_answered": u.questions_answered,
        "questions_total": u.questions_total,
    }))
}

/// `session_expired` of a session stream (then it closes with 1000). A constant: it carries no
/// data, and the page knows whose session it is.
pub fn session_expired() -> Vec<u8> {
    br#"{"type":"session_expired"}"#.to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    /// The shared test user (id 7), as the model's tests build it.
    fn user() -> User {
        crate::model::tests::user()
    }

    /// The contract's order, checked on the bytes: `type`, `seq`, `data`, and the user's `id`
    /// first inside it.
    #[test]
    fn logged_messages_carry_their_number_in_the_contract_order() {
        let change = UserChange::Added(Box::new(user()));
        let m = admin(&change, 42, "http://h", 0);
        assert!(
            m.starts_with(r#"{"type":"user_added","seq":42,"data":{"id":7,"#),
            "{m}"
        );
        assert_eq!(agent(&change, 42, "http://h", 0), None);
        let gone = admin(&UserChange::Deleted(7), 43, "http://h", 0);
        assert_eq!(gone, r#"{"type":"user_deleted","seq":43,"data":{"id":7}}"#);
    }

    /// What the agent is told, and what it is spared (its own progress, edits, links).
    #[test]
    fn agents_hear_of_starts_progress_and_expiry_only() {
        let u = || Box::new(user());
        let msg = |cause| {
            agent(&UserChange::Updated(u(), cause), 9, "http://h", 0)
                .map(|m| serde_json::from_str::<Value>(&m).unwrap())
        };
        assert_eq!(msg(Cause::Activated).unwrap()["type"], "session_started");
        let p = msg(Cause::Answered).unwrap();
        assert_eq!(
            (p["type"].as_str(), p["seq"].as_u64(), p["user_id"].as_i64()),
            (Some("progress"), Some(9), Some(7))
        );
        assert_eq!(msg(Cause::SessionExpired).unwrap()["data"]["id"], 7);
        assert!(msg(Cause::Edited {
            progressed: true,
            by_agent: true
        })
        .is_none());
        assert!(msg(Cause::Edited {
            progressed: false,
            by_agent: false
        })
        .is_none());
        assert!(msg(Cause::InviteExpired).is_none());
        assert!(msg(Cause::InviteRegenerated).is_none());
    }

    /// Sessions sort by number, not as text ("3" before "12"), admins by email.
    #[test]
    fn presence_is_full_state_in_a_stable_order() {
        let mut p = Presence::default();
        p.sessions.insert(12, 1);
        p.sessions.insert(3, 2);
        p.admins.insert("b@x.io".into(), 1);
        p.admins.insert("a@x.io".into(), 2);
        assert_eq!(
            String::from_utf8(presence(&p, true)).unwrap(),
            r#"{"type":"presence","sessions":{"3":2,"12":1},"admins":[{"email":"a@x.io","streams":2},{"email":"b@x.io","streams":1}]}"#
        );
        assert_eq!(
            String::from_utf8(presence(&Presence::default(), false)).unwrap(),
            r#"{"sessions":{},"admins":[]}"#
        );
    }

    #[test]
    fn initial_and_resumed() {
        let u = user();
        let i: Value = serde_json::from_slice(&initial("e1", 5, &[u.view("http://h", 0)])).unwrap();
        assert_eq!(
            (i["type"].as_str(), i["epoch"].as_str(), i["seq"].as_u64()),
            (Some("initial"), Some("e1"), Some(5))
        );
        assert_eq!(i["data"][0]["id"], 7);
        assert_eq!(
            resumed("e1", 5),
            br#"{"type":"resumed","epoch":"e1","seq":5}"#.to_vec()
        );
    }
}
