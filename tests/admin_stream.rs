//! GET /admin/stream: initial snapshot, broadcast order and exactly-once delivery, the close
//! handshake, invite links that run out (v2). Who may open it: `admin_auth.rs`; Ping/Pong on
//! every stream: `heartbeat.rs`; numbering and resume: `event_log.rs`.

mod common;

use common::*;
use serde_json::{json, Value};

#[test]
fn initial_is_full_list_newest_first() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let (mut ws, data) = srv.admin_ws(&c);
    assert!(data.is_empty(), "fresh server: empty initial, got {data:?}");
    close_normal(&mut ws);

    let a = srv.create_user("A", "One", Some(3));
    let b = srv.create_user("B", "Two", None);
    let d = srv.create_user("D", "Three", Some(7));
    let (_ws, data) = srv.admin_ws(&c);
    assert_eq!(data.len(), 3);
    for u in &data {
        assert_user_shape(u);
    }
    let ids: Vec<i64> = data.iter().map(id_of).collect();
    assert_eq!(ids, vec![id_of(&d), id_of(&b), id_of(&a)], "newest first");
    assert_eq!(data, srv.users(), "initial equals GET /api/users");
    assert_eq!(data[2], a);
}

#[test]
fn two_admins_get_every_event_once_in_order() {
    let srv = Server::start(&[]);
    let c1 = srv.admin_cookie();
    let c2 = srv.second_admin_cookie();
    let (mut w1, _) = srv.admin_ws(&c1);
    let (mut w2, _) = srv.admin_ws(&c2);

    let mut expected: Vec<Value> = Vec::new();
    let mut ids = Vec::new();
    for i in 0..12 {
        let u = srv.create_user(&format!("First{i}"), &format!("Last{i}"), Some(10));
        expected.push(json!({"type":"user_added","data":u}));
        ids.push(id_of(&u));
    }
    for (n, id) in ids.iter().enumerate().take(8) {
        let r = srv.patch_user(
            *id,
            &json!({"questions_answered": n as u64 % 10, "last_name": format!("Patched{n}")}),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        expected.push(json!({"type":"user_update","data":r.json()}));
    }
    for id in ids.iter().skip(8).take(2) {
        let nu = srv.regenerate_invite(*id, &c1);
        expected.push(json!({"type":"user_update","data":nu}));
    }
    for id in ids.iter().take(4) {
        let r = srv.json("DELETE", &format!("/api/users/{id}"), Some(&c2), None);
        assert_eq!(r.status, 204);
        expected.push(json!({"type":"user_deleted","data":{"id":id}}));
    }
    // Interleave more adds after deletes.
    for i in 0..3 {
        let u = srv.create_user(&format!("Late{i}"), "Comer", None);
        expected.push(json!({"type":"user_added","data":u}));
    }

    // Every change took the next number, from 1 on a fresh database.
    for (i, want) in expected.iter_mut().enumerate() {
        want["seq"] = json!(i + 1);
    }
    for (name, ws) in [("admin 1", &mut w1), ("admin 2", &mut w2)] {
        for (i, want) in expected.iter().enumerate() {
            let got = recv_json(ws, WAIT);
            assert_eq!(&got, want, "{name}: event #{i}");
        }
        assert_silent(ws, QUIET, &format!("{name}: no duplicate or extra events"));
    }
}

#[test]
fn events_from_invitee_actions_reach_admins() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let u = srv.create_user("Ada", "Lovelace", Some(2));
    let (mut ws, _) = srv.admin_ws(&c);

    let token = invite_token(&u);
    let r = srv.activate(&token);
    assert_eq!(r.status, 200);
    let ev = recv_json(&mut ws, WAIT);
    assert_eq!(ev["type"], "user_update", "{ev}");
    assert_user_shape(&ev["data"]);
    assert_eq!(ev["data"]["id"], u["id"]);
    assert_eq!(ev["data"]["status"], "in_progress");
    assert!(ev["data"]["session_timer"].is_string());

    let r = srv.json(
        "POST",
        "/api/session/answer",
        None,
        Some(&json!({"token": token})),
    );
    assert_eq!(r.status, 200);
    let ev = recv_json(&mut ws, WAIT);
    assert_eq!(ev["type"], "user_update");
    assert_eq!(ev["data"]["id"], u["id"]);
    assert_eq!(ev["data"]["progress"], "1/2");
    assert_silent(&mut ws, QUIET, "one user_update per answer");
}

#[test]
fn invite_regeneration_broadcasts_update() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let u = srv.create_user("Ada", "Lovelace", None);
    let (mut ws, _) = srv.admin_ws(&c);
    let nu = srv.regenerate_invite(id_of(&u), &c);
    let ev = recv_json(&mut ws, WAIT);
    assert_eq!(ev, json!({"type":"user_update","seq":2,"data":nu}));
    // The old token's death: http_api.rs, invite_regeneration_kills_old_token.
}

#[test]
fn reconnect_sees_current_state() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let u = srv.create_user("Ada", "Lovelace", None);
    let (mut ws, data) = srv.admin_ws(&c);
    assert_eq!(data, vec![u.clone()]);
    close_normal(&mut ws);
    drop(ws);
    let r = srv.patch_user(id_of(&u), &json!({"first_name": "Augusta"}));
    assert_eq!(r.status, 200);
    let v = srv.create_user("Grace", "Hopper", None);
    let (_ws, data) = srv.admin_ws(&c);
    assert_eq!(data, vec![v, r.json()]);
}

#[test]
fn client_close_is_echoed_and_counted() {
    let srv = Server::start(&[]);
    let (mut ws, _) = srv.admin_ws(&srv.admin_cookie());
    srv.wait_metric(
        "catalytic_ws_connections",
        &[("stream", "admin")],
        WAIT,
        |v| v == 1.0,
    );
    close_normal(&mut ws);
    match wait_ended(&mut ws, WAIT) {
        Some((code, _)) => assert_eq!(code, 1000, "server echoes the client's close code"),
        None => panic!("server dropped the connection without a close reply"),
    }
    srv.wait_metric(
        "catalytic_ws_connections",
        &[("stream", "admin")],
        WAIT,
        |v| v == 0.0,
    );
    srv.wait_metric(
        "catalytic_ws_closed_total",
        &[("reason", "client")],
        WAIT,
        |v| v >= 1.0,
    );
}

/// The next event on `live` (presence and pings are not forwarded) with its arrival time.
fn next_live(live: &LiveAdmin, timeout: std::time::Duration) -> (std::time::Instant, Value) {
    match live.rx.recv_timeout(timeout) {
        Ok((at, Ok(v))) => (at, v),
        other => panic!("live admin: no event within {timeout:?}: {other:?}"),
    }
}

/// An unused invite link that runs out is an event of its own (v2): admins get a
/// `user_update` with `token_valid: false` within 2 s of its expiry, exactly once, numbered
/// like any other change. `--invite-ttl-hours 0.001` is 3.6 s.
#[test]
fn an_unused_invite_that_runs_out_is_announced_once() {
    use std::time::{Duration, Instant};
    let ttl = Duration::from_millis(3600);
    let srv = Server::start(&["--invite-ttl-hours", "0.001"]);
    let c = srv.admin_cookie();
    let live = LiveAdmin::start(&srv);
    let pos = srv.log_pos();

    // (when the expiry can be at the earliest, at the latest, the user)
    let mut expiring = Vec::new();
    for name in ["Ada", "Grace"] {
        let t = Instant::now();
        let u = srv.create_user(name, "Expiring", None);
        assert_eq!(u["token_valid"], true);
        assert!(u["invite_expires_at"].is_string(), "{u}");
        expiring.push((t + ttl, Instant::now() + ttl, id_of(&u)));
    }
    // An invite renewed after a second runs out 3.6 s after the renewal.
    let renewed = srv.create_user("Katherine", "Renewed", None);
    std::thread::sleep(Duration::from_millis(1000));
    let t = Instant::now();
    let nu = srv.regenerate_invite(id_of(&renewed), &c);
    expiring.push((t + ttl, Instant::now() + ttl, id_of(&nu)));
    // A used invite is no longer an unused link.
    let used = srv.started_session(3);
    let mut seq = live.events_through(pos.seq, pos.seq + 6, WAIT).len() as u64 + pos.seq;

    let mut announced = Vec::new();
    while announced.len() < expiring.len() {
        let (at, ev) = next_live(&live, Duration::from_secs(8));
        seq += 1;
        assert_eq!(ev["type"], "user_update", "{ev}");
        assert_eq!(seq_of(&ev), seq, "numbered like any change: {ev}");
        let id = id_of(&ev["data"]);
        if id == used.user_id {
            // The contract names unused links; what a used one shows is not its subject.
            eprintln!("the used invite's user was updated too: {ev}");
            continue;
        }
        assert_eq!(ev["data"]["token_valid"], false, "{ev}");
        assert_user_shape(&ev["data"]);
        let &(earliest, latest, _) = expiring
            .iter()
            .find(|e| e.2 == id)
            .unwrap_or_else(|| panic!("announced a user whose link did not run out: {ev}"));
        // The server's clock and ours may disagree by a few milliseconds.
        assert!(
            at + Duration::from_millis(50) >= earliest,
            "announced {:?} before the expiry",
            earliest - at
        );
        assert!(
            at <= latest + Duration::from_secs(2),
            "announced {:?} after the expiry",
            at - latest
        );
        announced.push(id);
    }
    announced.sort_unstable();
    announced.dedup();
    assert_eq!(announced.len(), expiring.len(), "each once");
    live.assert_none("a second announcement", Duration::from_secs(2), |v| {
        v["data"]["id"] != json!(used.user_id)
    });
    for (_, _, id) in &expiring {
        assert_eq!(srv.user(*id)["token_valid"], false);
    }
    assert_eq!(srv.user(used.user_id)["status"], "in_progress");
    // The dead link cannot start a session.
    assert_eq!(srv.activate(&invite_token(&nu)).status, 410);
}

/// A link that runs out while the server is down is announced after start, once; the
/// announcement is part of the stored log (a later restart neither repeats nor loses it).
#[test]
fn an_invite_that_runs_out_while_down_is_announced_after_start() {
    use std::time::{Duration, Instant};
    let mut srv = Server::start(&["--invite-ttl-hours", "0.001"]);
    let made = Instant::now();
    let u = srv.create_user("Ada", "Lovelace", None);
    let pos = srv.log_pos();
    let st = srv.stop();
    assert!(st.success(), "{st}");
    std::thread::sleep(Duration::from_millis(4200).saturating_sub(made.elapsed()));
    srv.spawn();
    let started = Instant::now();

    let (mut ws, first) = srv.admin_open(&pos.query());
    assert_eq!(first["type"], "resumed", "{first}");
    let ev = recv_json(&mut ws, Duration::from_secs(3));
    assert!(
        started.elapsed() < Duration::from_millis(2500),
        "announced {:?} after start",
        started.elapsed()
    );
    assert_eq!(ev["type"], "user_update", "{ev}");
    assert_eq!(seq_of(&ev), pos.seq + 1);
    assert_eq!(ev["data"]["id"], u["id"]);
    assert_eq!(ev["data"]["token_valid"], false);
    assert_silent(&mut ws, Duration::from_secs(1), "announced once");
    close_normal(&mut ws);

    srv.restart();
    let (mut ws, first) = srv.admin_open(&pos.query());
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(recv_json(&mut ws, WAIT), ev, "the announcement is stored");
    assert_silent(&mut ws, Duration::from_millis(2500), "not announced again");
}
