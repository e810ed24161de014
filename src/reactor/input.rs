//! Bytes in and out of a connection: reading under budgets, cutting the input into requests or
//! frames by phase, flushing the outbox, and the lingering close.
//!
//! Budgets, so one client cannot hold the loop: at most `READS_PER_EVENT` reads per readiness
//! event and `MESSAGES_PER_TURN` requests or frames per turn; whatever is left is served next
//! turn through `resume`. Input is parsed straight from the loop's scratch buffer; only an
//! incomplete tail is copied into the connection (`rbuf`), and at most `INPUT_BACKLOG_BYTES`
//! of it (plus room for one whole frame) before reading pauses.
//!
//! What the input means depends on the phase (`consume`): HTTP requests in `Http`; nothing in
//! `AwaitingJob` (the bytes wait, so answers leave in request order); frames in `Ws`; only the
//! client's close frame in `WsClosing`; nothing at all in `Draining` (counted and thrown away).
//!
//! Output: `on_writable` is the only place that writes a socket, besides two last-gasp writes
//! (the reap phase's close frame, and `discard`'s flush before it drops a flooding client). It
//! runs for a writable event, and once per turn for every connection on the write list
//! (`Server::write_listed`); everything else only queues.
//!
//! The lingering close (`linger_close`): closing a socket with unread input makes the kernel
//! send a reset, which can destroy the answer still in flight on the client's side. So the
//! last bytes are queued, our side is shut down once they are written, and the input is read
//! and discarded until the client's FIN or 2 s (the same reason Apache and nginx linger).

use super::*;
use crate::http::{self, Parsed, Response};
use crate::ws::FrameParse;
use std::io::Read;

/// Reads per readiness event before the connection yields to the others (16 × 64 KiB: a
/// megabyte per turn at most, then the next connection's turn).
const READS_PER_EVENT: usize = 16;
/// Size of the loop-wide read buffer: one whole request head and body (16 + 64 KiB at most)
/// usually arrives in one or two reads.
pub(super) const SCRATCH_BYTES: usize = 64 * 1024;
/// Requests or frames handled per connection per turn; the rest waits for the next turn, so a
/// pipelining client cannot keep everyone else waiting.
const MESSAGES_PER_TURN: usize = 64;
/// Unparsed input kept per connection before reading from it stops until it is worked off
/// (at least one whole request or frame always fits).
const INPUT_BACKLOG_BYTES: usize = 128 * 1024;
/// Unread HTTP answers above this pause reading from that client (pipelining flood).
pub(super) const HTTP_BACKLOG_BYTES: usize = 256 * 1024;
/// Bytes read and thrown away from a connection that is closing (our close frame or last
/// answer is out) before the socket is dropped: a client that broke a limit and keeps
/// sending — a 64 MiB message in 64 KiB fragments — is not read to the end (API.md).
const DISCARD_MAX_BYTES: usize = 64 * 1024;

impl Server {
    /// Read what the kernel has for connection `key`, within its budget. Called for readable
    /// events and from `resume`; a spurious call (nothing to read) costs one `WouldBlock`.
    pub(super) fn on_readable(&mut self, key: usize) {
        let now = self.admission.turn_ms();
        for _ in 0..READS_PER_EVENT {
            let Some(conn) = self.conns.get_mut(key) else {
                return;
            };
            if conn.dead.is_some()
                || conn.input_paused
                || matches!(conn.phase(), Phase::AwaitingJob { .. })
            {
                // The bytes wait in the kernel; `resume` comes back for them.
                conn.input_since_ms.get_or_insert(now);
                return;
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
                // EOF: the client sent FIN (it may still read: a half-close).
                Ok(0) => return self.on_eof(key),
                Ok(n) => self.on_bytes(key, n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    if conn.rbuf.is_empty() {
                        conn.input_since_ms = None; // every byte is handled
                    }
                    return;
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return self.mark_dead(key, CloseReason::Client),
            }
        }
        // Budget spent with the socket possibly still readable: edge-triggered epoll will not
        // say so again, so come back next turn.
        self.resume.push(key);
    }

    fn on_eof(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        match conn.phase() {
            // The client half-closed after its request: still answer it, then close.
            Phase::AwaitingJob { .. } => conn.input_paused = true,
            Phase::Http if !conn.out.is_empty() => self.linger_close(key),
            _ => self.mark_dead(key, CloseReason::Client),
        }
    }

    /// `n` fresh bytes are in `scratch`: parse straight from there when nothing was pending,
    /// and keep only an incomplete tail on the connection. (The scratch buffer is taken out of
    /// `self` meanwhile, so the handlers can borrow the server mutably; it is put back after.)
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
        let now = self.admission.turn_ms();
        if let Some(c) = self.conns.get_mut(key) {
            if c.dead.is_none() && !tail.is_empty() {
                c.rbuf = tail;
                c.input_since_ms.get_or_insert(now);
            }
        }
    }

    /// Parse what the connection kept while it could not (waiting for a job, or paused).
    pub(super) fn process_buffered(&mut self, key: usize) {
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
    /// Returning `buf.len()` means "the rest is worthless": the connection died or is closing.
    /// `buf` is mutable because frames are unmasked in place (RFC 6455 §5.3), without a copy.
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
            match conn.phase() {
                Phase::Http => {
                    // Answers pile up unread: no new request until they drain.
                    if conn.input_paused {
                        return pos;
                    }
                    match http::parse_request(&buf[pos..]) {
                        Parsed::Partial => return pos,
                        Parsed::Complete(req, used) => {
                            pos += used;
                            self.on_request(key, *req);
                        }
                        // A malformed request leaves the stream's framing unknown: answer and
                        // close; nothing after it can be trusted to be a request.
                        Parsed::Error(e) => {
                            self.respond(key, Response::from(e).not_to_be_stored(), false);
                            return buf.len();
                        }
                    }
                }
                Phase::AwaitingJob { .. } => return pos,
                Phase::Ws(state) => match ws::parse_frame(&mut buf[pos..], state.reader.room()) {
                    FrameParse::Partial => return pos,
                    FrameParse::Frame(f, used) => {
                        pos += used;
                        self.on_frame(key, f.fin, f.opcode, f.payload);
                    }
                    FrameParse::Invalid(v) => {
                        self.fail_stream(key, v.code, v.reason);
                        return buf.len();
                    }
                },
                // Only the client's close frame matters now; anything else is skipped.
                Phase::WsClosing => {
                    match ws::parse_frame(&mut buf[pos..], streams::STREAM_MESSAGE_MAX) {
                        FrameParse::Partial => return pos,
                        FrameParse::Frame(f, used) => {
                            pos += used;
                            if f.opcode == ws::OP_CLOSE {
                                self.linger_close(key);
                                return buf.len();
                            }
                            if self.discard(key, used) {
                                return buf.len();
                            }
                        }
                        FrameParse::Invalid(_) => {
                            self.linger_close(key);
                            return buf.len();
                        }
                    }
                }
                Phase::Draining { .. } => {
                    self.discard(key, buf.len() - pos);
                    return buf.len();
                }
            }
        }
        pos
    }

    /// Count `n` bytes thrown away from a closing connection; past [`DISCARD_MAX_BYTES`] it is
    /// dropped (`true`): its further writes fail instead of being read for nothing.
    fn discard(&mut self, key: usize, n: usize) -> bool {
        let Some(conn) = self.conns.get_mut(key) else {
            return true;
        };
        conn.discarded += n;
        if conn.discarded > DISCARD_MAX_BYTES {
            // Our last answer may still wait for this turn's writes (one write per client per
            // turn): put it on the wire first, best effort, so the client reads why.
            let _ = conn.flush();
            log::debug!(
                "conn {key}: {} bytes after closing; dropped",
                conn.discarded
            );
            self.mark_dead(key, CloseReason::Client);
            return true;
        }
        false
    }

    /// Last bytes are queued: shut our side once written, wait for the client's FIN (≤ 2 s).
    /// → `Draining`; idempotent. Any partial input is dropped: nothing more will be parsed.
    pub(super) fn linger_close(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if matches!(conn.phase(), Phase::Draining { .. }) {
            return;
        }
        conn.enter(Phase::Draining { shut: false });
        conn.rbuf = Vec::new();
        self.rearm_deadline(key, CLOSE_WAIT_MS);
        self.shut_when_drained(key);
    }

    fn shut_when_drained(&mut self, key: usize) {
        if let Some(conn) = self.conns.get_mut(key) {
            if conn.shut_when_drained().is_err() {
                self.mark_dead(key, CloseReason::Client);
            }
        }
    }

    /// Replace the connection's deadline with one `after_ms` from now. A connection has at most
    /// one deadline; the old one is cancelled, so it can never fire for the new purpose.
    pub(super) fn rearm_deadline(&mut self, key: usize, after_ms: u64) {
        let at = self.now_ms() + after_ms;
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let Some(t) = conn.deadline.take() {
            self.timers.cancel(t);
        }
        let gen = conn.gen;
        conn.deadline = Some(self.timers.insert(at, Timer::Conn { key, gen }));
    }

    /// The kernel has room: write the outbox; a drained HTTP backlog lets reading resume.
    pub(super) fn on_writable(&mut self, key: usize) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.out.is_empty() || conn.dead.is_some() {
            return;
        }
        match conn.flush() {
            Ok(n) => {
                // Counted for streams only: HTTP answers are counted by status instead.
                if conn.ws().is_some() {
                    self.metrics.ws_bytes_sent += n as u64;
                }
                if conn.ws().is_some() || conn.backlog > 0 {
                    self.admission.flushed(conn, n);
                }
                if conn.input_paused
                    && conn.out.queued_bytes() <= HTTP_BACKLOG_BYTES / 2
                    && matches!(conn.phase(), Phase::Http)
                {
                    // Half drained: read again (hysteresis, so a client at the edge does not
                    // flip between paused and reading on every write).
                    conn.input_paused = false;
                    self.resume.push(key);
                }
                self.shut_when_drained(key);
            }
            Err(_) => self.mark_dead(key, CloseReason::WriteError),
        }
    }
}
