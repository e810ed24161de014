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
        json!({"type":"bogus","request_id":"b9"}),
    ];
    for m in &bad {
        send_json(&mut agent, m);
        let ev = recv_json(&mut agent, WAIT);
        // A message of no known type is told that, not what else it lacks.
        if !["progress", "transcript", "summary"].contains(&m["type"].as_str().unwrap_or("")) {
            assert!(
                ev["message"].as_str().is_some_and(|s| s.contains("type")),
                "answer to {m}: {ev}"
            );
        }
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

/// The agent stream opens with the sessions in progress, at the log's position (v2).
#[test]
fn initial_lists_the_sessions_in_progress() {
    let srv = Server::start(&["--agent-key", KEY]);
    let running = srv.started_session(3);
    let done = srv.started_session(1);
    let r = srv.answer(&done.token);
    assert_eq!(r.status, 200);
    srv.create_user("Not", "Started", None);
    assert_eq!(srv.user(done.user_id)["status"], "completed");

    let (_agent, init) = srv.agent(KEY);
    assert_eq!(
        pos_of(&init),
        srv.log_pos(),
        "agent initial at the admins' position"
    );
    let data = init["data"].as_array().expect("initial.data");
    assert_eq!(data.len(), 1, "only the running session: {init}");
    assert_user_shape(&data[0]);
    assert_eq!(data[0]["id"], json!(running.user_id));
    assert_eq!(data[0]["status"], "in_progress");
}

/// An agent that drops and resumes (`since` = the last number it saw) again and again while
/// sessions start misses no `session_started` and sees increasing numbers with gaps (the
/// admin-only changes in between take numbers too).
#[test]
fn an_agent_resuming_mid_burst_misses_no_session_started() {
    let srv = Server::start(&["--agent-key", KEY]);
    let users: Vec<Value> = (0..30)
        .map(|i| srv.create_user(&format!("Invitee{i}"), "Burst", Some(3)))
        .collect();
    let other = id_of(&srv.create_user("Admin", "Only", None));
    let (first_ws, init) = srv.agent(KEY);
    assert_eq!(init["data"], json!([]), "no session running yet");
    let mut pos = pos_of(&init);
    let resumed = srv.metric(
        "catalytic_resumes_total",
        &[("stream", "agent"), ("result", "resumed")],
    );

    let mut started: Vec<i64> = Vec::new();
    let mut progress = 0;
    let mut seqs: Vec<u64> = vec![pos.seq];
    let mut resumes = 0;
    std::thread::scope(|s| {
        s.spawn(|| {
            for (i, u) in users.iter().enumerate() {
                let token = invite_token(u);
                assert_eq!(srv.activate(&token).status, 200);
                // No agent message for this one: a gap.
                assert_eq!(
                    srv.patch_user(other, &json!({"last_name": format!("N{i}")}))
                        .status,
                    200
                );
                if i % 3 == 0 {
                    let r = srv.answer(&token);
                    assert_eq!(r.status, 200);
                }
                std::thread::sleep(Duration::from_millis(15));
            }
        });
        let mut rng = Rng(7);
        let mut ws = first_ws;
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while started.len() < users.len() || progress < 10 {
            assert!(
                std::time::Instant::now() < deadline,
                "agent saw {started:?}, {progress} progress"
            );
            for _ in 0..1 + rng.below(4) {
                let ev = match next_event(&mut ws, Duration::from_millis(150), true) {
                    Some(WsEvent::Json(ev)) => ev,
                    None => break,
                    other => panic!("agent: {other:?}"),
                };
                let seq = seq_of(&ev);
                assert!(
                    seq > pos.seq,
                    "agent numbers increase: {seq} after {}: {ev}",
                    pos.seq
                );
                pos.seq = seq;
                seqs.push(seq);
                match ev["type"].as_str() {
                    Some("session_started") => started.push(id_of(&ev["data"])),
                    Some("progress") => progress += 1,
                    _ => panic!("unexpected agent message {ev}"),
                }
            }
            drop(ws);
            let (next, first) = srv.agent_open(KEY, &pos.query());
            assert_eq!(first["type"], "resumed", "{first}");
            assert_eq!(pos_of(&first), pos);
            resumes += 1;
            ws = next;
        }
        assert_silent(&mut ws, QUIET, "nothing more for the agent");
    });
    let mut want: Vec<i64> = users.iter().map(id_of).collect();
    let mut got = started.clone();
    want.sort_unstable();
    got.sort_unstable();
    assert_eq!(got, want, "every session_started exactly once");
    assert_eq!(progress, 10);
    let gaps = seqs.windows(2).filter(|w| w[1] > w[0] + 1).count();
    assert!(gaps > 0, "agent numbers come from the shared log: {seqs:?}");
    srv.wait_metric(
        "catalytic_resumes_total",
        &[("stream", "agent"), ("result", "resumed")],
        WAIT,
        |v| v == resumed + resumes as f64,
    );
}

/// A resume the server cannot honour gives the agent a fresh `initial`, counted.
#[test]
fn agent_resume_that_cannot_be_honoured_gets_initial() {
    let srv = Server::start(&["--agent-key", KEY]);
    let s = srv.started_session(3);
    let pos = srv.log_pos();
    let labels = [("stream", "agent"), ("result", "initial")];
    let before = srv.metric("catalytic_resumes_total", &labels);
    let e = encode(&pos.epoch);
    let queries = [
        format!("?epoch=another-epoch&since={}", pos.seq),
        format!("?epoch={e}&since={}", pos.seq + 5),
        format!("?epoch={e}&since=abc"),
    ];
    for q in &queries {
        let (_ws, first) = srv.agent_open(KEY, q);
        assert_eq!(first["type"], "initial", "{q}: {first}");
        assert_eq!(pos_of(&first), pos, "{q}");
        assert_eq!(first["data"].as_array().unwrap().len(), 1, "{first}");
        assert_eq!(first["data"][0]["id"], json!(s.user_id));
    }
    srv.wait_metric("catalytic_resumes_total", &labels, WAIT, |v| {
        v == before + queries.len() as f64
    });
}

/// A repeated `request_id` (within 10 minutes) is acked again and applied once: on the same
/// stream, after a reconnect, and after a restart.
#[test]
fn a_repeated_request_id_is_acked_again_and_applied_once() {
    let mut srv = Server::start(&["--agent-key", KEY]);
    let s = srv.started_session(5);
    let live = LiveAdmin::start(&srv);
    let start = srv.log_pos().seq;
    let mut sess = srv.session_ws(&s.session_id, &s.token).unwrap();
    session_opening(&mut sess);
    let (mut agent, _) = srv.agent(KEY);
    let uid = s.user_id;
    let progress =
        json!({"type":"progress","user_id":uid,"questions_answered":2,"request_id":"p-1"});
    let transcript = json!({"type":"transcript","user_id":uid,"url":"https://files.example.com/t/1","request_id":"t-1"});
    let numbered = json!({"type":"summary","user_id":uid,"url":"https://files.example.com/s/1","request_id":7});
    let ack = |m: &Value| json!({"type":"ack","request_id":m["request_id"]});

    for m in [&progress, &transcript, &numbered] {
        send_json(&mut agent, m);
        assert_eq!(recv_type(&mut agent, "ack", WAIT).0, ack(m));
    }
    let applied = live.events_through(start, start + 3, WAIT);
    assert_eq!(applied[0]["data"]["progress"], "2/5");
    assert_eq!(
        applied[1]["data"]["transcript"],
        "https://files.example.com/t/1"
    );
    assert_eq!(
        applied[2]["data"]["summary"],
        "https://files.example.com/s/1"
    );
    assert_eq!(
        recv_type(&mut sess, "progress", WAIT).0,
        json!({"type":"progress","questions_answered":2,"questions_total":5})
    );
    // Everything but the running clock and the invite URL (the port changes on restart).
    let stored_of = |srv: &Server| {
        let mut u = srv.user(uid);
        u.as_object_mut().unwrap().remove("session_timer");
        u.as_object_mut().unwrap().remove("invite_url");
        u
    };
    let stored = stored_of(&srv);

    let assert_repeats_are_acked_only = |agent: &mut Ws, what: &str| {
        // The same messages again, and a different one under a used id.
        let changed =
            json!({"type":"progress","user_id":uid,"questions_answered":4,"request_id":"p-1"});
        for m in [&progress, &transcript, &numbered, &changed] {
            send_json(agent, m);
            assert_eq!(recv_type(agent, "ack", WAIT).0, ack(m), "{what}: {m}");
        }
    };
    assert_repeats_are_acked_only(&mut agent, "same stream");
    live.assert_none("an update for a repeat", QUIET, |v| {
        v["type"] == "user_update"
    });
    assert_silent(
        &mut sess,
        Duration::from_millis(100),
        "no progress for a repeat",
    );
    assert_eq!(stored_of(&srv), stored, "a repeat changes nothing");

    // A new id sent twice back to back, and at once on a second agent stream, before any of
    // them can have been stored: applied once.
    let (mut agent2, _) = srv.agent(KEY);
    let twice =
        json!({"type":"progress","user_id":uid,"questions_answered":3,"request_id":"p-twice"});
    let text = tungstenite::Message::text(twice.to_string());
    agent.write(text.clone()).unwrap();
    agent.write(text.clone()).unwrap();
    agent.flush().unwrap();
    send_json(&mut agent2, &twice);
    for ws in [&mut agent, &mut agent2] {
        assert_eq!(recv_type(ws, "ack", WAIT).0, ack(&twice));
    }
    assert_eq!(recv_type(&mut agent, "ack", WAIT).0, ack(&twice));
    let ev = live.wait_for("the update", WAIT, |v| v["type"] == "user_update");
    assert_eq!(seq_of(&ev), start + 4);
    assert_eq!(ev["data"]["progress"], "3/5");
    live.assert_none("a second update", QUIET, |v| v["type"] == "user_update");
    assert_eq!(
        recv_type(&mut sess, "progress", WAIT).0,
        json!({"type":"progress","questions_answered":3,"questions_total":5})
    );
    assert_silent(&mut sess, QUIET, "one progress");
    let stored = stored_of(&srv);
    drop(agent2);

    // After a reconnect (an agent resending what it is not sure of).
    drop(agent);
    let (mut agent, _) = srv.agent(KEY);
    assert_repeats_are_acked_only(&mut agent, "after a reconnect");
    live.assert_none("an update for a repeat", QUIET, |v| {
        v["type"] == "user_update"
    });
    assert_eq!(
        stored_of(&srv),
        stored,
        "a repeat after a reconnect changes nothing"
    );
    drop(live);

    // The ids are kept with the data: a restart does not forget them.
    srv.restart();
    let (mut agent, _) = srv.agent(KEY);
    assert_repeats_are_acked_only(&mut agent, "after a restart");
    std::thread::sleep(QUIET);
    assert_eq!(
        srv.log_pos().seq,
        start + 4,
        "no event for a repeat after a restart"
    );
    assert_eq!(stored_of(&srv), stored);

    // A new id is applied.
    let fresh = json!({"type":"progress","user_id":uid,"questions_answered":4,"request_id":"p-2"});
    send_json(&mut agent, &fresh);
    assert_eq!(recv_type(&mut agent, "ack", WAIT).0, ack(&fresh));
    assert_eq!(srv.user(uid)["progress"], "4/5");
}

/// A resume from further back than the server keeps in memory (about 2,048 events) is read
/// from storage: the agent gets exactly the agent events it missed, numbered by their causes.
#[test]
fn an_agent_resume_from_far_back_gets_exactly_its_missed_events() {
    let srv = Server::start(&["--agent-key", KEY]);
    let a = srv.create_user("Ada", "Lovelace", Some(3));
    let b = srv.create_user("Grace", "Hopper", Some(3));
    let other = id_of(&srv.create_user("Admin", "Only", None));
    let (mut agent, init) = srv.agent(KEY);
    let pos = pos_of(&init);
    assert_eq!(pos.seq, 3);
    close_normal(&mut agent);
    drop(agent);

    assert_eq!(srv.activate(&invite_token(&a)).status, 200); // 4
    srv.patch_burst(other, 2500, "far"); // 5..=2504
    assert_eq!(srv.answer(&invite_token(&a)).status, 200); // 2505
    assert_eq!(srv.activate(&invite_token(&b)).status, 200); // 2506

    let (mut agent, first) = srv.agent_open(KEY, &pos.query());
    assert_eq!(first["type"], "resumed", "{first}");
    assert_eq!(pos_of(&first), pos);
    let got = recv_events(&mut agent, 3, WAIT);
    let kinds: Vec<(&str, u64)> = got
        .iter()
        .map(|e| (e["type"].as_str().unwrap(), seq_of(e)))
        .collect();
    assert_eq!(
        kinds,
        [
            ("session_started", 4),
            ("progress", 2505),
            ("session_started", 2506)
        ]
    );
    assert_eq!(got[0]["data"]["id"], a["id"]);
    assert_eq!(
        got[1],
        json!({"type":"progress","seq":2505,"user_id":a["id"],"questions_answered":1,"questions_total":3})
    );
    assert_eq!(got[2]["data"]["id"], b["id"]);
    assert_silent(&mut agent, QUIET, "only the agent events");
}
