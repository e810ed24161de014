//! The load generator's reactor: one mio `Poll` driving thousands of WebSocket client
//! connections plus a few keep-alive HTTP/1.1 connections, on one thread.
//!
//! Hot path per received message: parse the frame header, find the `"type"` value in the
//! first bytes of the payload, and for `user_added` look for this run's round marker (a
//! unique email prefix) — no JSON parse. Receipt time is the moment `epoll_wait` returned
//! the batch, which is an upper bound of when the bytes were in the socket and does not
//! include the generator's own per-message work.

use crate::stats::Histogram;
use mio::net::TcpStream;
use mio::{Events, Interest, Poll, Token};
use slab::Slab;
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::collections::{BTreeMap, VecDeque};
use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// Tokens at or above this are HTTP connections.
const HTTP_BASE: usize = usize::MAX / 2;
/// How much of each server payload is kept for classification (bigger ones are skipped).
const COLLECT: usize = 8 * 1024;
/// Reads per socket per wake-up before yielding to the other sockets.
const MAX_READS_PER_EVENT: usize = 64;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ReadyOn {
    /// Admin stream: ready once `{"type":"initial"}` arrived.
    Initial,
    /// Session stream: ready on the first text message (`time_update`).
    FirstMessage,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Msg {
    Initial,
    UserAdded(Option<u32>),
    Ping,
    TimeUpdate,
    Expired,
    Other,
}

#[derive(PartialEq, Eq, Clone, Copy)]
enum St {
    Connecting,
    Handshake,
    Open,
}

struct Ws {
    sock: TcpStream,
    st: St,
    key: String,
    out: Vec<u8>,
    /// Handshake response bytes, or a partial frame header.
    hbuf: Vec<u8>,
    in_payload: bool,
    opcode: u8,
    fin: bool,
    remaining: u64,
    pbuf: Vec<u8>,
    frag: Option<Msg>,
    ready: bool,
    started: Instant,
}

/// One round of a broadcast probe: when the POST was written, and who got it.
#[derive(Default)]
pub struct Round {
    pub t0: Option<Instant>,
    pub got: u32,
    pub lat_us: Vec<u32>,
}

pub struct HttpResp {
    pub tag: u64,
    pub status: u16,
    pub body: Vec<u8>,
    pub at: Instant,
}

struct Http {
    sock: TcpStream,
    out: Vec<u8>,
    inb: Vec<u8>,
    tags: VecDeque<u64>,
    done: VecDeque<HttpResp>,
    dead: Option<String>,
}

pub struct Driver {
    poll: Poll,
    events: Events,
    evbuf: Vec<(usize, bool, bool, bool)>,
    again: Vec<usize>,
    ws: Slab<Ws>,
    http: Vec<Option<Http>>,
    scratch: Vec<u8>,
    server: SocketAddr,
    host: String,
    ready_on: ReadyOn,
    per_addr: u64,
    src_seq: u64,
    rng: u64,
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
}

fn b64(data: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::with_capacity(data.len().div_ceil(3) * 4);
    for c in data.chunks(3) {
        let n = (c[0] as u32) << 16
            | (*c.get(1).unwrap_or(&0) as u32) << 8
            | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                s.push(A[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

/// Byte-substring search (first-byte scan, then compare): payloads are a few hundred bytes.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    let (&first, rest) = needle.split_first()?;
    if hay.len() < needle.len() {
        return None;
    }
    let last = hay.len() - needle.len();
    let mut i = 0;
    while i <= last {
        match hay[i..=last].iter().position(|&b| b == first) {
            None => return None,
            Some(p) => {
                i += p;
                if &hay[i + 1..i + needle.len()] == rest {
                    return Some(i);
                }
                i += 1;
            }
        }
    }
    None
}

/// The value of the top-level `"type"` key, looked for near the start of the payload.
fn msg_type(p: &[u8]) -> &[u8] {
    let head = &p[..p.len().min(256)];
    let Some(k) = find(head, b"\"type\"") else {
        return b"";
    };
    let mut i = k + 6;
    while i < head.len()
        && (head[i] == b' ' || head[i] == b':' || head[i] == b'\t' || head[i] == b'\n')
    {
        i += 1;
    }
    if i >= head.len() || head[i] != b'"' {
        return b"";
    }
    let s = i + 1;
    match head[s..].iter().position(|&b| b == b'"') {
        Some(e) => &head[s..s + e],
        None => b"",
    }
}

/// Frame header: (opcode, fin, payload length, header length); None = need more bytes.
fn parse_header(b: &[u8]) -> Result<Option<(u8, bool, u64, usize)>, String> {
    if b.len() < 2 {
        return Ok(None);
    }
    if b[0] & 0x70 != 0 {
        return Err("frame with RSV bits".into());
    }
    if b[1] & 0x80 != 0 {
        return Err("masked server frame".into());
    }
    let (len, hl) = match b[1] & 0x7f {
        126 => {
            if b.len() < 4 {
                return Ok(None);
            }
            (u16::from_be_bytes([b[2], b[3]]) as u64, 4)
        }
        127 => {
            if b.len() < 10 {
                return Ok(None);
            }
            (u64::from_be_bytes(b[2..10].try_into().unwrap()), 10)
        }
        n => (n as u64, 2),
    };
    if len > 1 << 31 {
        return Err(format!("frame of {len} bytes"));
    }
    Ok(Some((b[0] & 0x0f, b[0] & 0x80 != 0, len, hl)))
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
        })
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

    fn remove_ws(&mut self, i: usize, reason: Option<String>) {
        if let Some(c) = self.ws.try_remove(i) {
            let mut sock = c.sock;
            let _ = self.poll.registry().deregister(&mut sock);
            let _ = SockRef::from(&sock).set_linger(Some(Duration::ZERO));
            if c.ready {
                self.n_dropped += 1;
                if let Some(r) = reason {
                    *self
                        .fail_reasons
                        .entry(format!("after ready: {r}"))
                        .or_insert(0) += 1;
                }
            } else {
                self.note_fail(reason.unwrap_or_else(|| "closed".into()));
            }
        }
    }

    /// Close every WebSocket client at once (RST, no TIME_WAIT left on our ports).
    pub fn close_all_ws(&mut self) {
        let keys: Vec<usize> = self.ws.iter().map(|(k, _)| k).collect();
        for k in keys {
            if let Some(c) = self.ws.try_remove(k) {
                let mut sock = c.sock;
                let _ = self.poll.registry().deregister(&mut sock);
                let _ = SockRef::from(&sock).set_linger(Some(Duration::ZERO));
            }
        }
        self.n_ready = 0;
    }

    fn start_ws(&mut self, path: &str, cookie: Option<&str>) -> Result<(), String> {
        let src = self.next_src();
        let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))
            .map_err(|e| format!("socket: {e}"))?;
        s.set_nonblocking(true)
            .map_err(|e| format!("nonblocking: {e}"))?;
        let _ = s.set_tcp_nodelay(true);
        // Let connect() pick the port for the full 4-tuple instead of reserving one at bind().
        unsafe {
            let one: libc::c_int = 1;
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IP,
                libc::IP_BIND_ADDRESS_NO_PORT,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        s.bind(&SocketAddr::new(IpAddr::V4(src), 0).into())
            .map_err(|e| format!("bind {src}: {e}"))?;
        match s.connect(&self.server.into()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
            Err(e) => return Err(format!("connect: {e}")),
        }
        let mut sock = TcpStream::from_std(std::net::TcpStream::from(s));
        let mut raw = [0u8; 16];
        for ch in raw.chunks_mut(8) {
            let r = self.rand().to_le_bytes();
            ch.copy_from_slice(&r);
        }
        let key = b64(&raw);
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n",
            self.host
        );
        if let Some(c) = cookie {
            req.push_str("Cookie: ");
            req.push_str(c);
            req.push_str("\r\n");
        }
        req.push_str("\r\n");
        let entry = self.ws.vacant_entry();
        self.poll
            .registry()
            .register(
                &mut sock,
                Token(entry.key()),
                Interest::READABLE | Interest::WRITABLE,
            )
            .map_err(|e| format!("register: {e}"))?;
        entry.insert(Ws {
            sock,
            st: St::Connecting,
            key,
            out: req.into_bytes(),
            hbuf: Vec::new(),
            in_payload: false,
            opcode: 0,
            fin: true,
            remaining: 0,
            pbuf: Vec::new(),
            frag: None,
            ready: false,
            started: Instant::now(),
        });
        Ok(())
    }

    /// Open `n` WebSocket connections, at most `max_inflight` not yet ready at a time, and
    /// wait until each is ready or failed (or the deadline). `req(k)` gives path and Cookie.
    /// Returns (ready, failed) for this batch; connections still pending at the deadline
    /// count as failed ("timeout") and are closed.
    pub fn connect_many(
        &mut self,
        n: usize,
        max_inflight: usize,
        deadline: Instant,
        mut req: impl FnMut(usize) -> (String, Option<String>),
    ) -> (usize, usize) {
        let (r0, f0) = (self.n_ready, self.n_failed);
        self.ready_us.clear();
        let mut started = 0usize;
        let max_inflight = max_inflight.max(1);
        loop {
            let done = (self.n_ready - r0) + (self.n_failed - f0);
            if done >= n || Instant::now() >= deadline {
                break;
            }
            let inflight = started - done;
            let mut burst = 0;
            while started < n
                && started - ((self.n_ready - r0) + (self.n_failed - f0)) < max_inflight
                && burst < 4096
            {
                let (path, cookie) = req(started);
                if let Err(e) = self.start_ws(&path, cookie.as_deref()) {
                    self.note_fail(e);
                }
                started += 1;
                burst += 1;
            }
            let _ = inflight;
            let wait = deadline
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(50));
            self.poll_once(wait);
        }
        // Whatever is still not ready now failed.
        let pending: Vec<usize> = self
            .ws
            .iter()
            .filter(|(_, c)| !c.ready)
            .map(|(k, _)| k)
            .collect();
        for k in pending {
            self.remove_ws(k, Some("timeout".into()));
        }
        let ready = self.n_ready - r0;
        (ready, n - ready)
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

    fn ws_event(&mut self, i: usize, r: bool, w: bool, err: bool) {
        let Some(c) = self.ws.get_mut(i) else { return };
        if c.st == St::Connecting {
            if !(w || r || err) {
                return;
            }
            match c.sock.take_error() {
                Ok(Some(e)) | Err(e) => {
                    self.remove_ws(i, Some(format!("connect: {e}")));
                    return;
                }
                Ok(None) => {}
            }
            match c.sock.peer_addr() {
                Ok(_) => c.st = St::Handshake,
                Err(e) if e.kind() == io::ErrorKind::NotConnected && !err => return,
                Err(e) => {
                    self.remove_ws(i, Some(format!("connect: {e}")));
                    return;
                }
            }
        }
        if !c.out.is_empty() {
            if let Err(e) = Self::flush(c) {
                self.remove_ws(i, Some(format!("write: {e}")));
                return;
            }
        }
        if r || err {
            self.ws_read(i);
        }
    }

    fn flush(c: &mut Ws) -> io::Result<()> {
        let mut off = 0;
        let mut guard = 0;
        while off < c.out.len() && guard < 1024 {
            guard += 1;
            match c.sock.write(&c.out[off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        c.out.drain(..off);
        Ok(())
    }

    fn ws_read(&mut self, i: usize) {
        let mut scratch = std::mem::take(&mut self.scratch);
        let mut reads = 0;
        while let Some(c) = self.ws.get_mut(i) {
            if reads >= MAX_READS_PER_EVENT {
                self.again.push(i);
                break;
            }
            reads += 1;
            match c.sock.read(&mut scratch) {
                Ok(0) => {
                    self.remove_ws(i, Some("eof".into()));
                    break;
                }
                Ok(n) => {
                    self.bytes += n as u64;
                    let res = if c.st == St::Handshake {
                        self.handshake(i, &scratch[..n])
                    } else {
                        self.feed(i, &scratch[..n])
                    };
                    if let Err(e) = res {
                        self.remove_ws(i, Some(e));
                        break;
                    }
                    if n < scratch.len() {
                        break; // drained (a new arrival raises a new edge)
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    self.remove_ws(i, Some(format!("read: {e}")));
                    break;
                }
            }
        }
        self.scratch = scratch;
    }

    fn handshake(&mut self, i: usize, d: &[u8]) -> Result<(), String> {
        let c = &mut self.ws[i];
        c.hbuf.extend_from_slice(d);
        if c.hbuf.len() > 16 * 1024 {
            return Err("handshake response too large".into());
        }
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let hl = match resp.parse(&c.hbuf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) => return Ok(()),
            Err(e) => return Err(format!("handshake: {e}")),
        };
        let code = resp.code.unwrap_or(0);
        if code != 101 {
            return Err(format!("http {code}"));
        }
        let accept = resp
            .headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case("sec-websocket-accept"))
            .map(|h| h.value.trim_ascii().to_vec())
            .unwrap_or_default();
        if accept != tungstenite::handshake::derive_accept_key(c.key.as_bytes()).as_bytes() {
            return Err("bad Sec-WebSocket-Accept".into());
        }
        c.st = St::Open;
        let rest = c.hbuf.split_off(hl);
        c.hbuf = Vec::new();
        if rest.is_empty() {
            return Ok(());
        }
        self.feed(i, &rest)
    }

    /// Consume server frames. Small payloads are handled in place; larger or split ones are
    /// collected (first COLLECT bytes) while the rest is skipped.
    fn feed(&mut self, i: usize, mut d: &[u8]) -> Result<(), String> {
        let mut guard = 0u32;
        while !d.is_empty() {
            guard += 1;
            if guard > 10_000_000 {
                return Err("frame loop guard".into());
            }
            let Some(c) = self.ws.get_mut(i) else {
                return Ok(());
            };
            if c.in_payload {
                let take = (d.len() as u64).min(c.remaining) as usize;
                let room = COLLECT.saturating_sub(c.pbuf.len()).min(take);
                c.pbuf.extend_from_slice(&d[..room]);
                c.remaining -= take as u64;
                d = &d[take..];
                if c.remaining == 0 {
                    c.in_payload = false;
                    let p = std::mem::take(&mut c.pbuf);
                    let (op, fin) = (c.opcode, c.fin);
                    self.on_frame(i, op, fin, &p)?;
                    if let Some(c) = self.ws.get_mut(i) {
                        if p.capacity() <= 2 * COLLECT {
                            c.pbuf = p;
                            c.pbuf.clear();
                        }
                    }
                }
                continue;
            }
            if c.hbuf.is_empty() {
                match parse_header(d)? {
                    Some((op, fin, len, hl)) => {
                        if (d.len() - hl) as u64 >= len {
                            let end = hl + len as usize;
                            let p = &d[hl..end];
                            d = &d[end..];
                            self.on_frame(i, op, fin, p)?;
                        } else {
                            c.opcode = op;
                            c.fin = fin;
                            c.remaining = len;
                            c.in_payload = true;
                            d = &d[hl..];
                        }
                    }
                    None => {
                        c.hbuf.extend_from_slice(d);
                        d = &[];
                    }
                }
            } else {
                let old = c.hbuf.len();
                let add = 14usize.saturating_sub(old).min(d.len());
                c.hbuf.extend_from_slice(&d[..add]);
                match parse_header(&c.hbuf)? {
                    Some((op, fin, len, hl)) => {
                        c.hbuf.clear();
                        d = &d[hl - old..];
                        if len == 0 {
                            self.on_frame(i, op, fin, &[])?;
                        } else {
                            c.opcode = op;
                            c.fin = fin;
                            c.remaining = len;
                            c.in_payload = true;
                        }
                    }
                    None => d = &[],
                }
            }
        }
        Ok(())
    }

    fn classify(&self, p: &[u8]) -> Msg {
        match msg_type(p) {
            b"ping" => Msg::Ping,
            b"user_added" => {
                if self.marker.is_empty() {
                    return Msg::UserAdded(None);
                }
                let Some(at) = find(p, &self.marker) else {
                    return Msg::UserAdded(None);
                };
                let digits = &p[at + self.marker.len()..];
                let mut r: u32 = 0;
                let mut nd = 0;
                for &b in digits.iter().take(9) {
                    if !b.is_ascii_digit() {
                        break;
                    }
                    r = r * 10 + (b - b'0') as u32;
                    nd += 1;
                }
                Msg::UserAdded(if nd > 0 { Some(r) } else { None })
            }
            b"initial" => Msg::Initial,
            b"time_update" => Msg::TimeUpdate,
            b"session_expired" => Msg::Expired,
            _ => Msg::Other,
        }
    }

    fn on_frame(&mut self, i: usize, op: u8, fin: bool, p: &[u8]) -> Result<(), String> {
        match op {
            1 | 2 => {
                let m = self.classify(p);
                if fin {
                    self.on_msg(i, m);
                } else if let Some(c) = self.ws.get_mut(i) {
                    c.frag = Some(m);
                }
            }
            0 => {
                if fin {
                    if let Some(m) = self.ws.get_mut(i).and_then(|c| c.frag.take()) {
                        self.on_msg(i, m);
                    }
                }
            }
            8 => {
                let code = if p.len() >= 2 {
                    u16::from_be_bytes([p[0], p[1]])
                } else {
                    1005
                };
                let reason =
                    String::from_utf8_lossy(&p[p.len().min(2)..p.len().min(64)]).into_owned();
                // Echo the close (RFC 6455 §5.5.1), then drop the socket.
                self.send_frame(i, 0x8, &p[..p.len().min(2)]);
                self.remove_ws(
                    i,
                    Some(format!("close {code} {reason}").trim_end().to_string()),
                );
            }
            9 => self.send_frame(i, 0xA, &p[..p.len().min(125)]),
            10 => {}
            _ => return Err(format!("opcode {op}")),
        }
        Ok(())
    }

    fn on_msg(&mut self, i: usize, m: Msg) {
        self.msgs += 1;
        match m {
            Msg::Ping => {
                self.pings += 1;
                self.send_frame(i, 0x1, b"{\"type\":\"pong\"}");
            }
            Msg::UserAdded(Some(r)) => {
                let t = self.batch_t;
                if let Some(round) = self.rounds.get_mut(r as usize) {
                    if let Some(t0) = round.t0 {
                        let us = t.saturating_duration_since(t0).as_micros() as u64;
                        round.got += 1;
                        if self.exact {
                            round.lat_us.push(us.min(u32::MAX as u64) as u32);
                        }
                        self.hist.record(us);
                    }
                }
            }
            Msg::TimeUpdate => self.time_updates += 1,
            Msg::Expired => self.expired += 1,
            _ => {}
        }
        let ready_now = match self.ready_on {
            ReadyOn::Initial => m == Msg::Initial,
            ReadyOn::FirstMessage => m != Msg::Ping,
        };
        if ready_now {
            let t = self.batch_t;
            if let Some(c) = self.ws.get_mut(i) {
                if !c.ready {
                    c.ready = true;
                    self.n_ready += 1;
                    self.ready_us
                        .push(t.saturating_duration_since(c.started).as_micros() as u64);
                }
            }
        }
    }

    /// Masked client frame (RFC 6455 §5.3), written now or queued.
    fn send_frame(&mut self, i: usize, op: u8, payload: &[u8]) {
        let mask = (self.rand() as u32).to_ne_bytes();
        let Some(c) = self.ws.get_mut(i) else { return };
        c.out.push(0x80 | op);
        let n = payload.len();
        if n < 126 {
            c.out.push(0x80 | n as u8);
        } else if n <= 0xffff {
            c.out.push(0x80 | 126);
            c.out.extend_from_slice(&(n as u16).to_be_bytes());
        } else {
            c.out.push(0x80 | 127);
            c.out.extend_from_slice(&(n as u64).to_be_bytes());
        }
        c.out.extend_from_slice(&mask);
        c.out
            .extend(payload.iter().enumerate().map(|(k, b)| b ^ mask[k & 3]));
        if c.st != St::Connecting {
            if let Err(e) = Self::flush(c) {
                self.remove_ws(i, Some(format!("write: {e}")));
            }
        }
    }

    // ---------------------------------------------------------------- HTTP client

    /// Open a keep-alive HTTP connection; returns its handle.
    pub fn http_open(&mut self) -> io::Result<usize> {
        let std = std::net::TcpStream::connect_timeout(&self.server, Duration::from_secs(5))?;
        std.set_nodelay(true)?;
        std.set_nonblocking(true)?;
        let mut sock = TcpStream::from_std(std);
        let h = self.http.len();
        self.poll.registry().register(
            &mut sock,
            Token(HTTP_BASE + h),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        self.http.push(Some(Http {
            sock,
            out: Vec::new(),
            inb: Vec::new(),
            tags: VecDeque::new(),
            done: VecDeque::new(),
            dead: None,
        }));
        Ok(h)
    }

    pub fn http_close(&mut self, h: usize) {
        if let Some(slot) = self.http.get_mut(h) {
            if let Some(mut c) = slot.take() {
                let _ = self.poll.registry().deregister(&mut c.sock);
            }
        }
    }

    /// Queue a request and write what the socket takes now. Returns the instant taken just
    /// before the write.
    pub fn http_send(
        &mut self,
        h: usize,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        json: Option<&[u8]>,
        tag: u64,
    ) -> Instant {
        let host = self.host.clone();
        let Some(Some(c)) = self.http.get_mut(h) else {
            return Instant::now();
        };
        let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
        if let Some(ck) = cookie {
            req.push_str("Cookie: ");
            req.push_str(ck);
            req.push_str("\r\n");
        }
        match json {
            Some(b) => req.push_str(&format!(
                "Content-Type: application/json\r\nContent-Length: {}\r\n\r\n",
                b.len()
            )),
            None => req.push_str(if method == "GET" {
                "\r\n"
            } else {
                "Content-Length: 0\r\n\r\n"
            }),
        }
        c.out.extend_from_slice(req.as_bytes());
        if let Some(b) = json {
            c.out.extend_from_slice(b);
        }
        c.tags.push_back(tag);
        let t0 = Instant::now();
        Self::http_flush(c);
        t0
    }

    fn http_flush(c: &mut Http) {
        let mut off = 0;
        let mut guard = 0;
        while off < c.out.len() && guard < 1024 {
            guard += 1;
            match c.sock.write(&c.out[off..]) {
                Ok(0) => {
                    c.dead = Some("write returned 0".into());
                    break;
                }
                Ok(n) => off += n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    c.dead = Some(format!("write: {e}"));
                    break;
                }
            }
        }
        c.out.drain(..off);
    }

    fn http_event(&mut self, h: usize, r: bool, w: bool) {
        let at = self.batch_t;
        let Some(Some(c)) = self.http.get_mut(h) else {
            return;
        };
        if w && !c.out.is_empty() {
            Self::http_flush(c);
        }
        if !r {
            return;
        }
        let mut buf = [0u8; 16 * 1024];
        for _ in 0..4096 {
            match c.sock.read(&mut buf) {
                Ok(0) => {
                    c.dead = Some("server closed the HTTP connection".into());
                    break;
                }
                Ok(n) => c.inb.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    c.dead = Some(format!("read: {e}"));
                    break;
                }
            }
        }
        // Parse every complete response.
        for _ in 0..100_000 {
            let mut headers = [httparse::EMPTY_HEADER; 32];
            let mut resp = httparse::Response::new(&mut headers);
            let hl = match resp.parse(&c.inb) {
                Ok(httparse::Status::Complete(n)) => n,
                Ok(httparse::Status::Partial) => break,
                Err(e) => {
                    c.dead = Some(format!("bad HTTP response: {e}"));
                    break;
                }
            };
            let status = resp.code.unwrap_or(0);
            let mut cl = 0usize;
            let mut close = false;
            for hd in resp.headers.iter() {
                if hd.name.eq_ignore_ascii_case("content-length") {
                    cl = std::str::from_utf8(hd.value)
                        .ok()
                        .and_then(|s| s.trim().parse().ok())
                        .unwrap_or(0);
                } else if hd.name.eq_ignore_ascii_case("connection")
                    && hd.value.eq_ignore_ascii_case(b"close")
                {
                    close = true;
                }
            }
            if c.inb.len() < hl + cl {
                break;
            }
            let body = c.inb[hl..hl + cl].to_vec();
            c.inb.drain(..hl + cl);
            let tag = c.tags.pop_front().unwrap_or(u64::MAX);
            c.done.push_back(HttpResp {
                tag,
                status,
                body,
                at,
            });
            if close {
                c.dead = Some("server sent Connection: close".into());
            }
        }
    }

    pub fn http_take(&mut self, h: usize) -> Option<HttpResp> {
        self.http.get_mut(h)?.as_mut()?.done.pop_front()
    }

    /// Status of the oldest unread response, if one has arrived.
    pub fn http_peek_status(&self, h: usize) -> Option<u16> {
        match self.http.get(h) {
            Some(Some(c)) => c.done.front().map(|r| r.status),
            _ => None,
        }
    }

    /// Ready WebSocket connections currently open.
    pub fn ready_open(&self) -> usize {
        self.ws.iter().filter(|(_, c)| c.ready).count()
    }

    pub fn http_inflight(&self, h: usize) -> usize {
        match self.http.get(h) {
            Some(Some(c)) => c.tags.len(),
            _ => 0,
        }
    }

    pub fn http_dead(&self, h: usize) -> Option<String> {
        match self.http.get(h) {
            Some(Some(c)) => c.dead.clone(),
            _ => Some("closed".into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn type_and_find() {
        assert_eq!(msg_type(br#"{"type":"ping"}"#), b"ping");
        assert_eq!(
            msg_type(br#"{ "type" : "user_added", "data":{}}"#),
            b"user_added"
        );
        assert_eq!(msg_type(br#"{"data":1}"#), b"");
        assert_eq!(find(b"abcabd", b"abd"), Some(3));
        assert_eq!(find(b"ab", b"abd"), None);
        assert_eq!(find(b"xxbench.k.12@", b"bench.k."), Some(2));
        assert_eq!(b64(b"hello world!!"), "aGVsbG8gd29ybGQhIQ==");
    }

    #[test]
    fn headers() {
        assert_eq!(parse_header(&[0x81, 5]).unwrap(), Some((1, true, 5, 2)));
        assert_eq!(parse_header(&[0x81, 126, 1]).unwrap(), None);
        assert_eq!(
            parse_header(&[0x01, 126, 1, 0]).unwrap(),
            Some((1, false, 256, 4))
        );
        assert!(parse_header(&[0x81, 0x85]).is_err());
    }
}
