//! The numbered event log from outside (API.md v2): opening a stream fresh or resuming it
//! (`?epoch=E&since=N`), reading numbered events, recording what a reference admin saw, and
//! making many writes quickly on one keep-alive connection.

use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{next_event, recv_json, HttpConn, LiveAdmin, Server, Ws, WsEvent, WAIT};

/// Where a stream stands in the log: its `epoch` and the `seq` it has applied.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pos {
    pub epoch: String,
    pub seq: u64,
}

impl Pos {
    /// The query that resumes from here.
    pub fn query(&self) -> String {
        format!("?epoch={}&since={}", encode(&self.epoch), self.seq)
    }
}

/// Percent-encodes all but the unreserved characters of a query value.
pub fn encode(v: &str) -> String {
    v.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// `epoch` and `seq` of an `initial` or `resumed` frame (both must be there, with those types).
pub fn pos_of(frame: &Value) -> Pos {
    let epoch = frame["epoch"]
        .as_str()
        .unwrap_or_else(|| panic!("epoch string in {frame}"));
    assert!(!epoch.is_empty(), "empty epoch in {frame}");
    let seq = frame["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("seq number in {frame}"));
    Pos {
        epoch: epoch.to_string(),
        seq,
    }
}

/// The `seq` of a numbered event (panics when it has none).
pub fn seq_of(ev: &Value) -> u64 {
    ev["seq"]
        .as_u64()
        .unwrap_or_else(|| panic!("seq number in {ev}"))
}

impl Server {
    /// Opens `path` (with its query) as the default admin; returns the socket and the first
    /// frame (JSON pings answered, presence skipped).
    pub fn admin_open(&self, query: &str) -> (Ws, Value) {
        let cookie = self.admin_cookie();
        let mut ws = self
            .ws_connect(&format!("/admin/stream{query}"), Some(&cookie), None)
            .unwrap_or_else(|e| panic!("admin stream handshake {query:?}: {e}"));
        let first = recv_json(&mut ws, WAIT);
        (ws, first)
    }

    /// A fresh admin stream: its position and the `initial` list.
    pub fn admin_at(&self) -> (Ws, Pos, Vec<Value>) {
        let (ws, first) = self.admin_open("");
        assert_eq!(first["type"], "initial", "first admin frame: {first}");
        let data = first["data"].as_array().expect("initial.data").clone();
        (ws, pos_of(&first), data)
    }

    /// Where the log stands now (a fresh admin stream's `initial`, closed again).
    pub fn log_pos(&self) -> Pos {
        let (mut ws, pos, _) = self.admin_at();
        super::close_normal(&mut ws);
        pos
    }

    /// An agent stream opened with `query` (e.g. a resume); the socket and its first frame.
    pub fn agent_open(&self, key: &str, query: &str) -> (Ws, Value) {
        let auth = format!("Bearer {key}");
        let mut ws = self
            .ws_with(
                &format!("/agent/stream{query}"),
                &[("Authorization", &auth)],
            )
            .unwrap_or_else(|e| panic!("agent stream handshake {query:?}: {e}"));
        let first = recv_json(&mut ws, WAIT);
        (ws, first)
    }

    /// `n` writes (PATCH of user `id`'s `last_name`) on one keep-alive connection, each
    /// answered before the next is sent; a 503 (backlog or storage busy) is retried after a
    /// pause. Returns the user objects the server answered, in order.
    pub fn patch_burst(&self, id: i64, n: usize, tag: &str) -> Vec<Value> {
        let mut conn = self.http();
        let mut out = Vec::with_capacity(n);
        let deadline = Instant::now() + Duration::from_secs(60);
        let path = format!("/api/users/{id}");
        for i in 0..n {
            let body = json!({"last_name": format!("{tag}-{i}")});
            loop {
                assert!(Instant::now() < deadline, "patch burst: over 60 s");
                let r = send_keepalive(self, &mut conn, "PATCH", &path, &body);
                match r.status {
                    200 => {
                        out.push(r.json());
                        break;
                    }
                    503 => thread::sleep(Duration::from_millis(50)),
                    s => panic!("patch burst: PATCH {path} gave {s}: {}", r.text()),
                }
            }
        }
        out
    }
}

/// A keep-alive connection's request, reconnecting once when the server closed it.
pub fn send_keepalive(
    srv: &Server,
    conn: &mut HttpConn,
    method: &str,
    path: &str,
    body: &Value,
) -> super::Resp {
    let cookie = srv.admin_cookie();
    let bytes = serde_json::to_vec(body).unwrap();
    let headers = [
        ("Cookie", cookie.as_str()),
        ("Content-Type", "application/json"),
    ];
    match conn.send(method, path, &headers, Some(&bytes)) {
        Ok(r) => r,
        Err(_) => {
            *conn = srv.http();
            conn.send(method, path, &headers, Some(&bytes))
                .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
        }
    }
}

/// The next `n` numbered events on `ws` (pings answered, presence skipped); panics on anything
/// else or when they do not all come within `timeout`.
pub fn recv_events(ws: &mut Ws, n: usize, timeout: Duration) -> Vec<Value> {
    let deadline = Instant::now() + timeout;
    let mut out = Vec::with_capacity(n);
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(ws, left, true) {
            Some(WsEvent::Json(v)) => out.push(v),
            other => panic!(
                "expected {n} events within {timeout:?}, got {} then {other:?}",
                out.len()
            ),
        }
    }
    out
}

impl LiveAdmin {
    /// The numbered events this reference stream receives up to and including `last`
    /// (others before it, e.g. presence, are skipped); asserts they are numbered +1 each from
    /// `after + 1`.
    pub fn events_through(&self, after: u64, last: u64, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        let mut out: Vec<Value> = Vec::new();
        let mut at = after;
        while at < last {
            let left = deadline.saturating_duration_since(Instant::now());
            let v = self.wait_for(&format!("event {}", at + 1), left, |_| true);
            at += 1;
            assert_eq!(seq_of(&v), at, "reference admin: numbering, after {out:?}");
            out.push(v);
        }
        out
    }
}
