//! The event loop: one `mio::Poll` on one thread owns every socket, every connection and all
//! application state. Nothing else touches them, so nothing is locked or shared.
//!
//! ## mio's rules, and how this loop keeps them
//! * **Readiness is a hint.** An event may be spurious, and several may be merged into one.
//!   Every handler reads or writes until the kernel says `WouldBlock` (or a per-turn budget is
//!   spent, then `resume` brings the connection back next turn without waiting for a new
//!   event, since edge-triggered epoll will not report bytes that were already there).
//! * **Tokens outlive connections.** A slab key is reused as soon as its connection is gone, so
//!   every token, timer and job answer carries the key *and* a generation; anything that names
//!   a generation no longer in the slot is ignored (mio says events for closed sockets happen).
//! * **Never block.** Sockets are non-blocking; what the kernel will not take waits in the
//!   connection's bounded outbox until a writable event. Password hashing runs on the worker
//!   thread; its answers come back through a `mio::Waker`.
//!
//! ## One turn, Redis-style
//! 1. `poll`, with the timeout of the next timer (zero when some connection has more to read);
//! 2. handle events: accept; flush each writable socket's outbox; read each readable socket
//!    (parsing requests and frames as they complete, running the application right away);
//! 3. `resume`: connections that stopped at their budget or waited for a job read on;
//! 4. fire expired timers (deadlines, heartbeat slices, session clocks, housekeeping);
//! 5. reap: remove every connection marked dead during the turn. Nothing is removed from the
//!    slab anywhere else, so no walk over it ever sees a slot vanish.
//!
//! ## Ending a connection — the verbs, and the phase each leads to
//! * [`Server::mark_dead`] — the only function that marks a connection dead: it is removed at
//!   the end of the turn (a stream gets a last close frame, best effort, for slow consumers,
//!   heartbeat timeouts and shutdown). Any phase.
//! * `linger_close` — the last bytes are queued; once written our side shuts down and we wait
//!   (≤ 2 s) for the client's FIN, so no reset destroys the answer → `Draining`.
//! * `close_stream` — the polite WebSocket close: leave the hub, send a close frame, wait
//!   (≤ 2 s) for the client's close frame → `WsClosing`, then `Draining`.
//! * `fail_stream` — RFC 6455 §7.1.7 "fail the connection" after a protocol violation: close
//!   frame, then our FIN at once → `Draining`.
//! * `refuse_stream` — the contract's refusal: complete the handshake, then close at once with
//!   1008 and a reason the browser can read → `WsClosing`.
//!
//! Application changes come back from `api`/`agent` as jobs; storage jobs run inline today, and
//! their events are applied (broadcast) before the request is answered.

use crate::api::{self, Ctx, Done, Job, LoginLimiter, Pending, Reply};
use crate::app::{self, App, Command, Effect, Rules};
use crate::clock::{Clock, Now};
use crate::config::ServeConfig;
use crate::conn::{Conn, Phase};
use crate::hub::Hub;
use crate::metrics::{CloseReason, Metrics, Refusal};
use crate::session_clock::SessionClock;
use crate::store::{self, Sqlite};
use crate::timers::Timers;
use crate::worker::Worker;
use crate::ws::{self, code};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod input;
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
/// The heartbeat visits 1/SLICES of the connections per tick, so pings spread over the interval.
const HEARTBEAT_SLICES: usize = 10;
const HOUSEKEEPING_MS: u64 = 10_000;
/// A handshake with a credential closed less than this ago counts as a reconnect.
const RECONNECT_WINDOW_MS: u64 = 60_000;
/// File descriptors kept free above `--max-connections` for refusing politely.
const FD_RESERVE: usize = 64;
const TIMER_TICK_MS: u64 = 10;
/// How long an admin sign-in lasts (the `admin_session` cookie).
pub const ADMIN_SESSION_MS: i64 = 7 * 24 * 3600 * 1000;

/// What the reactor's own timers fire. Session clocks have their own ([`SessionClock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The deadline of whatever the connection is waiting for (request, close, drain).
    Conn { key: usize, gen: u32 },
    /// Ping the next slice of streams, drop the silent ones.
    Heartbeat,
    /// Forget old reconnect bookkeeping.
    Housekeeping,
    /// Shutdown grace is over: drop whoever is left.
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

/// The server: every piece of state the loop owns.
pub struct Server {
    /// The epoll instance every socket, the signal pipe and the worker's waker are registered in.
    poll: Poll,
    /// The listening socket; deregistered at shutdown so no new client is accepted.
    listener: TcpListener,
    /// SIGINT/SIGTERM as a mio source (signal-hook's self-pipe): shutdown starts in the loop.
    signals: Signals,
    /// The password-hashing thread; its answers arrive through the `WAKER` token.
    worker: Worker,
    /// Every client connection, by slab key. Entries are removed only in `reap_dead`.
    conns: Slab<Conn>,
    /// Generation of the last accepted connection; tokens carry it so a reused key is told
    /// apart from the connection that held it before.
    next_gen: u32,
    /// Which streams listen to what (slab keys only).
    hub: Hub,
    /// The reactor's timers: connection deadlines, heartbeat, housekeeping, shutdown.
    timers: Timers<Timer>,
    /// Session expiries and `time_update` ticks.
    session_clock: SessionClock,
    /// The in-memory view of users and admin sessions; changed only by applying events.
    app: App,
    /// The database; commands run against it in one transaction each.
    store: Sqlite,
    /// Session length, invite TTL, admin-session length (from the config).
    rules: Rules,
    /// Failed sign-ins per address and per account.
    limiter: LoginLimiter,
    metrics: Metrics,
    cfg: ServeConfig,
    /// The open-connection ceiling (from `--max-connections` or the descriptor limit).
    max_connections: usize,
    /// Open connections per client address (the per-IP cap); entries at zero are removed.
    per_ip: HashMap<IpAddr, u32>,
    /// Credential digest → when its stream closed (monotonic ms), for the reconnect metric;
    /// entries older than the window are dropped by housekeeping.
    recent_closes: HashMap<Digest32, u64>,
    /// Keys marked dead this turn, removed in `reap_dead`.
    reap: Vec<usize>,
    /// Keys with input still to handle (budget spent, or back from a job): served next turn,
    /// and the poll does not sleep while any wait.
    resume: Vec<usize>,
    /// The loop-wide read buffer: every read lands here first, so idle connections own none.
    scratch: Vec<u8>,
    /// Reused effect buffer (no allocation per request).
    effects: Vec<Effect>,
    /// Monotonic time since start, and wall time.
    time: Clock,
    /// The origin pages and invite links are reached at.
    public_url: String,
    /// `{"type":"ping"}`, framed once for every heartbeat.
    ping_frame: Rc<[u8]>,
    /// Which tenth of the connections the next heartbeat tick visits.
    heartbeat_slice: usize,
    /// A signal arrived: no accepting; exit once every connection is gone.
    shutting_down: bool,
    /// `accept` failed (descriptors exhausted); `ResumeAccept` clears it.
    accept_paused: bool,
}

use crate::auth::Digest32;

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
        let time = Clock::default();
        let (store, app) = open_storage(&cfg, public_url.clone(), time.now().wall_ms)?;
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
        let rules = Rules {
            session_ms: cfg.session_length.as_millis() as i64,
            invite_ttl_ms: cfg.invite_ttl.as_millis() as i64,
            admin_session_ms: ADMIN_SESSION_MS,
        };
        let mut server = Server {
            poll,
            listener,
            signals,
            worker,
            conns: Slab::with_capacity(1024),
            next_gen: 0,
            hub: Hub::default(),
            timers: Timers::new(),
            session_clock: SessionClock::new(),
            app,
            store,
            rules,
            limiter: LoginLimiter::new(cfg.login_failures_per_minute),
            metrics: Metrics::default(),
            max_connections,
            per_ip: HashMap::new(),
            recent_closes: HashMap::new(),
            reap: Vec::new(),
            resume: Vec::new(),
            scratch: vec![0; input::SCRATCH_BYTES],
            effects: Vec::new(),
            time,
            public_url,
            ping_frame: Rc::from(ws::text_frame(br#"{"type":"ping"}"#)),
            heartbeat_slice: 0,
            shutting_down: false,
            accept_paused: false,
            cfg,
        };
        let slice_ms = server.heartbeat_slice_ms();
        server.timers.insert(slice_ms, Timer::Heartbeat);
        server.timers.insert(HOUSEKEEPING_MS, Timer::Housekeeping);
        let now = server.time.now();
        for (user_id, expires_at) in server.app.running_sessions() {
            server.session_clock.start(user_id, expires_at, now);
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
        self.time.mono_ms()
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
                        // Writable first: a flushed outbox may un-pause reading.
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

    /// Sleep until the next timer of either set, but not at all while input waits in `resume`.
    fn poll_timeout(&self) -> Option<Duration> {
        if !self.resume.is_empty() {
            return Some(Duration::ZERO);
        }
        let now = self.now_ms();
        let next = [
            self.timers.next_deadline(),
            self.session_clock.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
        .unwrap_or(now + 60_000);
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
                    self.timers.insert(at, Timer::ResumeAccept);
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
        // Frames are written whole; Nagle would only hold the last segment of each back.
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
            self.timers
                .insert(now + REQUEST_TIMEOUT_MS, Timer::Conn { key, gen }),
        );
        entry.insert(conn);
        *self.per_ip.entry(addr.ip()).or_insert(0) += 1;
        log::debug!("conn {key}.{gen} accepted from {addr}");
    }

    // ------------------------------------------------------------------ jobs

    /// The per-request context the API handlers take.
    fn ctx(&mut self, client_ip: IpAddr, now: i64) -> Ctx<'_> {
        Ctx {
            app: &mut self.app,
            store: &mut self.store,
            now,
            client_ip,
            secure_cookies: self.public_url.starts_with("https://"),
            limiter: &mut self.limiter,
            metrics: &mut self.metrics,
        }
    }

    /// Run a storage command now, in one transaction, and apply what it stored: its frames are
    /// on their way before the caller answers the request that caused it.
    fn run_command(&mut self, cmd: Command, now: Now, started: Instant) -> Done {
        let rules = self.rules;
        let result = self
            .store
            .write(|tx| app::command::execute(tx, &rules, now.wall_ms, cmd));
        if let Ok(app::Outcome::Changed(event)) = &result {
            let mut effects = std::mem::take(&mut self.effects);
            self.app.apply(event, now.wall_ms, &mut effects);
            self.apply_effects(&mut effects, now, started);
            self.effects = effects;
        }
        Done::Stored(result)
    }

    /// Drive a reply for connection `key` until it is an answer (running storage jobs inline)
    /// or waits for the hashing thread.
    fn drive_reply(&mut self, key: usize, mut reply: Reply, keep_alive: bool, started: Instant) {
        loop {
            match reply {
                Reply::Now(resp) => return self.respond(key, resp, keep_alive),
                Reply::Later(Job::Store(cmd), pending) => {
                    let now = self.time.now();
                    let done = self.run_command(cmd, now, started);
                    let Some(ip) = self.conns.get(key).map(|c| c.client_ip) else {
                        return;
                    };
                    reply = api::finish(&mut self.ctx(ip, now.wall_ms), pending, done);
                }
                Reply::Later(Job::Hash(job), pending) => {
                    return self.await_hash(key, job, pending, keep_alive)
                }
            }
        }
    }

    /// Hand a password job to the worker; the connection waits in `AwaitingJob`.
    fn await_hash(
        &mut self,
        key: usize,
        job: crate::worker::Job,
        pending: Pending,
        keep_alive: bool,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let who = crate::worker::Requester { key, gen: conn.gen };
        if self.worker.submit(who, job) {
            conn.enter(Phase::AwaitingJob {
                keep_alive,
                pending: Box::new(pending),
            });
        } else {
            let busy = crate::http::Response::error(503, "sign-in is busy; try again in a moment")
                .header("Retry-After", "1");
            self.respond(key, busy, keep_alive);
        }
    }

    // ------------------------------------------------------------------ removal

    /// Mark a connection for removal at the end of the loop turn. The one place that does.
    fn mark_dead(&mut self, key: usize, why: CloseReason) {
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
                .is_some_and(|c| matches!(c.phase(), Phase::Ws(_)));
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
                self.timers.cancel(t);
            }
            let _ = self.poll.registry().deregister(&mut conn.sock);
            release_ip(&mut self.per_ip, conn.client_ip);
            log::debug!("conn {key}.{} closed ({})", conn.gen, why.label());
        }
    }
}

/// Open the database (SQLite file and key) and build the in-memory view from it.
fn open_storage(cfg: &ServeConfig, public_url: String, now: i64) -> Result<(Sqlite, App), String> {
    let (key, new_key) = store::load_or_create_key(&cfg.db).map_err(|e| e.to_string())?;
    let mut db = Sqlite::open(&cfg.db, Some(key)).map_err(|e| e.to_string())?;
    let users = db.load_users().map_err(|e| e.to_string())?;
    if new_key && !users.is_empty() {
        log::warn!(
            "the server key file {} was missing: a new one was made, and the invite links of all {} users changed",
            store::key_path(&cfg.db).display(),
            users.len()
        );
        db.rehash_invites(&users).map_err(|e| e.to_string())?;
    }
    let setup_code = if db.admin_count().map_err(|e| e.to_string())? == 0 {
        let code = crate::auth::new_token().map_err(|e| e.to_string())?;
        log::warn!("no admin account yet: create the first one at {public_url}/setup?code={code}");
        Some(code)
    } else {
        None
    };
    let pruned = db.prune_admin_sessions(now).unwrap_or(0);
    if pruned > 0 {
        log::info!("removed {pruned} expired admin sessions");
    }
    Ok((db, App::new(users, public_url, setup_code)))
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
