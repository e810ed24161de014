//! RFC 6455 on the wire, with raw bytes: the upgrade request and the 101 answer, bytes sent
//! right behind the handshake, fragmentation, the close handshake, the 64 KiB message limit and
//! every frame-level violation with its close code (1002 protocol error, 1007 invalid UTF-8,
//! 1009 too big), after which the server reads at most 64 KiB more and drops the connection.
//! Uses the real admin stream and the conformance echo endpoint (same handshake and frame
//! code); the cases that attack a stream end with `assert_serving`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use tungstenite::protocol::frame::coding::{Data, OpCode};
use tungstenite::protocol::frame::Frame;
use tungstenite::Message;

const ECHO: &str = "/echo";

fn echo_server() -> Server {
    Server::start(&["--echo-path", ECHO])
}

fn echo(srv: &Server) -> RawWs {
    let (ws, head) = srv.raw_ws(ECHO, &[], &[]);
    assert_eq!(head.status, 101);
    ws
}

// =============================================================================================
// Handshake
// =============================================================================================
#[test]
fn handshake_answer_is_rfc6455() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let (mut ws, head) = srv.raw_ws("/admin/stream", &[("Cookie", &c)], &[]);
    assert_eq!(head.status, 101);
    // RFC 6455 section 1.3 sample key/accept pair.
    assert_eq!(
        head.header("Sec-WebSocket-Accept"),
        Some("s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
    );
    assert!(head
        .header("Upgrade")
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket")));
    assert!(head
        .header("Connection")
        .is_some_and(|v| v.to_ascii_lowercase().contains("upgrade")));
    let f = ws.read_frame(WAIT).expect("initial frame");
    assert_eq!((f.fin, f.rsv, f.opcode, f.masked), (true, 0, 1, false));
    let v: serde_json::Value = serde_json::from_slice(&f.payload).unwrap();
    assert_eq!(v["type"], "initial");
}

#[test]
fn bad_websocket_upgrades_are_refused() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let host = srv.addr.to_string();
    let cookie = srv.admin_cookie();
    let up = |key: Option<&str>, version: Option<&str>| {
        let mut r = format!(
            "GET /admin/stream HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
        );
        if let Some(k) = key {
            r.push_str(&format!("Sec-WebSocket-Key: {k}\r\n"));
        }
        if let Some(v) = version {
            r.push_str(&format!("Sec-WebSocket-Version: {v}\r\n"));
        }
        r.push_str("\r\n");
        r.into_bytes()
    };
    let good = "dGhlIHNhbXBsZSBub25jZQ==";
    assert_refused_and_closed(
        &srv,
        &up(None, Some("13")),
        &[400],
        "missing Sec-WebSocket-Key",
    );
    assert_refused_and_closed(&srv, &up(Some(""), Some("13")), &[400], "empty key");
    assert_refused_and_closed(
        &srv,
        &up(Some("not base64 at all!!"), Some("13")),
        &[400],
        "non-base64 key",
    );
    assert_refused_and_closed(
        &srv,
        &up(Some("dGVzdA=="), Some("13")),
        &[400],
        "key of 4 bytes instead of 16",
    );
    let st = assert_refused_and_closed(&srv, &up(Some(good), Some("8")), &[426], "version 8");
    assert_eq!(st, 426);
    let (_, r) = raw_exchange(&srv, &up(Some(good), Some("8")));
    assert_eq!(
        r.header("Sec-WebSocket-Version"),
        Some("13"),
        "426 must name the supported version"
    );
    assert_refused_and_closed(
        &srv,
        &up(Some(good), Some("banana")),
        &[426, 400],
        "version banana",
    );
    assert_refused_and_closed(&srv, &up(Some(good), None), &[426, 400], "no version");
    // A stream path requested as plain HTTP.
    let plain = format!("GET /admin/stream HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\n\r\n");
    assert_refused_and_closed(
        &srv,
        plain.as_bytes(),
        &[400, 426],
        "stream path without Upgrade",
    );
    // An upgrade that is not a GET.
    let post = format!(
        "POST /admin/stream HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: {good}\r\nContent-Length: 0\r\n\r\n"
    );
    let (_, r) = raw_exchange(&srv, post.as_bytes());
    assert!(
        (400..500).contains(&r.status),
        "POST upgrade: status {}",
        r.status
    );
    assert_serving(&srv, &live, "bad upgrades");
}

#[test]
fn upgrade_after_a_keep_alive_request_on_the_same_connection() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let mut conn = srv.http();
    let r = conn.send("GET", "/healthz", &[], None).unwrap();
    assert_eq!(r.status, 200);
    let stream = conn.reader.into_inner();
    let mut ws = ws_handshake(stream, &srv.ws_url("/admin/stream"), &[("Cookie", &c)])
        .expect("upgrade on a reused connection");
    assert_eq!(recv_json(&mut ws, WAIT)["type"], "initial");
}

#[test]
fn unknown_stream_path_is_404() {
    let srv = Server::start(&[]);
    let (_ws, head) = srv.raw_ws("/no/such/stream", &[], &[]);
    assert_eq!(head.status, 404);
}

#[test]
fn bytes_right_behind_the_handshake_are_not_lost() {
    let srv = echo_server();
    let mut extra = encode_frame(true, 0, 9, b"early-ping", Some(MASK));
    extra.extend(encode_frame(true, 0, 1, b"early-text", Some(MASK)));
    let (mut ws, head) = srv.raw_ws(ECHO, &[], &extra);
    assert_eq!(head.status, 101);
    let f = ws.read_frame(WAIT).expect("pong");
    assert_eq!((f.opcode, f.payload.as_slice()), (10, &b"early-ping"[..]));
    let f = ws.read_frame(WAIT).expect("echo");
    assert_eq!((f.opcode, f.payload.as_slice()), (1, &b"early-text"[..]));

    // Same on a real stream: a ping glued to the admin handshake is answered.
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let extra = encode_frame(true, 0, 9, b"glued", Some(MASK));
    let (mut ws, head) = srv.raw_ws("/admin/stream", &[("Cookie", &c)], &extra);
    assert_eq!(head.status, 101);
    let mut got_pong = false;
    for _ in 0..3 {
        let f = ws.read_frame(WAIT).expect("frame");
        if f.opcode == 10 {
            assert_eq!(f.payload, b"glued");
            got_pong = true;
            break;
        }
    }
    assert!(got_pong, "no pong for a ping sent with the handshake");
}

// =============================================================================================
// Messages, fragments and the close handshake
// =============================================================================================

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

#[test]
fn fragmented_message_with_interleaved_ping() {
    let srv = echo_server();
    let mut ws = echo(&srv);
    ws.send(false, 1, b"hel").unwrap();
    ws.send(true, 9, b"mid").unwrap();
    ws.send(false, 0, b"lo ").unwrap();
    ws.send(true, 0, "wörld".as_bytes()).unwrap();
    let f = ws.read_frame(WAIT).unwrap();
    assert_eq!((f.opcode, f.payload.as_slice()), (10, &b"mid"[..]));
    // The echo may be fragmented too: reassemble.
    let mut msg = Vec::new();
    let mut first = true;
    loop {
        let f = ws.read_frame(WAIT).unwrap();
        assert!(!f.masked, "server frames are unmasked");
        assert_eq!(f.opcode, if first { 1 } else { 0 });
        first = false;
        msg.extend(f.payload);
        if f.fin {
            break;
        }
    }
    assert_eq!(String::from_utf8(msg).unwrap(), "hello wörld");
}

#[test]
fn close_handshake() {
    let srv = echo_server();
    // Normal close with a reason: echoed code, then TCP end.
    let mut ws = echo(&srv);
    let mut p = 1000u16.to_be_bytes().to_vec();
    p.extend_from_slice(b"bye");
    ws.send(true, 8, &p).unwrap();
    let (code, _) = ws.read_close(WAIT);
    assert_eq!(code, 1000);
    assert!(ws.ends_within(WAIT), "TCP closed after the close handshake");

    // Empty close payload is legal; the answer carries no code or 1000.
    let mut ws = echo(&srv);
    ws.send(true, 8, b"").unwrap();
    let f = ws.read_frame(WAIT).expect("close answer");
    assert_eq!(f.opcode, 8);
    assert!(
        f.payload.is_empty() || f.close_code().map(|c| c.0) == Some(1000),
        "answer to an empty close: {f:?}"
    );
    // A 1-byte close payload and reserved codes: see other_protocol_violations_are_closed_1002.
}

#[test]
fn message_size_boundary_on_a_stream() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    // Exactly 64 KiB: accepted (the connection keeps working).
    let (mut ws, _) = srv.raw_ws("/admin/stream", &[("Cookie", &c)], &[]);
    ws.read_frame(WAIT).expect("initial");
    ws.read_frame(WAIT).expect("presence");
    let prefix = br#"{"type":"pong","pad":""#;
    let suffix = br#""}"#;
    let pad = 64 * 1024 - prefix.len() - suffix.len();
    let mut msg = prefix.to_vec();
    msg.extend(std::iter::repeat_n(b'x', pad));
    msg.extend_from_slice(suffix);
    assert_eq!(msg.len(), 65536);
    ws.send(true, 1, &msg).unwrap();
    ws.send(true, 9, b"still-there").unwrap();
    // Text frames (presence news) may come first; the pong must come.
    let f = loop {
        let f = ws.read_frame(WAIT).expect("pong after a 64 KiB message");
        if f.opcode != 1 {
            break f;
        }
    };
    assert_eq!(
        (f.opcode, f.payload.as_slice()),
        (10, &b"still-there"[..]),
        "64 KiB message accepted"
    );
    // One byte more: 1009.
    let (mut ws, _) = srv.raw_ws("/admin/stream", &[("Cookie", &c)], &[]);
    ws.read_frame(WAIT).expect("initial");
    msg.insert(prefix.len(), b'x');
    assert_eq!(msg.len(), 65537);
    let _ = ws.send(true, 1, &msg);
    let (code, _) = ws.read_close(WAIT);
    assert_eq!(code, 1009, "65537-byte message");
}

#[test]
fn oversized_fragmented_ws_message_is_closed_1009() {
    // 70 KiB split into 10 KiB fragments: the limit is on the message, not the frame.
    let srv = Server::start(&["--agent-key", AGENT_KEY]);
    let mut ws = srv.agent(AGENT_KEY).0;
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

/// Issue 12, item 16: a 64 MiB message sent as 1,024 fragments of 64 KiB was closed 1009, but
/// the server kept reading until it had swallowed all 64 MiB. After failing a connection it
/// reads at most 64 KiB more and drops it within 2 s: the sender's writes fail.
#[test]
fn a_failed_connection_is_not_read_to_the_end() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let mut ws = raw_admin(&srv);
    let writer = ws.s.try_clone().unwrap();
    socket2::SockRef::from(&writer)
        .set_send_buffer_size(64 * 1024)
        .unwrap();
    let sender = std::thread::spawn(move || {
        let mut writer = writer;
        let chunk = vec![b'x'; 64 * 1024];
        let first = encode_frame(false, 0, 1, &chunk, Some(MASK));
        let rest = encode_frame(false, 0, 0, &chunk, Some(MASK));
        let mut sent = 0usize;
        for i in 0..1024 {
            let f = if i == 0 { &first } else { &rest };
            if std::io::Write::write_all(&mut writer, f).is_err() {
                return (sent, Instant::now(), true);
            }
            sent += f.len();
        }
        (sent, Instant::now(), false)
    });
    let (code, _) = ws.read_close(WAIT);
    let closed_at = Instant::now();
    assert_eq!(code, 1009, "a message past 64 KiB");
    let (sent, ended_at, failed) = sender.join().unwrap();
    let after = ended_at.saturating_duration_since(closed_at);
    eprintln!(
        "{} KiB written before the server dropped the connection, {after:?} after its close frame",
        sent / 1024
    );
    assert!(
        failed,
        "all 64 MiB were taken: the server read on after failing the connection"
    );
    assert!(sent < 32 << 20, "{} MiB were taken", sent >> 20);
    assert!(
        after < Duration::from_secs(3),
        "dropped {after:?} after the close frame"
    );
    assert_serving(&srv, &live, "64 MiB in fragments");
}

// =============================================================================================
// Violations
// =============================================================================================

#[test]
fn unmasked_client_frame_is_closed_1002() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let mut ws = raw_admin(&srv);
    ws.send_raw(&encode_frame(true, 0, 1, br#"{"type":"pong"}"#, None))
        .unwrap();
    assert_ws_closed_with(&mut ws, 1002, "unmasked text frame");
    assert_serving(&srv, &live, "unmasked frame");
}

#[test]
fn invalid_utf8_text_is_closed_1007() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let mut ws = raw_admin(&srv);
    ws.send(true, 1, b"{\"type\":\"\xff\xfe\"}").unwrap();
    assert_ws_closed_with(&mut ws, 1007, "invalid UTF-8 in one frame");
    // UTF-8 broken across fragments: "€" is E2 82 AC; send E2 82 then an invalid '('.
    let mut ws = raw_admin(&srv);
    ws.send(false, 1, b"\"\xe2\x82").unwrap();
    ws.send(true, 0, b"(\"").unwrap();
    assert_ws_closed_with(&mut ws, 1007, "invalid UTF-8 across fragments");
    // Overlong encoding and a UTF-16 surrogate encoded as UTF-8.
    let mut ws = raw_admin(&srv);
    ws.send(true, 1, b"\xc0\xaf").unwrap();
    assert_ws_closed_with(&mut ws, 1007, "overlong UTF-8");
    let mut ws = raw_admin(&srv);
    ws.send(true, 1, b"\xed\xa0\x80").unwrap();
    assert_ws_closed_with(&mut ws, 1007, "surrogate in UTF-8");
    assert_serving(&srv, &live, "invalid UTF-8");
}

#[test]
fn one_gib_frame_header_is_closed_1009_at_once() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let rss_before = vm_rss_kib(srv.pid());
    for opcode in [1u8, 2] {
        let mut ws = raw_admin(&srv);
        // FIN + opcode, MASK + 127, 64-bit length 1 GiB, mask key — and no payload at all.
        let mut head = vec![0x80 | opcode, 0x80 | 127];
        head.extend_from_slice(&(1u64 << 30).to_be_bytes());
        head.extend_from_slice(&MASK);
        ws.send_raw(&head).unwrap();
        let t = Instant::now();
        let (code, reason) = ws.read_close(Duration::from_secs(2));
        let took = t.elapsed();
        assert_eq!(
            code, 1009,
            "1 GiB frame (opcode {opcode}): close code ({reason:?})"
        );
        assert!(took < Duration::from_secs(1), "close came after {took:?}");
        let _ = ws.send(true, 8, &1000u16.to_be_bytes());
        assert!(ws.ends_within(Duration::from_secs(4)), "TCP still open");
    }
    // A 2^63-1 length (the largest legal) and one with the most significant bit set (illegal).
    for len in [u64::MAX >> 1, u64::MAX] {
        let mut ws = raw_admin(&srv);
        let mut head = vec![0x81, 0x80 | 127];
        head.extend_from_slice(&len.to_be_bytes());
        head.extend_from_slice(&MASK);
        ws.send_raw(&head).unwrap();
        let (code, reason) = ws.read_close(Duration::from_secs(2));
        assert!(
            code == 1009 || code == 1002,
            "length {len:#x}: close {code} {reason:?}"
        );
    }
    let rss_after = vm_rss_kib(srv.pid());
    assert!(
        rss_after < rss_before + 64 * 1024,
        "RSS grew from {rss_before} KiB to {rss_after} KiB"
    );
    assert_serving(&srv, &live, "1 GiB frame header");
}

#[test]
fn fragmented_control_frames_are_closed_1002() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let mut ws = raw_admin(&srv);
    ws.send(false, 9, b"ping-part").unwrap();
    assert_ws_closed_with(&mut ws, 1002, "ping without FIN");
    let mut ws = raw_admin(&srv);
    ws.send(false, 8, &1000u16.to_be_bytes()).unwrap();
    assert_ws_closed_with(&mut ws, 1002, "close without FIN");
    let mut ws = raw_admin(&srv);
    ws.send(false, 10, b"pong-part").unwrap();
    assert_ws_closed_with(&mut ws, 1002, "pong without FIN");
    // A ping between the fragments of a message is legal: fragmented_message_with_interleaved_ping.
    assert_serving(&srv, &live, "fragmented control frames");
}

#[test]
fn other_protocol_violations_are_closed_1002() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        (
            "control frame over 125 bytes",
            encode_frame(true, 0, 9, &[7u8; 126], Some(MASK)),
        ),
        (
            "RSV1 without an extension",
            encode_frame(true, 4, 1, b"{}", Some(MASK)),
        ),
        (
            "reserved opcode 3",
            encode_frame(true, 0, 3, b"x", Some(MASK)),
        ),
        (
            "reserved opcode 11",
            encode_frame(true, 0, 11, b"x", Some(MASK)),
        ),
        (
            "continuation with nothing to continue",
            encode_frame(true, 0, 0, b"x", Some(MASK)),
        ),
        (
            "new text frame inside a fragmented one",
            [
                encode_frame(false, 0, 1, b"\"a", Some(MASK)),
                encode_frame(true, 0, 1, b"b\"", Some(MASK)),
            ]
            .concat(),
        ),
        (
            "close code 1005 on the wire",
            encode_frame(true, 0, 8, &1005u16.to_be_bytes(), Some(MASK)),
        ),
        (
            "close code 999",
            encode_frame(true, 0, 8, &999u16.to_be_bytes(), Some(MASK)),
        ),
        (
            "close with a 1-byte payload",
            encode_frame(true, 0, 8, &[3], Some(MASK)),
        ),
    ];
    for (what, bytes) in cases {
        let mut ws = raw_admin(&srv);
        ws.send_raw(&bytes).unwrap();
        assert_ws_closed_with(&mut ws, 1002, what);
    }
    // Invalid UTF-8 in a close reason.
    let mut ws = raw_admin(&srv);
    let mut p = 1000u16.to_be_bytes().to_vec();
    p.extend_from_slice(b"\xff");
    ws.send(true, 8, &p).unwrap();
    let (code, _) = ws.read_close(WAIT);
    assert!(
        code == 1007 || code == 1002,
        "close reason not UTF-8: {code}"
    );
    assert_serving(&srv, &live, "protocol violations");
}

/// The cap holds across fragments from the header on: a continuation frame announcing more
/// than the message has room for is refused 1009 at once, not after its whole payload came
/// (a client could stall there, holding the server's read buffer, until its heartbeat ran out).
#[test]
fn a_continuation_header_past_the_message_cap_is_closed_1009_at_once() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let mut ws = raw_admin(&srv);
    ws.send(false, 1, &vec![b'a'; 40_000]).unwrap();
    // A continuation of 30,000 bytes (70,000 in all, past 64 KiB): its header, no payload.
    let mut head = vec![0x80, 0x80 | 126];
    head.extend_from_slice(&30_000u16.to_be_bytes());
    head.extend_from_slice(&MASK);
    ws.send_raw(&head).unwrap();
    let t = Instant::now();
    let (code, reason) = ws.read_close(Duration::from_secs(3));
    assert_eq!(code, 1009, "close code ({reason:?})");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "close came after {:?}",
        t.elapsed()
    );
    // A ping between fragments still fits however little room the message has left.
    let mut ws = raw_admin(&srv);
    ws.send(false, 1, &vec![b'a'; 65_500]).unwrap();
    ws.send(true, 9, b"ping payload longer than the room left")
        .unwrap();
    let until = Instant::now() + Duration::from_secs(3);
    loop {
        let left = until.saturating_duration_since(Instant::now());
        let f = ws.read_frame(left).expect("a pong");
        match f.opcode {
            10 => break,
            1 => continue, // presence, ping
            _ => panic!("{f:?}"),
        }
    }
    assert_serving(&srv, &live, "continuation past the cap");
}
