//! The fuzz targets' bodies, shared: `fuzz_targets/*.rs` run them under libFuzzer, and
//! `tests/conformance.rs` replays the committed corpus through them on stable Rust, so every
//! input the fuzzers kept stays a regression test in `cargo test`.

use catalytic::http::{parse_request, Parsed};
use catalytic::ws::{
    check_close_payload, close_frame, frame, parse_frame, Event, FrameParse, Kind, MessageReader,
    OP_BINARY, OP_CLOSE, OP_CONTINUATION, OP_PING, OP_PONG, OP_TEXT,
};

/// The stream message limit the reactor passes to `parse_frame` (64 KiB).
const MAX_FRAME: usize = 65536;

/// HTTP request parsing as the reactor drives it: parse from the front of the read buffer; on
/// `Complete` move past the bytes used and parse again (pipelined requests); stop on `Partial`
/// (wait for more bytes) or `Error` (answer and close). Every parsed request also goes through
/// the accessors the routes use and the WebSocket upgrade check.
pub fn http_request(data: &[u8]) {
    let mut pos = 0;
    let mut first = true;
    while pos < data.len() {
        match parse_request(&data[pos..]) {
            Parsed::Partial => break,
            Parsed::Error(e) => {
                assert!((400..600).contains(&e.status), "error status {}", e.status);
                break;
            }
            Parsed::Complete(req, used) => {
                assert!(used > 0, "a complete request took no bytes");
                assert!(used <= data.len() - pos, "used {used} beyond the buffer");
                assert!(req.path.starts_with('/'));
                let _ = req.method();
                for name in ["admin_session", "session_token", ""] {
                    let _ = req.cookie(name);
                }
                for name in ["token", "code", ""] {
                    let _ = req.query_param(name);
                }
                let _ = req.bearer();
                let _ = req.is_json();
                if let Ok(resp) = catalytic::ws::accept(&req, &["http://h"]) {
                    assert!(resp.starts_with(b"HTTP/1.1 101 "));
                }
                if first {
                    // The reactor re-parses a growing buffer: a request cut short (the rest not
                    // read yet) must wait for more bytes, never be refused or misread.
                    for cut in [used - 1, used / 2] {
                        let r = parse_request(&data[..cut]);
                        assert!(
                            matches!(r, Parsed::Partial),
                            "prefix {cut} of {used}: {r:?}"
                        );
                    }
                    first = false;
                }
                pos += used;
            }
        }
    }
}

/// WebSocket client frames as the reactor drives them: decode from the front of the read buffer
/// (unmasking in place), move past each frame, stop on `Partial` or `Invalid`; each frame then
/// goes through the stream's `MessageReader`, until it yields `Close` or `Violation` (the reactor
/// stops reading the stream there). The reader's answers are compared with [`Reference`], the
/// message rules written the plain way (assemble, then check UTF-8 at the end): they must agree
/// frame by frame, except that the reader fails with 1007 earlier — exactly at the first
/// fragment after which the text so far can no longer become valid UTF-8.
pub fn ws_frames(data: &[u8]) {
    // The close check on arbitrary payloads, not only those inside well-formed frames.
    if let Err(v) = check_close_payload(data) {
        assert!(matches!(v.code, 1002 | 1007), "close check code {}", v.code);
    }

    // Twice: with the reactor's cap, and with a small one picked by the last byte, so that the
    // cap across fragments (1009) is reached without huge inputs.
    let small = data.last().map_or(0, |b| usize::from(*b & 0x3f));
    for max_message in [MAX_FRAME, small] {
        ws_stream(data, max_message);
    }
}

fn ws_stream(data: &[u8], max_message: usize) {
    let mut reader = MessageReader::new(max_message);
    let mut reference = Reference::new(max_message);
    let mut buf = data.to_vec();
    let mut pos = 0;
    let mut first = true;
    while pos < buf.len() {
        let rest = buf.len() - pos;
        match parse_frame(&mut buf[pos..], MAX_FRAME) {
            FrameParse::Partial => break,
            FrameParse::Invalid(v) => {
                assert!(
                    matches!(v.code, 1002 | 1009),
                    "unexpected close code {}",
                    v.code
                );
                break;
            }
            FrameParse::Frame(f, used) => {
                assert!(used >= 6 && used <= rest, "used {used} of {rest}");
                assert!(f.payload.len() <= MAX_FRAME);
                assert!(f.opcode <= OP_PONG);
                if f.opcode >= OP_CLOSE {
                    assert!(
                        f.fin && f.payload.len() <= 125,
                        "bad control frame accepted"
                    );
                }
                if first {
                    // A frame cut short (the rest not read yet) must wait, never be misread.
                    for cut in [used - 1, used / 2] {
                        let mut part = data[..cut].to_vec();
                        let r = parse_frame(&mut part, MAX_FRAME);
                        assert!(
                            matches!(r, FrameParse::Partial),
                            "prefix {cut} of {used}: {r:?}"
                        );
                    }
                    first = false;
                }
                pos += used;
                let want = reference.read(f.fin, f.opcode, f.payload);
                let got = reader.read(f);
                if !agree(got, want, &reference) {
                    break;
                }
            }
        }
    }
}

/// Whether the stream goes on after this frame; panics where reader and reference disagree.
fn agree(got: Option<Event<'_>>, want: Option<RefEvent>, reference: &Reference) -> bool {
    match (got, want) {
        (None, None) => {
            // Failing fast is required too: text taken in must still be able to become valid.
            if let Some(text) = reference.text_so_far() {
                if let Err(e) = std::str::from_utf8(text) {
                    assert!(e.error_len().is_none(), "invalid UTF-8 taken in: {e}");
                }
            }
            true
        }
        (Some(Event::Message { kind, data }), Some(RefEvent::Message(op, want))) => {
            assert_eq!(kind.opcode(), op);
            assert_eq!(&data[..], &want[..], "message bytes");
            assert!(kind == Kind::Binary || std::str::from_utf8(&data).is_ok());
            true
        }
        (Some(Event::Ping(p)), Some(RefEvent::Ping(want))) => {
            assert_eq!(p, &want[..]);
            true
        }
        (Some(Event::Pong), Some(RefEvent::Pong)) => true,
        (Some(Event::Close { echo }), Some(RefEvent::Close(want))) => {
            assert_eq!(echo, want, "close echo");
            false
        }
        (Some(Event::Violation(v)), Some(RefEvent::Fail(want))) => {
            assert_eq!(v.code, want, "violation code ({})", v.reason);
            false
        }
        // Failing fast: the reference is still assembling text that is already broken.
        (Some(Event::Violation(v)), None) => {
            assert_eq!(v.code, 1007, "early violation {} ({})", v.code, v.reason);
            let text = reference
                .text_so_far()
                .expect("early 1007 outside a text message");
            let e = std::str::from_utf8(text).expect_err("early 1007 on valid UTF-8");
            assert!(e.error_len().is_some(), "early 1007 on a cut character");
            false
        }
        (got, want) => panic!("reader {got:?}, reference {want:?}"),
    }
}

#[derive(Debug)]
enum RefEvent {
    Message(u8, Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Vec<u8>),
    Fail(u16),
}

/// The message rules as the reactor applied them before `MessageReader` existed: assemble the
/// fragments, check the size on each, check UTF-8 once the message is whole.
struct Reference {
    max_message: usize,
    fragment: Option<(u8, Vec<u8>)>,
}

impl Reference {
    fn new(max_message: usize) -> Self {
        Reference {
            max_message,
            fragment: None,
        }
    }

    fn text_so_far(&self) -> Option<&[u8]> {
        match &self.fragment {
            Some((OP_TEXT, data)) => Some(data),
            _ => None,
        }
    }

    fn read(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> Option<RefEvent> {
        let message = |op: u8, data: Vec<u8>| {
            if op == OP_TEXT && std::str::from_utf8(&data).is_err() {
                RefEvent::Fail(1007)
            } else {
                RefEvent::Message(op, data)
            }
        };
        match opcode {
            OP_PING => Some(RefEvent::Ping(payload.to_vec())),
            OP_PONG => Some(RefEvent::Pong),
            OP_CLOSE => Some(match check_close_payload(payload) {
                Ok(_) if payload.is_empty() => RefEvent::Close(frame(OP_CLOSE, &[])),
                Ok(c) => RefEvent::Close(close_frame(c, "")),
                Err(v) => RefEvent::Fail(v.code),
            }),
            OP_TEXT | OP_BINARY => {
                if self.fragment.is_some() {
                    return Some(RefEvent::Fail(1002));
                }
                if payload.len() > self.max_message {
                    return Some(RefEvent::Fail(1009));
                }
                if fin {
                    return Some(message(opcode, payload.to_vec()));
                }
                self.fragment = Some((opcode, payload.to_vec()));
                None
            }
            OP_CONTINUATION => {
                let Some((_, data)) = self.fragment.as_mut() else {
                    return Some(RefEvent::Fail(1002));
                };
                if data.len() + payload.len() > self.max_message {
                    return Some(RefEvent::Fail(1009));
                }
                data.extend_from_slice(payload);
                if !fin {
                    return None;
                }
                let (op, data) = self.fragment.take()?;
                Some(message(op, data))
            }
            _ => Some(RefEvent::Fail(1002)),
        }
    }
}
