//! The load generator's reactor: one mio `Poll` driving thousands of WebSocket client
//! connections plus a few keep-alive HTTP/1.1 connections, on one thread.
//!
//! Hot path per received message: parse the frame header, find the `"type"` value in the
//! first bytes of the payload, and for `user_added` look for this run's round marker (a
//! unique email prefix) — no JSON parse. Receipt time is the moment `epoll_wait` returned
//! the batch, which is an upper bound of when the bytes were in the socket and does not
//! include the generator's own per-message work.
//!
//! Layout: this file owns the `Driver` (state, counters, the poll loop and its dispatch);
//! `ws` the WebSocket clients (connect, handshake, frames, what a message means), `http` the
//! keep-alive HTTP clients, and `wire` the pure byte-level helpers both use.
//!
//! Tokens: WebSocket clients are slab keys below `HTTP_BASE`; HTTP connection `h` is
//! `HTTP_BASE + h`, so one poll serves both without a lookup table.

mod http;
mod wire;
mod ws;

pub use http::HttpResp;

use crate::stats::Histogram;
use http::Http;
use mio::{Events, Poll};
use slab::Slab;
use std::collections::BTreeMap;
use std::io;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};
use ws::Ws;

/// Tokens at or above this are HTTP connections.
const HTTP_BASE: usize = usize::MAX / 2;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReadyOn {
    /// Admin stream: ready once `{"type":"initial"}` arrived.
    Initial,
    /// Session stream: ready on the first text message (`time_update`).
    FirstMessage,
    /// Admin stream after a reconnect: ready once it reflects event `seq`, from an `initial`
    /// at or past it, or from `resumed` and the replayed events up to it.
    Seq(u64),
}

/// One round of a broadcast probe: when the POST was written, and who got it.
#[derive(Default)]
pub struct Round {
    pub t0: Option<Instant>,
    pub got: u32,
    pub lat_us: Vec<u32>,
    /// Beside `lat_us`: the node (`Driver::set_server`) of the client each latency is from.
    pub nodes: Vec<u8>,
}

/// The generator's one reactor and everything it measured. Scenarios own one per server.
pub struct Driver {
    poll: Poll,
    events: Events,
    /// The batch copied out of `events` as (token, readable, writable, error), reused, so the
    /// handlers can borrow `self` mutably while walking it.
    evbuf: Vec<(usize, bool, bool, bool)>,
    /// WebSocket clients cut off by the per-wake-up read budget: read again next turn.
    again: Vec<usize>,
    ws: Slab<Ws>,
    /// HTTP connections by handle; `None` once closed (handles are never reused).
    http: Vec<Option<Http>>,
    /// One read buffer for every WebSocket client.
    scratch: Vec<u8>,
    /// Where new connections go (`set_server`), and the node number they are tagged with.
    server: SocketAddr,
    host: String,
    node: u8,
    ready_on: ReadyOn,
    per_addr: u64,
    /// Connections started so far: picks the next source address.
    src_seq: u64,
    /// xorshift state for keys and masks (seeded from the OS; not security-relevant here).
    rng: u64,
    /// When the current batch came out of `epoll_wait`: the receipt time of its messages.
    batch_t: Instant,
    /// Busy-poll (epoll_wait with a zero timeout) instead of sleeping: set during measured
    /// windows so the server's writes never have to wake a sleeping generator.
    pub spin: bool,
    /// Time spent handling events (not waiting in epoll_wait), for the "is the generator the
    /// bottleneck" check.
    pub busy: Duration,
    /// Round marker: `user_added` payloads containing MARKER<digits> belong to round <digits>.
    pub marker: Vec<u8>,
    pub rounds: Vec<Round>,
    /// Keep every per-client latency per round (fan-out) in addition to the histogram.
    pub exact: bool,
    pub hist: Histogram,
    pub n_ready: usize,
    pub n_failed: usize,
    /// Ready connections that the server closed or that died later.
    pub n_dropped: usize,
    pub fail_reasons: BTreeMap<String, usize>,
    /// connect() → ready, per connection of the last `connect_many`.
    pub ready_us: Vec<u64>,
    pub msgs: u64,
    pub bytes: u64,
    pub pings: u64,
    pub time_updates: u64,
    pub expired: u64,
    /// The epoch named by the latest `initial` (contract v2).
    pub epoch: Option<String>,
    /// Streams that opened with `initial` / with `resumed`.
    pub opened_initial: u64,
    pub opened_resumed: u64,
    /// Events whose `seq` was not the one after the stream's last: gaps or repeats.
    pub seq_gaps: u64,
    /// The highest `seq` any stream has seen.
    pub max_seq: u64,
    /// Receipt time of the latest marked `user_added` (of any round).
    pub last_rx: Option<Instant>,
    /// When the latest client became ready.
    pub last_ready: Option<Instant>,
}

impl Driver {
    pub fn new(server: SocketAddr, ready_on: ReadyOn, per_addr: u64) -> io::Result<Driver> {
        let mut seed = [0u8; 8];
        let _ = getrandom::fill(&mut seed);
        Ok(Driver {
            poll: Poll::new()?,
            events: Events::with_capacity(1024),
            evbuf: Vec::with_capacity(1024),
            again: Vec::new(),
            ws: Slab::with_capacity(1024),
            http: Vec::new(),
            scratch: vec![0u8; 64 * 1024],
            server,
            host: server.to_string(),
            node: 0,
            ready_on,
            per_addr: per_addr.max(1),
            src_seq: 0,
            rng: u64::from_le_bytes(seed) | 1,
            batch_t: Instant::now(),
            spin: false,
            busy: Duration::ZERO,
            marker: Vec::new(),
            rounds: Vec::new(),
            exact: true,
            hist: Histogram::new(),
            n_ready: 0,
            n_failed: 0,
            n_dropped: 0,
            fail_reasons: BTreeMap::new(),
            ready_us: Vec::new(),
            msgs: 0,
            bytes: 0,
            pings: 0,
            time_updates: 0,
            expired: 0,
            epoch: None,
            opened_initial: 0,
            opened_resumed: 0,
            seq_gaps: 0,
            max_seq: 0,
            last_rx: None,
            last_ready: None,
        })
    }

    /// Send the connections opened from now on (WebSocket and HTTP) to `server`, and tag the
    /// WebSocket clients with `node` (cluster scenarios: one driver, clients on several nodes).
    pub fn set_server(&mut self, server: SocketAddr, node: u8) {
        self.server = server;
        self.host = server.to_string();
        self.node = node;
    }

    /// What makes the clients connected from now on count as ready.
    pub fn set_ready_on(&mut self, r: ReadyOn) {
        self.ready_on = r;
    }

    fn rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545F4914F6CDD1D)
    }

    /// 127.0.0.1, 127.0.0.2, … (then 127.0.1.1, …): `per_addr` connections per source address.
    fn next_src(&mut self) -> Ipv4Addr {
        let idx = self.src_seq / self.per_addr;
        self.src_seq += 1;
        let last = (idx % 254) as u8 + 1;
        let third = ((idx / 254) % 256) as u8;
        Ipv4Addr::new(127, 0, third, last)
    }

    fn note_fail(&mut self, reason: String) {
        self.n_failed += 1;
        *self.fail_reasons.entry(reason).or_insert(0) += 1;
    }

    /// Start round `r` (the next one) of a broadcast probe: `POST /api/users` on HTTP
    /// connection `h` with the body `body(r)`, whose e-mail must carry `marker` + `r`.
    /// Returns `r` and the instant just before the write, from which latencies count.
    pub fn post_round(
        &mut self,
        h: usize,
        cookie: &str,
        body: impl FnOnce(usize) -> String,
    ) -> (usize, Instant) {
        let r = self.rounds.len();
        let body = body(r);
        self.rounds.push(Round::default());
        let t0 = self.http_send(
            h,
            "POST",
            "/api/users",
            Some(cookie),
            Some(body.as_bytes()),
            r as u64,
        );
        self.rounds[r].t0 = Some(t0);
        (r, t0)
    }

    /// One whole broadcast-probe round: `post_round`, then run (busy-polling when `spin`) until
    /// the POST is answered and `expected` clients have the round's `user_added`, the POST
    /// failed or its connection died, or `timeout` passed. Returns `r` and the POST's instant.
    pub fn broadcast_round(
        &mut self,
        h: usize,
        cookie: &str,
        expected: usize,
        timeout: Duration,
        spin: bool,
        body: impl FnOnce(usize) -> String,
    ) -> (usize, Instant) {
        self.spin = spin;
        let (r, t0) = self.post_round(h, cookie, body);
        self.run_until(t0 + timeout, |d| {
            let st = d.http_peek_status(h);
            (st.is_some() && d.rounds[r].got as usize >= expected)
                || st.is_some_and(|s| s != 201)
                || d.http_dead(h).is_some()
        });
        self.spin = false;
        (r, t0)
    }

    /// Run the reactor until `done` holds or the deadline passes. Returns whether `done` held.
    pub fn run_until(&mut self, deadline: Instant, mut done: impl FnMut(&Driver) -> bool) -> bool {
        loop {
            if done(self) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.poll_once((deadline - now).min(Duration::from_millis(50)));
        }
    }

    /// Keep answering pings for a while (instead of sleeping).
    pub fn idle(&mut self, d: Duration) {
        let deadline = Instant::now() + d;
        self.run_until(deadline, |_| false);
    }

    /// One `epoll_wait` (zero timeout while busy-polling or while a socket still has unread
    /// bytes from an earlier budget cut), then every event of the batch, stamped `batch_t`.
    pub fn poll_once(&mut self, timeout: Duration) {
        let timeout = if self.again.is_empty() && !self.spin {
            timeout
        } else {
            Duration::ZERO
        };
        match self.poll.poll(&mut self.events, Some(timeout)) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return,
            Err(e) => {
                eprintln!("catalytic-bench: poll: {e}");
                std::thread::sleep(Duration::from_millis(10));
                return;
            }
        }
        self.batch_t = Instant::now();
        if self.events.is_empty() && self.again.is_empty() {
            return;
        }
        let mut evs = std::mem::take(&mut self.evbuf);
        evs.clear();
        for ev in self.events.iter() {
            evs.push((
                ev.token().0,
                ev.is_readable() || ev.is_read_closed(),
                ev.is_writable(),
                ev.is_error() || ev.is_write_closed(),
            ));
        }
        for k in std::mem::take(&mut self.again) {
            evs.push((k, true, false, false));
        }
        for &(tok, r, w, err) in evs.iter() {
            if tok >= HTTP_BASE {
                self.http_event(tok - HTTP_BASE, r, w);
            } else {
                self.ws_event(tok, r, w, err);
            }
        }
        self.evbuf = evs;
        self.busy += self.batch_t.elapsed();
    }
}
