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
use crate::timers::{TimerId, Timers};
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

mod requests;
mod streams;
mod timers;

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
    wheel: Timers<Timer>,
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
            wheel: Timers::new(),
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
