//! The event loop: one `mio::Poll` on one thread owns every socket.
//!
//! Each turn, Redis-style:
//! 1. `poll` with the timeout of the next timer (zero when some connection has more to read);
//! 2. handle events: accept; read each readable socket until `WouldBlock` or its budget, parsing
//!    requests and frames as they complete; flush each writable socket's outbox;
//! 3. pick up password-worker answers (woken through a `mio::Waker`);
//! 4. fire expired timers (heartbeat slices, `time_update`, session expiry, deadlines);
//! 5. reap: remove every connection marked dead during the turn.
//!
//! Nothing here blocks on a socket: all sockets are non-blocking, writes that the kernel refuses
//! wait in the connection's bounded outbox for a writable event. Application changes come back
//! from `app`/`api` as effects and are applied right after the request that caused them.

use crate::api::{self, Ctx, LoginLimiter, Reply};
use crate::app::{self, App, Audience, Effect};
use crate::assets;
use crate::auth::{self, Digest32};
use crate::config::ServeConfig;
use crate::conn::{Conn, Phase, Sent, StreamRole, WsState};
use crate::http::{self, Method, Parsed, Request, Response};
use crate::hub::{self, Hub};
use crate::metrics::{CloseReason, Metrics, Refusal, StreamKind};
use crate::timer_wheel::{TimerId, TimerWheel};
use crate::worker::{Requester, Worker};
use crate::ws::{self, code, FrameParse};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::collections::HashMap;
use std::io::{self, Read};
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

const LISTENER: Token = Token(usize::MAX);
const SIGNALS: Token = Token(usize::MAX - 1);
const WAKER: Token = Token(usize::MAX - 2);

/// A request must be complete this long after the connection became idle, or it gets 408.
const REQUEST_TIMEOUT_MS: u64 = 10_000;
/// How long we wait for the client's half of a close (WebSocket close frame, or TCP FIN).
const CLOSE_WAIT_MS: u64 = 2_000;
/// How long shutdown waits for clients to take their close frames.
const SHUTDOWN_GRACE_MS: u64 = 3_000;
/// Reads per readiness event before the connection yields to the others.
const READS_PER_EVENT: usize = 16;
const SCRATCH_BYTES: usize = 64 * 1024;
/// Requests or frames handled per connection per turn; the rest waits for the next turn, so a
/// pipelining client cannot keep everyone else waiting.
const MESSAGES_PER_TURN: usize = 64;
/// Unparsed input kept per connection before reading from it stops until it is worked off
/// (at least one whole request or frame always fits).
const INPUT_BACKLOG_BYTES: usize = 128 * 1024;
/// Unread HTTP answers above this pause reading from that client (pipelining flood).
const HTTP_BACKLOG_BYTES: usize = 256 * 1024;
/// The heartbeat visits 1/SLICES of the connections per tick, so pings spread over the interval.
const HEARTBEAT_SLICES: usize = 10;
const TIME_UPDATE_MS: i64 = 10_000;
const HOUSEKEEPING_MS: u64 = 10_000;
/// A handshake with a credential closed less than this ago counts as a reconnect.
const RECONNECT_WINDOW_MS: u64 = 60_000;
/// Stream message limits.
const STREAM_MESSAGE_MAX: usize = 64 * 1024;
const ECHO_MESSAGE_MAX: usize = 16 * 1024 * 1024;
/// File descriptors kept free above `--max-connections` for refusing politely.
const FD_RESERVE: usize = 64;
const TIMER_TICK_MS: u64 = 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The deadline of whatever the connection is waiting for (request, close, drain).
    Conn {
        key: usize,
        gen: u32,
    },
    SessionTick(i64),
    SessionExpiry(i64),
    Heartbeat,
    Housekeeping,
    ShutdownDeadline,
    /// Accepting failed (out of descriptors): try again.
    ResumeAccept,
}

fn token(key: usize, gen: u32) -> Token {
    Token(key | ((gen as usize) << 32))
}

fn split_token(t: Token) -> (usize, u32) {
    (t.0 & 0xffff_ffff, (t.0 >> 32) as u32)
}

pub struct Server {
    poll: Poll,
    listener: TcpListener,
    signals: Signals,
    worker: Worker,
    conns: Slab<Conn>,
    next_gen: u32,
    hub: Hub,
    wheel: TimerWheel<Timer>,
    app: App,
    limiter: LoginLimiter,
    metrics: Metrics,
    cfg: ServeConfig,
    max_connections: usize,
    per_ip: HashMap<IpAddr, u32>,
    expiry_timers: HashMap<i64, TimerId>,
    recent_closes: HashMap<Digest32, u64>,
    reap: Vec<usize>,
    resume: Vec<usize>,
    scratch: Vec<u8>,
    effects: Vec<Effect>,
    started: Instant,
    public_url: String,
    ping_frame: Rc<[u8]>,
    heartbeat_slice: usize,
    shutting_down: bool,
    accept_paused: bool,
}

impl Server {
    /// Bind, open the database, and get ready to run. Logs `listening on http://HOST:PORT`.
    pub fn bind(cfg: ServeConfig) -> Result<Server, String> {
        let nofile = raise_nofile_limit();
        let max_connections = cfg
            .max_connections
            .unwrap_or_else(|| nofile.saturating_sub(FD_RESERVE).max(16));
        let std_listener = std::net::TcpListener::bind(cfg.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("listener: {e}"))?;
        widen_backlog(&std_listener);
        let local = std_listener
            .local_addr()
            .map_err(|e| format!("listener: {e}"))?;
        let mut listener = TcpListener::from_std(std_listener);
        let public_url = cfg
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));
        let app = App::open(&cfg, public_url.clone())?;
        let poll = Poll::new().map_err(|e| format!("epoll: {e}"))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| format!("register listener: {e}"))?;
        let mut signals =
            Signals::new([SIGINT, SIGTERM]).map_err(|e| format!("signal handlers: {e}"))?;
        poll.registry()
            .register(&mut signals, SIGNALS, Interest::READABLE)
            .map_err(|e| format!("register signals: {e}"))?;
        let waker =
            Arc::new(Waker::new(poll.registry(), WAKER).map_err(|e| format!("waker: {e}"))?);
        let worker = Worker::start(waker).map_err(|e| format!("worker thread: {e}"))?;
        let started = Instant::now();
        let mut server = Server {
            poll,
            listener,
            signals,
            worker,
            conns: Slab::with_capacity(1024),
            next_gen: 0,
            hub: Hub::default(),
            wheel: TimerWheel::new(TIMER_TICK_MS, 0),
            app,
            limiter: LoginLimiter::new(cfg.login_failures_per_minute),
            metrics: Metrics::default(),
            max_connections,
            per_ip: HashMap::new(),
            expiry_timers: HashMap::new(),
            recent_closes: HashMap::new(),
            reap: Vec::new(),
            resume: Vec::new(),
            scratch: vec![0; SCRATCH_BYTES],
            effects: Vec::new(),
            started,
            public_url,
            ping_frame: Rc::from(ws::text_frame(br#"{"type":"ping"}"#)),
            heartbeat_slice: 0,
            shutting_down: false,
            accept_paused: false,
            cfg,
        };
        let slice_ms = server.heartbeat_slice_ms();
        server.wheel.insert(slice_ms, Timer::Heartbeat);
        server.wheel.insert(HOUSEKEEPING_MS, Timer::Housekeeping);
        for (user_id, expires_at) in server.app.running_sessions() {
            server.arm_expiry(user_id, expires_at);
        }
        let line = format!(
            "listening on http://{local} (public URL {}, {} users, up to {} connections)",
            server.public_url,
            server.app.user_count(),
            server.max_connections
        );
        // Scripts wait for this line, so it is written even when the log level hides info.
        if log::log_enabled!(log::Level::Info) {
            log::info!("{line}");
        } else {
            eprintln!("{line}");
        }
        Ok(server)
    }

    fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn heartbeat_slice_ms(&self) -> u64 {
        (self.cfg.heartbeat.as_millis() as u64 / HEARTBEAT_SLICES as u64).max(TIMER_TICK_MS)
    }

    /// Run until a signal asks to stop and every client has been told.
    pub fn run(mut self) -> io::Result<()> {
        let mut events = Events::with_capacity(1024);
        loop {
            let timeout = self.poll_timeout();
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            let busy = Instant::now();
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    SIGNALS => self.on_signal(),
                    WAKER => self.on_worker_done(),
                    t => {
                        let (key, gen) = split_token(t);
                        if self.conns.get(key).is_none_or(|c| c.gen != gen) {
                            continue; // an event for a connection that is gone (mio allows it)
                        }
                        if event.is_writable() || event.is_write_closed() || event.is_error() {
                            self.on_writable(key);
                        }
                        if event.is_readable() || event.is_read_closed() || event.is_error() {
                            self.on_readable(key);
                        }
                    }
                }
            }
            for key in std::mem::take(&mut self.resume) {
                self.process_buffered(key);
                self.on_readable(key);
            }
            self.fire_timers();
            self.reap_dead();
            self.metrics.open_connections = self.conns.len();
            self.metrics
                .loop_busy_seconds
                .observe(busy.elapsed().as_secs_f64());
            if self.shutting_down && self.conns.is_empty() {
                log::info!("all clients closed; bye");
                return Ok(());
            }
        }
    }

    fn poll_timeout(&self) -> Option<Duration> {
        if !self.resume.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = self.now_ms();
        let next = self.wheel.next_deadline().unwrap_or(now + 60_000);
        Some(Duration::from_millis(next.saturating_sub(now)))
    }

    // ------------------------------------------------------------------ accept

    fn accept(&mut self) {
        while !self.shutting_down && !self.accept_paused {
            match self.listener.accept() {
                Ok((sock, addr)) => self.admit(sock, addr),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // Out of descriptors (or memory): the backlog keeps the clients; retry soon.
                    log::warn!(
                        "accept failed ({e}); retrying in 100 ms with {} open",
                        self.conns.len()
                    );
                    self.accept_paused = true;
                    let at = self.now_ms() + 100;
                    self.wheel.insert(at, Timer::ResumeAccept);
                    return;
                }
            }
        }
    }

    fn admit(&mut self, mut sock: TcpStream, addr: SocketAddr) {
        if self.conns.len() >= self.max_connections + FD_RESERVE / 2 {
            // Even the polite refusals are used up: drop at once (the descriptor is needed).
            self.metrics.refused(Refusal::MaxConnections);
            return;
        }
        let _ = sock.set_nodelay(true);
        self.next_gen = self.next_gen.wrapping_add(1);
        let gen = self.next_gen;
        let now = self.now_ms();
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        if let Err(e) = self.poll.registry().register(
            &mut sock,
            token(key, gen),
            Interest::READABLE | Interest::WRITABLE,
        ) {
            log::warn!("register {addr}: {e}");
            return;
        }
        let mut conn = Conn::new(sock, gen, addr.ip(), now);
        conn.deadline = Some(
            self.wheel
                .insert(now + REQUEST_TIMEOUT_MS, Timer::Conn { key, gen }),
        );
        entry.insert(conn);
        *self.per_ip.entry(addr.ip()).or_insert(0) += 1;
        log::debug!("conn {key}.{gen} accepted from {addr}");
    }

    // ------------------------------------------------------------------ input

    fn on_readable(&mut self, key: usize) {
        for _ in 0..READS_PER_EVENT {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.dead.is_some()
                || conn.input_paused
                || matches!(conn.phase, Phase::AwaitingWorker { .. })
            {
                return; // the bytes wait in the kernel; `resume` comes back for them
            }
            // Work off what is buffered first, next turn — but never stop short of one whole
            // frame, or a large message could never complete.
            let limit = match conn.ws() {
                Some(ws) => INPUT_BACKLOG_BYTES.max(ws.max_message + SCRATCH_BYTES),
                None => INPUT_BACKLOG_BYTES,
            };
            if conn.rbuf.len() >= limit {
                break;
            }
            match conn.sock.read(&mut self.scratch) {
                Ok(0) => return self.on_eof(key),
                Ok(n) => self.on_bytes(key, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.kill(key, CloseReason::Client),
            }
        }
        self.resume.push(key);
    }

    fn on_eof(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase {
            // The client half-closed after its request: still answer it, then close.
            Phase::AwaitingWorker { .. } => conn.input_paused = true,
            Phase::Http if !conn.out.is_empty() => self.drain(key),
            _ => self.kill(key, CloseReason::Client),
        }
    }

    /// `n` fresh bytes are in `scratch`: parse straight from there when nothing was pending,
    /// and keep only an incomplete tail on the connection.
    fn on_bytes(&mut self, key: usize, n: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let pending = self.conns.get_mut(key).map(|c| std::mem::take(&mut c.rbuf));
        match pending {
            Some(mut buf) if !buf.is_empty() => {
                buf.extend_from_slice(&scratch[..n]);
                let used = self.consume(key, &mut buf);
                buf.drain(..used);
                self.keep_tail(key, buf);
            }
            Some(_) => {
                let used = self.consume(key, &mut scratch[..n]);
                if used < n {
                    self.keep_tail(key, scratch[used..n].to_vec());
                }
            }
            None => {}
        }
        self.scratch = scratch;
    }

    fn keep_tail(&mut self, key: usize, tail: Vec<u8>) {
        if let Some(c) = self.conns.get_mut(key) {
            if c.dead.is_none() && !tail.is_empty() {
                c.rbuf = tail;
            }
        }
    }

    /// Parse what the connection kept while it could not (waiting for the worker, or paused).
    fn process_buffered(&mut self, key: usize) {
        let Some(c) = self.conns.get_mut(key) else {
            return;
        };
        if c.rbuf.is_empty() || c.dead.is_some() {
            return;
        }
        let mut buf = std::mem::take(&mut c.rbuf);
        let used = self.consume(key, &mut buf);
        buf.drain(..used);
        self.keep_tail(key, buf);
    }

    /// Handle every complete request or frame at the front of `buf`; returns the bytes used.
    fn consume(&mut self, key: usize, buf: &mut [u8]) -> usize {
        let mut pos = 0;
        let mut handled = 0;
        while pos < buf.len() {
            if handled == MESSAGES_PER_TURN {
                self.resume.push(key);
                return pos;
            }
            handled += 1;
            let Some(conn) = self.conns.get(key) else {
                return buf.len();
            };
            if conn.dead.is_some() {
                return buf.len();
            }
            match &conn.phase {
                Phase::Http => {
                    if conn.input_paused {
                        return pos;
                    }
                    match http::parse_request(&buf[pos..]) {
                        Parsed::Partial => return pos,
                        Parsed::Complete(req, used) => {
                            pos += used;
                            self.on_request(key, *req);
                        }
                        Parsed::Error(e) => {
                            self.respond(key, Response::from(e), false);
                            return buf.len();
                        }
                    }
                }
                Phase::AwaitingWorker { .. } => return pos,
                Phase::Ws(state) => {
                    let max = state.max_message;
                    match ws::parse_frame(&mut buf[pos..], max) {
                        FrameParse::Partial => return pos,
                        FrameParse::Frame(f, used) => {
                            pos += used;
                            self.on_frame(key, f.fin, f.opcode, f.payload);
                        }
                        FrameParse::Invalid(v) => {
                            self.fail_stream(key, v.code, v.reason);
                            return buf.len();
                        }
                    }
                }
                Phase::WsClosing => match ws::parse_frame(&mut buf[pos..], STREAM_MESSAGE_MAX) {
                    FrameParse::Partial => return pos,
                    FrameParse::Frame(f, used) => {
                        pos += used;
                        if f.opcode == ws::OP_CLOSE {
                            self.drain(key);
                            return buf.len();
                        }
                    }
                    FrameParse::Invalid(_) => {
                        self.drain(key);
                        return buf.len();
                    }
                },
                Phase::Draining { .. } => return buf.len(),
            }
        }
        pos
    }

    // ------------------------------------------------------------------ HTTP

    fn on_request(&mut self, key: usize, req: Request) {
        let started = Instant::now();
        self.note_client_ip(key, &req);
        if let Some(c) = self.conns.get_mut(key) {
            c.served = true;
        }
        let keep_alive = req.keep_alive;
        let stream_route = self.stream_route(&req.path);
        if req.wants_websocket || stream_route.is_some() {
            return self.upgrade(key, &req, stream_route);
        }
        if let Some(refusal) = self.over_limit(key) {
            let resp = match refusal {
                Refusal::PerIp => Response::error(429, "too many connections from your address")
                    .header("Retry-After", "5"),
                _ => Response::error(503, "server at its connection limit; try again soon")
                    .header("Retry-After", "5"),
            };
            return self.respond(key, resp.closing(), keep_alive);
        }
        let head = req.method() == Method::Head;
        let resp = match (req.method(), req.path.as_str()) {
            (Method::Get | Method::Head, "/healthz") => {
                Response::new(200).body("text/plain; charset=utf-8", "ok")
            }
            (Method::Get | Method::Head, "/metrics") => {
                self.metrics.open_connections = self.conns.len();
                Response::new(200).body(
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
            (_, path) if path.starts_with("/api/") => return self.api_request(key, &req, started),
            (Method::Get | Method::Head, _) => {
                assets::serve(&req).unwrap_or_else(|| Response::error(404, "not found"))
            }
            _ if assets::serve(&req).is_some()
                || matches!(req.path.as_str(), "/healthz" | "/metrics") =>
            {
                Response::error(405, "method not allowed").header("Allow", "GET, HEAD")
            }
            _ => Response::error(404, "not found"),
        };
        let resp = if head { resp.head_only() } else { resp };
        self.respond(key, resp, keep_alive);
    }

    fn api_request(&mut self, key: usize, req: &Request, started: Instant) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let (client_ip, gen) = (conn.client_ip, conn.gen);
        let mut effects = std::mem::take(&mut self.effects);
        let mut ctx = Ctx {
            client_ip,
            secure_cookies: self.public_url.starts_with("https://"),
            limiter: &mut self.limiter,
            metrics: &mut self.metrics,
        };
        let reply = api::handle(&mut self.app, req, &mut ctx, &mut effects);
        match reply {
            Reply::Now(resp) => self.respond(key, resp, req.keep_alive),
            Reply::Later(job, pending) => {
                if self.worker.submit(Requester { key, gen }, job) {
                    if let Some(c) = self.conns.get_mut(key) {
                        c.phase = Phase::AwaitingWorker {
                            keep_alive: req.keep_alive,
                            pending: Box::new(pending),
                        };
                    }
                } else {
                    let busy = Response::error(503, "sign-in is busy; try again in a moment")
                        .header("Retry-After", "1");
                    self.respond(key, busy, req.keep_alive);
                }
            }
        }
        self.apply_effects(&mut effects, started);
        self.effects = effects;
    }

    fn on_worker_done(&mut self) {
        let done: Vec<_> = self.worker.finished().collect();
        for (who, outcome) in done {
            let Some(conn) = self.conns.get_mut(who.key).filter(|c| c.gen == who.gen) else {
                continue; // the client left while its password was checked
            };
            let Phase::AwaitingWorker {
                keep_alive,
                pending,
            } = std::mem::replace(&mut conn.phase, Phase::Http)
            else {
                continue;
            };
            let client_ip = conn.client_ip;
            let mut ctx = Ctx {
                client_ip,
                secure_cookies: self.public_url.starts_with("https://"),
                limiter: &mut self.limiter,
                metrics: &mut self.metrics,
            };
            let resp = api::finish(&mut self.app, *pending, outcome, &mut ctx);
            let half_closed = self
                .conns
                .get(who.key)
                .is_some_and(|c| c.input_paused && c.out.is_empty());
            self.respond(who.key, resp, keep_alive && !half_closed);
            self.resume.push(who.key);
        }
    }

    /// Behind a trusted proxy, the client is the last `X-Forwarded-For` hop.
    fn note_client_ip(&mut self, key: usize, req: &Request) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !self.cfg.trusted_proxies.contains(&conn.peer_ip) {
            return;
        }
        let Some(ip) = req
            .x_forwarded_for
            .as_deref()
            .and_then(|h| h.rsplit(',').next())
            .and_then(|hop| hop.trim().parse::<IpAddr>().ok())
        else {
            return;
        };
        if ip != conn.client_ip {
            let old = std::mem::replace(&mut conn.client_ip, ip);
            release_ip(&mut self.per_ip, old);
            *self.per_ip.entry(ip).or_insert(0) += 1;
        }
    }

    /// Whether this connection is beyond a connection limit.
    fn over_limit(&mut self, key: usize) -> Option<Refusal> {
        let conn = self.conns.get(key)?;
        let refusal = if self.conns.len() > self.max_connections {
            Refusal::MaxConnections
        } else if self.cfg.max_connections_per_ip > 0
            && self.per_ip.get(&conn.client_ip).copied().unwrap_or(0) as usize
                > self.cfg.max_connections_per_ip
        {
            Refusal::PerIp
        } else {
            return None;
        };
        self.metrics.refused(refusal);
        log::debug!("conn {key} refused: {refusal:?} ({})", conn.client_ip);
        Some(refusal)
    }

    /// Queue an HTTP response; a closing one moves the connection to `Draining`.
    fn respond(&mut self, key: usize, resp: Response, keep_alive: bool) {
        self.metrics.http_request(resp.status);
        let close = resp.close || !keep_alive;
        let bytes = resp.encode(keep_alive);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let (Sent::Failed, _) = conn.send_owned(bytes, usize::MAX) {
            return self.kill(key, CloseReason::Client);
        }
        if close {
            return self.drain(key);
        }
        if conn.out.queued_bytes() > HTTP_BACKLOG_BYTES {
            conn.input_paused = true;
        }
        // The next request has a fresh deadline, counted from now.
        let gen = conn.gen;
        if let Some(t) = conn.deadline.take() {
            self.wheel.cancel(t);
        }
        let t = self
            .wheel
            .insert(self.now_ms() + REQUEST_TIMEOUT_MS, Timer::Conn { key, gen });
        if let Some(c) = self.conns.get_mut(key) {
            c.deadline = Some(t);
        }
    }

    // ------------------------------------------------------------------ WebSocket

    fn stream_route(&self, path: &str) -> Option<StreamRoute> {
        match path {
            "/admin/stream" => Some(StreamRoute::Admin),
            "/agent/stream" => Some(StreamRoute::Agent),
            p if self.cfg.echo_path.as_deref() == Some(p) => Some(StreamRoute::Echo),
            p => {
                let id = p.strip_prefix("/session/")?.strip_suffix("/stream")?;
                Some(StreamRoute::Session(id.parse::<i64>().unwrap_or(0)))
            }
        }
    }

    fn upgrade(&mut self, key: usize, req: &Request, route: Option<StreamRoute>) {
        let Some(route) = route else {
            return self.respond(
                key,
                Response::error(404, "no WebSocket endpoint here"),
                req.keep_alive,
            );
        };
        let host = req.host.as_deref().unwrap_or("");
        let own = [
            self.public_url.as_str(),
            &format!("http://{host}"),
            &format!("https://{host}"),
        ];
        let handshake = match ws::accept(req, &own) {
            Ok(h) => h,
            Err(e) => {
                log::debug!("conn {key} handshake refused: {e:?}");
                return self.respond(key, e.response().closing(), false);
            }
        };
        self.metrics.http_request(101);
        if let Some(refusal) = self.over_limit(key) {
            let reason = match refusal {
                Refusal::PerIp => "Too many connections from your address",
                _ => "Server busy",
            };
            return self.refuse_stream(key, handshake, code::TRY_AGAIN_LATER, reason);
        }
        let now = app::wall_ms();
        let authorized = match route {
            StreamRoute::Admin => req
                .cookie("admin_session")
                .filter(|t| self.app.admin_for_cookie(t).is_some())
                .map(|t| {
                    (
                        StreamRole::Admin {
                            session: auth::digest(t),
                        },
                        auth::digest(t),
                    )
                })
                .ok_or("Unauthorized"),
            StreamRoute::Session(id) => {
                let token = req
                    .query_param("token")
                    .or_else(|| req.cookie("session_token").map(String::from));
                match token {
                    Some(t) if self.app.session_token_ok(id, &t, now) => {
                        Ok((StreamRole::Session { user_id: id }, auth::digest(&t)))
                    }
                    _ => Err("Invalid or expired session"),
                }
            }
            StreamRoute::Agent => match (&self.cfg.agent_key, req.bearer()) {
                (None, _) => Err("Agent stream disabled"),
                (Some(k), Some(given)) if auth::ct_eq(k.as_bytes(), given.as_bytes()) => {
                    Ok((StreamRole::Agent, auth::digest(k)))
                }
                _ => Err("Unauthorized"),
            },
            StreamRoute::Echo => Ok((StreamRole::Echo, [0; 32])),
        };
        match authorized {
            Ok((role, credential)) => self.open_stream(key, handshake, role, credential),
            Err(reason) => {
                self.metrics.closed(CloseReason::Unauthorized);
                log::info!("conn {key} stream refused: {reason}");
                self.refuse_stream(key, handshake, code::POLICY, reason);
            }
        }
    }

    /// Complete the handshake, then close at once with `code` and `reason` (the contract's way
    /// of refusing a stream, so browsers see the reason).
    fn refuse_stream(&mut self, key: usize, handshake: Vec<u8>, close_code: u16, reason: &str) {
        let mut bytes = handshake;
        bytes.extend_from_slice(&ws::close_frame(close_code, reason));
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.phase = Phase::WsClosing;
        if let (Sent::Failed, _) = conn.send_owned(bytes, usize::MAX) {
            return self.kill(key, CloseReason::Client);
        }
        self.rearm_deadline(key, CLOSE_WAIT_MS);
    }

    fn open_stream(
        &mut self,
        key: usize,
        handshake: Vec<u8>,
        role: StreamRole,
        credential: Digest32,
    ) {
        let now = self.now_ms();
        let reconnect = self
            .recent_closes
            .get(&credential)
            .is_some_and(|t| now.saturating_sub(*t) < RECONNECT_WINDOW_MS);
        let hub_slot = match &role {
            StreamRole::Admin { .. } => self.hub.admins.insert(key),
            StreamRole::Agent => self.hub.agents.insert(key),
            StreamRole::Session { user_id } => self.hub.join_session(*user_id, key),
            StreamRole::Echo => 0,
        };
        let max_message = if matches!(role, StreamRole::Echo) {
            ECHO_MESSAGE_MAX
        } else {
            STREAM_MESSAGE_MAX
        };
        if let Some(kind) = role.kind() {
            self.metrics.stream_opened(kind, reconnect);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        log::debug!("conn {key}.{} stream {role:?} open", conn.gen);
        conn.last_seen_ms = now;
        if let Some(t) = conn.deadline.take() {
            self.wheel.cancel(t);
        }
        conn.phase = Phase::Ws(Box::new(WsState {
            role: role.clone(),
            hub_slot,
            credential,
            fragment: None,
            max_message,
        }));
        if let (Sent::Failed, _) = conn.send_owned(handshake, usize::MAX) {
            return self.kill(key, CloseReason::WriteError);
        }
        match role {
            StreamRole::Admin { .. } => {
                let frame = self.app.initial_frame(app::wall_ms());
                self.send_initial(key, &frame);
            }
            StreamRole::Session { user_id } => {
                if let Some(frame) = self.app.time_update_frame(user_id, app::wall_ms()) {
                    self.send_frame(key, &frame);
                }
                self.ensure_session_tick(user_id);
            }
            StreamRole::Agent | StreamRole::Echo => {}
        }
    }

    fn send_initial(&mut self, key: usize, frame: &Rc<[u8]>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (sent, written) = conn.send_initial(frame);
        self.metrics.ws_messages_sent += 1;
        self.metrics.ws_bytes_sent += written as u64;
        if sent == Sent::Failed {
            self.kill(key, CloseReason::WriteError);
        }
    }

    /// Send one frame to one stream, under the outbox limit.
    fn send_frame(&mut self, key: usize, frame: &Rc<[u8]>) {
        let limit = self.outbox_limit(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (sent, written) = conn.send_shared(frame, limit);
        self.metrics.ws_messages_sent += 1;
        self.metrics.ws_bytes_sent += written as u64;
        match sent {
            Sent::Ok => {}
            Sent::Overflow => self.kill(key, CloseReason::SlowConsumer),
            Sent::Failed => self.kill(key, CloseReason::WriteError),
        }
    }

    fn outbox_limit(&self, key: usize) -> usize {
        match self.conns.get(key).and_then(|c| c.ws()) {
            Some(WsState {
                role: StreamRole::Echo,
                ..
            }) => self.cfg.max_outbox_bytes.max(2 * ECHO_MESSAGE_MAX),
            _ => self.cfg.max_outbox_bytes,
        }
    }

    fn on_frame(&mut self, key: usize, fin: bool, opcode: u8, payload: &[u8]) {
        let now = self.now_ms();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_seen_ms = now;
        let Some(state) = conn.ws_mut() else { return };
        match opcode {
            ws::OP_PING => self.send_frame(key, &Rc::from(ws::frame(ws::OP_PONG, payload))),
            ws::OP_PONG => {}
            ws::OP_CLOSE => match ws::check_close_payload(payload) {
                Ok(c) => {
                    let echo = if c == 1000 || payload.is_empty() {
                        code::NORMAL
                    } else {
                        c
                    };
                    self.detach(key, CloseReason::Client);
                    if let Some(conn) = self.conns.get_mut(key) {
                        let frame = if payload.is_empty() {
                            ws::frame(ws::OP_CLOSE, &[])
                        } else {
                            ws::close_frame(echo, "")
                        };
                        conn.send_owned(frame, usize::MAX);
                    }
                    self.drain(key);
                }
                Err(v) => self.fail_stream(key, v.code, v.reason),
            },
            ws::OP_TEXT | ws::OP_BINARY => {
                if state.fragment.is_some() {
                    return self.fail_stream(
                        key,
                        code::PROTOCOL_ERROR,
                        "expected a continuation frame",
                    );
                }
                if fin {
                    self.on_message(key, opcode, payload);
                } else {
                    state.fragment = Some((opcode, payload.to_vec()));
                }
            }
            _ => {
                // Continuation.
                let max = state.max_message;
                let Some((_, buf)) = state.fragment.as_mut() else {
                    return self.fail_stream(
                        key,
                        code::PROTOCOL_ERROR,
                        "continuation without a message",
                    );
                };
                if buf.len() + payload.len() > max {
                    return self.fail_stream(key, code::TOO_BIG, "message too big");
                }
                buf.extend_from_slice(payload);
                if fin {
                    if let Some((op, message)) = state.fragment.take() {
                        self.on_message(key, op, &message);
                    }
                }
            }
        }
    }

    fn on_message(&mut self, key: usize, opcode: u8, payload: &[u8]) {
        if opcode == ws::OP_TEXT && std::str::from_utf8(payload).is_err() {
            return self.fail_stream(key, code::INVALID_PAYLOAD, "text message is not UTF-8");
        }
        let Some(role) = self
            .conns
            .get(key)
            .and_then(|c| c.ws())
            .map(|w| w.role.clone())
        else {
            return;
        };
        match role {
            StreamRole::Echo => self.send_frame(key, &Rc::from(ws::frame(opcode, payload))),
            StreamRole::Agent => {
                let started = Instant::now();
                let mut effects = std::mem::take(&mut self.effects);
                let reply = crate::agent::handle(&mut self.app, payload, &mut effects);
                if let Some(reply) = reply {
                    self.send_frame(key, &reply);
                }
                self.apply_effects(&mut effects, started);
                self.effects = effects;
            }
            // Admin and session clients only answer pings; anything they say keeps them alive.
            StreamRole::Admin { .. } | StreamRole::Session { .. } => {}
        }
    }

    /// Leave the hub and count the stream as closed. Idempotent: acts only on an open stream.
    fn detach(&mut self, key: usize, why: CloseReason) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !matches!(conn.phase, Phase::Ws(_)) {
            return;
        }
        let Phase::Ws(state) = std::mem::replace(&mut conn.phase, Phase::WsClosing) else {
            return;
        };
        match state.role {
            StreamRole::Admin { .. } => {
                self.hub.admins.try_remove(state.hub_slot);
            }
            StreamRole::Agent => {
                self.hub.agents.try_remove(state.hub_slot);
            }
            StreamRole::Session { user_id } => {
                if let Some(tick) = self.hub.leave_session(user_id, state.hub_slot) {
                    self.wheel.cancel(tick);
                }
            }
            StreamRole::Echo => {}
        }
        if let Some(kind) = state.role.kind() {
            self.metrics.stream_closed(kind);
            self.metrics.closed(why);
            self.recent_closes.insert(state.credential, self.now_ms());
        }
        log::debug!("conn {key} stream closed: {}", why.label());
    }

    /// Close an open stream politely: close frame, then wait for the client's.
    fn close_stream(&mut self, key: usize, close_code: u16, reason: &str, why: CloseReason) {
        self.detach(key, why);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.dead.is_some() {
            return;
        }
        conn.phase = Phase::WsClosing;
        if let (Sent::Failed, _) = conn.send_owned(ws::close_frame(close_code, reason), usize::MAX)
        {
            return self.kill(key, CloseReason::Client);
        }
        self.rearm_deadline(key, CLOSE_WAIT_MS);
    }

    /// Fail the connection (RFC 6455 §7.1.7) after a protocol violation: close frame, then our
    /// FIN at once — no waiting for a close reply from a client that is already misbehaving.
    fn fail_stream(&mut self, key: usize, close_code: u16, reason: &str) {
        self.detach(key, CloseReason::Client);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let (Sent::Failed, _) = conn.send_owned(ws::close_frame(close_code, reason), usize::MAX)
        {
            return self.kill(key, CloseReason::Client);
        }
        self.drain(key);
    }

    /// Last bytes are queued: shut our side once written, wait for the client's FIN.
    fn drain(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(conn.phase, Phase::Draining { .. }) {
            return;
        }
        conn.phase = Phase::Draining { shut: false };
        conn.rbuf = Vec::new();
        self.rearm_deadline(key, CLOSE_WAIT_MS);
        self.finish_draining(key);
    }

    fn finish_draining(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Phase::Draining { shut } = &mut conn.phase {
            if !*shut && conn.out.is_empty() {
                *shut = true;
                if conn.sock.shutdown(std::net::Shutdown::Write).is_err() {
                    self.kill(key, CloseReason::Client);
                }
            }
        }
    }

    fn rearm_deadline(&mut self, key: usize, after_ms: u64) {
        let at = self.now_ms() + after_ms;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(t) = conn.deadline.take() {
            self.wheel.cancel(t);
        }
        let gen = conn.gen;
        conn.deadline = Some(self.wheel.insert(at, Timer::Conn { key, gen }));
    }

    // ------------------------------------------------------------------ output

    fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.out.is_empty() || conn.dead.is_some() {
            return;
        }
        match conn.flush() {
            Ok(n) => {
                if conn.ws().is_some() {
                    self.metrics.ws_bytes_sent += n as u64;
                }
                if conn.input_paused
                    && conn.out.queued_bytes() <= HTTP_BACKLOG_BYTES / 2
                    && matches!(conn.phase, Phase::Http)
                {
                    conn.input_paused = false;
                    self.resume.push(key);
                }
                self.finish_draining(key);
            }
            Err(_) => self.kill(key, CloseReason::WriteError),
        }
    }

    // ------------------------------------------------------------------ effects

    fn apply_effects(&mut self, effects: &mut Vec<Effect>, started: Instant) {
        for effect in effects.drain(..) {
            match effect {
                Effect::Broadcast(audience, frame) => {
                    let (members, kind) = match audience {
                        Audience::Admins => (&self.hub.admins, StreamKind::Admin),
                        Audience::Agents => (&self.hub.agents, StreamKind::Agent),
                        Audience::Session(id) => match self.hub.session_members(id) {
                            Some(m) => (m, StreamKind::Session),
                            None => continue,
                        },
                    };
                    let d = hub::deliver(
                        &mut self.conns,
                        members,
                        &frame,
                        self.cfg.max_outbox_bytes,
                        &mut self.reap,
                    );
                    self.metrics.ws_messages_sent += d.recipients;
                    self.metrics.ws_bytes_sent += d.bytes_written;
                    self.metrics
                        .broadcast(kind, started.elapsed().as_secs_f64());
                }
                Effect::CloseSession {
                    user_id,
                    code,
                    reason,
                    why,
                } => {
                    let keys: Vec<usize> = self
                        .hub
                        .session_members(user_id)
                        .map(|m| m.iter().map(|(_, k)| *k).collect())
                        .unwrap_or_default();
                    for key in keys {
                        self.close_stream(key, code, reason, why);
                    }
                }
                Effect::CloseAdminSession(session) => {
                    let keys: Vec<usize> = self
                        .hub
                        .admins
                        .iter()
                        .map(|(_, k)| *k)
                        .filter(|k| {
                            self.conns.get(*k).and_then(|c| c.ws()).is_some_and(
                                |w| matches!(&w.role, StreamRole::Admin { session: s } if *s == session),
                            )
                        })
                        .collect();
                    for key in keys {
                        self.close_stream(
                            key,
                            code::POLICY,
                            "Unauthorized",
                            CloseReason::Unauthorized,
                        );
                    }
                }
                Effect::ArmExpiry {
                    user_id,
                    expires_at,
                } => self.arm_expiry(user_id, expires_at),
                Effect::DisarmExpiry(user_id) => {
                    if let Some(t) = self.expiry_timers.remove(&user_id) {
                        self.wheel.cancel(t);
                    }
                }
            }
        }
    }

    fn arm_expiry(&mut self, user_id: i64, expires_at: i64) {
        if let Some(t) = self.expiry_timers.remove(&user_id) {
            self.wheel.cancel(t);
        }
        let in_ms = (expires_at - app::wall_ms()).max(0) as u64;
        let t = self
            .wheel
            .insert(self.now_ms() + in_ms, Timer::SessionExpiry(user_id));
        self.expiry_timers.insert(user_id, t);
    }

    /// `time_update` every 10 s, on the session's own 10-second marks (remaining 30:00, 29:50…).
    fn ensure_session_tick(&mut self, user_id: i64) {
        let Some(subs) = self.hub.sessions.get(&user_id) else {
            return;
        };
        if subs.tick.is_some() || subs.members.is_empty() {
            return;
        }
        let Some(expires_at) = self.app.user(user_id).and_then(|u| u.session_expires_at) else {
            return;
        };
        let remaining = expires_at - app::wall_ms();
        if remaining <= 0 {
            return;
        }
        let mut next = remaining % TIME_UPDATE_MS;
        if next < 500 {
            next += TIME_UPDATE_MS;
        }
        let t = self
            .wheel
            .insert(self.now_ms() + next as u64, Timer::SessionTick(user_id));
        if let Some(subs) = self.hub.sessions.get_mut(&user_id) {
            subs.tick = Some(t);
        }
    }

    // ------------------------------------------------------------------ timers

    fn fire_timers(&mut self) {
        let mut fired = Vec::new();
        self.wheel.advance(self.now_ms(), &mut fired);
        for timer in fired {
            match timer {
                Timer::Conn { key, gen } => self.on_deadline(key, gen),
                Timer::SessionTick(user_id) => {
                    if let Some(subs) = self.hub.sessions.get_mut(&user_id) {
                        subs.tick = None;
                    }
                    if let Some(frame) = self.app.time_update_frame(user_id, app::wall_ms()) {
                        let mut effects =
                            vec![Effect::Broadcast(Audience::Session(user_id), frame)];
                        self.apply_effects(&mut effects, Instant::now());
                    }
                    self.ensure_session_tick(user_id);
                }
                Timer::SessionExpiry(user_id) => {
                    self.expiry_timers.remove(&user_id);
                    let started = Instant::now();
                    let mut effects = std::mem::take(&mut self.effects);
                    if let Err(e) = self.app.expire_session(user_id, &mut effects) {
                        log::error!(
                            "session {user_id} could not be expired: {e:?}; retrying in 1 s"
                        );
                        let t = self
                            .wheel
                            .insert(self.now_ms() + 1000, Timer::SessionExpiry(user_id));
                        self.expiry_timers.insert(user_id, t);
                    }
                    self.apply_effects(&mut effects, started);
                    self.effects = effects;
                }
                Timer::Heartbeat => self.heartbeat(),
                Timer::Housekeeping => self.housekeeping(),
                Timer::ShutdownDeadline => {
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.kill(key, CloseReason::Shutdown);
                    }
                }
                Timer::ResumeAccept => {
                    self.accept_paused = false;
                    self.accept();
                }
            }
        }
    }

    fn on_deadline(&mut self, key: usize, gen: u32) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.gen == gen) else {
            return;
        };
        conn.deadline = None;
        match conn.phase {
            Phase::Http if conn.rbuf.is_empty() && conn.served && conn.out.is_empty() => {
                // An idle keep-alive connection: close quietly.
                self.kill(key, CloseReason::Client);
            }
            Phase::Http => {
                log::debug!("conn {key} request timeout");
                self.respond(
                    key,
                    Response::error(408, "request not complete within 10 s").closing(),
                    false,
                );
            }
            // The worker answers within milliseconds; a deadline here means a stuck queue.
            Phase::AwaitingWorker { .. } => self.rearm_deadline(key, REQUEST_TIMEOUT_MS),
            Phase::Ws(_) => {}
            Phase::WsClosing | Phase::Draining { .. } => self.kill(key, CloseReason::Client),
        }
    }

    /// One slice of the heartbeat: ping this slice's streams, drop those silent for two intervals.
    fn heartbeat(&mut self) {
        let now = self.now_ms();
        let silent_after = 2 * self.cfg.heartbeat.as_millis() as u64;
        let slice = self.heartbeat_slice;
        self.heartbeat_slice = (slice + 1) % HEARTBEAT_SLICES;
        let mut key = slice;
        let end = self.conns.capacity();
        let (mut sent, mut bytes) = (0, 0);
        while key < end {
            if let Some(conn) = self.conns.get_mut(key) {
                let pinged = conn.is_live_stream()
                    && conn
                        .ws()
                        .is_some_and(|w| !matches!(w.role, StreamRole::Echo));
                if pinged {
                    if now.saturating_sub(conn.last_seen_ms) > silent_after {
                        log::info!("conn {key} silent for two heartbeats: closing");
                        self.kill(key, CloseReason::Heartbeat);
                    } else {
                        let (r, w) = conn.send_shared(&self.ping_frame, self.cfg.max_outbox_bytes);
                        bytes += w as u64;
                        match r {
                            Sent::Ok => sent += 1,
                            Sent::Overflow => self.kill(key, CloseReason::SlowConsumer),
                            Sent::Failed => self.kill(key, CloseReason::WriteError),
                        }
                    }
                }
            }
            key += HEARTBEAT_SLICES;
        }
        self.metrics.ws_messages_sent += sent;
        self.metrics.ws_bytes_sent += bytes;
        let at = now + self.heartbeat_slice_ms();
        self.wheel.insert(at, Timer::Heartbeat);
    }

    fn housekeeping(&mut self) {
        let now = self.now_ms();
        self.recent_closes
            .retain(|_, t| now.saturating_sub(*t) < RECONNECT_WINDOW_MS);
        self.wheel
            .insert(now + HOUSEKEEPING_MS, Timer::Housekeeping);
    }

    // ------------------------------------------------------------------ shutdown

    fn on_signal(&mut self) {
        let got: Vec<i32> = self.signals.pending().collect();
        if got.is_empty() || self.shutting_down {
            return;
        }
        log::info!("signal received: closing {} connections", self.conns.len());
        self.shutting_down = true;
        let _ = self.poll.registry().deregister(&mut self.listener);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns.get(key).map(|c| &c.phase) {
                Some(Phase::Ws(_)) => self.close_stream(
                    key,
                    code::GOING_AWAY,
                    "Server shutting down",
                    CloseReason::Shutdown,
                ),
                Some(Phase::WsClosing | Phase::Draining { .. }) => {}
                _ => self.kill(key, CloseReason::Shutdown),
            }
        }
        let at = self.now_ms() + SHUTDOWN_GRACE_MS;
        self.wheel.insert(at, Timer::ShutdownDeadline);
    }

    // ------------------------------------------------------------------ removal

    /// Mark for removal at the end of the loop turn.
    fn kill(&mut self, key: usize, why: CloseReason) {
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.dead.is_none() {
                conn.dead = Some(why);
                self.reap.push(key);
            }
        }
    }

    fn reap_dead(&mut self) {
        while let Some(key) = self.reap.pop() {
            let Some(why) = self.conns.get(key).and_then(|c| c.dead) else {
                continue;
            };
            let was_stream = self
                .conns
                .get(key)
                .is_some_and(|c| matches!(c.phase, Phase::Ws(_)));
            self.detach(key, why);
            let mut conn = self.conns.remove(key);
            if was_stream {
                // Last words, best effort: the client may be gone or not reading.
                let last = match why {
                    CloseReason::SlowConsumer => Some((code::TRY_AGAIN_LATER, "Slow consumer")),
                    CloseReason::Heartbeat => Some((code::GOING_AWAY, "Heartbeat timeout")),
                    CloseReason::Shutdown => Some((code::GOING_AWAY, "Server shutting down")),
                    _ => None,
                };
                if let Some((c, reason)) = last {
                    conn.replace_unsent_with(ws::close_frame(c, reason));
                    let _ = conn.flush();
                }
            }
            if let Some(t) = conn.deadline.take() {
                self.wheel.cancel(t);
            }
            let _ = self.poll.registry().deregister(&mut conn.sock);
            release_ip(&mut self.per_ip, conn.client_ip);
            log::debug!("conn {key}.{} closed ({})", conn.gen, why.label());
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum StreamRoute {
    Admin,
    Session(i64),
    Agent,
    Echo,
}

fn release_ip(per_ip: &mut HashMap<IpAddr, u32>, ip: IpAddr) {
    if let Some(n) = per_ip.get_mut(&ip) {
        *n -= 1;
        if *n == 0 {
            per_ip.remove(&ip);
        }
    }
}

/// Raise the soft open-file limit to the hard limit; returns the limit now in force.
fn raise_nofile_limit() -> usize {
    // SAFETY: getrlimit/setrlimit only read and write the struct we pass.
    unsafe {
        let mut rl: libc::rlimit = std::mem::zeroed();
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) != 0 {
            return 1024;
        }
        if rl.rlim_cur < rl.rlim_max {
            let want = libc::rlimit {
                rlim_cur: rl.rlim_max,
                rlim_max: rl.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &want) == 0 {
                rl = want;
            }
        }
        rl.rlim_cur.min(1 << 24) as usize
    }
}

/// mio listens with a backlog of 128; a reconnect wave of thousands wants the kernel's maximum.
fn widen_backlog(listener: &std::net::TcpListener) {
    use std::os::fd::AsRawFd;
    // SAFETY: listen(2) on a socket we own; a failure leaves the old backlog.
    unsafe {
        libc::listen(listener.as_raw_fd(), 65_535);
    }
}
