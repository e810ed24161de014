//! The WebSocket message layer (RFC 6455 §5.4–5.6, §7.4): decoded client frames in, whole
//! messages and control events out. Like tungstenite's `protocol` + `message` layers it never
//! sees a socket or a clock, so every rule is table-tested below and fuzzed (`fuzz/checks.rs`);
//! the reactor only feeds it frames and dispatches what it yields.
//!
//! One [`MessageReader`] per stream. For each frame, [`MessageReader::read`] yields nothing (a
//! fragment was taken in) or one [`Event`]:
//! - `Message` — a complete text or binary message; text is valid UTF-8;
//! - `Ping(payload)` — the caller answers with a pong carrying the same payload;
//! - `Pong` — nothing to do (any frame already counts as a sign of life);
//! - `Close { echo }` — the client's close was valid; `echo` is the close frame to send back;
//! - `Violation` — fail the connection with this close code.
//!
//! Invariants:
//! - At most one data message is in progress, and the bytes held for it never exceed
//!   `max_message` (the cap holds across fragments: → 1009 as soon as a fragment would pass it).
//! - Only fragmented messages are copied. An unfragmented message is yielded borrowing the
//!   frame's payload; a fragmented one hands over the assembled buffer (no second copy), so an
//!   idle stream holds no message memory.
//! - Text is checked as UTF-8 as each fragment arrives, over the new bytes only: the connection
//!   fails (→ 1007) at the first fragment that cannot continue valid UTF-8, not at the end of
//!   the message, and a message in many small fragments is still checked in linear time.
//! - Control frames may come between the fragments of a message and leave it undisturbed.
//! - A data frame while a message is in progress, or a continuation without one, is a protocol
//!   error (→ 1002), as are control frames that are fragmented or over 125 bytes and unknown
//!   opcodes (`parse_frame` refuses those first; the reader checks again so it stands alone).
//! - After `Close` or `Violation` the caller stops feeding the reader: the connection is closing.

use super::{
    close_frame, code, frame, violation, Frame, Violation, OP_BINARY, OP_CLOSE, OP_CONTINUATION,
    OP_PING, OP_PONG, OP_TEXT,
};
use std::borrow::Cow;

/// What a data message carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Text,
    Binary,
}

impl Kind {
    /// The opcode that sends a message of this kind (for echoing it back).
    pub fn opcode(self) -> u8 {
        match self {
            Kind::Text => OP_TEXT,
            Kind::Binary => OP_BINARY,
        }
    }
}

/// What one frame amounts to, once the message rules are applied. Borrows the frame's payload
/// where it can (an unfragmented message, a ping), never the reader, so the caller may act on it
/// while changing the rest of its state.
#[derive(Debug, PartialEq, Eq)]
pub enum Event<'a> {
    /// A complete message; `Kind::Text` data is valid UTF-8.
    Message {
        kind: Kind,
        data: Cow<'a, [u8]>,
    },
    /// Answer with a pong carrying this payload.
    Ping(&'a [u8]),
    Pong,
    /// The client closed validly; send `echo` (a whole close frame) back and close.
    Close {
        echo: Vec<u8>,
    },
    /// Fail the connection with this code and reason.
    Violation(Violation),
}

/// A fragmented message being assembled.
#[derive(Debug)]
struct Assembly {
    kind: Kind,
    data: Vec<u8>,
    /// For text: `data[..utf8_valid]` is known to be whole, valid UTF-8 characters; the bytes
    /// after it (at most 3) are the start of a character whose rest is still to come.
    utf8_valid: usize,
}

/// Turns one stream's frames into messages. See the module doc for the rules it owns.
#[derive(Debug)]
pub struct MessageReader {
    max_message: usize,
    assembling: Option<Assembly>,
}

impl MessageReader {
    /// A reader that refuses messages over `max_message` bytes, counted across fragments.
    pub fn new(max_message: usize) -> Self {
        MessageReader {
            max_message,
            assembling: None,
        }
    }

    /// Whether a fragmented message is in progress.
    pub fn in_message(&self) -> bool {
        self.assembling.is_some()
    }

    /// What the next data frame may carry at most: the message cap less what the fragmented
    /// message in progress already holds, so a continuation frame announcing more is refused
    /// from its header (`ws::parse_frame`), not after its whole payload arrived.
    pub fn room(&self) -> usize {
        let held = self.assembling.as_ref().map_or(0, |a| a.data.len());
        self.max_message.saturating_sub(held)
    }

    /// Apply the message rules to one decoded frame. `None`: a fragment was taken in and the
    /// message is not complete yet.
    pub fn read<'a>(&mut self, frame: Frame<'a>) -> Option<Event<'a>> {
        let Frame {
            fin,
            opcode,
            payload,
        } = frame;
        if opcode >= OP_CLOSE && (!fin || payload.len() > 125) {
            return fail(
                code::PROTOCOL_ERROR,
                "control frames must be final and at most 125 bytes",
            );
        }
        match opcode {
            OP_PING => Some(Event::Ping(payload)),
            OP_PONG => Some(Event::Pong),
            OP_CLOSE => {
                self.assembling = None;
                Some(close_event(payload))
            }
            OP_TEXT | OP_BINARY => {
                if self.assembling.is_some() {
                    return fail(code::PROTOCOL_ERROR, "expected a continuation frame");
                }
                let kind = if opcode == OP_TEXT {
                    Kind::Text
                } else {
                    Kind::Binary
                };
                if payload.len() > self.max_message {
                    return fail(code::TOO_BIG, "message too big");
                }
                let mut utf8_valid = 0;
                if kind == Kind::Text && !utf8_continues(payload, &mut utf8_valid, fin) {
                    return not_utf8();
                }
                if fin {
                    // The common case: no copy, the message is the frame's payload.
                    return Some(Event::Message {
                        kind,
                        data: Cow::Borrowed(payload),
                    });
                }
                self.assembling = Some(Assembly {
                    kind,
                    data: payload.to_vec(),
                    utf8_valid,
                });
                None
            }
            OP_CONTINUATION => {
                let Some(msg) = self.assembling.as_mut() else {
                    return fail(code::PROTOCOL_ERROR, "continuation without a message");
                };
                if msg.data.len() + payload.len() > self.max_message {
                    return fail(code::TOO_BIG, "message too big");
                }
                msg.data.extend_from_slice(payload);
                if msg.kind == Kind::Text && !utf8_continues(&msg.data, &mut msg.utf8_valid, fin) {
                    return not_utf8();
                }
                if !fin {
                    return None;
                }
                let msg = self.assembling.take()?;
                Some(Event::Message {
                    kind: msg.kind,
                    data: Cow::Owned(msg.data),
                })
            }
            _ => fail(code::PROTOCOL_ERROR, "reserved opcode"),
        }
    }
}

fn fail(code: u16, reason: &'static str) -> Option<Event<'static>> {
    Some(Event::Violation(violation(code, reason)))
}

fn not_utf8() -> Option<Event<'static>> {
    fail(code::INVALID_PAYLOAD, "text message is not UTF-8")
}

/// Check the bytes of `data` after `*valid` as a continuation of valid UTF-8, and move `*valid`
/// past the whole characters. A character cut at the end is fine unless `fin` (nothing follows).
/// Only new bytes are looked at (plus at most 3 carried over), so many small fragments cost no
/// more than one large one.
fn utf8_continues(data: &[u8], valid: &mut usize, fin: bool) -> bool {
    match std::str::from_utf8(&data[*valid..]) {
        Ok(_) => {
            *valid = data.len();
            true
        }
        // `error_len() == None`: the input ended inside a character that more bytes can finish;
        // std checks each byte as it comes, so a prefix no character can start with is `Some`.
        Err(e) if e.error_len().is_none() && !fin => {
            *valid += e.valid_up_to();
            true
        }
        Err(_) => false,
    }
}

/// The answer to a client's close frame: echo its code (an empty close gets an empty close
/// back), or fail the connection if the payload is not a valid close.
fn close_event(payload: &[u8]) -> Event<'static> {
    match check_close_payload(payload) {
        Ok(_) if payload.is_empty() => Event::Close {
            echo: frame(OP_CLOSE, &[]),
        },
        Ok(c) => Event::Close {
            echo: close_frame(c, ""),
        },
        Err(v) => Event::Violation(v),
    }
}

/// Validate a received close payload; returns the code to echo back (1000 for an empty one).
/// Codes a peer may send (§7.4.1): 1000–1003, 1007–1011 and the 3000–4999 range; 1004–1006,
/// 1015 and everything else are "reserved or never sent" and a protocol error.
pub fn check_close_payload(payload: &[u8]) -> Result<u16, Violation> {
    match payload {
        [] => Ok(code::NORMAL),
        [_] => Err(violation(code::PROTOCOL_ERROR, "close payload of one byte")),
        [hi, lo, reason @ ..] => {
            let c = u16::from_be_bytes([*hi, *lo]);
            if !matches!(c, 1000..=1003 | 1007..=1011 | 3000..=4999) {
                return Err(violation(code::PROTOCOL_ERROR, "invalid close code"));
            }
            if std::str::from_utf8(reason).is_err() {
                return Err(violation(
                    code::INVALID_PAYLOAD,
                    "close reason is not UTF-8",
                ));
            }
            Ok(c)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 16;

    /// What a frame yielded, owned, so expectations are plain data.
    #[derive(Debug, PartialEq, Eq)]
    enum Out {
        Nothing,
        Text(String),
        Binary(Vec<u8>),
        Ping(Vec<u8>),
        Pong,
        Close(Vec<u8>),
        Fail(u16),
    }
    use Out::{Close, Fail, Nothing, Pong};

    fn text(s: &str) -> Out {
        Out::Text(s.to_string())
    }
    fn bin(b: &[u8]) -> Out {
        Out::Binary(b.to_vec())
    }
    fn ping(b: &[u8]) -> Out {
        Out::Ping(b.to_vec())
    }

    /// One frame of a table case: fin, opcode, payload.
    type Step = (bool, u8, &'static [u8]);

    fn f(fin: bool, opcode: u8, payload: &'static [u8]) -> Step {
        (fin, opcode, payload)
    }
    const T: u8 = OP_TEXT;
    const B: u8 = OP_BINARY;
    const C: u8 = OP_CONTINUATION;

    fn out(e: Option<Event<'_>>) -> Out {
        match e {
            None => Nothing,
            Some(Event::Message { kind, data }) => match kind {
                Kind::Text => Out::Text(String::from_utf8(data.into_owned()).expect("UTF-8")),
                Kind::Binary => Out::Binary(data.into_owned()),
            },
            Some(Event::Ping(p)) => Out::Ping(p.to_vec()),
            Some(Event::Pong) => Pong,
            Some(Event::Close { echo }) => Close(echo),
            Some(Event::Violation(v)) => Fail(v.code),
        }
    }

    fn frag(fin: bool, opcode: u8, payload: &[u8]) -> Frame<'_> {
        Frame {
            fin,
            opcode,
            payload,
        }
    }

    fn run(frames: &[Step]) -> Vec<Out> {
        let mut r = MessageReader::new(MAX);
        frames
            .iter()
            .map(|&(fin, opcode, payload)| out(r.read(frag(fin, opcode, payload))))
            .collect()
    }

    #[test]
    fn message_rules() {
        // "é" is C3 A9, "€" is E2 82 AC, "😀" is F0 9F 98 80.
        let cases: Vec<(&str, Vec<Step>, Vec<Out>)> = vec![
            ("text", vec![f(true, T, b"hi")], vec![text("hi")]),
            ("empty text", vec![f(true, T, b"")], vec![text("")]),
            (
                "binary",
                vec![f(true, B, &[0xff, 0])],
                vec![bin(&[0xff, 0])],
            ),
            (
                "binary is not checked as UTF-8",
                vec![f(false, B, &[0xc3]), f(true, C, &[0xff])],
                vec![Nothing, bin(&[0xc3, 0xff])],
            ),
            (
                "fragmented text",
                vec![f(false, T, b"he"), f(false, C, b""), f(true, C, b"llo")],
                vec![Nothing, Nothing, text("hello")],
            ),
            (
                "text split inside a 2-byte character",
                vec![f(false, T, b"caf\xc3"), f(true, C, b"\xa9")],
                vec![Nothing, text("café")],
            ),
            (
                "text split inside a 4-byte character, byte by byte",
                vec![
                    f(false, T, b"\xf0"),
                    f(false, C, b"\x9f"),
                    f(false, C, b"\x98"),
                    f(true, C, b"\x80!"),
                ],
                vec![Nothing, Nothing, Nothing, text("😀!")],
            ),
            (
                "invalid UTF-8 fails at the bad fragment, not at the end",
                vec![f(false, T, b"ok"), f(false, C, b"\xff")],
                vec![Nothing, Fail(1007)],
            ),
            (
                "a prefix no character starts with fails at once (E0 80 is overlong)",
                vec![f(false, T, b"\xe0\x80")],
                vec![Fail(1007)],
            ),
            (
                "a code point over U+10FFFF fails at once",
                vec![f(false, T, b"a"), f(false, C, b"\xf4\x90")],
                vec![Nothing, Fail(1007)],
            ),
            (
                "a surrogate fails at once",
                vec![f(false, T, b"\xed\xa0")],
                vec![Fail(1007)],
            ),
            (
                "a character cut by the final fragment",
                vec![f(false, T, b"a"), f(true, C, b"\xe2\x82")],
                vec![Nothing, Fail(1007)],
            ),
            (
                "a character cut by an unfragmented message",
                vec![f(true, T, b"\xe2\x82")],
                vec![Fail(1007)],
            ),
            (
                "invalid unfragmented text",
                vec![f(true, T, b"a\xffb")],
                vec![Fail(1007)],
            ),
            (
                "control frames between fragments",
                vec![
                    f(false, T, b"\xe2"),
                    f(true, OP_PING, b"p"),
                    f(false, C, b"\x82"),
                    f(true, OP_PONG, b""),
                    f(true, C, b"\xac"),
                ],
                vec![Nothing, ping(b"p"), Nothing, Pong, text("€")],
            ),
            (
                "a close between fragments ends the message",
                vec![f(false, T, b"a"), f(true, OP_CLOSE, b"")],
                vec![Nothing, Close(frame(OP_CLOSE, &[]))],
            ),
            (
                "continuation without a message",
                vec![f(true, C, b"x")],
                vec![Fail(1002)],
            ),
            (
                "continuation after a complete message",
                vec![f(false, B, b"a"), f(true, C, b"b"), f(true, C, b"c")],
                vec![Nothing, bin(b"ab"), Fail(1002)],
            ),
            (
                "a new text frame while a message is in progress",
                vec![f(false, T, b"a"), f(true, T, b"b")],
                vec![Nothing, Fail(1002)],
            ),
            (
                "a new binary frame while a message is in progress",
                vec![f(false, B, b"a"), f(false, B, b"b")],
                vec![Nothing, Fail(1002)],
            ),
            (
                "messages follow one another",
                vec![f(false, T, b"a"), f(true, C, b"b"), f(true, B, b"c")],
                vec![Nothing, text("ab"), bin(b"c")],
            ),
            (
                "exactly the cap across fragments",
                vec![f(false, B, &[0; 8]), f(true, C, &[0; 8])],
                vec![Nothing, bin(&[0; 16])],
            ),
            (
                "over the cap across fragments",
                vec![f(false, B, &[0; 8]), f(false, C, &[0; 8]), f(true, C, &[0])],
                vec![Nothing, Nothing, Fail(1009)],
            ),
            (
                "over the cap in empty-started fragments",
                vec![f(false, T, b""), f(true, C, &[b'a'; 17])],
                vec![Nothing, Fail(1009)],
            ),
            (
                "one frame over the cap",
                vec![f(true, B, &[0; 17])],
                vec![Fail(1009)],
            ),
            ("ping", vec![f(true, OP_PING, b"abc")], vec![ping(b"abc")]),
            ("empty ping", vec![f(true, OP_PING, b"")], vec![ping(b"")]),
            ("pong", vec![f(true, OP_PONG, b"x")], vec![Pong]),
            (
                "fragmented ping",
                vec![f(false, OP_PING, b"")],
                vec![Fail(1002)],
            ),
            (
                "long ping",
                vec![f(true, OP_PING, &[0; 126])],
                vec![Fail(1002)],
            ),
            ("reserved opcode", vec![f(true, 0x3, b"")], vec![Fail(1002)]),
            (
                "reserved control opcode",
                vec![f(true, 0xb, b"")],
                vec![Fail(1002)],
            ),
        ];
        for (name, frames, want) in cases {
            assert_eq!(run(&frames), want, "{name}");
        }
    }

    #[test]
    fn close_rules() {
        let mut with_reason = 1000u16.to_be_bytes().to_vec();
        with_reason.extend_from_slice("bye ✓".as_bytes());
        let mut bad_reason = 1001u16.to_be_bytes().to_vec();
        bad_reason.extend_from_slice(b"\xc3");
        let cases: Vec<(Vec<u8>, Out)> = vec![
            // An empty close gets an empty close back.
            (vec![], Close(frame(OP_CLOSE, &[]))),
            // Any valid code is echoed (with no reason); the reason is checked, not echoed.
            (1000u16.to_be_bytes().to_vec(), Close(close_frame(1000, ""))),
            (with_reason, Close(close_frame(1000, ""))),
            (1001u16.to_be_bytes().to_vec(), Close(close_frame(1001, ""))),
            (1003u16.to_be_bytes().to_vec(), Close(close_frame(1003, ""))),
            (1007u16.to_be_bytes().to_vec(), Close(close_frame(1007, ""))),
            (1011u16.to_be_bytes().to_vec(), Close(close_frame(1011, ""))),
            (3000u16.to_be_bytes().to_vec(), Close(close_frame(3000, ""))),
            (4999u16.to_be_bytes().to_vec(), Close(close_frame(4999, ""))),
            (vec![0x03], Fail(1002)),
            (bad_reason, Fail(1007)),
        ];
        for bad in [0u16, 999, 1004, 1005, 1006, 1012, 1015, 2999, 5000, 65535] {
            assert_eq!(
                run_close(&bad.to_be_bytes()),
                Fail(1002),
                "close code {bad}"
            );
        }
        for (payload, want) in cases {
            assert_eq!(run_close(&payload), want, "close payload {payload:?}");
        }
    }

    fn run_close(payload: &[u8]) -> Out {
        out(MessageReader::new(MAX).read(frag(true, OP_CLOSE, payload)))
    }

    #[test]
    fn close_payloads() {
        assert_eq!(check_close_payload(b""), Ok(1000));
        assert_eq!(check_close_payload(&[0x03, 0xe8]), Ok(1000));
        assert!(check_close_payload(&[0x03]).is_err());
        assert!(check_close_payload(&1005u16.to_be_bytes()).is_err());
        assert!(check_close_payload(&999u16.to_be_bytes()).is_err());
        assert_eq!(check_close_payload(&4000u16.to_be_bytes()), Ok(4000));
        let mut bad = 1000u16.to_be_bytes().to_vec();
        bad.push(0xff);
        assert_eq!(
            check_close_payload(&bad).unwrap_err().code,
            code::INVALID_PAYLOAD
        );
    }

    #[test]
    fn an_unfragmented_message_borrows_the_frame() {
        let payload = b"no copy".to_vec();
        let mut r = MessageReader::new(MAX);
        match r.read(frag(true, OP_TEXT, &payload)) {
            Some(Event::Message {
                data: Cow::Borrowed(d),
                ..
            }) => assert_eq!(d.as_ptr(), payload.as_ptr()),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_finished_fragmented_message_leaves_no_buffer_behind() {
        let mut r = MessageReader::new(MAX);
        assert_eq!(r.read(frag(false, OP_TEXT, b"ab")), None);
        assert!(r.in_message());
        assert!(matches!(
            r.read(frag(true, OP_CONTINUATION, b"c")),
            Some(Event::Message {
                data: Cow::Owned(_),
                ..
            })
        ));
        assert!(!r.in_message());
    }

    /// A text message cut at every possible place into two fragments, or into one-byte
    /// fragments, reads back the same; with an invalid byte anywhere it fails at the very
    /// fragment holding that byte.
    #[test]
    fn every_split_of_a_text_message() {
        const MSG: &str = "a€😀é z";
        let msg = MSG.as_bytes();
        let mut r = MessageReader::new(64);
        for cut in 0..=msg.len() {
            assert_eq!(r.read(frag(false, OP_TEXT, &msg[..cut])), None, "cut {cut}");
            let last = r.read(frag(true, OP_CONTINUATION, &msg[cut..]));
            assert_eq!(out(last), text(MSG), "cut {cut}");
        }
        // Byte by byte; `bad_at == len` is the valid message.
        for bad_at in 0..=msg.len() {
            let mut bytes = msg.to_vec();
            if let Some(b) = bytes.get_mut(bad_at) {
                *b = 0xff;
            }
            let mut r = MessageReader::new(64);
            let mut got = Vec::new();
            for (i, b) in bytes.iter().enumerate() {
                let op = if i == 0 { OP_TEXT } else { OP_CONTINUATION };
                let fin = i + 1 == bytes.len();
                got.push(out(r.read(frag(fin, op, std::slice::from_ref(b)))));
                if matches!(got.last(), Some(Fail(_))) {
                    break;
                }
            }
            let mut want: Vec<Out> = (0..bad_at.min(msg.len() - 1)).map(|_| Nothing).collect();
            want.push(if bad_at == msg.len() {
                text(MSG)
            } else {
                Fail(1007)
            });
            assert_eq!(got, want, "0xff at {bad_at}");
        }
    }
}
