//! Storage that is busy (API.md v2, "Storage busy"): another process holds the SQLite write
//! lock (`BEGIN IMMEDIATE` on a second connection to the file). A write that cannot be stored
//! gets 503 + `Retry-After` within 1 s and changes nothing; `/healthz`, heartbeats and streams
//! carry on at full speed; `catalytic_storage_busy_total` counts; after the lock the next
//! write takes the next number.

mod common;

use std::path::PathBuf;
use std::sync::mpsc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// Holds `BEGIN IMMEDIATE` on the database file for `hold`, on its own thread; returns once
/// the lock is taken, with the thread (which returns when it let go).
fn hold_write_lock(db: PathBuf, hold: Duration) -> (Instant, JoinHandle<Instant>) {
    let (tx, rx) = mpsc::channel();
    let h = thread::spawn(move || {
        let conn = rusqlite::Connection::open(&db).unwrap();
        conn.busy_timeout(Duration::from_secs(5)).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        tx.send(Instant::now()).unwrap();
        thread::sleep(hold);
        conn.execute_batch("ROLLBACK").unwrap();
        Instant::now()
    });
    let at = rx
        .recv_timeout(Duration::from_secs(6))
        .expect("write lock taken");
    (at, h)
}

/// Every frame an admin stream got, with its arrival time, and how it ended (if it did).
type Recording = (Vec<(Instant, Value)>, Option<String>);

/// An admin stream on its own thread that answers every JSON ping and records each frame
/// (pings included) with its arrival time, until `stop` is sent (or 20 s) or the stream ends.
fn recorder(srv: &Server, stop: mpsc::Receiver<()>) -> JoinHandle<Recording> {
    let (ws, _) = srv.admin_ws(&srv.admin_cookie());
    let until = Instant::now() + Duration::from_secs(20);
    thread::spawn(move || {
        let mut ws = ws;
        let mut seen = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() || stop.try_recv().is_ok() {
                return (seen, None);
            }
            match next_event(&mut ws, left.min(Duration::from_millis(100)), false) {
                None => continue,
                Some(WsEvent::Json(v)) => {
                    if v["type"] == "ping" {
                        let _ = ws.send(Message::text(r#"{"type":"pong"}"#));
                    }
                    seen.push((Instant::now(), v));
                }
                Some(WsEvent::Pong(_)) => {}
                other => return (seen, Some(format!("{other:?}"))),
            }
        }
    })
}

/// A write refused for busy storage: 503, a JSON error, `Retry-After`, within 1 s.
fn assert_busy(r: &Resp, took: Duration, what: &str) {
    r.assert_error(503, what);
    let ra = r
        .header("Retry-After")
        .unwrap_or_else(|| panic!("{what}: 503 without Retry-After"));
    assert!(
        ra.trim().parse::<u64>().is_ok(),
        "{what}: Retry-After {ra:?}"
    );
    // 1 s by the contract, plus a little for this side's measuring.
    assert!(
        took < Duration::from_millis(1150),
        "{what}: 503 after {took:?}"
    );
}

#[test]
fn a_four_second_external_lock_never_stalls_the_server() {
    let srv = Server::start(&["--heartbeat-secs", "1"]);
    let u = srv.create_user("Ada", "Lovelace", Some(5));
    let victim = srv.create_user("Grace", "Hopper", None);
    let before = srv.users();
    let pos = srv.log_pos();
    let busy = srv.metric("catalytic_storage_busy_total", &[]);
    let (stop, stopped) = mpsc::channel();
    let rec = recorder(&srv, stopped);
    thread::sleep(Duration::from_millis(200));

    let (locked, holder) = hold_write_lock(srv.db.clone(), Duration::from_secs(4));
    let writes = thread::scope(|s| {
        let writer = s.spawn(|| {
            let c = srv.admin_cookie();
            let mut out = Vec::new();
            let body = json!({"first_name": "Blocked", "last_name": "Write",
                              "email": srv.unique_email()});
            let t = Instant::now();
            out.push((
                "POST",
                srv.json("POST", "/api/users", Some(&c), Some(&body)),
                t.elapsed(),
            ));
            let t = Instant::now();
            let r = srv.patch_user(id_of(&u), &json!({"questions_answered": 3}));
            out.push(("PATCH", r, t.elapsed()));
            let t = Instant::now();
            let r = srv.json(
                "DELETE",
                &format!("/api/users/{}", id_of(&victim)),
                Some(&c),
                None,
            );
            out.push(("DELETE", r, t.elapsed()));
            out
        });
        // Meanwhile /healthz answers at once, every time.
        let mut slowest = Duration::ZERO;
        let mut polls = 0;
        while locked.elapsed() < Duration::from_millis(3600) {
            let took = timed_healthz(&srv);
            if took >= Duration::from_millis(50) {
                // Whether the reactor itself had a slow turn, or this host was just busy.
                panic!(
                    "/healthz took {took:?} under the lock (reactor turns over 50 ms so far: {})",
                    loop_turns_over(&srv, "0.05")
                );
            }
            slowest = slowest.max(took);
            polls += 1;
            thread::sleep(Duration::from_millis(50));
        }
        eprintln!("/healthz under the lock: {polls} polls, slowest {slowest:?}");
        // A new admin stream opens (its initial comes from memory).
        let t = Instant::now();
        let (mut ws, data) = srv.admin_ws(&srv.admin_cookie());
        assert!(
            t.elapsed() < Duration::from_millis(500),
            "initial took {:?}",
            t.elapsed()
        );
        assert_eq!(data, before, "initial under the lock");
        close_normal(&mut ws);
        writer.join().unwrap()
    });
    let released = holder.join().unwrap();
    for (what, r, took) in &writes {
        eprintln!("{what} under the lock: {} after {took:?}", r.status);
        assert_busy(r, *took, what);
    }

    // Nothing changed, and nothing changes later either (no write was kept for later).
    thread::sleep(Duration::from_millis(500));
    assert_eq!(srv.users(), before, "503 writes changed nothing");
    assert_eq!(srv.log_pos(), pos, "no event for a refused write");
    srv.wait_metric("catalytic_storage_busy_total", &[], WAIT, |v| {
        v == busy + 3.0
    });

    // The next write succeeds and takes the next number.
    let added = srv.create_user("After", "Lock", None);
    thread::sleep(Duration::from_millis(300));
    stop.send(()).unwrap();
    let (seen, ended) = rec.join().unwrap();
    assert!(
        ended.is_none(),
        "the ping-answering admin stream ended: {ended:?}"
    );
    let events: Vec<&Value> = seen
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v.get("seq").is_some())
        .collect();
    assert_eq!(
        events,
        [&json!({"type": "user_added", "seq": pos.seq + 1, "data": added})],
        "one event, the next number"
    );
    // Heartbeats kept coming while the lock was held (one a second).
    let pings: Vec<Instant> = seen
        .iter()
        .filter(|(at, v)| v["type"] == "ping" && *at >= locked && *at <= released)
        .map(|(at, _)| *at)
        .collect();
    assert!(
        pings.len() >= 3,
        "{} pings during the 4 s lock",
        pings.len()
    );
    for w in pings.windows(2) {
        assert!(
            w[1] - w[0] < Duration::from_millis(1500),
            "pings {:?} apart",
            w[1] - w[0]
        );
    }
}

/// A request that takes several storage commands is answered within one deadline: a sign-in
/// (read the account, hash, write the admin session) queued behind a write that waits for the
/// lock got its 503 after about 1.8 s, a deadline for each of its commands.
#[test]
fn a_sign_in_queued_behind_a_blocked_write_is_answered_within_1_s() {
    let srv = Server::start(&[]);
    let cookie = srv.admin_cookie();
    let (_, holder) = hold_write_lock(srv.db.clone(), Duration::from_secs(3));
    let (write, login) = thread::scope(|s| {
        let write = s.spawn(|| {
            let body = json!({"first_name": "Blocked", "last_name": "Write",
                              "email": srv.unique_email()});
            let t = Instant::now();
            let r = srv.json("POST", "/api/users", Some(&cookie), Some(&body));
            (r, t.elapsed())
        });
        // Behind it in the storage queue.
        thread::sleep(Duration::from_millis(50));
        let good = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
        let t = Instant::now();
        let r = srv.json("POST", "/api/admin/login", None, Some(&good));
        (write.join().unwrap(), (r, t.elapsed()))
    });
    assert_busy(&write.0, write.1, "the blocked write");
    assert_busy(&login.0, login.1, "the sign-in behind it");
    assert!(
        login.0.header("Set-Cookie").is_none(),
        "a refused sign-in sets no cookie"
    );
    holder.join().unwrap();
    // Storage free again: the same sign-in works.
    let good = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
    let r = srv.json("POST", "/api/admin/login", None, Some(&good));
    assert_eq!(r.status, 204, "sign-in after the lock: {}", r.text());
    assert!(r.header("Set-Cookie").is_some(), "a session cookie");
}

/// A lock shorter than the write's deadline only delays the write: it is stored and broadcast.
#[test]
fn a_short_lock_only_delays_a_write() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let pos = srv.log_pos();
    let (_, holder) = hold_write_lock(srv.db.clone(), Duration::from_millis(300));
    let t = Instant::now();
    let u = srv.create_user("Delayed", "Write", None);
    let took = t.elapsed();
    holder.join().unwrap();
    assert!(took < Duration::from_secs(1), "stored after {took:?}");
    assert_eq!(
        live.events_through(pos.seq, pos.seq + 1, WAIT),
        [json!({"type": "user_added", "seq": pos.seq + 1, "data": u})]
    );
}

/// What falls due under the lock (an invite link and a session running out) is announced once,
/// right after it; an agent message under the lock is answered with an error, not an ack, and
/// changes nothing, and its `request_id` is not used up: the agent's resend after the lock is
/// applied.
#[test]
fn expiries_due_under_the_lock_are_announced_once_after_it() {
    const KEY: &str = AGENT_KEY;
    let srv = Server::start(&[
        "--invite-ttl-hours",
        "0.001",
        "--session-minutes",
        "0.05",
        "--agent-key",
        KEY,
    ]);
    let live = LiveAdmin::start(&srv);
    let unused = srv.create_user("Ada", "Unused", None);
    let s = srv.started_session(3);
    let (mut agent, _) = srv.agent(KEY);
    let pos = srv.log_pos();
    assert_eq!(live.events_through(0, 3, WAIT).len(), 3);
    thread::sleep(Duration::from_millis(1000));
    // The session runs out at about 3 s, the link at 3.6 s: both under the lock.
    let (_, holder) = hold_write_lock(srv.db.clone(), Duration::from_secs(4));

    let url = "https://files.example.com/t/locked";
    let msg = json!({"type":"transcript","user_id":s.user_id,"url":url,"request_id":"q-1"});
    send_json(&mut agent, &msg);
    let t = Instant::now();
    let answer = recv_json(&mut agent, Duration::from_secs(3));
    assert!(
        t.elapsed() < Duration::from_millis(1150),
        "answered after {:?}",
        t.elapsed()
    );
    assert_eq!(
        answer["type"], "error",
        "a message that could not be stored: {answer}"
    );
    assert_eq!(answer["request_id"], "q-1");
    let released = holder.join().unwrap();

    let mut announced = Vec::new();
    while announced.len() < 2 {
        let v = live.wait_for("an expiry after the lock", Duration::from_secs(3), |_| true);
        assert!(
            released.elapsed() < Duration::from_secs(2),
            "announced {:?} after the lock",
            released.elapsed()
        );
        assert_eq!(v["type"], "user_update", "{v}");
        assert_eq!(seq_of(&v), pos.seq + 1 + announced.len() as u64);
        assert_eq!(v["data"]["token_valid"], false, "{v}");
        announced.push(id_of(&v["data"]));
    }
    announced.sort_unstable();
    assert_eq!(announced, vec![id_of(&unused), s.user_id]);
    live.assert_none("a second announcement", Duration::from_millis(1500), |_| {
        true
    });
    assert_eq!(srv.user(s.user_id)["status"], "expired");
    assert_eq!(
        srv.user(s.user_id)["transcript"],
        json!(null),
        "the refused message changed nothing"
    );
    // The agent hears of the expiry once, and nothing else.
    let (ev, skipped) = recv_type(&mut agent, "session_expired", WAIT);
    assert!(skipped.is_empty(), "{skipped:?}");
    assert_eq!(ev["data"]["id"], json!(s.user_id));
    assert_silent(&mut agent, QUIET, "one session_expired");

    // The refused request_id was not used up: its resend is applied.
    send_json(&mut agent, &msg);
    assert_eq!(
        recv_json(&mut agent, WAIT),
        json!({"type": "ack", "request_id": "q-1"})
    );
    let v = live.wait_for("the resent transcript", WAIT, |_| true);
    assert_eq!(seq_of(&v), pos.seq + 3);
    assert_eq!(v["data"]["transcript"], url);
    assert_eq!(srv.user(s.user_id)["transcript"], url);
}
