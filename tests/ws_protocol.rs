//! RFC 6455 on the wire, with raw bytes: the 101 answer, bytes sent right behind the
//! handshake, masking, framing violations and close codes. Uses the real admin stream and the
//! conformance echo endpoint (same handshake and frame code).

mod common;

use std::time::Duration;

use common::*;

const ECHO: &str = "/echo";

fn echo_server() -> Server {
    Server::start(&["--echo-path", ECHO])
}

fn echo(srv: &Server) -> RawWs {
    let (ws, head) = srv.raw_ws(ECHO, &[], &[]);
    assert_eq!(head.status, 101);
    ws
}

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

fn expect_protocol_close(bytes: Vec<u8>, want: u16, what: &str) {
    let srv = echo_server();
    let mut ws = echo(&srv);
    let _ = ws.send_raw(&bytes);
    let (code, _) = ws.read_close(WAIT);
    assert_eq!(code, want, "{what}");
    // Answer the close like a client would; the server then ends the TCP connection.
    let _ = ws.send(true, 8, &code.to_be_bytes());
    assert!(
        ws.ends_within(WAIT),
        "{what}: TCP closed after the close handshake"
    );
}

#[test]
fn unmasked_client_frame_is_1002() {
    expect_protocol_close(
        encode_frame(true, 0, 1, b"hi", None),
        1002,
        "unmasked frame",
    );
}

#[test]
fn reserved_bits_are_1002() {
    expect_protocol_close(
        encode_frame(true, 4, 1, b"hi", Some(MASK)),
        1002,
        "RSV1 without extension",
    );
}

#[test]
fn reserved_opcode_is_1002() {
    expect_protocol_close(
        encode_frame(true, 0, 3, b"hi", Some(MASK)),
        1002,
        "opcode 3",
    );
    expect_protocol_close(
        encode_frame(true, 0, 0xB, b"", Some(MASK)),
        1002,
        "opcode 0xB",
    );
}

#[test]
fn continuation_without_start_is_1002() {
    expect_protocol_close(
        encode_frame(true, 0, 0, b"orphan", Some(MASK)),
        1002,
        "orphan continuation",
    );
}

#[test]
fn new_message_inside_a_fragmented_one_is_1002() {
    let mut b = encode_frame(false, 0, 1, b"a", Some(MASK));
    b.extend(encode_frame(true, 0, 1, b"b", Some(MASK)));
    expect_protocol_close(b, 1002, "text frame while a fragmented message is open");
}

#[test]
fn fragmented_or_long_control_frame_is_1002() {
    expect_protocol_close(
        encode_frame(false, 0, 9, b"x", Some(MASK)),
        1002,
        "fragmented ping",
    );
    expect_protocol_close(
        encode_frame(true, 0, 9, &[b'p'; 126], Some(MASK)),
        1002,
        "ping with 126-byte payload",
    );
}

#[test]
fn invalid_utf8_text_is_1007() {
    expect_protocol_close(
        encode_frame(true, 0, 1, &[0xff, 0xfe, 0x41], Some(MASK)),
        1007,
        "invalid UTF-8 text",
    );
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

    // A 1-byte close payload and a reserved code are protocol errors.
    for (payload, what) in [
        (vec![0x03], "1-byte close payload"),
        (
            1005u16.to_be_bytes().to_vec(),
            "close code 1005 on the wire",
        ),
        (999u16.to_be_bytes().to_vec(), "close code 999"),
    ] {
        let mut ws = echo(&srv);
        ws.send(true, 8, &payload).unwrap();
        let (code, _) = ws.read_close(WAIT);
        assert_eq!(code, 1002, "{what}");
    }
}

#[test]
fn huge_announced_frame_on_a_stream_is_1009_from_its_header() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let (mut ws, head) = srv.raw_ws("/admin/stream", &[("Cookie", &c)], &[]);
    assert_eq!(head.status, 101);
    // Header announcing 1 GiB, then nothing: the server must not wait for the payload.
    let mut h = vec![0x81u8, 0x80 | 127];
    h.extend_from_slice(&(1u64 << 30).to_be_bytes());
    h.extend_from_slice(&MASK);
    ws.send_raw(&h).unwrap();
    let (code, _) = ws.read_close(Duration::from_secs(3));
    assert_eq!(code, 1009);
}

#[test]
fn message_size_boundary_on_a_stream() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    // Exactly 64 KiB: accepted (the connection keeps working).
    let (mut ws, _) = srv.raw_ws("/admin/stream", &[("Cookie", &c)], &[]);
    ws.read_frame(WAIT).expect("initial");
    let prefix = br#"{"type":"pong","pad":""#;
    let suffix = br#""}"#;
    let pad = 64 * 1024 - prefix.len() - suffix.len();
    let mut msg = prefix.to_vec();
    msg.extend(std::iter::repeat_n(b'x', pad));
    msg.extend_from_slice(suffix);
    assert_eq!(msg.len(), 65536);
    ws.send(true, 1, &msg).unwrap();
    ws.send(true, 9, b"still-there").unwrap();
    let f = ws.read_frame(WAIT).expect("pong after a 64 KiB message");
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
