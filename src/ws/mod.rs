//! RFC 6455 on the server side, in two layers, both pure (no sockets, no clock):
//!
//! * this file — the upgrade answer, client frame decoding (`parse_frame`) and server frame
//!   encoding. Header parsing and formatting are tungstenite's frame layer; this file adds the
//!   per-frame rules a server must enforce (masking, reserved bits and opcodes, control-frame
//!   limits, the frame size cap), each mapped to the close code the RFC names;
//! * [`message`] — the message layer above it: a [`MessageReader`] per stream turns decoded
//!   frames into whole messages, pings, pongs, close echoes and violations (fragment assembly,
//!   the size cap across fragments, UTF-8 of text, close-code validity).
//!
//! The reactor decodes a frame here, hands it to the stream's reader and acts on what comes out.

use crate::http::{Request, Response};
use std::io::Cursor;
use tungstenite::protocol::frame::coding::{Control, Data, OpCode};
use tungstenite::protocol::frame::FrameHeader;

pub mod message;
pub use message::{check_close_payload, Event, Kind, MessageReader};

/// Close codes used by the server.
pub mod code {
    pub const NORMAL: u16 = 1000;
    pub const GOING_AWAY: u16 = 1001;
    pub const PROTOCOL_ERROR: u16 = 1002;
    pub const INVALID_PAYLOAD: u16 = 1007;
    pub const POLICY: u16 = 1008;
    pub const TOO_BIG: u16 = 1009;
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

pub const OP_CONTINUATION: u8 = 0x0;
pub const OP_TEXT: u8 = 0x1;
pub const OP_BINARY: u8 = 0x2;
pub const OP_CLOSE: u8 = 0x8;
pub const OP_PING: u8 = 0x9;
pub const OP_PONG: u8 = 0xA;

/// Why a handshake is refused before the 101.
#[derive(Debug, PartialEq, Eq)]
pub enum HandshakeError {
    NotUpgrade,
    BadVersion,
    BadKey,
    CrossOrigin,
}

impl HandshakeError {
    pub fn response(&self) -> Response {
        match self {
            HandshakeError::NotUpgrade => {
                Response::error(400, "this endpoint is a WebSocket; send an Upgrade request")
            }
            HandshakeError::BadVersion => Response::error(426, "Sec-WebSocket-Version must be 13")
                .header("Sec-WebSocket-Version", "13"),
            HandshakeError::BadKey => Response::error(400, "missing or invalid Sec-WebSocket-Key"),
            HandshakeError::CrossOrigin => {
                Response::error(403, "cross-origin WebSocket handshake refused")
            }
        }
    }
}

/// Check an upgrade request and build the 101 answer. `own_origins` are the origins the server
/// answers as, normalised (`http::normalize_origin`; the reactor passes exactly one: the
/// public URL's, or `http://<Host>` without one); an `Origin` header that does not normalise to
/// one of them — another site, another port, the plain-`http` twin of an `https` deployment —
/// is a cross-site WebSocket hijacking attempt and is refused even with a valid cookie.
pub fn accept(req: &Request, own_origins: &[&str]) -> Result<Vec<u8>, HandshakeError> {
    if !req.wants_websocket || req.method() != crate::http::Method::Get {
        return Err(HandshakeError::NotUpgrade);
    }
    if req.ws_version.as_deref() != Some("13") {
        return Err(HandshakeError::BadVersion);
    }
    let key = req.ws_key.as_deref().unwrap_or("");
    if !valid_key(key) {
        return Err(HandshakeError::BadKey);
    }
    if let Some(origin) = req.origin.as_deref() {
        let origin = crate::http::normalize_origin(origin);
        if !own_origins.iter().any(|o| origin.as_deref() == Some(*o)) {
            return Err(HandshakeError::CrossOrigin);
        }
    }
    let accept = tungstenite::handshake::derive_accept_key(key.as_bytes());
    Ok(format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    )
    .into_bytes())
}

/// A key is the base64 form of 16 bytes: 22 characters and `==`.
fn valid_key(key: &str) -> bool {
    let b = key.as_bytes();
    b.len() == 24
        && b[22..] == *b"=="
        && b[..22]
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || *c == b'+' || *c == b'/')
}

/// A server frame (never masked), ready to write.
pub fn frame(opcode: u8, payload: &[u8]) -> Vec<u8> {
    let header = FrameHeader {
        is_final: true,
        opcode: OpCode::from(opcode),
        ..FrameHeader::default()
    };
    let mut out = Vec::with_capacity(payload.len() + 10);
    // Writing into a Vec cannot fail.
    let _ = header.format(payload.len() as u64, &mut out);
    out.extend_from_slice(payload);
    out
}

pub fn text_frame(payload: &[u8]) -> Vec<u8> {
    frame(OP_TEXT, payload)
}

pub fn close_frame(code: u16, reason: &str) -> Vec<u8> {
    let mut p = Vec::with_capacity(2 + reason.len());
    p.extend_from_slice(&code.to_be_bytes());
    p.extend_from_slice(reason.as_bytes());
    frame(OP_CLOSE, &p)
}

/// A protocol violation: close with `code` and `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Violation {
    pub code: u16,
    pub reason: &'static str,
}

const fn violation(code: u16, reason: &'static str) -> Violation {
    Violation { code, reason }
}

/// One client frame, payload unmasked in place.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame<'a> {
    pub fin: bool,
    pub opcode: u8,
    pub payload: &'a [u8],
}

#[derive(Debug, PartialEq, Eq)]
pub enum FrameParse<'a> {
    Partial,
    /// A frame and how many bytes of the buffer it took.
    Frame(Frame<'a>, usize),
    Invalid(Violation),
}

/// Decode one client frame from the front of `buf`. Refuses a data frame announcing more than
/// `max_payload` bytes (control frames have their own 125) as soon as its header is in, without
/// waiting for (or buffering) the payload.
pub fn parse_frame(buf: &mut [u8], max_payload: usize) -> FrameParse<'_> {
    let mut cursor = Cursor::new(&buf[..]);
    let (header, len) = match FrameHeader::parse(&mut cursor) {
        Ok(Some(h)) => h,
        Ok(None) => return FrameParse::Partial,
        Err(_) => {
            return FrameParse::Invalid(violation(code::PROTOCOL_ERROR, "invalid frame header"))
        }
    };
    let header_len = cursor.position() as usize;
    if header.rsv1 || header.rsv2 || header.rsv3 {
        return FrameParse::Invalid(violation(code::PROTOCOL_ERROR, "reserved bits set"));
    }
    let Some(mask) = header.mask else {
        return FrameParse::Invalid(violation(
            code::PROTOCOL_ERROR,
            "client frames must be masked",
        ));
    };
    let opcode = match header.opcode {
        OpCode::Data(Data::Continue) => OP_CONTINUATION,
        OpCode::Data(Data::Text) => OP_TEXT,
        OpCode::Data(Data::Binary) => OP_BINARY,
        OpCode::Control(Control::Close) => OP_CLOSE,
        OpCode::Control(Control::Ping) => OP_PING,
        OpCode::Control(Control::Pong) => OP_PONG,
        _ => return FrameParse::Invalid(violation(code::PROTOCOL_ERROR, "reserved opcode")),
    };
    if opcode >= OP_CLOSE && (!header.is_final || len > 125) {
        return FrameParse::Invalid(violation(
            code::PROTOCOL_ERROR,
            "control frames must be final and at most 125 bytes",
        ));
    }
    if opcode < OP_CLOSE && len > max_payload as u64 {
        return FrameParse::Invalid(violation(code::TOO_BIG, "message too big"));
    }
    let len = len as usize;
    let total = header_len + len;
    if buf.len() < total {
        return FrameParse::Partial;
    }
    let payload = &mut buf[header_len..total];
    for (i, b) in payload.iter_mut().enumerate() {
        *b ^= mask[i & 3];
    }
    FrameParse::Frame(
        Frame {
            fin: header.is_final,
            opcode,
            payload,
        },
        total,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn masked(first: u8, payload: &[u8]) -> Vec<u8> {
        let mask = [1u8, 2, 3, 4];
        let mut f = vec![first];
        let n = payload.len();
        if n < 126 {
            f.push(0x80 | n as u8);
        } else if n <= 0xffff {
            f.push(0x80 | 126);
            f.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            f.push(0x80 | 127);
            f.extend_from_slice(&(n as u64).to_be_bytes());
        }
        f.extend_from_slice(&mask);
        f.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i & 3]));
        f
    }

    #[test]
    fn decodes_a_masked_text_frame() {
        let mut buf = masked(0x81, b"{\"type\":\"pong\"}");
        buf.extend_from_slice(b"rest");
        let total = buf.len() - 4;
        match parse_frame(&mut buf, 1024) {
            FrameParse::Frame(f, n) => {
                assert_eq!(n, total);
                assert!(f.fin);
                assert_eq!(f.opcode, OP_TEXT);
                assert_eq!(f.payload, b"{\"type\":\"pong\"}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn waits_for_the_whole_frame() {
        let buf = masked(0x81, b"hello");
        for cut in 0..buf.len() {
            let mut part = buf[..cut].to_vec();
            assert_eq!(
                parse_frame(&mut part, 1024),
                FrameParse::Partial,
                "cut {cut}"
            );
        }
    }

    #[test]
    fn refuses_protocol_violations() {
        let cases: Vec<(Vec<u8>, u16)> = vec![
            (vec![0x81, 0x02, b'h', b'i'], code::PROTOCOL_ERROR), // unmasked
            (masked(0xC1, b"x"), code::PROTOCOL_ERROR),           // rsv1
            (masked(0x83, b"x"), code::PROTOCOL_ERROR),           // reserved opcode
            (masked(0x09, b"x"), code::PROTOCOL_ERROR),           // fragmented ping
            (masked(0x89, &[0; 126]), code::PROTOCOL_ERROR),      // long ping
            (masked(0x82, &[0; 2000]), code::TOO_BIG),
        ];
        for (mut buf, want) in cases {
            match parse_frame(&mut buf, 1024) {
                FrameParse::Invalid(v) => assert_eq!(v.code, want),
                other => panic!("{other:?}"),
            }
        }
    }

    #[test]
    fn a_huge_announced_frame_is_refused_from_its_header_alone() {
        let mut head = vec![0x82, 0x80 | 127];
        head.extend_from_slice(&(1u64 << 30).to_be_bytes());
        head.extend_from_slice(&[0, 0, 0, 0]);
        assert!(matches!(
            parse_frame(&mut head, 65536),
            FrameParse::Invalid(Violation {
                code: code::TOO_BIG,
                ..
            })
        ));
    }

    #[test]
    fn server_frames_use_the_shortest_length() {
        assert_eq!(frame(OP_TEXT, b"hi"), vec![0x81, 2, b'h', b'i']);
        assert_eq!(&frame(OP_TEXT, &[0; 200])[..4], &[0x81, 126, 0, 200]);
        assert_eq!(&frame(OP_BINARY, &[0; 70000])[..2], &[0x82, 127]);
        assert_eq!(
            close_frame(1008, "Unauthorized")[..4],
            [0x88, 14, 0x03, 0xf0]
        );
    }

    #[test]
    fn handshake_checks() {
        let mut req = Request {
            method: Some(crate::http::Method::Get),
            wants_websocket: true,
            ws_version: Some("13".into()),
            ws_key: Some("dGhlIHNhbXBsZSBub25jZQ==".into()),
            ..Request::default()
        };
        let ok = String::from_utf8(accept(&req, &["http://h"]).unwrap()).unwrap();
        assert!(ok.contains("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n"));
        req.origin = Some("http://h".into());
        assert!(accept(&req, &["http://h"]).is_ok());
        req.origin = Some("HTTP://H:80".into());
        assert!(
            accept(&req, &["http://h"]).is_ok(),
            "the same origin, spelled otherwise"
        );
        for other in ["https://h", "http://h:8080", "null", "http://h.evil"] {
            req.origin = Some(other.into());
            assert_eq!(
                accept(&req, &["http://h"]),
                Err(HandshakeError::CrossOrigin),
                "{other}"
            );
        }
        req.origin = Some("https://evil.example".into());
        assert_eq!(
            accept(&req, &["http://h"]),
            Err(HandshakeError::CrossOrigin)
        );
        req.origin = None;
        req.ws_key = Some("short".into());
        assert_eq!(accept(&req, &[]), Err(HandshakeError::BadKey));
        req.ws_version = Some("8".into());
        assert_eq!(accept(&req, &[]), Err(HandshakeError::BadVersion));
        req.wants_websocket = false;
        assert_eq!(accept(&req, &[]), Err(HandshakeError::NotUpgrade));
    }
}
