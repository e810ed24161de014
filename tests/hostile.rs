//! Hostile input against the running binary: every case attacks one server of its own, then
//! checks that the server still serves — `/healthz` answers 200 fast and a legitimate admin
//! stream, connected BEFORE the attack, still receives a broadcast (`user_added` after a
//! POST /api/users) — and that no server thread panicked.
//!
//! Every loop is bounded in count and time; every socket carries read/write timeouts; only
//! loopback addresses are used and every port comes from the kernel.

mod common;

use std::io::{BufRead, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

// =============================================================================================
// Helpers local to this file
// =============================================================================================

/// A legitimate admin stream read by its own thread: answers JSON pings (so it survives a
/// short `--heartbeat-secs`) and forwards every JSON message with its arrival time.
struct Live {
    rx: Receiver<(Instant, Result<Value, String>)>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl Live {
    fn start(srv: &Server) -> Live {
        let cookie = srv.admin_cookie();
        Live::start_with(srv, &cookie)
    }

    fn start_with(srv: &Server, cookie: &str) -> Live {
        let (ws, _) = srv.admin_ws(cookie);
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = thread::spawn(move || {
            let mut ws = ws;
            // Bounded: no test lives longer than this.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match next_event(&mut ws, Duration::from_millis(100), true) {
                    None => continue,
                    Some(WsEvent::Json(v)) => {
                        if tx.send((Instant::now(), Ok(v))).is_err() {
                            return;
                        }
                    }
                    Some(WsEvent::Close(c)) => {
                        let _ = tx.send((Instant::now(), Err(format!("live admin closed: {c:?}"))));
                        return;
                    }
                    Some(WsEvent::Ended(e)) => {
                        let _ = tx.send((Instant::now(), Err(format!("live admin ended: {e}"))));
                        return;
                    }
                    Some(_) => continue,
                }
            }
            close_normal(&mut ws);
        });
        Live {
            rx,
            stop,
            handle: Some(handle),
        }
    }

    /// The next message matching `pred` (others are skipped); panics on timeout or close.
    fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("live admin: no {what} within {timeout:?}");
            }
            match self.rx.recv_timeout(left) {
                Ok((_, Ok(v))) if pred(&v) => return v,
                Ok((_, Ok(_))) => continue,
                Ok((_, Err(e))) => panic!("live admin, waiting for {what}: {e}"),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("live admin: no {what} within {timeout:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("live admin reader gone while waiting for {what}")
                }
            }
        }
    }

    /// Asserts no message matching `pred` arrives within `dur` (others are skipped).
    fn assert_none(&self, what: &str, dur: Duration, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + dur;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.rx.recv_timeout(left) {
                Ok((_, Ok(v))) if pred(&v) => panic!("live admin received {what}: {v}"),
                Ok((_, Ok(_))) => continue,
                Ok((_, Err(e))) => panic!("live admin, checking for no {what}: {e}"),
                Err(_) => return,
            }
        }
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The after-the-attack check: no panic logged, `/healthz` answers 200 `ok` within a second,
/// and a POST /api/users reaches the live admin as `user_added`.
fn assert_serving(srv: &Server, live: &Live, what: &str) {
    assert_no_panic(srv, what);
    let t = Instant::now();
    let r = srv.get("/healthz", None);
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{what}: /healthz afterwards");
    assert_eq!(r.text(), "ok", "{what}: /healthz body");
    assert!(
        took < Duration::from_secs(1),
        "{what}: /healthz took {took:?}"
    );
    let email = format!("after.{}", srv.unique_email());
    let body = json!({"first_name": "After", "last_name": "Attack", "email": email});
    let r = srv.json("POST", "/api/users", Some(&srv.admin_cookie()), Some(&body));
    assert_eq!(
        r.status,
        201,
        "{what}: POST /api/users afterwards: {}",
        r.text()
    );
    let ev = live.wait_for("user_added after the attack", WAIT, |v| {
        v["type"] == "user_added" && v["data"]["email"] == email.as_str()
    });
    assert_user_shape(&ev["data"]);
    assert_no_panic(srv, what);
}

fn assert_no_panic(srv: &Server, what: &str) {
    let lines = srv.logs.lines();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked")) {
        let end = (i + 20).min(lines.len());
        panic!(
            "{what}: the server panicked:\n{}",
            lines[i.saturating_sub(2)..end].join("\n")
        );
    }
}

/// A timed GET /healthz on a fresh connection.
fn timed_healthz(srv: &Server) -> Duration {
    let t = Instant::now();
    let r = srv.get("/healthz", None);
    assert_eq!(r.status, 200, "/healthz during the attack");
    t.elapsed()
}

/// Sends raw bytes on a fresh connection and reads one response. Write errors are ignored
/// (the server may close while we are still writing); the response must still arrive.
fn raw_exchange(srv: &Server, bytes: &[u8]) -> (HttpConn, Resp) {
    let mut c = srv.http();
    let _ = c.write_raw(bytes);
    let r = c
        .read_response()
        .unwrap_or_else(|e| panic!("no response to {:?}: {e}", preview(bytes)));
    (c, r)
}

fn preview(bytes: &[u8]) -> String {
    let n = bytes.len().min(120);
    format!(
        "{}{}",
        String::from_utf8_lossy(&bytes[..n]),
        if bytes.len() > n { "…" } else { "" }
    )
}

/// Reads whatever else comes until EOF/reset; returns the extra bytes, or `None` when the
/// connection is still open after `timeout`.
fn rest_until_close(c: &mut HttpConn, timeout: Duration) -> Option<Vec<u8>> {
    let deadline = Instant::now() + timeout;
    let mut extra = Vec::new();
    // Bytes BufReader already holds.
    let buffered = c.reader.buffer().to_vec();
    c.reader.consume(buffered.len());
    extra.extend_from_slice(&buffered);
    let mut buf = [0u8; 4096];
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let s = c.stream();
        s.set_read_timeout(Some(deadline - now)).unwrap();
        match s.read(&mut buf) {
            Ok(0) => return Some(extra),
            Ok(n) => extra.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return Some(extra),
        }
    }
}

/// The request must be answered with one of `allowed` (a JSON error) and the connection closed,
/// with nothing after that answer.
fn assert_refused_and_closed(srv: &Server, bytes: &[u8], allowed: &[u16], what: &str) -> u16 {
    let (mut c, r) = raw_exchange(srv, bytes);
    assert!(
        allowed.contains(&r.status),
        "{what}: status {} (want one of {allowed:?}), body {:?}",
        r.status,
        r.text()
    );
    r.assert_error(r.status, what);
    let extra = rest_until_close(&mut c, Duration::from_secs(3))
        .unwrap_or_else(|| panic!("{what}: connection still open 3 s after the {}", r.status));
    assert!(
        extra.is_empty(),
        "{what}: bytes after the {} answer: {:?}",
        r.status,
        preview(&extra)
    );
    r.status
}

/// An admin stream opened with raw bytes; the `initial` text frame is read and checked.
fn raw_admin(srv: &Server) -> RawWs {
    let cookie = srv.admin_cookie();
    let (mut ws, resp) = srv.raw_ws("/admin/stream", &[("Cookie", &cookie)], &[]);
    assert_eq!(resp.status, 101, "raw admin handshake");
    let f = ws.read_frame(WAIT).expect("initial frame");
    assert_eq!(f.opcode, 1, "first frame must be text: {f:?}");
    let v: Value = serde_json::from_slice(&f.payload).expect("initial is JSON");
    assert_eq!(v["type"], "initial");
    ws
}

/// After a violation: the server's close frame carries `code`; we answer the close and the
/// TCP connection must end.
fn assert_ws_closed_with(ws: &mut RawWs, code: u16, what: &str) {
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

fn vm_rss_kib(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn connect_from_ip(ip: &str, to: SocketAddr) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    let src: SocketAddr = format!("{ip}:0").parse().unwrap();
    sock.bind(&src.into())?;
    sock.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Reactor turns that took longer than `le` seconds (from catalytic_loop_busy_seconds).
fn loop_turns_over(srv: &Server, le: &str) -> f64 {
    let m = srv.metrics();
    let count = metric_value(&m, "catalytic_loop_busy_seconds_count", &[]).unwrap_or(0.0);
    let under =
        metric_value(&m, "catalytic_loop_busy_seconds_bucket", &[("le", le)]).unwrap_or(0.0);
    count - under
}

/// CPU-heavy cases and the timing-sensitive heartbeat case do not run at the same time (the
/// test machine may have only two cores); everything else runs in parallel.
static HEAVY: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn heavy() -> std::sync::MutexGuard<'static, ()> {
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

fn open_connections(srv: &Server) -> f64 {
    srv.metric("catalytic_open_connections", &[])
}

// =============================================================================================
// Slow and malformed HTTP
// =============================================================================================

#[test]
fn slowloris_is_shed_with_408_while_others_are_served() {
    const N: usize = 200;
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let trickle: Vec<u8> = {
        let mut t = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".to_vec();
        t.extend(std::iter::repeat_n(b'a', 64));
        t
    };
    struct Slow {
        s: TcpStream,
        at: Instant,
        sent: usize,
        got: Vec<u8>,
        ended: Option<Instant>,
    }
    let mut slow: Vec<Slow> = (0..N)
        .map(|_| {
            let s = srv.connect();
            s.set_nonblocking(true).unwrap();
            Slow {
                s,
                at: Instant::now(),
                sent: 0,
                got: Vec::new(),
                ended: None,
            }
        })
        .collect();
    let start = Instant::now();
    let mut probes: Vec<(f64, Duration)> = Vec::new();
    let mut next_probe = Duration::from_secs(2);
    let mut mid_broadcast_done = false;
    let mut buf = [0u8; 1024];
    // 200 connections × one byte per second, polled every 20 ms; bounded by 15 s.
    while start.elapsed() < Duration::from_secs(15) {
        let mut open = 0;
        for c in slow.iter_mut().filter(|c| c.ended.is_none()) {
            for _ in 0..64 {
                match c.s.read(&mut buf) {
                    Ok(0) => {
                        c.ended = Some(Instant::now());
                        break;
                    }
                    Ok(n) => c.got.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.ended = Some(Instant::now());
                        break;
                    }
                }
            }
            if c.ended.is_some() {
                continue;
            }
            open += 1;
            // One more byte each second since the connection opened.
            let due = (c.at.elapsed().as_secs() as usize + 1).min(trickle.len());
            if c.sent < due && c.got.is_empty() {
                let _ = c.s.write(&trickle[c.sent..c.sent + 1]);
                c.sent += 1;
            }
        }
        if open == 0 {
            break;
        }
        if start.elapsed() >= next_probe && next_probe <= Duration::from_secs(8) {
            probes.push((start.elapsed().as_secs_f64(), timed_healthz(&srv)));
            next_probe += Duration::from_secs(3);
            if !mid_broadcast_done {
                // A broadcast in the middle of the attack reaches the live admin too.
                assert_serving(&srv, &live, "slowloris (mid-attack)");
                mid_broadcast_done = true;
            }
        }
        thread::sleep(Duration::from_millis(20));
    }
    eprintln!("slowloris: /healthz probes during the attack (t s, latency): {probes:?}");
    for (t, d) in &probes {
        assert!(
            *d < Duration::from_secs(1),
            "/healthz at t={t:.1}s took {d:?}"
        );
    }
    assert!(probes.len() >= 2, "probes ran: {probes:?}");
    let mut lifetimes = Vec::new();
    for (i, c) in slow.iter().enumerate() {
        let ended = c
            .ended
            .unwrap_or_else(|| panic!("slow connection {i} still open after 15 s"));
        let life = ended - c.at;
        lifetimes.push(life);
        let text = String::from_utf8_lossy(&c.got);
        assert!(
            text.starts_with("HTTP/1.1 408"),
            "slow connection {i}: expected a 408 before the close, got {text:?}"
        );
        assert!(
            life >= Duration::from_millis(9_000) && life <= Duration::from_millis(12_500),
            "slow connection {i} closed after {life:?} (want ~10 s)"
        );
    }
    let min = lifetimes.iter().min().unwrap();
    let max = lifetimes.iter().max().unwrap();
    eprintln!("slowloris: {N} connections shed with 408 after {min:?}..{max:?}");
    assert_serving(&srv, &live, "slowloris");
}

#[test]
fn oversized_request_heads_get_431() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let host = srv.addr.to_string();
    // One 20 KiB header value.
    let big = format!(
        "GET /healthz HTTP/1.1\r\nHost: {host}\r\nX-Big: {}\r\n\r\n",
        "a".repeat(20 * 1024)
    );
    assert_refused_and_closed(&srv, big.as_bytes(), &[431], "20 KiB header");
    // 17 KiB made of many small headers (under the header-count limit).
    let mut many = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n");
    for i in 0..60 {
        many.push_str(&format!("X-H{i}: {}\r\n", "b".repeat(290)));
    }
    many.push_str("\r\n");
    assert!(many.len() > 16 * 1024);
    assert_refused_and_closed(&srv, many.as_bytes(), &[431], "17 KiB of headers");
    // Too many headers.
    let mut count = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n");
    for i in 0..200 {
        count.push_str(&format!("X-{i}: v\r\n"));
    }
    count.push_str("\r\n");
    assert_refused_and_closed(&srv, count.as_bytes(), &[431], "200 headers");
    // A huge request line with no end at all (16 KiB + 1 and never a CRLF).
    let line = format!("GET /{} HTTP/1.1", "p".repeat(20 * 1024));
    assert_refused_and_closed(&srv, line.as_bytes(), &[431, 414], "20 KiB request line");
    // A huge cookie on an admin route.
    let cookie = format!("Cookie: admin_session={}\r\n", "c".repeat(17 * 1024));
    let req = format!("GET /api/users HTTP/1.1\r\nHost: {host}\r\n{cookie}\r\n");
    assert_refused_and_closed(&srv, req.as_bytes(), &[431], "17 KiB cookie");
    assert_serving(&srv, &live, "oversized heads");
}

#[test]
fn malformed_requests_and_garbage_get_400() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let host = srv.addr.to_string();
    let mut rng = Rng(0x00C0_FFEE);
    let mut garbage = vec![0x80u8];
    garbage.extend(rng.bytes(1024));
    let tls_hello: &[u8] = &[
        0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03, 0xaa, 0xbb, 0xcc, 0xdd,
    ];
    let cases: Vec<(&str, Vec<u8>, &[u16])> = vec![
        ("garbage word", b"GARBAGE\r\n\r\n".to_vec(), &[400]),
        ("NUL bytes", b"\x00\x01\x02\x03\r\n\r\n".to_vec(), &[400]),
        ("TLS ClientHello", tls_hello.to_vec(), &[400]),
        ("1 KiB random bytes", garbage, &[400]),
        (
            "junk after the version",
            format!("GET / HTTP/1.1 extra\r\nHost: {host}\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "HTTP/2.0 request line",
            format!("GET / HTTP/2.0\r\nHost: {host}\r\n\r\n").into_bytes(),
            &[400, 505],
        ),
        (
            "absolute-form target",
            format!("GET http://evil.example/ HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "asterisk target",
            format!("GET * HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "header without a colon",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nNoColonHere\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "space in a header name",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nBad Name: v\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "bare CR in a header value",
            format!("GET / HTTP/1.1\r\nHost: {host}\r\nX: a\rb\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "control byte in the target",
            format!("GET /\x7f HTTP/1.1\r\nHost: {host}\r\n\r\n").into_bytes(),
            &[400],
        ),
        (
            "no Host on HTTP/1.1",
            b"GET /healthz HTTP/1.1\r\n\r\n".to_vec(),
            &[400],
        ),
        (
            "two Host headers",
            format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\nHost: evil.example\r\n\r\n")
                .into_bytes(),
            &[400],
        ),
        (
            "Content-Length: abc",
            format!("POST /api/users HTTP/1.1\r\nHost: {host}\r\nContent-Length: abc\r\n\r\n")
                .into_bytes(),
            &[400],
        ),
        (
            "Content-Length: -1",
            format!("POST /api/users HTTP/1.1\r\nHost: {host}\r\nContent-Length: -1\r\n\r\n")
                .into_bytes(),
            &[400],
        ),
        (
            "Content-Length overflowing u64",
            format!(
                "POST /api/users HTTP/1.1\r\nHost: {host}\r\nContent-Length: 184467440737095516160\r\n\r\n"
            )
            .into_bytes(),
            &[400, 413],
        ),
        (
            "non-UTF-8 Cookie value",
            [
                format!("GET /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: admin_session=").as_bytes(),
                b"\xff\xfe\r\n\r\n",
            ]
            .concat(),
            &[400, 401],
        ),
    ];
    for (what, bytes, allowed) in &cases {
        let (mut c, r) = raw_exchange(&srv, bytes);
        assert!(
            allowed.contains(&r.status),
            "{what}: status {} (want {allowed:?}), body {:?}",
            r.status,
            r.text()
        );
        if r.status == 400 {
            r.assert_error(400, what);
            assert!(
                rest_until_close(&mut c, Duration::from_secs(3)).is_some(),
                "{what}: connection still open after 400"
            );
        }
        eprintln!("{what}: {}", r.status);
    }
    assert_serving(&srv, &live, "malformed requests");
}

// =============================================================================================
// WebSocket handshakes and frames
// =============================================================================================

#[test]
fn bad_websocket_upgrades_are_refused() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
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
fn unmasked_client_frame_is_closed_1002() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let mut ws = raw_admin(&srv);
    ws.send_raw(&encode_frame(true, 0, 1, br#"{"type":"pong"}"#, None))
        .unwrap();
    assert_ws_closed_with(&mut ws, 1002, "unmasked text frame");
    assert_serving(&srv, &live, "unmasked frame");
}

#[test]
fn invalid_utf8_text_is_closed_1007() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
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
    let live = Live::start(&srv);
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
    let live = Live::start(&srv);
    let mut ws = raw_admin(&srv);
    ws.send(false, 9, b"ping-part").unwrap();
    assert_ws_closed_with(&mut ws, 1002, "ping without FIN");
    let mut ws = raw_admin(&srv);
    ws.send(false, 8, &1000u16.to_be_bytes()).unwrap();
    assert_ws_closed_with(&mut ws, 1002, "close without FIN");
    let mut ws = raw_admin(&srv);
    ws.send(false, 10, b"pong-part").unwrap();
    assert_ws_closed_with(&mut ws, 1002, "pong without FIN");
    // A ping in the middle of a fragmented text message is legal and must be answered.
    let mut ws = raw_admin(&srv);
    ws.send(false, 1, br#"{"type":"#).unwrap();
    ws.send(true, 9, b"mid").unwrap();
    ws.send(true, 0, br#""pong"}"#).unwrap();
    let f = ws
        .read_frame(WAIT)
        .expect("pong to a ping between fragments");
    assert_eq!((f.opcode, f.payload.as_slice()), (10, &b"mid"[..]));
    assert_serving(&srv, &live, "fragmented control frames");
}

#[test]
fn other_protocol_violations_are_closed_1002() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
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

#[test]
fn ping_flood_is_answered_and_server_stays_responsive() {
    let _heavy = heavy();
    const PINGS: u32 = 5_000;
    const FLOODERS: usize = 3;
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let mut floods = Vec::new();
    for f in 0..FLOODERS {
        let mut ws = raw_admin(&srv);
        let mut w = ws.s.try_clone().unwrap();
        let writer = thread::spawn(move || {
            let mut batch = Vec::new();
            for i in 0..PINGS {
                batch.extend(encode_frame(true, 0, 9, &i.to_be_bytes(), Some(MASK)));
                if batch.len() > 16 * 1024 || i == PINGS - 1 {
                    if w.write_all(&batch).is_err() {
                        return false;
                    }
                    batch.clear();
                }
            }
            true
        });
        let reader = thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(12);
            let (mut pongs, mut last) = (0u32, None);
            while Instant::now() < deadline {
                let left = deadline.saturating_duration_since(Instant::now());
                match ws.read_frame(left) {
                    Ok(fr) if fr.opcode == 10 => {
                        pongs += 1;
                        let n = u32::from_be_bytes(fr.payload[..4].try_into().unwrap());
                        if let Some(prev) = last {
                            assert!(n > prev, "flooder {f}: pong {n} after {prev}");
                        }
                        last = Some(n);
                        if n == PINGS - 1 {
                            break;
                        }
                    }
                    Ok(fr) if fr.opcode == 8 => panic!("flooder {f}: closed {:?}", fr.close_code()),
                    Ok(_) => {}
                    Err(e) => panic!("flooder {f}: {e} after {pongs} pongs"),
                }
            }
            (pongs, last)
        });
        floods.push((writer, reader));
    }
    let mut probes = Vec::new();
    for _ in 0..5 {
        probes.push(timed_healthz(&srv));
        thread::sleep(Duration::from_millis(50));
    }
    for (i, (w, r)) in floods.into_iter().enumerate() {
        assert!(w.join().unwrap(), "flooder {i}: write failed");
        let (pongs, last) = r.join().unwrap();
        eprintln!("flooder {i}: {pongs} pongs for {PINGS} pings, last payload {last:?}");
        assert_eq!(
            last,
            Some(PINGS - 1),
            "flooder {i}: the last ping must be answered"
        );
        assert!(pongs >= 1);
    }
    eprintln!("ping flood: /healthz latencies {probes:?}");
    assert!(
        probes.iter().all(|d| *d < Duration::from_secs(1)),
        "{probes:?}"
    );
    assert_serving(&srv, &live, "ping flood");
}

#[test]
fn cross_site_websocket_hijacking_is_refused() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let cookie = srv.admin_cookie();
    let origins = [
        "https://evil.example".to_string(),
        "http://evil.example".to_string(),
        "null".to_string(),
        format!("http://{}.evil.example", srv.addr.ip()),
        format!("http://{}@evil.example", srv.addr),
        format!("{}.evil.example", srv.origin()),
    ];
    for origin in origins.iter().map(String::as_str) {
        let how = assert_refused(
            srv.ws_connect("/admin/stream", Some(&cookie), Some(origin)),
            &format!("Origin {origin}"),
        );
        eprintln!("Origin {origin}: {how}");
        // Raw: whatever the server answers, no `initial` frame may follow.
        let (mut ws, resp) = srv.raw_ws(
            "/admin/stream",
            &[("Cookie", &cookie), ("Origin", origin)],
            &[],
        );
        if resp.status == 101 {
            let f = ws.read_frame(WAIT).expect("a frame after 101");
            assert_eq!(
                f.opcode, 8,
                "Origin {origin}: first frame must be a close: {f:?}"
            );
        } else {
            assert!(
                (400..500).contains(&resp.status),
                "Origin {origin}: {}",
                resp.status
            );
        }
    }
    assert_serving(&srv, &live, "CSWSH");
}

#[test]
fn session_streams_without_the_right_token_are_closed_1008() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let a = srv.started_session(5);
    let b = srv.started_session(5);
    const INVALID: &str = "Invalid or expired session";
    // Positive control.
    let mut ok = srv
        .session_ws(&a.session_id, &a.token)
        .expect("own session stream");
    assert_eq!(recv_json(&mut ok, WAIT)["type"], "time_update");
    close_normal(&mut ok);

    let a_path = format!("/session/{}/stream", a.session_id);
    assert_closed_1008(srv.ws_with(&a_path, &[]), INVALID, "no token");
    assert_closed_1008(
        srv.session_ws(&a.session_id, &b.token),
        INVALID,
        "another user's session token in ?token=",
    );
    assert_closed_1008(
        srv.ws_connect(&a_path, Some(&format!("session_token={}", b.cookie)), None),
        INVALID,
        "another user's session_token cookie",
    );
    assert_closed_1008(
        srv.session_ws(&b.session_id, &a.token),
        INVALID,
        "A's token on B's stream",
    );
    let mut rng = Rng(42);
    let random_token: String = rng.bytes(32).iter().map(|b| format!("{b:02x}")).collect();
    assert_closed_1008(
        srv.session_ws(&a.session_id, &random_token),
        INVALID,
        "random 64-hex token",
    );
    assert_closed_1008(srv.session_ws(&a.session_id, ""), INVALID, "empty token");
    assert_closed_1008(
        srv.session_ws(&a.session_id, "%27%20OR%20%271%27%3D%271"),
        INVALID,
        "SQL-injection token",
    );
    // Guessed ids with A's valid token.
    let a_id: i64 = a.session_id.parse().unwrap_or(a.user_id);
    for id in [
        (a_id + 1).to_string(),
        (a_id + 1000).to_string(),
        "0".to_string(),
        "-1".to_string(),
        "99999999999999999999".to_string(),
        "abc".to_string(),
        format!("{a_id}%00"),
        format!("0{a_id}x"),
    ] {
        if id == b.session_id {
            continue;
        }
        let path = format!("/session/{id}/stream?token={}", a.token);
        match srv.ws_with(&path, &[]) {
            Ok(ws) => assert_closed_1008(Ok(ws), INVALID, &format!("guessed id {id}")),
            Err(tungstenite::Error::Http(resp)) => {
                let st = resp.status().as_u16();
                assert!((400..500).contains(&st), "guessed id {id}: HTTP {st}");
            }
            Err(e) => panic!("guessed id {id}: {e}"),
        }
    }
    assert_serving(&srv, &live, "session stream guessing");
}

#[test]
fn admin_routes_refuse_missing_expired_and_forged_cookies() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let valid = srv.admin_cookie();
    let token = valid.trim_start_matches("admin_session=").to_string();
    // A token that expires ~1 s from now.
    let short = format!(
        "admin_session={}",
        srv.admin_token_with_ttl(ADMIN_EMAIL, "0.0003")
    );
    let minted = Instant::now();
    // A logged-out token.
    let gone = srv.second_admin_cookie();
    let r = srv.request("POST", "/api/admin/logout", &[("Cookie", &gone)], None);
    assert_eq!(r.status, 204, "logout");
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'a' { b'b' } else { b'a' };
    let flipped = format!("admin_session={}", String::from_utf8(flipped).unwrap());
    let mut rng = Rng(7);
    let random: String = rng.bytes(32).iter().map(|b| format!("{b:02x}")).collect();
    let user = srv.create_user("Target", "User", None);
    let id = id_of(&user);
    while minted.elapsed() < Duration::from_millis(1_600) {
        thread::sleep(Duration::from_millis(50));
    }
    let cookies: Vec<(String, Option<String>)> = vec![
        ("missing".into(), None),
        ("empty".into(), Some("admin_session=".into())),
        ("expired".into(), Some(short)),
        ("logged out".into(), Some(gone)),
        ("last character flipped".into(), Some(flipped)),
        ("token plus a byte".into(), Some(format!("{valid}x"))),
        (
            "prefix of the token".into(),
            Some(format!("admin_session={}", &token[..token.len() / 2])),
        ),
        (
            "random 64 hex".into(),
            Some(format!("admin_session={random}")),
        ),
        (
            "SQL injection".into(),
            Some("admin_session=' OR '1'='1".into()),
        ),
        (
            "other cookie name".into(),
            Some(format!("session_token={token}")),
        ),
        (
            "token as another name's value".into(),
            Some(format!("xadmin_session={token}")),
        ),
        (
            "8 KiB of junk".into(),
            Some(format!("admin_session={}", "z".repeat(8192))),
        ),
    ];
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/users".into(), None),
        (
            "POST",
            "/api/users".into(),
            Some(json!({"first_name":"Forged","last_name":"Cookie","email":"forged@example.com"})),
        ),
        (
            "PATCH",
            format!("/api/users/{id}"),
            Some(json!({"last_name": "pwned"})),
        ),
        ("DELETE", format!("/api/users/{id}"), None),
        ("POST", format!("/api/users/{id}/invite"), None),
        ("POST", "/api/admin/logout".into(), None),
    ];
    for (what, cookie) in &cookies {
        for (m, path, body) in &routes {
            let r = srv.json(m, path, cookie.as_deref(), body.as_ref());
            r.assert_error(401, &format!("{m} {path} with {what} cookie"));
        }
        let res = srv.ws_connect("/admin/stream", cookie.as_deref(), None);
        assert_closed_1008(
            res,
            "Unauthorized",
            &format!("/admin/stream with {what} cookie"),
        );
    }
    // Nothing changed.
    let after = srv.user(id);
    assert_eq!(after["last_name"], "User", "a forged cookie changed a user");
    assert!(
        !srv.users()
            .iter()
            .any(|u| u["email"] == "forged@example.com"),
        "a forged cookie created a user"
    );
    assert_serving(&srv, &live, "forged cookies");
}

// =============================================================================================
// Hostile JSON and bodies
// =============================================================================================

#[test]
fn injection_and_unicode_strings_round_trip_byte_for_byte() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let cookie = srv.admin_cookie();
    // Must be accepted (1–200 characters) and returned exactly.
    let names: Vec<String> = vec![
        "'; DROP TABLE users; --".into(),
        "Robert'); DROP TABLE users;--".into(),
        "1' OR '1'='1".into(),
        "\"".into(),
        "\\".into(),
        "\\\"\\'".into(),
        "a\u{0}b".into(),
        "\u{0}".into(),
        "😀👩‍👩‍👧‍👦🏳️‍🌈".into(),
        "\u{202E}evil\u{202C}.exe".into(),
        "\u{200F}שלום\u{200E} עולם".into(),
        "مرحبا".into(),
        "e\u{301}\u{302}\u{303}\u{304}".into(),
        "Z\u{334}\u{321}\u{31b}a\u{336}l\u{337}g\u{338}o".into(),
        "<script>alert(1)</script>".into(),
        "%s%n%x%p".into(),
        "${jndi:ldap://evil.example/a}".into(),
        "{{7*7}}".into(),
        "\u{FEFF}bom".into(),
        "tab\there\nnewline\r\n".into(),
        "\u{7f}\u{1b}[31mred".into(),
        "NULL".into(),
        "null".into(),
        "   ".into(),
        "\u{10FFFF}\u{FFFD}".into(),
        "日本語の名前".into(),
        "a".repeat(200),
        "é".repeat(200),
        "😀".repeat(200),
    ];
    let mut created = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let email = format!("uni{i}.{}", srv.unique_email());
        let body = json!({"first_name": name, "last_name": name, "email": email});
        let r = srv.json("POST", "/api/users", Some(&cookie), Some(&body));
        assert_ne!(r.status, 500, "name {name:?}: 500 {}", r.text());
        if name.contains('\u{0}') && r.status == 422 {
            eprintln!("name {name:?}: refused 422 (allowed for NUL)");
            continue;
        }
        assert_eq!(
            r.status,
            201,
            "name {name:?} ({} chars): {}",
            name.chars().count(),
            r.text()
        );
        let u = r.json();
        assert_eq!(
            u["first_name"].as_str(),
            Some(name.as_str()),
            "POST answer first_name"
        );
        assert_eq!(
            u["last_name"].as_str(),
            Some(name.as_str()),
            "POST answer last_name"
        );
        let ev = live.wait_for("user_added", WAIT, |v| {
            v["type"] == "user_added" && v["data"]["id"] == u["id"]
        });
        assert_eq!(
            ev["data"]["first_name"].as_str(),
            Some(name.as_str()),
            "stream first_name"
        );
        created.push((id_of(&u), name.clone(), email));
    }
    // Every field of PATCH as well.
    let target = srv.create_user("Patch", "Target", None);
    let tid = id_of(&target);
    for name in &names {
        let r = srv.patch_user(tid, &json!({"first_name": name, "last_name": name}));
        assert_ne!(r.status, 500, "PATCH {name:?}");
        if name.contains('\u{0}') && r.status == 422 {
            continue;
        }
        assert_eq!(r.status, 200, "PATCH {name:?}: {}", r.text());
        assert_eq!(r.json()["last_name"].as_str(), Some(name.as_str()));
    }
    // Too long, empty, wrong types: 422, never 500.
    let bad: Vec<(&str, Value)> = vec![
        ("201 ASCII chars", json!("a".repeat(201))),
        ("201 two-byte chars", json!("é".repeat(201))),
        ("201 emoji", json!("😀".repeat(201))),
        ("empty", json!("")),
        ("number", json!(123)),
        ("null", Value::Null),
        ("array", json!(["a"])),
        ("object", json!({"$ne": null})),
        ("bool", json!(true)),
    ];
    for (what, v) in &bad {
        let body = json!({"first_name": v, "last_name": "X", "email": srv.unique_email()});
        let r = srv.json("POST", "/api/users", Some(&cookie), Some(&body));
        r.assert_error(422, &format!("first_name {what}"));
        let r = srv.patch_user(tid, &json!({ "last_name": v }));
        r.assert_error(422, &format!("PATCH last_name {what}"));
    }
    // Hostile emails: stored exactly or refused with 422; never a 500.
    for email in [
        "'; DROP TABLE users; --@example.com",
        "o'hara@example.com",
        "\"quoted\"@example.com",
        "a\u{0}b@example.com",
        "ü@exämple.com",
        "x@example.com'--",
        "@example.com",
        "a@",
        "a@@example.com",
        "a@b@example.com",
        "a@example..com",
        &format!("{}@example.com", "l".repeat(300)),
    ] {
        let body = json!({"first_name": "E", "last_name": "Mail", "email": email});
        let r = srv.json("POST", "/api/users", Some(&cookie), Some(&body));
        match r.status {
            201 => assert_eq!(r.json()["email"].as_str(), Some(email), "email round trip"),
            422 | 409 => r.assert_error(r.status, &format!("email {email:?}")),
            s => panic!("email {email:?}: status {s}: {}", r.text()),
        }
        eprintln!("email {email:?}: {}", r.status);
    }
    // Hostile numbers.
    for (what, v) in [
        ("negative", json!(-1)),
        ("zero", json!(0)),
        ("huge", json!(u64::MAX)),
        ("float", json!(2.5)),
        ("string", json!("10")),
        ("1e300", json!(1e300)),
    ] {
        let body = json!({"first_name":"N","last_name":"N","email": srv.unique_email(),"questions_total": v});
        let r = srv.json("POST", "/api/users", Some(&cookie), Some(&body));
        r.assert_error(422, &format!("questions_total {what}"));
        let r = srv.patch_user(tid, &json!({ "questions_answered": v }));
        assert!(
            r.status == 422 || (r.status == 200 && what == "zero"),
            "PATCH questions_answered {what}: {} {}",
            r.status,
            r.text()
        );
    }
    // Everything reads back byte for byte, and the table is still there.
    let users = srv.users();
    for (id, name, email) in &created {
        let u = users
            .iter()
            .find(|u| u["id"].as_i64() == Some(*id))
            .unwrap_or_else(|| panic!("user {id} ({name:?}) missing from GET /api/users"));
        assert_eq!(
            u["first_name"].as_str(),
            Some(name.as_str()),
            "GET first_name"
        );
        assert_eq!(
            u["last_name"].as_str(),
            Some(name.as_str()),
            "GET last_name"
        );
        assert_eq!(u["email"].as_str(), Some(email.as_str()), "GET email");
        assert_user_shape(u);
    }
    assert!(
        users.len() > created.len(),
        "GET /api/users after the injections"
    );
    assert_serving(&srv, &live, "injection strings");
}

#[test]
fn malformed_json_gets_400_and_never_500() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let cookie = srv.admin_cookie();
    let host = srv.addr.to_string();
    let post = |body: &[u8]| -> Resp {
        srv.request(
            "POST",
            "/api/users",
            &[("Cookie", &cookie), ("Content-Type", "application/json")],
            Some(body),
        )
    };
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("open brace", b"{".to_vec()),
        ("plain text", b"not json".to_vec()),
        ("trailing garbage", b"{\"first_name\":\"a\"}x".to_vec()),
        ("single quotes", b"{'first_name':'a'}".to_vec()),
        ("trailing comma", b"{\"first_name\":\"a\",}".to_vec()),
        ("invalid UTF-8", b"{\"first_name\":\"\xff\xfe\"}".to_vec()),
        (
            "lone surrogate escape",
            br#"{"first_name":"\ud800","last_name":"x","email":"s@example.com"}"#.to_vec(),
        ),
        ("bad escape", br#"{"first_name":"\q"}"#.to_vec()),
        ("NaN", br#"{"questions_total":NaN}"#.to_vec()),
        (
            "raw control char in string",
            b"{\"first_name\":\"a\x01b\"}".to_vec(),
        ),
        ("60k nested arrays", "[".repeat(60_000).into_bytes()),
        ("20k nested objects", "{\"a\":".repeat(12_000).into_bytes()),
        ("only whitespace", b"   \r\n ".to_vec()),
        ("UTF-8 BOM then JSON", b"\xef\xbb\xbf{}".to_vec()),
    ];
    for (what, body) in &malformed {
        let r = post(body);
        assert!(
            r.status == 400 || (r.status == 422 && *what == "only whitespace"),
            "{what}: status {} {}",
            r.status,
            r.text()
        );
        r.assert_error(r.status, what);
    }
    // Well-formed but not an object: 400 or 422.
    for body in ["[]", "\"str\"", "null", "42", "true", "[{}]"] {
        let r = post(body.as_bytes());
        assert!(
            r.status == 400 || r.status == 422,
            "{body}: {} {}",
            r.status,
            r.text()
        );
        r.assert_error(r.status, body);
    }
    // Deep nesting inside a valid object, and a huge number.
    let deep = format!(
        "{{\"first_name\":{}1{},\"last_name\":\"x\",\"email\":\"d@example.com\"}}",
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    let r = post(deep.as_bytes());
    assert!(
        r.status == 400 || r.status == 422,
        "deep value: {}",
        r.status
    );
    let r = post(format!("{{\"questions_total\":1{}}}", "0".repeat(5000)).as_bytes());
    assert!(
        r.status == 400 || r.status == 422,
        "huge number: {}",
        r.status
    );
    // Same on PATCH and session routes.
    let u = srv.create_user("J", "Son", None);
    let r = srv.request(
        "PATCH",
        &format!("/api/users/{}", id_of(&u)),
        &[("Cookie", &cookie), ("Content-Type", "application/json")],
        Some(b"{\"last_name\":"),
    );
    r.assert_error(400, "PATCH malformed");
    let r = srv.request(
        "POST",
        "/api/session/activate",
        &[("Content-Type", "application/json")],
        Some(b"{\"token\":"),
    );
    r.assert_error(400, "activate malformed");
    let r = srv.request(
        "POST",
        "/api/admin/login",
        &[("Content-Type", "application/json")],
        Some(b"[[[[[[[["),
    );
    r.assert_error(400, "login malformed");
    // A body shorter than its Content-Length: the request never completes (408 later, not 400):
    // just check the server is not blocked while it waits.
    let mut c = srv.http();
    c.write_raw(
        format!("POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\"").as_bytes(),
    )
    .unwrap();
    assert!(timed_healthz(&srv) < Duration::from_secs(1));
    drop(c);
    assert_serving(&srv, &live, "malformed JSON");
}

#[test]
fn ten_mib_body_gets_413_and_server_is_fine() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let cookie = srv.admin_cookie();
    let host = srv.addr.to_string();
    const TEN_MIB: usize = 10 * 1024 * 1024;
    // Announced and sent.
    let mut c = srv.http();
    let head = format!(
        "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: {TEN_MIB}\r\n\r\n"
    );
    c.write_raw(head.as_bytes()).unwrap();
    let mut w = c.stream().try_clone().unwrap();
    w.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
    let writer = thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < TEN_MIB {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    let t = Instant::now();
    let r = c.read_response().expect("answer to a 10 MiB body");
    r.assert_error(413, "10 MiB body");
    eprintln!("10 MiB body: 413 after {:?}", t.elapsed());
    let sent = writer.join().unwrap();
    eprintln!("10 MiB body: writer got {sent} bytes out");
    drop(c);
    // Announced only: the answer must not wait for the body.
    let mut c = srv.http();
    c.write_raw(head.as_bytes()).unwrap();
    let t = Instant::now();
    let r = c
        .read_response()
        .expect("answer to an announced 10 MiB body");
    r.assert_error(413, "announced 10 MiB body");
    assert!(
        t.elapsed() < Duration::from_secs(1),
        "413 took {:?}",
        t.elapsed()
    );
    // Just over the limit.
    let body = vec![b' '; 64 * 1024 + 1];
    let r = srv.request(
        "POST",
        "/api/users",
        &[("Cookie", &cookie), ("Content-Type", "application/json")],
        Some(&body),
    );
    r.assert_error(413, "64 KiB + 1 body");
    let rss = vm_rss_kib(srv.pid());
    eprintln!("10 MiB body: server RSS {rss} KiB");
    assert!(rss < 200 * 1024, "server RSS {rss} KiB after a 10 MiB body");
    assert_serving(&srv, &live, "10 MiB body");
}

#[test]
fn wrong_content_type_gets_415() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let cookie = srv.admin_cookie();
    let body =
        json!({"first_name":"Type","last_name":"Wrong","email":"ct@example.com"}).to_string();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=xyz"),
        Some("application/jsonx"),
        Some("application/xml"),
        Some(""),
        None,
    ] {
        let mut h = vec![("Cookie", cookie.as_str())];
        if let Some(ct) = ct {
            h.push(("Content-Type", ct));
        }
        let r = srv.request("POST", "/api/users", &h, Some(body.as_bytes()));
        r.assert_error(415, &format!("Content-Type {ct:?}"));
    }
    // Parameters on a JSON type are fine.
    let r = srv.request(
        "POST",
        "/api/users",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "Application/JSON; charset=utf-8"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(
        r.status,
        201,
        "application/json with a charset: {}",
        r.text()
    );
    let n = srv
        .users()
        .iter()
        .filter(|u| u["email"] == "ct@example.com")
        .count();
    assert_eq!(n, 1, "exactly one user created");
    assert_serving(&srv, &live, "wrong Content-Type");
}

#[test]
fn request_smuggling_is_refused_and_not_executed() {
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let cookie = srv.admin_cookie();
    let host = srv.addr.to_string();
    let smuggled = |tag: &str| {
        let body = json!({"first_name":"Smuggled","last_name":tag,"email":format!("smuggled.{tag}@example.com")})
            .to_string();
        format!(
            "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
    };
    let chunk_end = "0\r\n\r\n";
    let mut tags = Vec::new();
    // (Content-Length covers: just the chunk terminator | everything) × (header order).
    for (i, (cl_all, te_first)) in [(false, false), (false, true), (true, false), (true, true)]
        .into_iter()
        .enumerate()
    {
        let tag = format!("clte{i}");
        let inner = smuggled(&tag);
        let body = format!("{chunk_end}{inner}");
        let cl = if cl_all { body.len() } else { chunk_end.len() };
        let (h1, h2) = (
            format!("Content-Length: {cl}\r\n"),
            "Transfer-Encoding: chunked\r\n".to_string(),
        );
        let hs = if te_first {
            format!("{h2}{h1}")
        } else {
            format!("{h1}{h2}")
        };
        let req = format!(
            "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\n{hs}\r\n{body}"
        );
        assert_refused_and_closed(&srv, req.as_bytes(), &[400], &format!("CL+TE case {i}"));
        tags.push(tag);
    }
    // Obfuscated Transfer-Encoding variants, each with a Content-Length too.
    for (i, te) in [
        "Transfer-Encoding: Chunked",
        "Transfer-Encoding:  chunked ",
        "Transfer-Encoding: gzip, chunked",
        "transfer-encoding: identity",
        "Transfer-Encoding: xchunked",
    ]
    .into_iter()
    .enumerate()
    {
        let tag = format!("te{i}");
        let body = format!("{chunk_end}{}", smuggled(&tag));
        let req = format!(
            "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{te}\r\n\r\n{body}",
            chunk_end.len()
        );
        assert_refused_and_closed(&srv, req.as_bytes(), &[400], te);
        tags.push(tag);
    }
    // Chunked alone: refused (400/411) and closed; the chunk's content is not a request.
    let tag = "chunked-only".to_string();
    let inner = smuggled(&tag);
    let req = format!(
        "POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n{:x}\r\n{inner}\r\n0\r\n\r\n{inner}",
        inner.len()
    );
    assert_refused_and_closed(&srv, req.as_bytes(), &[400, 411], "chunked body");
    tags.push(tag);
    // Two different Content-Lengths.
    let tag = "dup-cl".to_string();
    let inner = smuggled(&tag);
    let req = format!(
        "POST /healthz HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0\r\nContent-Length: {}\r\n\r\n{inner}",
        inner.len()
    );
    assert_refused_and_closed(&srv, req.as_bytes(), &[400], "conflicting Content-Lengths");
    tags.push(tag);
    // Content-Length with a list value.
    let tag = "list-cl".to_string();
    let inner = smuggled(&tag);
    let req =
        format!("POST /healthz HTTP/1.1\r\nHost: {host}\r\nContent-Length: 0, 0\r\n\r\n{inner}");
    assert_refused_and_closed(&srv, req.as_bytes(), &[400], "Content-Length: 0, 0");
    tags.push(tag);

    // None of the smuggled requests ran.
    live.assert_none("a smuggled user_added", Duration::from_millis(500), |v| {
        v["type"] == "user_added" && v["data"]["first_name"] == "Smuggled"
    });
    let users = srv.users();
    for tag in &tags {
        assert!(
            !users.iter().any(|u| u["last_name"] == tag.as_str()),
            "smuggled request {tag} was executed"
        );
    }
    assert!(!users.iter().any(|u| u["first_name"] == "Smuggled"));
    assert_serving(&srv, &live, "request smuggling");
}

#[test]
fn pipelined_flood_is_answered_in_order() {
    let _heavy = heavy();
    const N: usize = 2_000;
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let host = srv.addr.to_string();
    let mut reqs = Vec::new();
    let mut want = Vec::new();
    for i in 0..N {
        let (line, st) = match i % 3 {
            0 => (format!("GET /healthz?n={i} HTTP/1.1"), 200),
            1 => (format!("GET /no-such-page-{i} HTTP/1.1"), 404),
            _ => ("POST /healthz HTTP/1.1".to_string(), 405),
        };
        let cl = if st == 405 {
            "Content-Length: 0\r\n"
        } else {
            ""
        };
        reqs.extend_from_slice(format!("{line}\r\nHost: {host}\r\n{cl}\r\n").as_bytes());
        want.push(st);
    }
    let mut c = srv.http();
    let mut w = c.stream().try_clone().unwrap();
    let t = Instant::now();
    let writer = thread::spawn(move || w.write_all(&reqs).map(|_| ()));
    let mut got = Vec::with_capacity(N);
    for i in 0..N {
        let r = c
            .read_response()
            .unwrap_or_else(|e| panic!("pipelined response {i}: {e}"));
        got.push(r.status);
    }
    writer.join().unwrap().expect("pipelined write");
    eprintln!("{N} pipelined requests answered in {:?}", t.elapsed());
    assert_eq!(got, want, "pipelined answers in order");
    // The connection is still usable.
    let r = c.send("GET", "/healthz", &[], None).unwrap();
    assert_eq!(r.status, 200);
    drop(c);
    assert_serving(&srv, &live, "pipelined flood");
}

#[test]
fn pipelining_without_reading_is_paused_not_buffered() {
    let _heavy = heavy();
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let host = srv.addr.to_string();
    let rss_before = vm_rss_kib(srv.pid());
    let one = format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n");
    let chunk: Vec<u8> = one.as_bytes().repeat(64 * 1024 / one.len());
    let s = srv.connect();
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    let mut w = s.try_clone().unwrap();
    // Write until the server stops taking bytes (paused) — at most 256 MiB or 20 s.
    let writer = thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(20);
        let mut sent = 0usize;
        while sent < 256 * 1024 * 1024 && Instant::now() < deadline {
            match w.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => return (sent, true),
            }
        }
        (sent, false)
    });
    // Probe every 100 ms while the flood goes on (bounded: 40 probes).
    let mut probes = Vec::new();
    for _ in 0..40 {
        if writer.is_finished() {
            break;
        }
        probes.push(timed_healthz(&srv));
        thread::sleep(Duration::from_millis(100));
    }
    let (sent, blocked) = writer.join().unwrap();
    // Once paused, the flooder costs nothing: /healthz is fast again.
    let mut steady = Vec::new();
    for _ in 0..5 {
        steady.push(timed_healthz(&srv));
        thread::sleep(Duration::from_millis(20));
    }
    let worst = probes.iter().copied().max().unwrap_or_default();
    let rss_after = vm_rss_kib(srv.pid());
    let slow_turns = loop_turns_over(&srv, "0.25");
    eprintln!(
        "pipelining without reading: {} KiB accepted before the server paused; RSS {rss_before} -> {rss_after} KiB; \
         /healthz during the flood: worst {worst:?} of {} probes; after the pause: {steady:?}; \
         reactor turns over 250 ms: {slow_turns}",
        sent / 1024,
        probes.len()
    );
    assert!(
        blocked,
        "the server took {sent} bytes without being read from"
    );
    assert!(sent < 128 * 1024 * 1024, "server buffered {sent} bytes");
    assert!(
        rss_after < rss_before + 64 * 1024,
        "server RSS grew {rss_before} -> {rss_after} KiB"
    );
    // While the flooder's backlog is being answered, one reactor turn serves up to 2 x 16 reads
    // of 64 KiB (~55,000 tiny requests) before anyone else: over a second in a debug build.
    // Only a hang is a failure here; the figure is printed (and reported).
    assert!(
        worst < Duration::from_secs(3),
        "/healthz took {worst:?} during the flood"
    );
    assert!(
        steady.iter().all(|d| *d < Duration::from_secs(1)),
        "/healthz after the pause: {steady:?}"
    );
    // Reading resumes the flow: answers come.
    let mut c = HttpConn::new(s, srv.addr);
    for i in 0..100 {
        let r = c
            .read_response()
            .unwrap_or_else(|e| panic!("answer {i} after resuming: {e}"));
        assert_eq!(r.status, 200);
    }
    drop(c);
    assert_serving(&srv, &live, "pipelining without reading");
}

// =============================================================================================
// Connection churn, slow consumers, silent clients
// =============================================================================================

#[test]
fn rapid_connect_close_leaves_no_residue() {
    let _heavy = heavy();
    const N: usize = 3_000;
    let srv = Server::start(&[]);
    let live = Live::start(&srv);
    let baseline = open_connections(&srv);
    let addr = srv.addr;
    let host = addr.to_string();
    let t = Instant::now();
    let workers: Vec<_> = (0..3)
        .map(|w| {
            let host = host.clone();
            thread::spawn(move || {
                let mut failures = 0;
                for i in 0..N / 3 {
                    // From another loopback address than the probes: the churn may count
                    // against its own address's connection limit, by design.
                    let s = match connect_from_ip("127.0.0.2", addr) {
                        Ok(s) => s,
                        Err(_) => {
                            failures += 1;
                            continue;
                        }
                    };
                    match (i + w) % 4 {
                        0 => drop(s),
                        1 => {
                            // Reset instead of FIN.
                            let sock = socket2::Socket::from(s);
                            let _ = sock.set_linger(Some(Duration::ZERO));
                            drop(sock);
                        }
                        2 => {
                            // A request, then gone without reading the answer.
                            let mut s = s;
                            let _ = s.write_all(
                                format!("GET /healthz HTTP/1.1\r\nHost: {host}\r\n\r\n").as_bytes(),
                            );
                            drop(s);
                        }
                        _ => {
                            // Half a request head, then gone.
                            let mut s = s;
                            let _ = s.write_all(b"GET /metr");
                            drop(s);
                        }
                    }
                }
                failures
            })
        })
        .collect();
    let mut probes = Vec::new();
    while workers.iter().any(|w| !w.is_finished()) && t.elapsed() < Duration::from_secs(30) {
        probes.push(timed_healthz(&srv));
        thread::sleep(Duration::from_millis(100));
    }
    let failures: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    eprintln!(
        "{N} connect/close in {:?} ({failures} connect failures); /healthz max {:?}",
        t.elapsed(),
        probes.iter().max()
    );
    assert_eq!(failures, 0, "connects failed");
    assert!(
        probes.iter().all(|d| *d < Duration::from_secs(1)),
        "{probes:?}"
    );
    let after = srv.wait_metric(
        "catalytic_open_connections",
        &[],
        Duration::from_secs(5),
        |v| v <= baseline,
    );
    eprintln!("open connections: baseline {baseline}, after {after}");
    assert_serving(&srv, &live, "rapid connect/close");
}

#[test]
fn never_reading_client_is_dropped_and_others_keep_pace() {
    let _heavy = heavy();
    const MAX_EVENTS: usize = 5_000;
    let srv = Server::start(&["--max-outbox-bytes", "8192"]);
    let live = Live::start(&srv);
    let cookie = srv.admin_cookie();
    let u = srv.create_user("Slow", "Consumer", Some(10));
    let id = id_of(&u);
    live.wait_for("user_added for the target", WAIT, |v| {
        v["type"] == "user_added"
    });
    // The slow one: small receive buffer, handshake, then never read again.
    let mut slow = ws_handshake(
        srv.tiny_buffer_stream(),
        &srv.ws_url("/admin/stream"),
        &[("Cookie", &cookie)],
    )
    .expect("slow client handshake");
    let mut c = srv.http();
    let pad = "p".repeat(190);
    let t = Instant::now();
    let mut answered = Vec::with_capacity(MAX_EVENTS);
    let mut dropped_at = None;
    // Until the slow one is dropped (checked every 100), then 200 more; at most MAX_EVENTS.
    for i in 0..MAX_EVENTS {
        let body = json!({ "last_name": format!("n{i}{pad}"), "first_name": pad }).to_string();
        let r = c
            .send(
                "PATCH",
                &format!("/api/users/{id}"),
                &[("Cookie", &cookie), ("Content-Type", "application/json")],
                Some(body.as_bytes()),
            )
            .expect("PATCH");
        assert_eq!(r.status, 200, "PATCH {i}: {}", r.text());
        answered.push(Instant::now());
        if dropped_at.is_none()
            && i % 100 == 99
            && srv.metric("catalytic_ws_closed_total", &[("reason", "slow_consumer")]) >= 1.0
        {
            dropped_at = Some(i + 1);
        }
        if dropped_at.is_some_and(|d| i + 1 >= d + 200) {
            break;
        }
    }
    assert!(
        dropped_at.is_some(),
        "slow client never dropped after {MAX_EVENTS} broadcasts"
    );
    let events = answered.len();
    eprintln!("slow client dropped after {dropped_at:?} broadcasts of ~600 B");
    eprintln!("{events} PATCHes in {:?}", t.elapsed());
    // The live admin got every update, in order, each soon after its PATCH was answered.
    let mut worst = Duration::ZERO;
    let mut next = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while next < events {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(
            !left.is_zero(),
            "live admin: update {next} of {events} missing after 10 s"
        );
        let (at, ev) = live
            .rx
            .recv_timeout(left)
            .unwrap_or_else(|e| panic!("live admin: update {next} missing ({e:?})"));
        let v = ev.unwrap_or_else(|e| panic!("live admin died at update {next}: {e}"));
        if v["type"] != "user_update" {
            continue;
        }
        assert_eq!(
            v["data"]["last_name"].as_str(),
            Some(format!("n{next}{pad}").as_str()),
            "live admin: updates out of order or lost"
        );
        worst = worst.max(at.saturating_duration_since(answered[next]));
        next += 1;
    }
    eprintln!(
        "live admin: all {events} updates in order; worst lag after the PATCH answer {worst:?}"
    );
    assert!(
        worst < Duration::from_secs(1),
        "live admin lagged {worst:?}"
    );
    let n = srv.wait_metric(
        "catalytic_ws_closed_total",
        &[("reason", "slow_consumer")],
        WAIT,
        |v| v >= 1.0,
    );
    eprintln!("slow_consumer closes: {n}");
    // The slow client, reading at last, finds the stream over (close 1013 when it fitted).
    let end = wait_ended(&mut slow, Duration::from_secs(10));
    eprintln!("slow client's end: {end:?}");
    if let Some((code, _)) = end {
        assert_eq!(code, 1013, "slow consumer close code");
    }
    drop(c);
    assert_serving(&srv, &live, "never-reading client");
}

#[test]
fn client_that_never_answers_pings_is_removed() {
    let _heavy = heavy();
    let srv = Server::start(&["--heartbeat-secs", "1"]);
    let live = Live::start(&srv);
    let cookie = srv.second_admin_cookie();
    // Reads everything, answers nothing.
    let (mut deaf, resp) = srv.raw_ws("/admin/stream", &[("Cookie", &cookie)], &[]);
    assert_eq!(resp.status, 101);
    // Never reads, never writes.
    let (mute, resp) = srv.raw_ws("/admin/stream", &[("Cookie", &cookie)], &[]);
    assert_eq!(resp.status, 101);
    let t = Instant::now();
    let mut pings = 0;
    let mut close = None;
    let ended = loop {
        match deaf.read_frame(Duration::from_secs(6)) {
            Ok(f) if f.opcode == 1 => {
                let v: Value = serde_json::from_slice(&f.payload).unwrap();
                if v["type"] == "ping" {
                    pings += 1;
                }
            }
            Ok(f) if f.opcode == 8 => {
                close.get_or_insert((t.elapsed(), f.close_code()));
            }
            Ok(_) => {}
            Err(e) => break (t.elapsed(), e),
        }
        assert!(
            t.elapsed() < Duration::from_secs(8),
            "deaf client still open"
        );
    };
    eprintln!("deaf client: {pings} JSON pings, close frame {close:?}, TCP end {ended:?}");
    let removed_at = close.map(|c| c.0).unwrap_or(ended.0);
    assert!(
        removed_at >= Duration::from_millis(1_500) && removed_at <= Duration::from_millis(4_500),
        "deaf client removed after {removed_at:?} (want ~2 intervals of 1 s)"
    );
    let n = srv.wait_metric(
        "catalytic_ws_closed_total",
        &[("reason", "heartbeat")],
        WAIT,
        |v| v >= 2.0,
    );
    eprintln!("heartbeat closes: {n}");
    srv.wait_metric(
        "catalytic_ws_connections",
        &[("stream", "admin")],
        WAIT,
        |v| v == 1.0,
    );
    drop(mute);
    assert_serving(&srv, &live, "silent clients");
}

// =============================================================================================
// Limits
// =============================================================================================

#[test]
fn max_connections_refuses_then_recovers() {
    let srv = Server::start(&["--max-connections", "50"]);
    let live = Live::start(&srv); // connection 1
    let mut held: Vec<HttpConn> = Vec::new();
    for i in 0..49 {
        let mut c = srv.http();
        let r = c.send("GET", "/healthz", &[], None).unwrap();
        assert_eq!(r.status, 200, "connection {} of 50", i + 2);
        held.push(c);
    }
    // The 51st and beyond.
    for i in 0..5 {
        let mut c = srv.http();
        let r = c.send("GET", "/healthz", &[], None).unwrap();
        r.assert_error(503, &format!("HTTP connection {}", 51 + i));
        assert!(c.closed_within(Duration::from_secs(3)), "503 must close");
    }
    let cookie = srv.admin_cookie();
    let mut ws = srv
        .ws_connect("/admin/stream", Some(&cookie), None)
        .expect("stream handshake beyond the limit completes");
    let (code, reason) = expect_close(&mut ws, WAIT);
    assert_eq!(code, 1013, "stream beyond the limit ({reason:?})");
    drop(ws);
    // Free ten; new ones are served again.
    held.truncate(39);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = srv.http();
        let r = c.send("GET", "/healthz", &[], None).unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after freeing 10",
            r.status
        );
        thread::sleep(Duration::from_millis(50));
    }
    let (mut ws, _) = srv.admin_ws(&cookie);
    close_normal(&mut ws);
    drop(ws);
    held.clear();
    let refused = srv.wait_metric(
        "catalytic_refused_total",
        &[("limit", "max_connections")],
        WAIT,
        |v| v >= 6.0,
    );
    eprintln!("refused max_connections: {refused}");
    assert_serving(&srv, &live, "max connections");
}

#[test]
fn max_connections_per_ip_refuses_that_ip_only() {
    let srv = Server::start(&["--max-connections-per-ip", "5"]);
    let live = Live::start(&srv); // from 127.0.0.1
    let attacker = "127.0.0.2";
    let mut held = Vec::new();
    for i in 0..5 {
        let mut c = HttpConn::new(connect_from_ip(attacker, srv.addr).unwrap(), srv.addr);
        let r = c.send("GET", "/healthz", &[], None).unwrap();
        assert_eq!(r.status, 200, "attacker connection {}", i + 1);
        held.push(c);
    }
    let mut c = HttpConn::new(connect_from_ip(attacker, srv.addr).unwrap(), srv.addr);
    let r = c.send("GET", "/healthz", &[], None).unwrap();
    r.assert_error(429, "6th connection from one IP");
    eprintln!("per-IP 429 Retry-After: {:?}", r.header("Retry-After"));
    let cookie = srv.admin_cookie();
    let s = connect_from_ip(attacker, srv.addr).unwrap();
    let mut ws = ws_handshake(s, &srv.ws_url("/admin/stream"), &[("Cookie", &cookie)])
        .expect("stream handshake from the busy IP completes");
    let (code, reason) = expect_close(&mut ws, WAIT);
    assert_eq!(code, 1013, "6th stream from one IP ({reason:?})");
    drop(ws);
    // Other addresses are unaffected meanwhile.
    assert!(timed_healthz(&srv) < Duration::from_secs(1));
    let mut other = HttpConn::new(connect_from_ip("127.0.0.3", srv.addr).unwrap(), srv.addr);
    assert_eq!(
        other.send("GET", "/healthz", &[], None).unwrap().status,
        200
    );
    // Free two: the attacker's address is served again.
    held.truncate(3);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = HttpConn::new(connect_from_ip(attacker, srv.addr).unwrap(), srv.addr);
        let st = c.send("GET", "/healthz", &[], None).unwrap().status;
        if st == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "attacker IP still refused ({st})"
        );
        thread::sleep(Duration::from_millis(50));
    }
    held.clear();
    assert!(srv.metric("catalytic_refused_total", &[("limit", "per_ip")]) >= 2.0);
    assert_serving(&srv, &live, "per-IP limit");
}

#[test]
fn failed_logins_are_rate_limited_per_ip_and_per_account() {
    let srv = Server::start(&["--login-failures-per-minute", "3"]);
    let live = Live::start(&srv);
    const OTHER: &str = "second@example.com";
    srv.create_admin(OTHER, ADMIN_PASSWORD);
    let login = |ip: &str, email: &str, password: &str| -> Resp {
        let mut c = HttpConn::new(connect_from_ip(ip, srv.addr).unwrap(), srv.addr);
        let body = json!({"email": email, "password": password}).to_string();
        c.send(
            "POST",
            "/api/admin/login",
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
        .expect("login request")
    };
    let ip = "127.0.0.2";
    for i in 0..3 {
        login(ip, ADMIN_EMAIL, "wrong password 123")
            .assert_error(401, &format!("failure {}", i + 1));
    }
    let check_429 = |r: &Resp, what: &str| {
        r.assert_error(429, what);
        let ra = r
            .header("Retry-After")
            .unwrap_or_else(|| panic!("{what}: 429 without Retry-After"));
        let secs: u64 = ra
            .parse()
            .unwrap_or_else(|_| panic!("{what}: Retry-After {ra:?}"));
        assert!((1..=60).contains(&secs), "{what}: Retry-After {secs}");
    };
    check_429(&login(ip, ADMIN_EMAIL, "wrong password 123"), "4th failure");
    check_429(
        &login(ip, ADMIN_EMAIL, ADMIN_PASSWORD),
        "right password from the limited IP",
    );
    check_429(
        &login(ip, OTHER, ADMIN_PASSWORD),
        "another account from the limited IP",
    );
    check_429(
        &login("127.0.0.3", ADMIN_EMAIL, ADMIN_PASSWORD),
        "the limited account from another IP",
    );
    let r = login("127.0.0.3", OTHER, ADMIN_PASSWORD);
    assert_eq!(
        r.status,
        204,
        "another account from another IP: {}",
        r.text()
    );
    assert!(r.cookie_value("admin_session").is_some());
    let n = srv.metric("catalytic_refused_total", &[("limit", "login_rate")]);
    assert!(n >= 4.0, "refused login_rate = {n}");
    assert_serving(&srv, &live, "login rate limit");
}
