//! JSON heartbeat ({"type":"ping"} / {"type":"pong"}) and protocol Ping/Pong, with
//! `--heartbeat-secs 1`: clients that answer stay, clients that never answer (or never read)
//! are removed after about two intervals, on every stream.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

/// Reads for `dur`, answering each JSON ping with a pong; returns the number of pings seen.
/// Panics if the connection closes or a non-ping message arrives.
fn answer_pings_for(ws: &mut Ws, dur: Duration) -> usize {
    let deadline = Instant::now() + dur;
    let mut pings = 0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return pings;
        }
        match next_event(ws, left, false) {
            None => return pings,
            Some(WsEvent::Json(v)) if v["type"] == "ping" => {
                assert_eq!(v, json!({"type":"ping"}), "ping shape");
                pings += 1;
                send_json(ws, &json!({"type":"pong"}));
            }
            // What the streams send on open, and who-is-here news: not pings, not a problem.
            Some(WsEvent::Json(v))
                if ["time_update", "progress", "presence", "initial"]
                    .contains(&v["type"].as_str().unwrap_or("")) => {}
            other => panic!("unexpected while answering pings: {other:?}"),
        }
    }
}

/// Reads without ever answering; returns when the connection ends, with the elapsed time.
fn silent_until_closed(ws: &mut Ws, timeout: Duration) -> (Duration, Option<(u16, String)>) {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        match next_event(ws, left, false) {
            None => panic!("silent client still connected after {timeout:?}"),
            Some(WsEvent::Close(c)) => return (start.elapsed(), c),
            Some(WsEvent::Ended(_)) => return (start.elapsed(), None),
            Some(_) => {}
        }
    }
}

#[test]
fn ponging_client_stays_connected() {
    let srv = Server::start(&["--heartbeat-secs", "1"]);
    let (mut ws, _) = srv.admin_ws(&srv.admin_cookie());
    let pings = answer_pings_for(&mut ws, Duration::from_millis(4500));
    assert!(
        (3..=6).contains(&pings),
        "{pings} pings in 4.5 s at 1 s interval"
    );
    // Still open and served.
    let u = srv.create_user("Still", "Here", None);
    let (ev, _) = recv_type(&mut ws, "user_added", WAIT);
    assert_eq!(ev["data"], u);
}

#[test]
fn client_that_never_answers_pings_is_removed() {
    let srv = Server::start(&["--heartbeat-secs", "1"]);
    let live = LiveAdmin::start(&srv);
    let cookie = srv.second_admin_cookie();
    // Reads everything, answers nothing.
    let (mut deaf, resp) = srv.raw_ws("/admin/stream", &[("Cookie", &cookie)], &[]);
    assert_eq!(resp.status, 101);
    // Never reads, never writes.
    let (mute, resp) = srv.raw_ws("/admin/stream", &[("Cookie", &cookie)], &[]);
    assert_eq!(resp.status, 101);
    let t = Instant::now();
    let mut pings = 0;
    let mut close = None;
    let ended = loop {
        match deaf.read_frame(Duration::from_secs(6)) {
            Ok(f) if f.opcode == 1 => {
                let v: Value = serde_json::from_slice(&f.payload).unwrap();
                if v["type"] == "ping" {
                    pings += 1;
                }
            }
            Ok(f) if f.opcode == 8 => {
                close.get_or_insert((t.elapsed(), f.close_code()));
            }
            Ok(_) => {}
            Err(e) => break (t.elapsed(), e),
        }
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "deaf client still open"
        );
    };
    eprintln!("deaf client: {pings} JSON pings, close frame {close:?}, TCP end {ended:?}");
    let removed_at = close.map(|c| c.0).unwrap_or(ended.0);
    assert!(
        removed_at >= Duration::from_millis(1_500) && removed_at <= Duration::from_millis(4_500),
        "deaf client removed after {removed_at:?} (want ~2 intervals of 1 s)"
    );
    let n = srv.wait_metric(
        "catalytic_ws_closed_total",
        &[("reason", "heartbeat")],
        WAIT,
        |v| v >= 2.0,
    );
    eprintln!("heartbeat closes: {n}");
    srv.wait_metric(
        "catalytic_ws_connections",
        &[("stream", "admin")],
        WAIT,
        |v| v == 1.0,
    );
    drop(mute);
    assert_serving(&srv, &live, "silent clients");
}
#[test]
fn silent_session_and_agent_clients_are_closed() {
    let srv = Server::start(&["--heartbeat-secs", "1", "--agent-key", AGENT_KEY]);
    let s = srv.started_session(3);
    let mut sess = srv.session_ws(&s.session_id, &s.token).unwrap();
    let mut agent = srv.agent(AGENT_KEY).0;
    let (a, _) = silent_until_closed(&mut sess, Duration::from_secs(6));
    let (b, _) = silent_until_closed(&mut agent, Duration::from_secs(6));
    assert!(
        a <= Duration::from_millis(4500),
        "session closed after {a:?}"
    );
    assert!(b <= Duration::from_millis(4500), "agent closed after {b:?}");
}

#[test]
fn ponging_session_and_agent_clients_stay() {
    let srv = Server::start(&["--heartbeat-secs", "1", "--agent-key", AGENT_KEY]);
    let s = srv.started_session(3);
    let mut sess = srv.session_ws(&s.session_id, &s.token).unwrap();
    let mut agent = srv.agent(AGENT_KEY).0;
    let deadline = Instant::now() + Duration::from_millis(4000);
    while Instant::now() < deadline {
        answer_pings_for(&mut sess, Duration::from_millis(200));
        answer_pings_for(&mut agent, Duration::from_millis(200));
    }
    // Both still there.
    let r = srv.json(
        "POST",
        "/api/session/answer",
        None,
        Some(&json!({"token": s.token})),
    );
    assert_eq!(r.status, 200);
    assert_eq!(
        recv_type(&mut sess, "progress", WAIT).0["questions_answered"],
        1
    );
    assert_eq!(
        recv_type(&mut agent, "progress", WAIT).0["questions_answered"],
        1
    );
}

#[test]
fn protocol_ping_gets_pong_on_every_stream() {
    let srv = Server::start(&["--agent-key", AGENT_KEY]);
    let (admin, _) = srv.admin_ws(&srv.admin_cookie());
    let s = srv.started_session(3);
    let mut sess = srv.session_ws(&s.session_id, &s.token).unwrap();
    session_opening(&mut sess);
    let agent = srv.agent(AGENT_KEY).0;
    for (name, mut ws) in [("admin", admin), ("session", sess), ("agent", agent)] {
        ws.send(tungstenite::Message::Ping(name.as_bytes().to_vec().into()))
            .unwrap();
        // Events (user_added, user_update, session_started...) may come first: skip them.
        loop {
            match next_event(&mut ws, WAIT, true) {
                Some(WsEvent::Json(_)) => continue,
                Some(WsEvent::Pong(p)) => {
                    assert_eq!(p, name.as_bytes(), "{name}: pong payload");
                    break;
                }
                other => panic!("{name}: expected a Pong, got {other:?}"),
            }
        }
    }
}
