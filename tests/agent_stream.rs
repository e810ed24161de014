//! GET /agent/stream: key auth (a key of at least 32 characters, from the command line, the
//! environment or a file), session_started, agent → server updates, errors. Failed agent
//! handshakes counting against the address's limit: `login_limit.rs`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

const KEY: &str = AGENT_KEY;

#[test]
fn disabled_without_key() {
    let srv = Server::start(&[]);
    assert_closed_1008(srv.agent_ws(KEY), "Agent stream disabled", "bearer key");
    assert_closed_1008(
        srv.ws_with("/agent/stream", &[]),
        "Agent stream disabled",
        "no Authorization",
    );
}

#[test]
fn wrong_or_missing_key_is_unauthorized() {
    let srv = Server::start(&["--agent-key", KEY]);
    assert_closed_1008(srv.agent_ws("wrong-key"), "Unauthorized", "wrong key");
    assert_closed_1008(
        srv.ws_with("/agent/stream", &[]),
        "Unauthorized",
        "no header",
    );
    assert_closed_1008(
        srv.ws_with("/agent/stream", &[("Authorization", KEY)]),
        "Unauthorized",
        "key without Bearer",
    );
    // The admin cookie is not an agent credential.
    let c = srv.admin_cookie();
    assert_closed_1008(
        srv.ws_connect("/agent/stream", Some(&c), None),
        "Unauthorized",
        "admin cookie",
    );
}

#[test]
fn short_agent_keys_are_refused_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("db.sqlite");
    let db = db.to_str().unwrap();
    let short = "k".repeat(31);
    for (args, env) in [
        (vec!["--agent-key", "k-123"], vec![]),
        (vec!["--agent-key", short.as_str()], vec![]),
        (vec![], vec![("CATALYTIC_AGENT_KEY", "x")]),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--db", db];
        all.extend(args.iter().copied());
        let out = run_cli(&all, &env, None);
        assert!(!out.status.success(), "{args:?} {env:?}: started");
        assert!(
            out.stderr.contains("at least 32"),
            "{args:?}: the message says why: {}",
            out.stderr
        );
    }
}

#[test]
fn agent_key_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let key_file = dir.path().join("agent.key");
    std::fs::write(&key_file, format!("{KEY}\n")).unwrap();
    let srv = Server::start(&["--agent-key-file", key_file.to_str().unwrap()]);
    let (_ws, init) = srv.agent(KEY);
    assert_eq!(init["type"], "initial");
    assert!(
        srv.logs
            .joined()
            .contains(&format!("agent key: {}", key_file.display())),
        "the log names the key file"
    );
    assert!(
        !srv.logs.joined().contains(KEY),
        "the key itself is never logged"
    );
    // A short key in a file, a missing file, or both flags at once: refused at start.
    let short = dir.path().join("short.key");
    std::fs::write(&short, "0123456789").unwrap();
    let db = dir.path().join("db2.sqlite");
    let db = db.to_str().unwrap();
    for (args, needle) in [
        (
            vec!["--agent-key-file", short.to_str().unwrap()],
            "at least 32",
        ),
        (
            vec!["--agent-key-file", "/nonexistent/agent.key"],
            "cannot read",
        ),
        (
            vec![
                "--agent-key-file",
                key_file.to_str().unwrap(),
                "--agent-key",
                KEY,
            ],
            "not both",
        ),
    ] {
        let mut all = vec!["serve", "--listen", "127.0.0.1:0", "--db", db];
        all.extend(args.iter().copied());
        let out = run_cli(&all, &[], None);
        assert!(!out.status.success(), "{args:?}: started");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
    }
}

#[test]
fn key_from_environment() {
    let mut cmd = command();
    let dir = tempfile::tempdir().unwrap();
    cmd.arg("serve")
        .args(["--listen", "127.0.0.1:0", "--db"])
        .arg(dir.path().join("db.sqlite"))
        .env("CATALYTIC_AGENT_KEY", KEY);
    let (mut child, _logs, addr) = spawn_listening(cmd);
    let stream = std::net::TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let auth = format!("Bearer {KEY}");
    let mut ws = ws_handshake(
        stream,
        &format!("ws://{addr}/agent/stream"),
        &[("Authorization", &auth)],
    )
    .expect("agent handshake with env key");
    ws.send(tungstenite::Message::Ping(b"k".to_vec().into()))
        .unwrap();
    assert_eq!(
        recv_json(&mut ws, WAIT)["type"],
        "initial",
        "agent stream opened"
    );
    match next_event(&mut ws, WAIT, true) {
        Some(WsEvent::Pong(_)) => {}
        other => panic!("agent stream with env key not open: {other:?}"),
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn session_started_and_http_progress_reach_agent() {
    let srv = Server::start(&["--agent-key", KEY]);
    let mut agent = srv.agent(KEY).0;
    let u = srv.create_user("Ada", "Lovelace", Some(4));
    let token = invite_token(&u);
    assert_eq!(srv.activate(&token).status, 200);
    let ev = recv_json(&mut agent, WAIT);
    assert_eq!(ev["type"], "session_started", "{ev}");
    assert_user_shape(&ev["data"]);
    assert_eq!(ev["data"]["id"], u["id"]);
    assert_eq!(ev["data"]["status"], "in_progress");

    // A second activate call does not start the session again.
    assert_eq!(srv.activate(&token).status, 200);
    let r = srv.json(
        "POST",
        "/api/session/answer",
        None,
        Some(&json!({"token": token})),
    );
    assert_eq!(r.status, 200);
    let ev = recv_json(&mut agent, WAIT);
    assert_eq!(
        ev,
        json!({"type":"progress","seq":3,"user_id":u["id"],"questions_answered":1,"questions_total":4}),
        "agent gets progress (and no second session_started), numbered by its cause"
    );
}

#[test]
fn agent_updates_are_applied_acked_and_broadcast() {
    let srv = Server::start(&["--agent-key", KEY]);
    let c = srv.admin_cookie();
    let s = srv.started_session(5);
    let (mut admin, _) = srv.admin_ws(&c);
    let mut sess = srv.session_ws(&s.session_id, &s.token).unwrap();
    session_opening(&mut sess);
    let mut agent = srv.agent(KEY).0;

    // progress
    send_json(
        &mut agent,
        &json!({"type":"progress","user_id":s.user_id,"questions_answered":2,"request_id":"r1"}),
    );
    let (ack, _) = recv_type(&mut agent, "ack", WAIT);
    assert_eq!(ack, json!({"type":"ack","request_id":"r1"}));
    let ev = recv_json(&mut admin, WAIT);
    assert_eq!(ev["type"], "user_update");
    assert_eq!(ev["data"]["id"], json!(s.user_id));
    assert_eq!(ev["data"]["progress"], "2/5");
    assert_eq!(
        recv_type(&mut sess, "progress", WAIT).0,
        json!({"type":"progress","questions_answered":2,"questions_total":5})
    );

    // transcript
    send_json(
        &mut agent,
        &json!({"type":"transcript","user_id":s.user_id,"url":"https://files.example.com/t/9","request_id":"r2"}),
    );
    assert_eq!(
        recv_type(&mut agent, "ack", WAIT).0,
        json!({"type":"ack","request_id":"r2"})
    );
    let ev = recv_json(&mut admin, WAIT);
    assert_eq!(ev["type"], "user_update");
    assert_eq!(ev["data"]["transcript"], "https://files.example.com/t/9");

    // summary
    send_json(
        &mut agent,
        &json!({"type":"summary","user_id":s.user_id,"url":"https://files.example.com/s/9","request_id":"r3"}),
    );
    assert_eq!(
        recv_type(&mut agent, "ack", WAIT).0,
        json!({"type":"ack","request_id":"r3"})
    );
    let ev = recv_json(&mut admin, WAIT);
    assert_eq!(ev["type"], "user_update");
    assert_eq!(ev["data"]["summary"], "https://files.example.com/s/9");
    assert_user_shape(&ev["data"]);

    let u = srv.user(s.user_id);
    assert_eq!(u["progress"], "2/5");
    assert_eq!(u["transcript"], "https://files.example.com/t/9");
    assert_eq!(u["summary"], "https://files.example.com/s/9");
    assert_silent(&mut admin, QUIET, "one user_update per agent message");
}

#[test]
fn bad_agent_messages_get_errors_and_change_nothing() {
    let srv = Server::start(&["--agent-key", KEY]);
    let c = srv.admin_cookie();
    let s = srv.started_session(5);
    let before = srv.users();
    let (mut admin, _) = srv.admin_ws(&c);
    let mut sess = srv.session_ws(&s.session_id, &s.token).unwrap();
    session_opening(&mut sess);
    let mut agent = srv.agent(KEY).0;

    let bad: Vec<Value> = vec![
        json!({"type":"progress","user_id":999_999,"questions_answered":1,"request_id":"b1"}),
        json!({"type":"progress","user_id":s.user_id,"request_id":"b2"}),
        json!({"type":"progress","user_id":s.user_id,"questions_answered":"two","request_id":"b3"}),
        json!({"type":"transcript","user_id":s.user_id,"request_id":"b4"}),
        json!({"type":"summary","user_id":999_999,"url":"https://x.example.com/s","request_id":"b5"}),
        json!({"type":"launch_missiles","user_id":s.user_id,"request_id":"b6"}),
        json!({"user_id":s.user_id,"questions_answered":1,"request_id":"b7"}),
        json!({"type":"progress","questions_answered":1,"request_id":"b8"}),
    ];
    for m in &bad {
        send_json(&mut agent, m);
        let ev = recv_json(&mut agent, WAIT);
        assert_eq!(ev["type"], "error", "answer to {m}: {ev}");
        assert_eq!(
            ev["request_id"], m["request_id"],
            "request_id echoed for {m}"
        );
        assert!(
            ev["message"].as_str().is_some_and(|s| !s.is_empty()),
            "error message for {m}: {ev}"
        );
    }
    // Not JSON at all: an error (no request_id to echo), the stream stays open.
    agent
        .send(tungstenite::Message::text("this is not json"))
        .unwrap();
    let ev = recv_json(&mut agent, WAIT);
    assert_eq!(ev["type"], "error", "{ev}");
    assert!(ev["request_id"].is_null(), "{ev}");
    assert!(ev["message"].is_string(), "{ev}");

    assert_silent(&mut admin, QUIET, "no broadcast for bad agent messages");
    assert_silent(
        &mut sess,
        Duration::from_millis(100),
        "no progress for bad agent messages",
    );
    assert_eq!(srv.users(), before, "nothing changed");

    // Still usable afterwards.
    send_json(
        &mut agent,
        &json!({"type":"progress","user_id":s.user_id,"questions_answered":1,"request_id":"ok"}),
    );
    assert_eq!(
        recv_type(&mut agent, "ack", WAIT).0,
        json!({"type":"ack","request_id":"ok"})
    );
}

#[test]
fn agent_gets_session_expired() {
    let srv = Server::start(&["--agent-key", KEY, "--session-minutes", "0.05"]);
    let mut agent = srv.agent(KEY).0;
    let u = srv.create_user("Ada", "Lovelace", Some(2));
    assert_eq!(srv.activate(&invite_token(&u)).status, 200);
    let (ev, _) = recv_type(&mut agent, "session_started", WAIT);
    assert_eq!(ev["data"]["id"], u["id"]);
    let (ev, skipped) = recv_type(&mut agent, "session_expired", Duration::from_secs(8));
    assert_eq!(
        ev,
        json!({"type":"session_expired","seq":3,"data":{"id":u["id"]}})
    );
    assert!(skipped.is_empty(), "unexpected agent messages: {skipped:?}");
}
