//! WebSocket limits and handshake refusal: message size, Origin, unauthorized handshakes,
//! the conformance echo endpoint.

mod common;

use common::*;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

#[test]
fn oversized_ws_message_is_closed_1009() {
    let srv = Server::start(&[]);
    let (mut ws, _) = srv.admin_ws(&srv.admin_cookie());
    let big = "x".repeat(70 * 1024);
    ws.send(Message::text(format!(
        "{{\"type\":\"pong\",\"pad\":\"{big}\"}}"
    )))
    .unwrap();
    let (code, _) = expect_close(&mut ws, WAIT);
    assert_eq!(code, 1009, "message over 64 KiB");
}

#[test]
fn oversized_fragmented_ws_message_is_closed_1009() {
    // 70 KiB split into 10 KiB fragments: the limit is on the message, not the frame.
    let srv = Server::start(&["--agent-key", "k-123"]);
    let mut ws = srv.agent_ws("k-123").unwrap();
    let chunk = "y".repeat(10 * 1024);
    for i in 0..7 {
        let op = OpCode::Data(if i == 0 { Data::Text } else { Data::Continue });
        let f = Frame::message(chunk.clone().into_bytes(), op, i == 6);
        // The server may close before the last fragments; ignore write errors.
        if ws.send(Message::Frame(f)).is_err() {
            break;
        }
    }
    let (code, _) = expect_close(&mut ws, WAIT);
    assert_eq!(code, 1009, "fragmented message over 64 KiB");
}

#[test]
fn cross_origin_is_refused_even_with_valid_cookie() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    for origin in [
        "http://evil.example.com",
        "null",
        "http://127.0.0.1:1",
        "https://127.0.0.1",
    ] {
        let how = assert_refused(
            srv.ws_connect("/admin/stream", Some(&c), Some(origin)),
            &format!("Origin {origin}"),
        );
        eprintln!("Origin {origin}: refused ({how})");
    }
    // Same origin and no Origin are fine.
    let own = srv.origin();
    let mut ws = srv
        .ws_connect("/admin/stream", Some(&c), Some(&own))
        .expect("same-origin handshake");
    assert_eq!(recv_json(&mut ws, WAIT)["type"], "initial");
    let mut ws = srv
        .ws_connect("/admin/stream", Some(&c), None)
        .expect("no-Origin handshake");
    assert_eq!(recv_json(&mut ws, WAIT)["type"], "initial");
}

#[test]
fn cross_origin_session_stream_is_refused() {
    let srv = Server::start(&[]);
    let s = srv.started_session(3);
    let cookie = format!("session_token={}", s.cookie);
    assert_refused(
        srv.ws_connect(
            &format!("/session/{}/stream", s.session_id),
            Some(&cookie),
            Some("http://evil.example.com"),
        ),
        "cross-origin session stream",
    );
    let mut ws = srv
        .ws_connect(
            &format!("/session/{}/stream", s.session_id),
            Some(&cookie),
            Some(&srv.origin()),
        )
        .unwrap();
    assert_eq!(recv_json(&mut ws, WAIT)["type"], "time_update");
}

#[test]
fn public_url_is_the_allowed_origin() {
    let srv = Server::start(&["--public-url", "https://interviews.example.com"]);
    let c = srv.admin_cookie();
    let mut ws = srv
        .ws_connect(
            "/admin/stream",
            Some(&c),
            Some("https://interviews.example.com"),
        )
        .expect("public-url origin handshake");
    assert_eq!(recv_json(&mut ws, WAIT)["type"], "initial");
    assert_refused(
        srv.ws_connect("/admin/stream", Some(&c), Some("https://evil.example.com")),
        "foreign origin with --public-url",
    );
}

#[test]
fn unauthorized_admin_handshake_is_closed_1008() {
    let srv = Server::start(&[]);
    assert_closed_1008(
        srv.ws_connect("/admin/stream", None, None),
        "Unauthorized",
        "no cookie",
    );
    assert_closed_1008(
        srv.ws_connect("/admin/stream", Some("admin_session=bogus"), None),
        "Unauthorized",
        "bogus cookie",
    );
    let s = srv.started_session(2);
    assert_closed_1008(
        srv.ws_connect(
            "/admin/stream",
            Some(&format!("session_token={}", s.cookie)),
            None,
        ),
        "Unauthorized",
        "invitee cookie on the admin stream",
    );
    srv.wait_metric(
        "catalytic_ws_closed_total",
        &[("reason", "unauthorized")],
        WAIT,
        |v| v >= 3.0,
    );
    assert_eq!(
        srv.metric("catalytic_ws_connections", &[("stream", "admin")]),
        0.0
    );
}

#[test]
fn bad_upgrade_requests_are_http_errors() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    // Wrong WebSocket version.
    let mut conn = srv.http();
    let r = conn
        .send(
            "GET",
            "/admin/stream",
            &[
                ("Cookie", &c),
                ("Connection", "Upgrade"),
                ("Upgrade", "websocket"),
                ("Sec-WebSocket-Version", "8"),
                ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ],
            None,
        )
        .unwrap();
    assert!(
        (400..500).contains(&r.status) && r.status != 404,
        "bad version: {}",
        r.status
    );
    // Missing key.
    let r = srv.request(
        "GET",
        "/admin/stream",
        &[
            ("Cookie", &c),
            ("Connection", "Upgrade"),
            ("Upgrade", "websocket"),
            ("Sec-WebSocket-Version", "13"),
        ],
        None,
    );
    assert!((400..500).contains(&r.status), "missing key: {}", r.status);
    assert_eq!(srv.get("/healthz", None).status, 200);
}

#[test]
fn echo_endpoint_round_trips_text_and_binary() {
    let srv = Server::start(&["--echo-path", "/echo"]);
    let mut ws = srv.ws_with("/echo", &[]).expect("echo handshake");
    ws.send(Message::text("hello")).unwrap();
    ws.send(Message::binary(vec![0u8, 1, 2, 255])).unwrap();
    // Larger than the per-connection input backlog: a regression test for a livelock.
    let big = vec![7u8; 8 * 1024 * 1024];
    ws.send(Message::binary(big.clone())).unwrap();
    match next_event(&mut ws, WAIT, false) {
        Some(WsEvent::Text(t)) => assert_eq!(t, "hello"),
        other => panic!("echo text: {other:?}"),
    }
    match next_event(&mut ws, WAIT, false) {
        Some(WsEvent::Binary(b)) => assert_eq!(b, vec![0u8, 1, 2, 255]),
        other => panic!("echo binary: {other:?}"),
    }
    match next_event(&mut ws, WAIT, false) {
        Some(WsEvent::Binary(b)) => assert!(b == big, "8 MiB echo differs"),
        other => panic!("echo 8 MiB: {other:?}"),
    }
    // Not enabled by default.
    let srv2 = Server::start(&[]);
    let r = srv2.ws_with("/echo", &[]);
    assert!(r.is_err(), "no echo endpoint without --echo-path");
}
