//! The fuzz targets' bodies, shared: `fuzz_targets/*.rs` run them under libFuzzer, and
//! `tests/conformance.rs` replays the committed corpus through them on stable Rust, so every
//! input the fuzzers kept stays a regression test in `cargo test`.

use catalytic::http::{parse_request, Parsed};
use catalytic::ws::{check_close_payload, parse_frame, FrameParse, OP_CLOSE, OP_PONG};

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

/// WebSocket client-frame decoding as the reactor drives it: decode from the front of the read
/// buffer (unmasking in place), move past each frame, stop on `Partial` or `Invalid`; close
/// frames' payloads go through the close-code/UTF-8 check.
pub fn ws_frames(data: &[u8]) {
    // The close check on arbitrary payloads, not only those inside well-formed frames.
    if let Err(v) = check_close_payload(data) {
        assert!(matches!(v.code, 1002 | 1007), "close check code {}", v.code);
    }

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
                if f.opcode == OP_CLOSE {
                    match check_close_payload(f.payload) {
                        Ok(code) => {
                            assert!(matches!(code, 1000..=1003 | 1007..=1011 | 3000..=4999))
                        }
                        Err(v) => assert!(matches!(v.code, 1002 | 1007)),
                    }
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
            }
        }
    }
}
