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
//!   thread and calls to the identity provider on the OIDC thread; their answers come back
//!   through the one shared `mio::Waker`.
//!
//! ## One turn, Redis-style
//! 1. `poll`, with the timeout of the next timer (zero when some connection has more to read);
//! 2. handle events: accept; flush each writable socket's outbox; read each readable socket
//!    (parsing requests and frames as they complete, running the application right away);
//! 3. `resume`: connections that stopped at their budget or waited for a job read on;
//! 4. fire expired timers (deadlines, heartbeat slices, session clocks, housekeeping);
//! 5. write: everything sent during the turn was only queued; now every connection that got
//!    output is written once, one `writev` for all of it (Redis writes just before sleeping;
//!    µWebSockets drains once per iteration). A burst of events costs one system call per
//!    client, not one per event; order is kept (one outbox per connection).
//! 6. reap: remove every connection marked dead during the turn. Nothing is removed from the
//!    slab anywhere else, so no walk over it ever sees a slot vanish.
//!
//! ## Ending a connection — the verbs, and the phase each leads to
//! * [`Server::mark_dead`] — the only function that marks a connection dead: it is removed at
//!   the end of the turn (a stream gets a last close frame, best effort, for heartbeat
//!   timeouts and shutdown). Any phase.
//! * `drop_slow_consumer` — a stream over its outbox cap: unsent frames dropped, a half-sent one
//!   finished, close 1013 and our FIN → `Draining`.
//! * `linger_close` — the last bytes are queued; once written our side shuts down and we wait
//!   (≤ 2 s) for the client's FIN, so no reset destroys the answer → `Draining`.
//! * `close_stream` — the polite WebSocket close: leave the hub, send a close frame, wait
//!   (≤ 2 s) for the client's close frame → `WsClosing`, then `Draining`.
//! * `fail_stream` — RFC 6455 §7.1.7 "fail the connection" after a protocol violation: close
//!   frame, then our FIN at once → `Draining`.
//! * `refuse_stream` — the contract's refusal: complete the handshake, then close at once with
//!   1008 and a reason the browser can read → `WsClosing`.
//!
//! ## Jobs
//! Work that could wait — a storage command, a password hash — leaves the loop as a job and
//! comes back through the `WAKER` token: storage commands run on the storage thread
//! (`storage.rs`), password checks on the hashing thread (`worker.rs`). A request waiting for
//! one sits in `AwaitingJob`; an agent message waits without blocking its stream. When a
//! storage command stored a change, its event is applied (and broadcast) before the request
//! that caused it is answered.

use crate::addr;
use crate::api::device::DeviceKeys;
use crate::api::{self, Ctx, Done, Job, LoginLimiter, Pending, Reply};
use crate::app::{self, App, Command, Effect, Rules};
use crate::auth::Digest32;
use crate::bus::Bus;
use crate::clock::{Clock, Now};
use crate::config::ServeConfig;
use crate::conn::{Conn, Phase};
use crate::hub::Hub;
use crate::metrics::{CloseReason, Metrics, Refusal};
use crate::oidc::Oidc;
use crate::session_clock::SessionClock;
use crate::storage::Storage;
use crate::timers::{TimerId, Timers};
use crate::worker::Worker;
use crate::ws::{self, code};
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;
use slab::Slab;
use std::collections::{BTreeSet, HashMap};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::sync::Arc;
use std::time::{Duration, Instant};

mod admission;
mod cluster;
mod input;
mod jobs;
mod open;
mod presence;
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
/// How often the admin sessions of open streams (and the cache) are re-checked in storage: a
/// session ended elsewhere (`admin revoke`, another process) stops working and closes its
/// streams within about this (API.md: 10 s). Cheap: with SQLite the sessions are read only when
/// another process changed the database (or every fifth time, for sessions that ran out).
const ADMIN_RECHECK_MS: u64 = 1_000;
/// How long an admin sign-in lasts (the `admin_session` cookie).
pub const ADMIN_SESSION_MS: i64 = 7 * 24 * 3600 * 1000;

/// What the reactor's own timers fire. Session clocks have their own ([`SessionClock`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Timer {
    /// The deadline of whatever the connection is waiting for (request, close, drain).
    Conn { key: usize, gen: u32 },
    /// Ping the next slice of streams, drop the silent ones.
    Heartbeat,
    /// Forget old reconnect bookkeeping; now and then, trim the log and prune sessions.
    Housekeeping,
    /// Re-check in storage the admin sessions this process trusts (cache and open streams).
    AdminRecheck,
    /// Time to tell the admins who is here (presence changed, at most once a second).
    Presence,
    /// Shutdown grace is over: drop whoever is left.
    ShutdownDeadline,
    /// Draining (`--drain-secs`): close the next batch of streams.
    Drain,
    /// Cluster: the janitor's sweep and sharing presence, every second.
    Cluster,
    /// Accepting failed (out of descriptors): try again.
    ResumeAccept,
    /// The earliest end among admin sessions with open streams (`Server::admin_expiries`).
    AdminExpiry,
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
    /// The storage thread; its answers arrive through the `WAKER` token too.
    storage: Storage<jobs::Ticket>,
    /// Sign-in through the identity provider (when configured): its thread answers through the
    /// same `WAKER` (mio allows one waker per poll).
    oidc: Option<Oidc>,
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
    /// The in-memory view of users, admin sessions and the event log; changed only by
    /// applying events.
    app: App,
    /// When presence was last told, and whether a telling is scheduled.
    presence: presence::Teller,
    /// Failed sign-ins (and agent handshakes) per address, account and device cookie.
    limiter: LoginLimiter,
    /// Signs the device cookies (a key derived from the server key).
    device: DeviceKeys,
    /// The server's own origin when `--public-url` is set (normalised); without it, each
    /// request's is `http://<Host>`.
    own_origin: Option<String>,
    /// `--public-url` is https: every answer carries `Strict-Transport-Security`.
    hsts: bool,
    metrics: Metrics,
    cfg: ServeConfig,
    /// The open-connection ceiling (from `--max-connections` or the descriptor limit).
    max_connections: usize,
    /// Open connections per client address, by `addr::limit_key` (IPv6 by /64; the per-IP
    /// cap); entries at zero are removed.
    per_ip: HashMap<IpAddr, u32>,
    /// Credential digest → when its stream closed (monotonic ms), for the reconnect metric;
    /// entries older than the window are dropped by housekeeping.
    recent_closes: HashMap<Digest32, u64>,
    /// Keys marked dead this turn, removed in `reap_dead`.
    reap: Vec<usize>,
    /// When the admin sessions of open admin streams end: (wall ms, session), one entry per
    /// session and end, not one timer per stream (a timer per stream was about 60 B of every
    /// idle admin stream). An entry leaves once its time has come, even if its streams closed
    /// before: so there is at most one per admin session that had a stream open, and a
    /// session lasts at most its configured length.
    admin_expiries: BTreeSet<(i64, Digest32)>,
    /// The one `Timer::AdminExpiry`, armed for the first of `admin_expiries` (wall ms, id);
    /// `None` only while the set is empty.
    admin_expiry: Option<(i64, TimerId)>,
    /// Keys with output queued this turn, written in `write_listed` at the turn's end (each
    /// once: `Conn::flush_listed`).
    write_list: Vec<usize>,
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
    /// Housekeeping rounds so far (every sixth also trims storage).
    housekeeping_round: u64,
    /// Admin session re-checks so far (every fifth reads the sessions whatever changed).
    admin_recheck_round: u64,
    /// Events that came before their turn (see `cluster.rs`: the intake).
    intake: cluster::Intake,
    /// Storage answers waiting until their event is applied: (its number, who asked, answer).
    stalled: Vec<(u64, jobs::Ticket, Result<app::Outcome, app::AppError>)>,
    /// Monotonic ms since which the intake has had a hole.
    gap_since: Option<u64>,
    /// This node's part in a cluster (`--database-url`); `None` for a single server.
    cluster: Option<cluster::ClusterNode>,
    /// A SIGTERM with `--drain-secs`: the streams are closing, spread over the drain time.
    draining: Option<timers::Drain>,
    /// Admission control: refuses broadcasting writes past the backlog bound (`admission.rs`).
    admission: admission::Admission,
}

impl Server {
    /// Bind, open the database, and get ready to run. Logs `listening on http://HOST:PORT`.
    pub fn bind(cfg: ServeConfig) -> Result<Server, String> {
        let nofile = open::raise_nofile_limit();
        let max_connections = cfg
            .max_connections
            .unwrap_or_else(|| nofile.saturating_sub(FD_RESERVE).max(16));
        let std_listener = std::net::TcpListener::bind(cfg.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", cfg.listen))?;
        std_listener
            .set_nonblocking(true)
            .map_err(|e| format!("listener: {e}"))?;
        open::widen_backlog(&std_listener);
        let local = std_listener
            .local_addr()
            .map_err(|e| format!("listener: {e}"))?;
        let mut listener = TcpListener::from_std(std_listener);
        let public_url = cfg
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local}"));
        if cfg.database_url.is_some() && cfg.public_url.is_none() {
            // Each node would name itself: invite links and the accepted origin would differ
            // by the node that happened to serve the request.
            log::warn!(
                "cluster mode without --public-url: invite links and the accepted origin will \
                 name this node ({public_url}), not the load balancer; give every node the same \
                 --public-url"
            );
        }
        let time = Clock::default();
        let mut cfg = cfg;
        cfg.agent_key = open::agent_key(&cfg)?;
        let opened = open::storage(&cfg, public_url.clone())?;
        let rules = Rules {
            public_url: public_url.clone(),
            session_ms: cfg.session_length.as_millis() as i64,
            invite_ttl_ms: cfg.invite_ttl.as_millis() as i64,
            admin_session_ms: ADMIN_SESSION_MS,
        };
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
        let worker =
            Worker::start(Arc::clone(&waker)).map_err(|e| format!("worker thread: {e}"))?;
        let oidc = open::oidc(&cfg, &public_url, local, &opened.key, Arc::clone(&waker))?;
        let cluster = match opened.follow {
            Some(follow) => Some(cluster::ClusterNode::new(
                Bus::start(
                    follow.url,
                    &cfg.node_id,
                    opened.app.head(),
                    follow.epoch,
                    Arc::clone(&waker),
                )
                .map_err(|e| format!("bus thread: {e}"))?,
                cfg.node_id.clone(),
                opened.key,
            )),
            None => None,
        };
        let storage = Storage::start(opened.backends, rules, waker)
            .map_err(|e| format!("storage thread: {e}"))?;
        let mut server = Server {
            poll,
            listener,
            signals,
            worker,
            storage,
            oidc,
            conns: Slab::with_capacity(1024),
            next_gen: 0,
            hub: Hub::default(),
            timers: Timers::new(),
            session_clock: SessionClock::new(),
            app: opened.app,
            presence: presence::Teller::default(),
            limiter: LoginLimiter::new(cfg.login_failures_per_minute, cluster.is_some()),
            device: DeviceKeys::new(&opened.key),
            own_origin: cfg.public_url.clone(),
            hsts: public_url.starts_with("https://"),
            metrics: Metrics::for_node(&cfg.node_id),
            max_connections,
            per_ip: HashMap::new(),
            recent_closes: HashMap::new(),
            reap: Vec::new(),
            admin_expiries: BTreeSet::new(),
            admin_expiry: None,
            write_list: Vec::new(),
            resume: Vec::new(),
            scratch: vec![0; input::SCRATCH_BYTES],
            effects: Vec::new(),
            time,
            public_url,
            ping_frame: Rc::from(ws::text_frame(br#"{"type":"ping"}"#)),
            heartbeat_slice: 0,
            shutting_down: false,
            accept_paused: false,
            housekeeping_round: 0,
            admin_recheck_round: 0,
            intake: cluster::Intake::new(),
            stalled: Vec::new(),
            gap_since: None,
            cluster,
            draining: None,
            admission: admission::Admission::default(),
            cfg,
        };
        let slice_ms = server.heartbeat_slice_ms();
        server.timers.insert(slice_ms, Timer::Heartbeat);
        server.timers.insert(HOUSEKEEPING_MS, Timer::Housekeeping);
        server.timers.insert(ADMIN_RECHECK_MS, Timer::AdminRecheck);
        if server.cluster.is_some() {
            server.timers.insert(0, Timer::Cluster);
        }
        let now = server.time.now();
        for (user_id, expires_at) in server.app.running_sessions() {
            server.session_clock.start(user_id, expires_at, now);
        }
        for (user_id, expires_at) in server.app.pending_invites() {
            server.session_clock.arm_invite(user_id, expires_at, now);
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
            self.admission.turn_started(self.now_ms());
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    SIGNALS => self.on_signal(),
                    WAKER => {
                        self.on_bus_news();
                        self.on_jobs_done();
                    }
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
            self.send_uncounts();
            self.fire_timers();
            self.write_listed();
            self.reap_dead();
            self.metrics.open_connections = self.conns.len();
            let busy = busy.elapsed().as_secs_f64();
            self.metrics.loop_busy_seconds.observe(busy);
            self.admission.turn_done(busy * 1000.0);
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
        // Canonical from here on: a dual-stack listener's `::ffff:a.b.c.d` is `a.b.c.d`.
        let ip = addr::canonical(addr.ip());
        let mut conn = Conn::new(sock, gen, ip, now);
        conn.deadline = Some(
            self.timers
                .insert(now + REQUEST_TIMEOUT_MS, Timer::Conn { key, gen }),
        );
        entry.insert(conn);
        *self.per_ip.entry(addr::limit_key(ip)).or_insert(0) += 1;
        log::debug!("conn {key}.{gen} accepted from {addr}");
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

    /// Put connection `key` on the list to write at the end of the turn (`first`: it had
    /// nothing queued before, so it is not on the list yet).
    fn list_for_writing(&mut self, key: usize, first: bool) {
        if first {
            self.write_list.push(key);
        }
    }

    /// Write every connection that got output this turn (phase 5).
    fn write_listed(&mut self) {
        let list = std::mem::take(&mut self.write_list);
        for &key in &list {
            if let Some(c) = self.conns.get_mut(key) {
                c.unlist();
            }
            self.on_writable(key);
        }
        // Keep the allocation for the next turn.
        self.write_list = list;
        self.write_list.clear();
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
            self.admission.removed(&conn);
            if was_stream {
                // Last words, best effort: the client may be gone or not reading. (A slow
                // consumer never gets here as a stream: `drop_slow_consumer` closes it itself.)
                let last = match why {
                    CloseReason::Heartbeat => Some((code::GOING_AWAY, "Heartbeat timeout")),
                    CloseReason::Shutdown => Some((code::GOING_AWAY, "Server shutting down")),
                    _ => None,
                };
                if let Some((c, reason)) = last {
                    let _ = conn.replace_unsent_with(ws::close_frame(c, reason));
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

/// One connection of client `ip` fewer (counted by `addr::limit_key`).
fn release_ip(per_ip: &mut HashMap<IpAddr, u32>, ip: IpAddr) {
    if let Some(n) = per_ip.get_mut(&addr::limit_key(ip)) {
        *n -= 1;
        if *n == 0 {
            per_ip.remove(&addr::limit_key(ip));
        }
    }
}
