//! Soak: thousands of clients connecting and disconnecting continuously against one server —
//! admin streams that close cleanly, admin streams that just drop TCP (FIN or RST), HTTP API
//! traffic (create / patch / delete, so admins get broadcasts), slow consumers that never read,
//! silent clients that never answer the heartbeat, session streams that run to their expiry and
//! handshakes with forged credentials — for `CATALYTIC_SOAK_SECS` seconds (default 10, so CI
//! runs it briefly).
//!
//! At the end the server's resident memory (/proc/PID/status VmRSS) and open descriptors
//! (/proc/PID/fd) must be back near the baseline taken after a warm-up, every close path must
//! be counted in /metrics, and on SIGTERM every open stream gets close 1001 and the process
//! exits 0. A summary line with the figures is printed.
//!
//! The long run:
//!
//! ```text
//! CATALYTIC_SOAK_SECS=300 cargo test --release --test soak -- --nocapture
//! ```

mod common;

use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

// =============================================================================================
// Figures and helpers
// =============================================================================================

#[derive(Default)]
struct Stats {
    admin_clean: AtomicU64,
    admin_dropped: AtomicU64,
    http: AtomicU64,
    slow: AtomicU64,
    silent: AtomicU64,
    sessions: AtomicU64,
    forged: AtomicU64,
    errors: Mutex<Vec<String>>,
    error_count: AtomicU64,
}

impl Stats {
    fn error(&self, e: String) {
        self.error_count.fetch_add(1, Ordering::Relaxed);
        let mut g = self.errors.lock().unwrap();
        if g.len() < 20 {
            g.push(e);
        }
    }

    fn connections(&self) -> u64 {
        [
            &self.admin_clean,
            &self.admin_dropped,
            &self.http,
            &self.slow,
            &self.silent,
            &self.sessions,
            &self.forged,
        ]
        .iter()
        .map(|c| c.load(Ordering::Relaxed))
        .sum()
    }
}

fn soak_secs() -> u64 {
    std::env::var("CATALYTIC_SOAK_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .filter(|s| *s > 0)
        .unwrap_or(10)
}

/// A loopback source address from 127.0.0.10–127.0.0.73, so the churn does not run one
/// address out of ephemeral ports (TIME_WAIT) nor into the per-IP connection limit.
fn source_ip(n: u64) -> String {
    format!("127.0.0.{}", 10 + n % 64)
}

fn connect_from(ip: &str, to: SocketAddr, rcvbuf: Option<usize>) -> Result<TcpStream, String> {
    connect_from_ip(ip, to, rcvbuf).map_err(|e| format!("connect from {ip}: {e}"))
}

fn ws_from(
    srv: &Server,
    ip: &str,
    path: &str,
    headers: &[(&str, &str)],
    rcvbuf: Option<usize>,
) -> Result<Ws, String> {
    let s = connect_from(ip, srv.addr, rcvbuf)?;
    ws_handshake(s, &srv.ws_url(path), headers).map_err(|e| format!("handshake {path}: {e}"))
}

/// Reads until the stream ends; returns the close frame if one came, `Err` when still open
/// after `timeout`. JSON pings are answered only when `pong`.
fn read_to_end(ws: &mut Ws, timeout: Duration, pong: bool) -> Result<Option<(u16, String)>, ()> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(ws, left, pong) {
            Some(WsEvent::Close(c)) => {
                // Finish the closing handshake so the server does not wait for it.
                let _ = ws.flush();
                return Ok(c);
            }
            Some(WsEvent::Ended(_)) => return Ok(None),
            Some(_) => continue,
            None => return Err(()),
        }
    }
}

fn closed(srv: &Server, reason: &str) -> f64 {
    srv.metric("catalytic_ws_closed_total", &[("reason", reason)])
}

/// Waits until only the /metrics connection itself is open and no stream is left.
fn settle(srv: &Server, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let m = srv.metrics();
        let open = metric_value(&m, "catalytic_open_connections", &[]).unwrap_or(-1.0);
        let streams: f64 = ["admin", "session", "agent"]
            .iter()
            .map(|k| metric_value(&m, "catalytic_ws_connections", &[("stream", k)]).unwrap_or(0.0))
            .sum();
        if open <= 1.0 && streams == 0.0 {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {open} connections / {streams} streams open after 20 s"
        );
        thread::sleep(Duration::from_millis(100));
    }
}

// =============================================================================================
// The client mix
// =============================================================================================

/// Admin streams that take their `initial`, then close cleanly (and wait for the server's
/// close reply) — or, when `drop_tcp`, vanish with a FIN or an RST.
fn admin_worker(srv: &Server, cookie: &str, until: Instant, st: &Stats, w: u64, drop_tcp: bool) {
    for n in 0..1_000_000u64 {
        if Instant::now() >= until {
            return;
        }
        let ip = source_ip(n * 7 + w);
        let mut ws = match ws_from(srv, &ip, "/admin/stream", &[("Cookie", cookie)], None) {
            Ok(ws) => ws,
            Err(e) => {
                st.error(format!("admin stream: {e}"));
                continue;
            }
        };
        match next_event(&mut ws, WAIT, true) {
            Some(WsEvent::Json(v)) if v["type"] == "initial" => {}
            other => {
                st.error(format!("admin stream: first message {other:?}"));
                continue;
            }
        }
        if drop_tcp {
            if n % 2 == 0 {
                let sock = socket2::Socket::from(ws.into_inner());
                let _ = sock.set_linger(Some(Duration::ZERO));
            }
            st.admin_dropped.fetch_add(1, Ordering::Relaxed);
        } else {
            close_normal(&mut ws);
            match read_to_end(&mut ws, Duration::from_secs(5), true) {
                Ok(Some((1000, _))) | Ok(None) => {}
                Ok(Some(c)) => st.error(format!("clean admin close answered {c:?}")),
                Err(()) => st.error("clean admin close: still open after 5 s".into()),
            }
            st.admin_clean.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// HTTP traffic: health and metrics reads, and a user's whole life (so admins get broadcasts).
fn http_worker(srv: &Server, cookie: &str, until: Instant, st: &Stats, w: u64) {
    let pad = "x".repeat(150);
    for n in 0..1_000_000u64 {
        if Instant::now() >= until {
            return;
        }
        let ip = source_ip(n * 13 + w);
        let s = match connect_from(&ip, srv.addr, None) {
            Ok(s) => s,
            Err(e) => {
                st.error(format!("http: {e}"));
                continue;
            }
        };
        let mut c = HttpConn::new(s, srv.addr);
        let json_h = [("Cookie", cookie), ("Content-Type", "application/json")];
        let mut step = |method: &str, path: &str, body: Option<serde_json::Value>, want: u16| {
            let bytes = body.map(|b| b.to_string().into_bytes());
            let h: &[(&str, &str)] = if bytes.is_some() {
                &json_h
            } else {
                &json_h[..1]
            };
            match c.send(method, path, h, bytes.as_deref()) {
                Ok(r) if r.status == want => Some(r),
                Ok(r) => {
                    st.error(format!("{method} {path}: {} {}", r.status, r.text()));
                    None
                }
                Err(e) => {
                    st.error(format!("{method} {path}: {e}"));
                    None
                }
            }
        };
        match n % 4 {
            0 => {
                step("GET", "/healthz", None, 200);
            }
            1 => {
                step("GET", "/api/users", None, 200);
            }
            _ => {
                let email = format!("soak.w{w}.n{n}@example.com");
                let body = json!({"first_name": pad, "last_name": "Soak", "email": email});
                if let Some(r) = step("POST", "/api/users", Some(body), 201) {
                    let id = id_of(&r.json());
                    let path = format!("/api/users/{id}");
                    step(
                        "PATCH",
                        &path,
                        Some(json!({"last_name": format!("Soak{n}")})),
                        200,
                    );
                    step("DELETE", &path, None, 204);
                }
            }
        }
        st.http.fetch_add(1, Ordering::Relaxed);
    }
}

/// Slow consumers: a tiny receive buffer, never read, while this worker pumps large broadcasts
/// (PATCHes of its own user) until the server drops them — on loopback the kernel absorbs a
/// few MiB first. Then the remains are read and the sockets dropped.
fn slow_worker(srv: &Server, cookie: &str, until: Instant, st: &Stats, w: u64) {
    let big = "B".repeat(200);
    let body =
        json!({"first_name": big, "last_name": big, "email": format!("pump{w}@example.com")});
    let r = srv.json("POST", "/api/users", Some(cookie), Some(&body));
    if r.status != 201 {
        st.error(format!("pump user: {} {}", r.status, r.text()));
        return;
    }
    let path = format!("/api/users/{}", id_of(&r.json()));
    for n in 0..1_000_000u64 {
        if Instant::now() >= until {
            break;
        }
        let mut held = Vec::new();
        for k in 0..3 {
            let ip = source_ip(n * 3 + k + w);
            match ws_from(srv, &ip, "/admin/stream", &[("Cookie", cookie)], Some(2048)) {
                Ok(ws) => held.push(ws),
                Err(e) => st.error(format!("slow consumer: {e}")),
            }
        }
        let before = closed(srv, "slow_consumer");
        let mut c = match connect_from(&source_ip(n + 50), srv.addr, None) {
            Ok(s) => HttpConn::new(s, srv.addr),
            Err(e) => {
                st.error(format!("pump: {e}"));
                continue;
            }
        };
        let stop_at = (Instant::now() + Duration::from_secs(6)).min(until + Duration::from_secs(2));
        for i in 0..20_000u64 {
            let patch = json!({ "last_name": format!("{i:06}{}", &big[6..]) }).to_string();
            let h = [("Cookie", cookie), ("Content-Type", "application/json")];
            match c.send("PATCH", &path, &h, Some(patch.as_bytes())) {
                Ok(r) if r.status == 200 => {}
                Ok(r) => {
                    st.error(format!("pump PATCH: {} {}", r.status, r.text()));
                    break;
                }
                Err(e) => {
                    st.error(format!("pump PATCH: {e}"));
                    break;
                }
            }
            if i % 100 == 99
                && (Instant::now() >= stop_at
                    || closed(srv, "slow_consumer") >= before + held.len() as f64)
            {
                break;
            }
        }
        for mut ws in held {
            // Whatever is left: the close (1013) if it fitted, else the end of the stream.
            let _ = read_to_end(&mut ws, Duration::from_millis(500), false);
            st.slow.fetch_add(1, Ordering::Relaxed);
        }
    }
    let r = srv.json("DELETE", &path, Some(cookie), None);
    if r.status != 204 {
        st.error(format!("delete pump user: {}", r.status));
    }
}

/// Silent clients: read but never answer the JSON ping; the heartbeat must remove them.
fn silent_worker(srv: &Server, cookie: &str, until: Instant, st: &Stats, w: u64) {
    for n in 0..1_000_000u64 {
        if Instant::now() >= until {
            return;
        }
        let mut victims = Vec::new();
        for k in 0..4 {
            let ip = source_ip(n * 4 + k + w);
            match ws_from(srv, &ip, "/admin/stream", &[("Cookie", cookie)], None) {
                Ok(ws) => victims.push(ws),
                Err(e) => st.error(format!("silent client: {e}")),
            }
        }
        // Read them all round-robin (a victim left unread would also be a slow consumer).
        let deadline = Instant::now() + Duration::from_secs(8);
        let mut open: Vec<Option<Ws>> = victims.into_iter().map(Some).collect();
        while open.iter().any(Option::is_some) && Instant::now() < deadline {
            for slot in open.iter_mut() {
                let Some(ws) = slot else { continue };
                match next_event(ws, Duration::from_millis(20), false) {
                    Some(WsEvent::Close(c)) => {
                        if let Some((code, _)) = c.filter(|(code, _)| *code != 1001) {
                            st.error(format!("silent client closed with {code}"));
                        }
                        *slot = None;
                    }
                    Some(WsEvent::Ended(_)) => *slot = None,
                    _ => continue,
                }
                st.silent.fetch_add(1, Ordering::Relaxed);
            }
        }
        let left = open.iter().filter(|s| s.is_some()).count();
        if left > 0 {
            st.error(format!("{left} silent clients still open after 8 s"));
        }
    }
}

/// Session streams that run until the session expires (`--session-minutes 0.05` = 3 s).
fn session_worker(srv: &Server, cookie: &str, until: Instant, st: &Stats, w: u64) {
    for n in 0..1_000_000u64 {
        if Instant::now() >= until {
            return;
        }
        let email = format!("sess.w{w}.n{n}@example.com");
        let body = json!({"first_name": "Sess", "last_name": "Ion", "email": email});
        let r = srv.json("POST", "/api/users", Some(cookie), Some(&body));
        if r.status != 201 {
            st.error(format!("session user: {} {}", r.status, r.text()));
            continue;
        }
        let user = r.json();
        let id = id_of(&user);
        let token = invite_token(&user);
        let r = srv.activate(&token);
        if r.status != 200 {
            st.error(format!("activate: {} {}", r.status, r.text()));
            continue;
        }
        let sid = session_id_of(&r.json());
        let path = format!("/session/{sid}/stream?token={token}");
        match ws_from(srv, &source_ip(n + w), &path, &[], None) {
            Ok(mut ws) => {
                let mut expired = false;
                let deadline = Instant::now() + Duration::from_secs(8);
                let end = loop {
                    let left = deadline.saturating_duration_since(Instant::now());
                    match next_event(&mut ws, left, true) {
                        Some(WsEvent::Json(v)) if v["type"] == "session_expired" => expired = true,
                        Some(WsEvent::Json(_)) => {}
                        Some(WsEvent::Close(c)) => break Ok(c),
                        Some(WsEvent::Ended(e)) => break Err(e),
                        Some(_) => {}
                        None => break Err("still open after 8 s".into()),
                    }
                };
                match end {
                    Ok(Some((1000, _))) if expired => {}
                    other => st.error(format!("session stream end: {other:?}, expired={expired}")),
                }
                st.sessions.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => st.error(format!("session stream: {e}")),
        }
        let r = srv.json("DELETE", &format!("/api/users/{id}"), Some(cookie), None);
        if r.status != 204 {
            st.error(format!("delete session user: {}", r.status));
        }
    }
}

/// Handshakes with forged credentials: closed 1008 at once.
fn forged_worker(srv: &Server, until: Instant, st: &Stats, w: u64) {
    for n in 0..1_000_000u64 {
        if Instant::now() >= until {
            return;
        }
        let ip = source_ip(n + w);
        let (path, cookie) = if n % 2 == 0 {
            (
                "/admin/stream".to_string(),
                format!("admin_session=forged{n}"),
            )
        } else {
            (format!("/session/{n}/stream?token=guess{n}"), String::new())
        };
        let h: Vec<(&str, &str)> = if cookie.is_empty() {
            vec![]
        } else {
            vec![("Cookie", &cookie)]
        };
        match ws_from(srv, &ip, &path, &h, None) {
            Ok(mut ws) => match read_to_end(&mut ws, WAIT, false) {
                Ok(Some((1008, _))) => {}
                other => st.error(format!("forged {path}: {other:?}")),
            },
            Err(e) => st.error(format!("forged: {e}")),
        }
        st.forged.fetch_add(1, Ordering::Relaxed);
        thread::sleep(Duration::from_millis(5));
    }
}

fn run_mix(srv: &Server, cookie: &str, dur: Duration, st: &Stats) {
    let until = Instant::now() + dur;
    thread::scope(|s| {
        for w in 0..2 {
            s.spawn(move || admin_worker(srv, cookie, until, st, w, false));
        }
        s.spawn(move || admin_worker(srv, cookie, until, st, 2, true));
        for w in 0..2 {
            s.spawn(move || http_worker(srv, cookie, until, st, w));
        }
        s.spawn(move || slow_worker(srv, cookie, until, st, 0));
        for w in 0..2 {
            s.spawn(move || silent_worker(srv, cookie, until, st, w));
        }
        s.spawn(move || session_worker(srv, cookie, until, st, 0));
        s.spawn(move || forged_worker(srv, until, st, 0));
    });
}

// =============================================================================================
// The soak
// =============================================================================================

#[test]
fn soak_connect_disconnect_churn() {
    let secs = soak_secs();
    let mut srv = Server::start(&[
        "--heartbeat-secs",
        "1",
        "--max-outbox-bytes",
        "8192",
        "--session-minutes",
        "0.05",
    ]);
    let cookie = srv.admin_cookie();
    let pid = srv.pid();

    // Warm-up: every path once or more, so allocator pools and caches reach their size.
    let warm = Stats::default();
    run_mix(&srv, &cookie, Duration::from_secs(3), &warm);
    settle(&srv, "after warm-up");
    let rss0 = vm_rss_kib(pid);
    let fds0 = open_fds(pid);
    eprintln!("soak: baseline after warm-up: RSS {rss0} KiB, {fds0} fds; running {secs} s");

    let st = Stats::default();
    let t = Instant::now();
    run_mix(&srv, &cookie, Duration::from_secs(secs), &st);
    let ran = t.elapsed();
    settle(&srv, "after the soak");
    let rss1 = vm_rss_kib(pid);
    let fds1 = open_fds(pid);

    let t = Instant::now();
    let h = srv.get("/healthz", None);
    assert_eq!(h.status, 200, "/healthz after the soak");
    let healthz = t.elapsed();
    let reasons = [
        "client",
        "heartbeat",
        "slow_consumer",
        "expired",
        "unauthorized",
        "write_error",
        "shutdown",
    ];
    let counts: Vec<(&str, f64)> = reasons.iter().map(|r| (*r, closed(&srv, r))).collect();
    let accepted = srv.metric("catalytic_ws_accepted_total", &[("stream", "admin")]);
    let http_5xx: f64 = ["500", "503"]
        .iter()
        .map(|c| srv.metric("catalytic_http_requests_total", &[("code", c)]))
        .sum();

    // SIGTERM with streams open: each gets close 1001, the process exits 0.
    let mut open: Vec<Ws> = (0..5).map(|_| srv.admin_ws(&cookie).0).collect();
    srv.signal(libc::SIGTERM);
    let mut shutdown_ok = 0;
    for ws in open.iter_mut() {
        if let Ok(Some((1001, _))) = read_to_end(ws, Duration::from_secs(5), true) {
            shutdown_ok += 1;
        }
    }
    let status = srv.wait_exit(Duration::from_secs(10));

    let n = st.connections();
    let errors = st.error_count.load(Ordering::Relaxed);
    let c = |r: &str| counts.iter().find(|(k, _)| *k == r).unwrap().1;
    eprintln!(
        "soak summary: {secs} s ({ran:.1?} wall), {n} client connections \
         (admin clean {}, admin dropped {}, http {}, slow consumers {}, silent {}, sessions {}, forged {}), \
         {accepted} admin streams accepted in all; RSS {rss0} -> {rss1} KiB ({:+} KiB), fds {fds0} -> {fds1}; \
         closed: client={} heartbeat={} slow_consumer={} expired={} unauthorized={} write_error={} \
         shutdown: {shutdown_ok}/5 got 1001, exit {status}; /healthz {healthz:?}; 5xx {http_5xx}; client errors {errors}",
        st.admin_clean.load(Ordering::Relaxed),
        st.admin_dropped.load(Ordering::Relaxed),
        st.http.load(Ordering::Relaxed),
        st.slow.load(Ordering::Relaxed),
        st.silent.load(Ordering::Relaxed),
        st.sessions.load(Ordering::Relaxed),
        st.forged.load(Ordering::Relaxed),
        rss1 as i64 - rss0 as i64,
        c("client"),
        c("heartbeat"),
        c("slow_consumer"),
        c("expired"),
        c("unauthorized"),
        c("write_error"),
    );
    let logs = srv.logs.lines();
    if let Some(p) = logs.iter().find(|l| l.contains("panicked")) {
        panic!("the server panicked: {p}");
    }
    assert_eq!(
        errors,
        0,
        "client-side errors: {:?}",
        st.errors.lock().unwrap()
    );
    assert!(n >= 1_000, "only {n} connections in the soak");
    assert!(fds1 <= fds0 + 10, "fds {fds0} -> {fds1}");
    assert!(rss1 <= rss0 + 20 * 1024, "RSS {rss0} -> {rss1} KiB");
    assert!(
        healthz < Duration::from_secs(1),
        "/healthz took {healthz:?}"
    );
    assert_eq!(http_5xx, 0.0, "5xx answers during the soak");
    for r in [
        "client",
        "heartbeat",
        "slow_consumer",
        "expired",
        "unauthorized",
    ] {
        assert!(c(r) >= 1.0, "no stream closed for reason {r}");
    }
    assert_eq!(
        shutdown_ok, 5,
        "streams open at SIGTERM must get close 1001"
    );
    assert!(status.success(), "exit status on SIGTERM: {status}");
}
