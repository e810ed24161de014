//! WebSocket clients: non-blocking connects from 127.0.0.x source addresses, the upgrade
//! handshake, server frames (unmasked, possibly split across reads), what each message means
//! for the measurement, and masked client frames back (pong, echoed Close).
//!
//! A client counts as *ready* once the server sent what `ReadyOn` asks for; until then a
//! failure is a connect failure, afterwards a drop (`n_dropped`).

use super::wire::{b64, find, head_str, head_u64, msg_type, parse_header};
use super::{Driver, ReadyOn};
use mio::net::TcpStream;
use mio::{Interest, Token};
use socket2::{Domain, Protocol, SockRef, Socket, Type};
use std::io::{self, Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

/// How much of each server payload is kept for classification (bigger ones are skipped).
const COLLECT: usize = 8 * 1024;

/// Reads per socket per wake-up before yielding to the other sockets.
const MAX_READS_PER_EVENT: usize = 64;

/// Where the event number sits in a contract-v2 frame, and the history it belongs to.
const SEQ_KEY: &[u8] = b"\"seq\":";
const EPOCH_KEY: &[u8] = b"\"epoch\":\"";

/// What a server message means to the measurement. `Option<u64>` is the frame's `seq`
/// (contract v2; absent on the floor and on older servers).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Msg {
    Initial(Option<u64>),
    /// `resumed`: the events numbered after its `seq` follow.
    Resumed(Option<u64>),
    /// The round from this run's marker in the e-mail, and the event's `seq`.
    UserAdded(Option<u32>, Option<u64>),
    /// `user_update` / `user_deleted`.
    Event(Option<u64>),
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

pub(super) struct Ws {
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
    /// The number of the last user-list event this stream reflects (from `initial`,
    /// `resumed` or an event), for `ReadyOn::Seq` and the gap check.
    last_seq: Option<u64>,
    /// The node it was opened to (`Driver::set_server`).
    node: u8,
}

impl Driver {
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
            last_seq: None,
            node: self.node,
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

    /// The lowest and highest event number the open ready streams reflect (`None` when
    /// none carries one).
    pub fn seq_range(&self) -> Option<(u64, u64)> {
        let mut it = self
            .ws
            .iter()
            .filter(|(_, c)| c.ready)
            .filter_map(|(_, c)| c.last_seq);
        let first = it.next()?;
        Some(it.fold((first, first), |(lo, hi), s| (lo.min(s), hi.max(s))))
    }

    /// Ready WebSocket connections currently open.
    /// WebSocket connections open or opening, ready or not.
    pub fn ws_open(&self) -> usize {
        self.ws.len()
    }

    pub fn ready_open(&self) -> usize {
        self.ws.iter().filter(|(_, c)| c.ready).count()
    }

    /// Ready WebSocket connections currently open to `node`.
    pub fn ready_open_on(&self, node: u8) -> usize {
        self.ws
            .iter()
            .filter(|(_, c)| c.ready && c.node == node)
            .count()
    }

    pub(super) fn ws_event(&mut self, i: usize, r: bool, w: bool, err: bool) {
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
        // The read may carry the first frames after the head (an `initial` of thousands of
        // users arrives with the 101), so only an unfinished head counts against the limit.
        c.hbuf.extend_from_slice(d);
        let mut headers = [httparse::EMPTY_HEADER; 32];
        let mut resp = httparse::Response::new(&mut headers);
        let hl = match resp.parse(&c.hbuf) {
            Ok(httparse::Status::Complete(n)) => n,
            Ok(httparse::Status::Partial) if c.hbuf.len() > 16 * 1024 => {
                return Err("handshake response too large".into())
            }
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
                let seq = head_u64(p, SEQ_KEY);
                if self.marker.is_empty() {
                    return Msg::UserAdded(None, seq);
                }
                let Some(at) = find(p, &self.marker) else {
                    return Msg::UserAdded(None, seq);
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
                Msg::UserAdded(if nd > 0 { Some(r) } else { None }, seq)
            }
            b"user_update" | b"user_deleted" => Msg::Event(head_u64(p, SEQ_KEY)),
            b"initial" => Msg::Initial(head_u64(p, SEQ_KEY)),
            b"resumed" => Msg::Resumed(head_u64(p, SEQ_KEY)),
            b"time_update" => Msg::TimeUpdate,
            b"session_expired" => Msg::Expired,
            _ => Msg::Other,
        }
    }

    fn on_frame(&mut self, i: usize, op: u8, fin: bool, p: &[u8]) -> Result<(), String> {
        match op {
            1 | 2 => {
                let m = self.classify(p);
                if let Msg::Initial(_) = m {
                    self.note_epoch(p);
                }
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

    /// Remember the epoch an `initial` names (the history `?epoch=` must repeat to resume).
    fn note_epoch(&mut self, p: &[u8]) {
        if let Some(e) = head_str(p, EPOCH_KEY) {
            if self.epoch.as_deref().map(str::as_bytes) != Some(e) {
                self.epoch = Some(String::from_utf8_lossy(e).into_owned());
            }
        }
    }

    /// Follow the stream's event numbers: `initial` and `resumed` set the position, every
    /// event must be the next number (anything else is a gap or a repeat).
    fn track_seq(&mut self, i: usize, m: Msg) {
        let (seq, start) = match m {
            Msg::Initial(s) => {
                self.opened_initial += 1;
                (s, true)
            }
            Msg::Resumed(s) => {
                self.opened_resumed += 1;
                (s, true)
            }
            Msg::UserAdded(_, s) | Msg::Event(s) => (s, false),
            _ => return,
        };
        let Some(seq) = seq else { return };
        let Some(c) = self.ws.get_mut(i) else { return };
        if !start && c.last_seq.is_some_and(|prev| seq != prev + 1) {
            self.seq_gaps += 1;
        }
        c.last_seq = Some(seq);
        self.max_seq = self.max_seq.max(seq);
    }

    fn on_msg(&mut self, i: usize, m: Msg) {
        self.msgs += 1;
        match m {
            Msg::Ping => {
                self.pings += 1;
                self.send_frame(i, 0x1, b"{\"type\":\"pong\"}");
            }
            Msg::UserAdded(Some(r), _) => {
                let t = self.batch_t;
                let node = self.ws.get(i).map_or(0, |c| c.node);
                if let Some(round) = self.rounds.get_mut(r as usize) {
                    if let Some(t0) = round.t0 {
                        let us = t.saturating_duration_since(t0).as_micros() as u64;
                        round.got += 1;
                        if self.exact {
                            round.lat_us.push(us.min(u32::MAX as u64) as u32);
                            round.nodes.push(node);
                        }
                        self.hist.record(us);
                        self.last_rx = Some(t);
                    }
                }
            }
            Msg::TimeUpdate => self.time_updates += 1,
            Msg::Expired => self.expired += 1,
            _ => {}
        }
        self.track_seq(i, m);
        let ready_now = match self.ready_on {
            ReadyOn::Initial => matches!(m, Msg::Initial(_)),
            ReadyOn::FirstMessage => m != Msg::Ping,
            ReadyOn::Seq(target) => self
                .ws
                .get(i)
                .and_then(|c| c.last_seq)
                .is_some_and(|s| s >= target),
        };
        if ready_now {
            let t = self.batch_t;
            if let Some(c) = self.ws.get_mut(i) {
                if !c.ready {
                    c.ready = true;
                    self.n_ready += 1;
                    self.last_ready = Some(t);
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
}
