//! Raw WebSocket frames over a plain socket, for what a well-behaved client library refuses to
//! send: unmasked frames, reserved bits and opcodes, broken fragments, absurd lengths.

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use super::http::read_line;
use super::{Resp, Server, WAIT};

impl Server {
    /// Raw WebSocket: sends the upgrade request (plus `extra` bytes in the same write) and
    /// reads the response head. Returns the socket and the parsed head.
    pub fn raw_ws(&self, path: &str, headers: &[(&str, &str)], extra: &[u8]) -> (RawWs, Resp) {
        let mut s = self.connect();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            self.addr
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(extra);
        s.write_all(&bytes).unwrap();
        // Read up to the end of the head; keep anything after it.
        let mut buf = Vec::new();
        let deadline = Instant::now() + WAIT;
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(Instant::now() < deadline, "no handshake response");
            let mut tmp = [0u8; 4096];
            match s.read(&mut tmp) {
                Ok(0) => panic!(
                    "closed during handshake; got {:?}",
                    String::from_utf8_lossy(&buf)
                ),
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("handshake read: {e}"),
            }
        };
        let head = buf[..end].to_vec();
        let rest = buf[end..].to_vec();
        let mut r = BufReader::new(&head[..]);
        let status_line = read_line(&mut r).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut hs = Vec::new();
        loop {
            let l = read_line(&mut r).unwrap();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            hs.push((k.trim().to_string(), v.trim().to_string()));
        }
        (
            RawWs { s, buf: rest },
            Resp {
                status,
                headers: hs,
                body: Vec::new(),
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// (code, reason) of a close frame.
    pub fn close_code(&self) -> Option<(u16, String)> {
        if self.opcode != 8 || self.payload.len() < 2 {
            return None;
        }
        Some((
            u16::from_be_bytes([self.payload[0], self.payload[1]]),
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        ))
    }
}

pub struct RawWs {
    pub s: TcpStream,
    buf: Vec<u8>,
}

/// Encodes one frame; `mask` None sends it unmasked (a protocol violation from a client).
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(mbit | n as u8);
    } else if n <= 0xffff {
        out.push(mbit | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

pub const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

impl RawWs {
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    /// A well-formed masked frame.
    pub fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.send_raw(&encode_frame(fin, 0, opcode, payload, Some(MASK)))
    }

    fn parse(&mut self) -> Option<RawFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let fin = b[0] & 0x80 != 0;
        let rsv = (b[0] >> 4) & 7;
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let mut len = (b[1] & 0x7f) as usize;
        let mut i = 2;
        if len == 126 {
            if b.len() < 4 {
                return None;
            }
            len = u16::from_be_bytes([b[2], b[3]]) as usize;
            i = 4;
        } else if len == 127 {
            if b.len() < 10 {
                return None;
            }
            len = u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize;
            i = 10;
        }
        let mut key = [0u8; 4];
        if masked {
            if b.len() < i + 4 {
                return None;
            }
            key.copy_from_slice(&b[i..i + 4]);
            i += 4;
        }
        if b.len() < i + len {
            return None;
        }
        let mut payload = b[i..i + len].to_vec();
        if masked {
            for (j, x) in payload.iter_mut().enumerate() {
                *x ^= key[j % 4];
            }
        }
        self.buf.drain(..i + len);
        Some(RawFrame {
            fin,
            rsv,
            opcode,
            masked,
            payload,
        })
    }

    /// The next frame; `Err(description)` on EOF/reset/timeout.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<RawFrame, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.parse() {
                return Ok(f);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("timeout".into());
            }
            self.s.set_read_timeout(Some(deadline - now)).unwrap();
            let mut tmp = [0u8; 16 * 1024];
            match self.s.read(&mut tmp) {
                Ok(0) => return Err("eof".into()),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("read error: {e}")),
            }
        }
    }

    /// Reads frames until a close frame (skipping data/ping/pong); returns its code and reason.
    pub fn read_close(&mut self, timeout: Duration) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(f) if f.opcode == 8 => {
                    return f
                        .close_code()
                        .unwrap_or_else(|| panic!("close frame without a code: {f:?}"))
                }
                Ok(_) => continue,
                Err(e) => panic!("expected a close frame, got {e}"),
            }
        }
    }

    /// True when the TCP connection ends (EOF/reset) within `timeout`, ignoring frames.
    pub fn ends_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(_) => continue,
                Err(e) => return e != "timeout",
            }
        }
    }
}

/// An admin stream opened with raw bytes; the `initial` text frame is read and checked.
pub fn raw_admin(srv: &Server) -> RawWs {
    let cookie = srv.admin_cookie();
    let (mut ws, resp) = srv.raw_ws("/admin/stream", &[("Cookie", &cookie)], &[]);
    assert_eq!(resp.status, 101, "raw admin handshake");
    let f = ws.read_frame(WAIT).expect("initial frame");
    assert_eq!(f.opcode, 1, "first frame must be text: {f:?}");
    let v: serde_json::Value = serde_json::from_slice(&f.payload).expect("initial is JSON");
    assert_eq!(v["type"], "initial");
    ws
}

/// After a violation: the server's close frame carries `code`; we answer the close and the
/// TCP connection must end.
pub fn assert_ws_closed_with(ws: &mut RawWs, code: u16, what: &str) {
    let t = Instant::now();
    let (got, reason) = ws.read_close(WAIT);
    assert_eq!(got, code, "{what}: close code (reason {reason:?})");
    eprintln!("{what}: close {got} {reason:?} after {:?}", t.elapsed());
    let _ = ws.send(true, 8, &1000u16.to_be_bytes());
    assert!(
        ws.ends_within(Duration::from_secs(4)),
        "{what}: TCP connection still open after the close"
    );
}
