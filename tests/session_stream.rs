//! GET /session/{id}/stream: auth (right token or cookie, or close 1008), time_update, progress,
//! expiry, deletion; a session starts only on `POST /api/session/activate`, never by loading
//! the page, and after it the `session_token` cookie alone serves the stream and the answers.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const INVALID: &str = "Invalid or expired session";

fn assert_time_update(v: &serde_json::Value, max: f64) -> f64 {
    assert_eq!(v["type"], "time_update", "{v}");
    let n = v["remaining_seconds"]
        .as_f64()
        .unwrap_or_else(|| panic!("remaining_seconds number: {v}"));
    assert!(
        (0.0..=max).contains(&n),
        "remaining_seconds {n} not in 0..={max}"
    );
    let keys: Vec<&String> = v.as_object().unwrap().keys().collect();
    assert_eq!(
        keys.len(),
        2,
        "time_update has exactly type+remaining_seconds: {v}"
    );
    n
}

/// Issue 12, item 10 (the server's half): a link scanner that runs JavaScript started the
/// 30-minute clock before the invitee ever clicked. Loading the page and opening the stream
/// start nothing; the POST does, and then the cookie is all the page needs (the token can
/// leave the address bar).
#[test]
fn only_the_post_activates_and_then_the_cookie_suffices() {
    let srv = Server::start(&[]);
    let user = srv.create_user("Ada", "Lovelace", Some(3));
    let id = id_of(&user);
    let token = invite_token(&user);
    for _ in 0..3 {
        let page = srv.get(&format!("/session?token={token}"), None);
        assert_eq!(page.status, 200);
        assert!(
            page.set_cookie("session_token").is_none(),
            "the page sets no session"
        );
    }
    assert_closed_1008(
        srv.session_ws(&id.to_string(), &token),
        INVALID,
        "a stream before activation",
    );
    let u = srv.user(id);
    assert_eq!(
        u["status"], "invited",
        "loading the page started nothing: {u}"
    );
    assert!(u["session_started_at"].is_null());

    let r = srv.activate(&token);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(srv.user(id)["status"], "in_progress");
    let cookie = format!("session_token={}", r.cookie_value("session_token").unwrap());
    let path = format!("/session/{id}/stream");
    let mut ws = srv
        .ws_connect(&path, Some(&cookie), Some(&srv.origin()))
        .expect("the stream with the cookie alone");
    session_opening(&mut ws);
    let r = srv.request("POST", "/api/session/answer", &[("Cookie", &cookie)], None);
    assert_eq!(
        r.status,
        200,
        "an answer with the cookie alone: {}",
        r.text()
    );
    assert_eq!(
        recv_type(&mut ws, "progress", WAIT).0["questions_answered"],
        1
    );
}

#[test]
fn stream_with_query_token_and_with_cookie() {
    let srv = Server::start(&[]);
    let s = srv.started_session(5);

    let mut ws = srv
        .session_ws(&s.session_id, &s.token)
        .expect("session stream with ?token=");
    let (t, p) = session_opening(&mut ws);
    assert_eq!(
        p,
        json!({"type":"progress","questions_answered":0,"questions_total":5}),
        "the current progress from the first frames (v2)"
    );
    let n = assert_time_update(&t, 1800.0);
    assert!(n >= 1780.0, "fresh 30-minute session: {n}");

    let cookie = format!("session_token={}", s.cookie);
    let mut ws2 = srv
        .ws_connect(
            &format!("/session/{}/stream", s.session_id),
            Some(&cookie),
            None,
        )
        .expect("session stream with cookie");
    assert_time_update(&session_opening(&mut ws2).0, 1800.0);

    // An answer reaches both session streams as progress.
    let r = srv.request("POST", "/api/session/answer", &[("Cookie", &cookie)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    let want = json!({"type":"progress","questions_answered":1,"questions_total":5});
    assert_eq!(recv_type(&mut ws, "progress", WAIT).0, want);
    assert_eq!(recv_type(&mut ws2, "progress", WAIT).0, want);

    // A page opened later starts from the current progress, not from zero.
    let mut ws3 = srv.session_ws(&s.session_id, &s.token).unwrap();
    assert_eq!(
        session_opening(&mut ws3).1,
        want,
        "progress on open after an answer"
    );
}

#[test]
fn answer_sends_progress_and_admin_update() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let s = srv.started_session(3);
    let (mut admin, _) = srv.admin_ws(&c);
    let mut ws = srv.session_ws(&s.session_id, &s.token).unwrap();
    assert_time_update(&session_opening(&mut ws).0, 1800.0);

    for n in 1..=2 {
        let r = srv.json(
            "POST",
            "/api/session/answer",
            None,
            Some(&json!({"token": s.token})),
        );
        assert_eq!(r.status, 200);
        assert_eq!(
            r.json(),
            json!({"questions_answered": n, "questions_total": 3})
        );
        let p = recv_type(&mut ws, "progress", WAIT).0;
        assert_eq!(
            p,
            json!({"type":"progress","questions_answered":n,"questions_total":3})
        );
        let ev = recv_json(&mut admin, WAIT);
        assert_eq!(ev["type"], "user_update");
        assert_eq!(ev["data"]["id"], json!(s.user_id));
        assert_eq!(ev["data"]["progress"], format!("{n}/3"));
        assert_user_shape(&ev["data"]);
    }
}

#[test]
fn session_streams_without_the_right_token_are_closed_1008() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let a = srv.started_session(5);
    let b = srv.started_session(5);
    let not_activated = srv.create_user("Not", "Started", None);
    let na_token = invite_token(&not_activated);
    // Positive control.
    let mut ok = srv
        .session_ws(&a.session_id, &a.token)
        .expect("own session stream");
    assert_eq!(recv_json(&mut ok, WAIT)["type"], "time_update");
    close_normal(&mut ok);

    let a_path = format!("/session/{}/stream", a.session_id);
    assert_closed_1008(srv.ws_with(&a_path, &[]), INVALID, "no token");
    assert_closed_1008(
        srv.session_ws(&a.session_id, &b.token),
        INVALID,
        "another user's session token in ?token=",
    );
    assert_closed_1008(
        srv.ws_connect(&a_path, Some(&format!("session_token={}", b.cookie)), None),
        INVALID,
        "another user's session_token cookie",
    );
    assert_closed_1008(
        srv.session_ws(&b.session_id, &a.token),
        INVALID,
        "A's token on B's stream",
    );
    let mut rng = Rng(42);
    let random_token: String = rng.bytes(32).iter().map(|b| format!("{b:02x}")).collect();
    assert_closed_1008(
        srv.session_ws(&a.session_id, &random_token),
        INVALID,
        "random 64-hex token",
    );
    assert_closed_1008(srv.session_ws(&a.session_id, ""), INVALID, "empty token");
    assert_closed_1008(
        srv.session_ws(&a.session_id, "nope"),
        INVALID,
        "wrong token",
    );
    assert_closed_1008(
        srv.ws_with(
            &format!("/session/{}/stream?token={na_token}", id_of(&not_activated)),
            &[],
        ),
        INVALID,
        "not activated",
    );
    assert_closed_1008(
        srv.session_ws(&a.session_id, "%27%20OR%20%271%27%3D%271"),
        INVALID,
        "SQL-injection token",
    );
    assert_closed_1008(srv.session_ws("999999", &a.token), INVALID, "guessed id");
    // More guessed ids with A's valid token (odd ones may be refused before the upgrade).
    let a_id: i64 = a.session_id.parse().unwrap_or(a.user_id);
    for id in [
        (a_id + 1).to_string(),
        (a_id + 1000).to_string(),
        "0".to_string(),
        "-1".to_string(),
        "99999999999999999999".to_string(),
        "abc".to_string(),
        format!("{a_id}%00"),
        format!("0{a_id}x"),
    ] {
        if id == b.session_id {
            continue;
        }
        let path = format!("/session/{id}/stream?token={}", a.token);
        match srv.ws_with(&path, &[]) {
            Ok(ws) => assert_closed_1008(Ok(ws), INVALID, &format!("guessed id {id}")),
            Err(tungstenite::Error::Http(resp)) => {
                let st = resp.status().as_u16();
                assert!((400..500).contains(&st), "guessed id {id}: HTTP {st}");
            }
            Err(e) => panic!("guessed id {id}: {e}"),
        }
    }
    srv.wait_metric(
        "catalytic_ws_closed_total",
        &[("reason", "unauthorized")],
        WAIT,
        |v| v >= 6.0,
    );
    assert_eq!(
        srv.metric("catalytic_ws_connections", &[("stream", "session")]),
        0.0
    );
    assert_serving(&srv, &live, "session stream guessing");
}
#[test]
fn regenerated_invite_invalidates_the_old_token_for_streams() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let s = srv.started_session(3);
    srv.regenerate_invite(s.user_id, &c);
    assert_closed_1008(
        srv.session_ws(&s.session_id, &s.token),
        INVALID,
        "old token",
    );
}

#[test]
fn expiry_sends_session_expired_then_close_1000() {
    let srv = Server::start(&["--session-minutes", "0.05"]);
    let c = srv.admin_cookie();
    let u = srv.create_user("Ada", "Lovelace", Some(3));
    let token = invite_token(&u);
    let (mut admin, _) = srv.admin_ws(&c);
    let started = Instant::now();
    let r = srv.activate(&token);
    assert_eq!(r.status, 200);
    let b = r.json();
    let rem = b["remaining_seconds"].as_f64().unwrap();
    assert!(
        (2.0..=3.0).contains(&rem),
        "remaining_seconds {rem} for 0.05 min"
    );
    let sid = session_id_of(&b);

    let ev = recv_json(&mut admin, WAIT);
    assert_eq!(ev["type"], "user_update");
    assert_eq!(ev["data"]["status"], "in_progress");

    let mut ws = srv.session_ws(&sid, &token).unwrap();
    assert_time_update(&session_opening(&mut ws).0, 3.0);
    let (exp, skipped) = recv_type(&mut ws, "session_expired", Duration::from_secs(8));
    let at = started.elapsed();
    assert_eq!(exp, json!({"type":"session_expired"}));
    assert!(
        skipped.iter().all(|v| v["type"] == "time_update"),
        "only time_updates before expiry: {skipped:?}"
    );
    assert!(
        at >= Duration::from_millis(2500) && at <= Duration::from_secs(6),
        "expired after {at:?}, session was 3 s"
    );
    assert_eq!(
        expect_close(&mut ws, WAIT).0,
        1000,
        "close 1000 after session_expired"
    );

    let ev = recv_json(&mut admin, WAIT);
    assert_eq!(ev["type"], "user_update", "{ev}");
    assert_eq!(ev["data"]["id"], u["id"]);
    assert_eq!(ev["data"]["status"], "expired");

    srv.activate(&token)
        .assert_error(410, "activate after expiry");
    let r = srv.json(
        "POST",
        "/api/session/answer",
        None,
        Some(&json!({"token": token})),
    );
    assert!(
        r.status == 410 || r.status == 401,
        "answer after expiry: {}",
        r.status
    );
    r.assert_error(r.status, "answer after expiry");
    assert_eq!(
        srv.user(id_of(&u))["progress"],
        "0/3",
        "no answer after expiry"
    );
    assert_closed_1008(srv.session_ws(&sid, &token), INVALID, "stream after expiry");
    assert_eq!(srv.user(id_of(&u))["status"], "expired");
    srv.wait_metric(
        "catalytic_ws_closed_total",
        &[("reason", "expired")],
        WAIT,
        |v| v >= 1.0,
    );
}

#[test]
fn deleting_the_user_closes_its_session_streams() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let s = srv.started_session(3);
    let other = srv.started_session(3);
    let mut ws = srv.session_ws(&s.session_id, &s.token).unwrap();
    let mut ws_other = srv.session_ws(&other.session_id, &other.token).unwrap();
    session_opening(&mut ws);
    session_opening(&mut ws_other);
    let r = srv.json(
        "DELETE",
        &format!("/api/users/{}", s.user_id),
        Some(&c),
        None,
    );
    assert_eq!(r.status, 204);
    wait_ended(&mut ws, WAIT);
    assert_silent(&mut ws_other, QUIET, "other session untouched");
    srv.activate(&s.token)
        .assert_error(401, "deleted user's token");
}

#[test]
fn periodic_time_update_every_10_seconds() {
    let srv = Server::start(&[]);
    let s = srv.started_session(3);
    let mut ws = srv.session_ws(&s.session_id, &s.token).unwrap();
    let first = assert_time_update(&session_opening(&mut ws).0, 1800.0);
    let t0 = Instant::now();
    let second = assert_time_update(&recv_json(&mut ws, Duration::from_secs(12)), 1800.0);
    let gap = t0.elapsed();
    assert!(
        gap <= Duration::from_millis(11_500),
        "second time_update after {gap:?}"
    );
    assert!(
        second < first && first - second <= 12.0,
        "remaining_seconds {first} then {second}"
    );
}
