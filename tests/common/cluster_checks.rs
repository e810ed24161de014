//! What the cluster test files (`cluster_log.rs`, `cluster_failover.rs`, `cluster_state.rs`)
//! share besides [`Cluster`] and [`Recorder`]: their bounds and the checks they make on
//! recorded streams and nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{id_of, Frame, Rec, Recorder, Server, ADMIN_EMAIL, WAIT};

/// The agent key every cluster test node is given (`--agent-key`).
pub const CLUSTER_AGENT_KEY: &str = "cluster-tests-agent-key-0123456789abcdefghij";
/// A presence change shows on every node within 3 s (+ slack for 2 shared cores).
pub const PRESENCE: Duration = Duration::from_millis(3500);
/// `--session-minutes 0.05`: a session lasts 3 s.
pub const SESSION: Duration = Duration::from_secs(3);
/// Bound for an event committed on one node to show on another (generous: 2 shared cores).
pub const BUS: Duration = Duration::from_secs(10);

/// The numbered frames of `rec` must be `from+1, from+2, …` (no gap, no duplicate).
pub fn assert_contiguous(what: &str, from: u64, frames: &[&Frame]) {
    for (i, f) in frames.iter().enumerate() {
        let want = from + 1 + i as u64;
        assert_eq!(
            f.json["seq"].as_u64(),
            Some(want),
            "{what}: frame {i} should be event #{want}: {}\nall seqs: {:?}",
            f.text,
            frames
                .iter()
                .map(|f| f.json["seq"].as_u64())
                .collect::<Vec<_>>()
        );
    }
}

/// Two lists of raw frame texts must be identical; names the first difference.
pub fn assert_same_texts(what: &str, want: &[String], got: &[String]) {
    if let Some(i) = (0..want.len().min(got.len())).find(|&i| want[i] != got[i]) {
        panic!(
            "{what}: frame {i} differs\n  reference: {}\n  this one:  {}",
            want[i], got[i]
        );
    }
    assert_eq!(
        want.len(),
        got.len(),
        "{what}: {} frames, reference has {}",
        got.len(),
        want.len()
    );
}

/// The raw texts of `frames`.
pub fn texts(frames: &[&Frame]) -> Vec<String> {
    frames.iter().map(|f| f.text.clone()).collect()
}

/// Applies one admin-stream event to a user list keyed by id.
pub fn apply(users: &mut BTreeMap<i64, Value>, ev: &Value) {
    match ev["type"].as_str() {
        Some("user_added") | Some("user_update") => {
            users.insert(id_of(&ev["data"]), ev["data"].clone());
        }
        Some("user_deleted") => {
            users.remove(&id_of(&ev["data"]));
        }
        _ => panic!("not a user-list event: {ev}"),
    }
}

pub fn by_id(list: &[Value]) -> BTreeMap<i64, Value> {
    list.iter().map(|u| (id_of(u), u.clone())).collect()
}

/// POST /api/users on `node` with a fresh email; asserts 201.
pub fn post_user(node: &Server, cookie: &str, email: &str) -> Value {
    let body = json!({"first_name": "Grace", "last_name": "Hopper", "email": email});
    let r = node.json("POST", "/api/users", Some(cookie), Some(&body));
    assert_eq!(
        r.status,
        201,
        "POST /api/users on {}: {}",
        node.addr,
        r.text()
    );
    r.json()
}

/// `user_update` frames of user `id` whose status is `status`.
pub fn updates_with_status<'a>(rec: &'a Rec, id: i64, status: &str) -> Vec<&'a Frame> {
    rec.of_type("user_update")
        .into_iter()
        .filter(|f| f.json["data"]["id"].as_i64() == Some(id) && f.json["data"]["status"] == status)
        .collect()
}

/// Agent frames of type `ty` about user `id` (`data.id` or `user_id`).
pub fn agent_frames<'a>(rec: &'a Rec, ty: &str, id: i64) -> Vec<&'a Frame> {
    rec.of_type(ty)
        .into_iter()
        .filter(|f| {
            f.json["data"]["id"].as_i64() == Some(id) || f.json["user_id"].as_i64() == Some(id)
        })
        .collect()
}

/// Sessions and admin-stream counts of a presence value (frame or `/api/presence`).
pub fn presence_counts(p: &Value, user_id: i64) -> (u64, u64) {
    let sessions = p["sessions"][user_id.to_string()].as_u64().unwrap_or(0);
    let admins = p["admins"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|a| a["email"] == ADMIN_EMAIL)
        .and_then(|a| a["streams"].as_u64())
        .unwrap_or(0);
    (sessions, admins)
}

/// Polls GET /api/users with `cookie` on `node` until it answers 401 (by `bound`).
pub fn refused_by(node: &Server, cookie: &str, bound: Instant, what: &str) {
    loop {
        let r = node.get("/api/users", Some(cookie));
        if r.status == 401 {
            return;
        }
        assert!(
            Instant::now() < bound,
            "{what} still answers {} on {}",
            r.status,
            node.addr
        );
        thread::sleep(Duration::from_millis(100));
    }
}

/// Two user maps must be equal; names the first user that differs (not all of them).
pub fn assert_same_users(what: &str, want: &BTreeMap<i64, Value>, got: &BTreeMap<i64, Value>) {
    let ids: BTreeSet<i64> = want.keys().chain(got.keys()).copied().collect();
    for id in ids {
        assert_eq!(
            want.get(&id),
            got.get(&id),
            "{what}: user {id} differs (left: expected, right: got; {} vs {} users)",
            want.len(),
            got.len()
        );
    }
}

/// An invitee's page on `node`, opened as soon as that node honours the session (the session
/// may have been activated on another node a moment ago). That a node honours it at once is
/// the subject of `writes_on_one_node_are_seen_at_once_by_the_others`; the tests that use this
/// are about something else.
pub fn open_page(node: &Server, sid: &str, token: &str) -> Recorder {
    let deadline = Instant::now() + BUS;
    loop {
        let ws = node
            .session_ws(sid, token)
            .unwrap_or_else(|e| panic!("session stream handshake on {}: {e}", node.addr));
        let r = Recorder::start(ws, format!("session stream on {}", node.addr));
        let rec = r.wait("first frame", WAIT, |r| {
            !r.frames.is_empty() || r.end.is_some()
        });
        match rec.first() {
            Some(first) => {
                assert_eq!(
                    first["type"], "time_update",
                    "{}: first frame {first}",
                    r.what
                );
                return r;
            }
            None if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            None => panic!("{}: refused for {BUS:?}: {:?}", r.what, rec.end),
        }
    }
}

/// The one-time setup code from a node's log.
pub fn setup_code(node: &Server) -> String {
    let line = node
        .logs
        .wait_line(Duration::from_secs(10), |l| l.contains("/setup?code="))
        .unwrap_or_else(|| panic!("no setup URL logged by {}", node.addr));
    line[line.find("/setup?code=").unwrap() + "/setup?code=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect()
}
