//! One client connection: its socket, its phase, its partial input and its bounded outbox.
//!
//! Invariants:
//! * `rbuf` holds only bytes of an incomplete request or frame; an idle connection owns no
//!   input buffer (reads land in the reactor's shared scratch buffer first).
//! * `out` holds what was sent this loop turn (written at its end, one `writev` per connection)
//!   and what the kernel refused; an idle connection owns no output buffer either. Broadcast
//!   frames are `Rc<[u8]>` shared by every recipient: queuing one is a reference-count
//!   increment, never a copy.
//! * A connection with queued output is on the reactor's list to write (`flush_listed`), once.
//! * A connection is never removed from the slab by the code that finds it dead: it is marked
//!   (`dead`) and removed in the reactor's reap phase, so no iteration sees a slot vanish.

use crate::api::Pending;
use crate::auth::Digest32;
use crate::hub::Stream;
use crate::metrics::CloseReason;
use crate::timers::TimerId;
use mio::net::TcpStream;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::net::IpAddr;
use std::rc::Rc;

pub enum Chunk {
    Shared(Rc<[u8]>),
    Owned(Vec<u8>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Shared(b) => b,
            Chunk::Owned(v) => v,
        }
    }
}

/// Output the kernel has not taken yet.
///
/// The front chunk lives inline, and `rest` is looked at only when something is queued behind
/// it (`queued` says so): the common case, one broadcast frame queued to each of many streams
/// and written at the end of the turn, touches no memory beyond the connection's own first
/// lines (see [`Conn`]'s layout). Invariant: `rest` is empty whenever `front` is `None`, and
/// `queued` counts the unwritten bytes of both.
#[derive(Default)]
#[repr(C)]
pub struct Outbox {
    front: Option<Chunk>,
    /// Bytes of the front chunk already written.
    front_written: usize,
    queued: usize,
    /// Bytes of a stream's opening frames (`initial` or a replay) still queued: allowed on top
    /// of the limit, since a large invitee list may exceed the limit by itself and must still
    /// reach a new admin.
    allowance: usize,
    /// Everything queued behind the front chunk, in order.
    rest: VecDeque<Chunk>,
}

impl Outbox {
    pub fn is_empty(&self) -> bool {
        self.front.is_none()
    }

    pub fn queued_bytes(&self) -> usize {
        self.queued
    }

    fn push(&mut self, chunk: Chunk, skip: usize) {
        self.queued += chunk.bytes().len() - skip;
        if self.front.is_none() {
            self.front_written = skip;
            self.front = Some(chunk);
        } else {
            self.rest.push_back(chunk);
        }
    }

    /// Account for `n` bytes the kernel took from the front; `alone` when nothing is queued
    /// behind the front chunk (then `rest` is not touched).
    fn consume(&mut self, mut n: usize, alone: bool) {
        self.queued -= n;
        if alone {
            if self.queued == 0 {
                self.front = None;
                self.front_written = 0;
            } else {
                self.front_written += n;
            }
            return;
        }
        while n > 0 {
            let Some(front) = &self.front else {
                return;
            };
            let left = front.bytes().len() - self.front_written;
            if n < left {
                self.front_written += n;
                return;
            }
            n -= left;
            self.front = self.rest.pop_front();
            self.front_written = 0;
            if self.rest.is_empty() && self.rest.capacity() != 0 {
                // Drained: give the buffer back. Every stream's opening (the 101, then
                // `initial`) queues two chunks, and kept, that small buffer stayed with every
                // idle client (about 120 B each, a sixth of an idle admin stream's memory). A
                // lone broadcast frame never reaches `rest`, so the fan-out path pays nothing;
                // a burst pays one allocation per connection per turn.
                self.rest = VecDeque::new();
            }
        }
    }

    /// Drop everything not yet started, keeping a half-written frame so the stream stays valid.
    fn drop_unstarted(&mut self) {
        self.rest.clear();
        if self.front_written == 0 {
            self.front = None;
        }
        self.queued = self
            .front
            .as_ref()
            .map_or(0, |c| c.bytes().len() - self.front_written);
    }

    /// Write until empty or the kernel pushes back; returns the bytes written. A backlog of many
    /// small frames goes out in one `writev` per batch, not one `write` per frame.
    fn flush(&mut self, sock: &mut impl Write) -> io::Result<usize> {
        // Up to this many buffers per `writev` (Linux takes 1,024).
        const BATCH: usize = 256;
        let mut written = 0;
        while let Some(front) = &self.front {
            let first = &front.bytes()[self.front_written..];
            // The front chunk is all there is (one broadcast frame to each of many clients):
            // a plain `write`, without touching `rest` or filling the 4 KiB slice array below.
            let alone = first.len() == self.queued;
            let result = if alone {
                sock.write(first)
            } else {
                let mut slices = [io::IoSlice::new(&[]); BATCH];
                slices[0] = io::IoSlice::new(first);
                let mut n_slices = 1;
                for chunk in self.rest.iter().take(BATCH - 1) {
                    slices[n_slices] = io::IoSlice::new(chunk.bytes());
                    n_slices += 1;
                }
                sock.write_vectored(&slices[..n_slices])
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    written += n;
                    self.consume(n, alone);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.front.is_none() && self.allowance != 0 {
            self.allowance = 0;
        }
        Ok(written)
    }
}

/// An open WebSocket.
pub struct WsState {
    pub stream: Stream,
    /// Position in the hub's set for this stream (for `Hub::leave`).
    pub hub_slot: usize,
    /// Digest of the credential presented (admin session, invite token, agent key), for the
    /// reconnect metric.
    pub credential: Digest32,
    /// The message layer: fragment assembly, the size cap across fragments, UTF-8, close rules.
    pub reader: crate::ws::MessageReader,
    /// Largest frame `parse_frame` accepts on this stream, in bytes (1009 beyond; also what the
    /// read backlog must leave room for). The reader caps whole messages at the same size.
    pub max_message: usize,
    /// Admin streams: when their admin session ends (wall ms). The reactor watches that end
    /// per session (`Timer::AdminExpiry`), and the stream closes 1008 `Session expired`.
    pub session_expires_at: Option<i64>,
    /// Admin streams: digest of the last presence frame this stream was sent, so a telling
    /// that says what it already knows (it opened just before) is not sent to it again.
    pub presence_told: u64,
}

/// The connection's stage; see docs/LIFECYCLE.md. It changes only through [`Conn::enter`],
/// which refuses any move not listed in [`Phase::may_enter`].
pub enum Phase {
    /// Reading HTTP requests (keep-alive between them).
    Http,
    /// Waiting for a job (password hash, storage) to finish the current request; further input
    /// waits in the kernel.
    AwaitingJob {
        keep_alive: bool,
        pending: Box<Pending>,
    },
    /// An open stream, in the hub.
    Ws(Box<WsState>),
    /// Our close frame is queued; reading only to find the client's close frame.
    WsClosing,
    /// The last bytes are queued: once written, our side is shut down and input is discarded
    /// until the client closes too (a lingering close, so no reset destroys the last answer).
    Draining { shut: bool },
}

impl Phase {
    fn name(&self) -> &'static str {
        match self {
            Phase::Http => "Http",
            Phase::AwaitingJob { .. } => "AwaitingJob",
            Phase::Ws(_) => "Ws",
            Phase::WsClosing => "WsClosing",
            Phase::Draining { .. } => "Draining",
        }
    }

    /// The legal moves: a request waits for its job and comes back; an upgrade opens a stream
    /// (or is refused straight into closing); a stream closes; anything but a stream may end
    /// with a lingering close (a stream first leaves the hub through `WsClosing`).
    pub fn may_enter(&self, next: &Phase) -> bool {
        use Phase::*;
        matches!(
            (self, next),
            (Http, AwaitingJob { .. })
                | (AwaitingJob { .. }, Http)
                | (Http, Ws(_))
                | (Http, WsClosing)
                | (Ws(_), WsClosing)
                | (Http | AwaitingJob { .. } | WsClosing, Draining { .. })
        )
    }
}

/// Field order is layout, not taste: `repr(C)` keeps it, and the 64-byte alignment starts every
/// connection on a cache line of its own. Everything a broadcast touches per recipient (queue
/// the frame, write it, account for the write, the writable event of the ACK) sits in the first
/// two lines; the rest is read when a request or a timer concerns this connection. Profiled at
/// 1,000 admin streams, those per-recipient passes were bound by cache misses on fields spread
/// over five lines of a 288-byte struct.
#[repr(C, align(64))]
pub struct Conn {
    // ---- first line: the delivery walk and the writable event
    pub sock: TcpStream,
    /// Marked for removal in the reap phase, and why.
    pub dead: Option<CloseReason>,
    /// On the reactor's list of connections to write at the end of the turn.
    flush_listed: bool,
    /// Reading paused because answers pile up unread (HTTP pipelining flood).
    pub input_paused: bool,
    /// Changed only by [`Conn::enter`].
    phase: Phase,
    /// A resuming stream waits for its replay from storage: frames sent to it meanwhile are
    /// held here (in order, within the outbox limit) and follow the replay.
    held: Option<Box<Held>>,
    /// Bytes of this stream's output the kernel would not take at its last flush, as counted
    /// in the reactor's admission control (`reactor/admission.rs`); 0 for HTTP connections.
    pub backlog: usize,
    /// Monotonic ms of the last flush that wrote something or found nothing to write: a
    /// stream with output left and no progress for a while has stopped reading.
    pub progress_ms: u64,
    /// Since when (monotonic ms) the stream has had output left over without a break, and how
    /// many bytes it took in that time: its reading pace while behind.
    pub behind_since_ms: u64,
    pub drained: usize,
    // ---- second line: the write (the outbox's `rest` runs on into the third; it is read
    // only when a backlog builds)
    pub out: Outbox,
    // ---- the rest
    pub gen: u32,
    /// At least one request answered (an idle keep-alive connection times out silently).
    pub served: bool,
    /// The request being answered is an `/api/*` one: its answer carries `no-store`.
    pub serving_api: bool,
    pub peer_ip: IpAddr,
    /// The peer, or the client behind a trusted proxy once a request named it.
    pub client_ip: IpAddr,
    pub rbuf: Vec<u8>,
    /// Monotonic ms of the last frame received (heartbeat).
    pub last_seen_ms: u64,
    /// Request, idle, handshake or close deadline, whichever applies to the phase.
    pub deadline: Option<TimerId>,
    /// Bytes read and thrown away since the connection started closing (`WsClosing`,
    /// `Draining`): past a bound the socket is dropped rather than read on (API.md: at most
    /// 64 KiB after the close frame).
    pub discarded: usize,
    /// Since when (monotonic ms) input has waited that the server has not worked off: bytes
    /// kept in `rbuf` behind a request being served, or left in the kernel while it waits for
    /// a job. `None` once every byte is handled. A request served from that input has waited
    /// at least this long (admission control counts it).
    pub input_since_ms: Option<u64>,
}

/// Frames held for a stream whose opening is not out yet.
#[derive(Default)]
struct Held {
    frames: Vec<Rc<[u8]>>,
    bytes: usize,
}

/// What happened to a send.
#[derive(Debug, PartialEq, Eq)]
pub enum Sent {
    Ok,
    /// The outbox would pass its limit: the connection is a slow consumer.
    Overflow,
    /// The socket failed.
    Failed,
}

impl Conn {
    pub fn new(sock: TcpStream, gen: u32, peer_ip: IpAddr, now_ms: u64) -> Conn {
        Conn {
            sock,
            gen,
            peer_ip,
            client_ip: peer_ip,
            phase: Phase::Http,
            rbuf: Vec::new(),
            out: Outbox::default(),
            last_seen_ms: now_ms,
            deadline: None,
            served: false,
            input_paused: false,
            serving_api: false,
            discarded: 0,
            dead: None,
            held: None,
            flush_listed: false,
            backlog: 0,
            progress_ms: now_ms,
            behind_since_ms: now_ms,
            drained: 0,
            input_since_ms: None,
        }
    }

    /// Move to phase `next`, returning the one left. Panics on a move [`Phase::may_enter`] does
    /// not allow: that is a bug in the reactor, never a client's doing, and carrying on in a
    /// state the rest of the code does not expect is worse than stopping.
    pub fn enter(&mut self, next: Phase) -> Phase {
        assert!(
            self.phase.may_enter(&next),
            "illegal connection phase change {} -> {}",
            self.phase.name(),
            next.name()
        );
        std::mem::replace(&mut self.phase, next)
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// In `Draining` with every byte written: shut our side of the socket, once, so the client
    /// reads the end of the answer and then EOF. `Err` when the socket has failed.
    pub fn shut_when_drained(&mut self) -> io::Result<()> {
        if let Phase::Draining { shut } = &mut self.phase {
            if !*shut && self.out.is_empty() {
                *shut = true;
                return self.sock.shutdown(std::net::Shutdown::Write);
            }
        }
        Ok(())
    }

    pub fn ws(&self) -> Option<&WsState> {
        match &self.phase {
            Phase::Ws(ws) => Some(ws),
            _ => None,
        }
    }

    pub fn ws_mut(&mut self) -> Option<&mut WsState> {
        match &mut self.phase {
            Phase::Ws(ws) => Some(ws),
            _ => None,
        }
    }

    /// An open stream that still takes broadcasts (not closing, not dead).
    pub fn is_live_stream(&self) -> bool {
        self.dead.is_none() && matches!(self.phase, Phase::Ws(_))
    }

    /// Queue a frame shared with other recipients (a reference-count increment), unless the
    /// queued bytes would pass `limit` (plus the opening allowance): then `Overflow` and nothing
    /// is queued. Nothing is written here: the reactor writes each connection with queued output
    /// once, at the end of its turn, in one `writev` for everything queued that turn (a burst of
    /// events costs one system call per client, not one per event). The flag is true when the
    /// connection had nothing queued before: the caller puts it on the loop's list to write.
    pub fn send_shared(&mut self, frame: &Rc<[u8]>, limit: usize) -> (Sent, bool) {
        if let Some(held) = &mut self.held {
            if held.bytes + frame.len() > limit {
                return (Sent::Overflow, false);
            }
            held.bytes += frame.len();
            held.frames.push(Rc::clone(frame));
            return (Sent::Ok, false);
        }
        self.queue(Chunk::Shared(Rc::clone(frame)), limit)
    }

    /// Queue bytes of this connection alone (an answer, a handshake, a close frame); see
    /// [`Self::send_shared`].
    pub fn send_owned(&mut self, bytes: Vec<u8>, limit: usize) -> (Sent, bool) {
        self.queue(Chunk::Owned(bytes), limit)
    }

    fn queue(&mut self, chunk: Chunk, limit: usize) -> (Sent, bool) {
        let len = chunk.bytes().len();
        if self.out.queued_bytes() + len > limit.saturating_add(self.out.allowance) {
            return (Sent::Overflow, false);
        }
        let first = !self.flush_listed;
        self.flush_listed = true;
        self.out.push(chunk, 0);
        (Sent::Ok, first)
    }

    /// Queue the first frames of a stream (`initial`, or `resumed` and a replay), which may be
    /// larger than the outbox limit together: what of them is still queued is allowed on top of
    /// the limit until it is written.
    pub fn send_opening(&mut self, frames: &[Rc<[u8]>]) -> (Sent, bool) {
        let mut first = false;
        for f in frames {
            match self.send_shared(f, usize::MAX) {
                (Sent::Ok, f) => first |= f,
                (other, f) => return (other, first | f),
            }
        }
        self.out.allowance = self.out.queued_bytes();
        (Sent::Ok, first)
    }

    /// From now on, hold the frames sent to this stream until [`Self::release_held`].
    pub fn hold(&mut self) {
        self.held = Some(Box::default());
    }

    pub fn is_holding(&self) -> bool {
        self.held.is_some()
    }

    /// Send the stream's opening `first`, then what was held meanwhile (unless `keep_held` is
    /// false: a fresh `initial` already contains it), and stop holding.
    pub fn release_held(&mut self, first: Vec<Rc<[u8]>>, keep_held: bool) -> (Sent, bool) {
        let held = self.held.take().map(|h| *h).unwrap_or_default();
        let mut frames = first;
        if keep_held {
            frames.extend(held.frames);
        }
        self.send_opening(&frames)
    }

    /// The reactor took this connection off its list of connections to write.
    pub fn unlist(&mut self) {
        self.flush_listed = false;
    }

    /// Write queued output; `Err` means the socket is dead.
    pub fn flush(&mut self) -> io::Result<usize> {
        self.out.flush(&mut self.sock)
    }

    /// Replace everything unsent (and anything held) with one last frame (a close), keeping a
    /// half-sent frame whole. True when the connection had nothing queued before: the caller
    /// puts it on the loop's list to write.
    pub fn replace_unsent_with(&mut self, last: Vec<u8>) -> bool {
        self.held = None;
        self.out.drop_unstarted();
        self.out.push(Chunk::Owned(last), 0);
        !std::mem::replace(&mut self.flush_listed, true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A writer that takes at most `room` bytes in total, then says WouldBlock.
    struct Tight {
        room: usize,
        got: Vec<u8>,
    }

    impl Write for Tight {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = b.len().min(self.room);
            self.room -= n;
            self.got.extend_from_slice(&b[..n]);
            Ok(n)
        }
        fn write_vectored(&mut self, bufs: &[io::IoSlice<'_>]) -> io::Result<usize> {
            let mut total = 0;
            for b in bufs {
                match self.write(b) {
                    Ok(n) => total += n,
                    Err(_) if total > 0 => break,
                    Err(e) => return Err(e),
                }
            }
            Ok(total)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_backlog_goes_out_in_batches_across_chunk_boundaries() {
        let mut out = Outbox::default();
        for i in 0..200u8 {
            out.push(Chunk::Owned(vec![i; 3]), 0);
        }
        let mut w = Tight {
            room: 301,
            got: vec![],
        };
        assert_eq!(out.flush(&mut w).unwrap(), 301);
        assert_eq!(out.queued_bytes(), 600 - 301);
        w.room = usize::MAX;
        out.flush(&mut w).unwrap();
        let want: Vec<u8> = (0..200u8).flat_map(|i| [i; 3]).collect();
        assert_eq!(w.got, want);
        assert!(out.is_empty());
    }

    #[test]
    fn outbox_resumes_where_the_kernel_stopped() {
        let shared: Rc<[u8]> = Rc::from(&b"abcdef"[..]);
        let mut out = Outbox::default();
        out.push(Chunk::Shared(shared.clone()), 2);
        out.push(Chunk::Owned(b"xyz".to_vec()), 0);
        assert_eq!(out.queued_bytes(), 7);
        let mut w = Tight {
            room: 3,
            got: vec![],
        };
        assert_eq!(out.flush(&mut w).unwrap(), 3);
        assert_eq!(w.got, b"cde");
        w.room = 100;
        assert_eq!(out.flush(&mut w).unwrap(), 4);
        assert_eq!(w.got, b"cdefxyz");
        assert!(out.is_empty());
        assert_eq!(out.queued_bytes(), 0);
        assert_eq!(
            Rc::strong_count(&shared),
            1,
            "the shared frame was released"
        );
    }

    #[test]
    fn a_lone_frame_written_in_part_keeps_its_place_before_later_ones() {
        let frame: Rc<[u8]> = Rc::from(&b"0123456789"[..]);
        let mut out = Outbox::default();
        out.push(Chunk::Shared(frame.clone()), 0);
        let mut w = Tight {
            room: 4,
            got: vec![],
        };
        assert_eq!(out.flush(&mut w).unwrap(), 4);
        assert_eq!(out.queued_bytes(), 6);
        for i in 0..20u8 {
            out.push(Chunk::Owned(vec![b'a' + i]), 0);
        }
        w.room = 100;
        assert_eq!(out.flush(&mut w).unwrap(), 26);
        assert_eq!(w.got, b"0123456789abcdefghijklmnopqrst");
        assert!(out.is_empty());
        assert_eq!(out.queued_bytes(), 0);
        assert_eq!(Rc::strong_count(&frame), 1, "the shared frame was released");
        assert_eq!(
            out.rest.capacity(),
            0,
            "a burst's queue memory was given back"
        );
    }

    /// An idle stream keeps no queue memory: its opening (the 101 and `initial`, two chunks)
    /// once written leaves `rest` without a buffer, as does a short queue written in parts.
    #[test]
    fn a_drained_outbox_keeps_no_queue_buffer() {
        let mut out = Outbox::default();
        out.push(Chunk::Owned(b"HTTP/1.1 101".to_vec()), 0);
        out.push(Chunk::Owned(b"initial".to_vec()), 0);
        assert!(out.rest.capacity() > 0);
        let mut w = Tight {
            room: 100,
            got: vec![],
        };
        out.flush(&mut w).unwrap();
        assert_eq!(w.got, b"HTTP/1.1 101initial");
        assert_eq!(
            out.rest.capacity(),
            0,
            "the opening's queue buffer was freed"
        );

        for part in [&b"ab"[..], b"cd", b"ef"] {
            out.push(Chunk::Owned(part.to_vec()), 0);
        }
        w.room = 3;
        out.flush(&mut w).unwrap();
        assert!(out.rest.capacity() > 0, "still queued: the buffer stays");
        w.room = 100;
        out.flush(&mut w).unwrap();
        assert_eq!(w.got, b"HTTP/1.1 101initialabcdef");
        assert_eq!(out.rest.capacity(), 0);
    }

    #[test]
    fn what_a_broadcast_touches_sits_on_the_first_two_cache_lines() {
        use std::mem::{align_of, offset_of};
        assert_eq!(align_of::<Conn>(), 64);
        for (field, at) in [
            ("sock", offset_of!(Conn, sock)),
            ("dead", offset_of!(Conn, dead)),
            ("flush_listed", offset_of!(Conn, flush_listed)),
            ("input_paused", offset_of!(Conn, input_paused)),
            ("phase", offset_of!(Conn, phase)),
            ("held", offset_of!(Conn, held)),
            ("backlog", offset_of!(Conn, backlog)),
            ("progress_ms", offset_of!(Conn, progress_ms)),
            ("behind_since_ms", offset_of!(Conn, behind_since_ms)),
            ("drained", offset_of!(Conn, drained)),
        ] {
            assert!(at < 64, "{field} at byte {at}: off the first line");
        }
        let out = offset_of!(Conn, out);
        assert_eq!(out, 64, "the outbox starts the second line");
        assert!(
            out + offset_of!(Outbox, rest) <= 128,
            "the outbox's front, counts and allowance fit the second line"
        );
    }

    #[test]
    fn dropping_unsent_keeps_a_half_written_frame() {
        let mut out = Outbox::default();
        out.push(Chunk::Owned(b"abcd".to_vec()), 1);
        out.push(Chunk::Owned(b"efgh".to_vec()), 0);
        out.drop_unstarted();
        assert_eq!(out.queued_bytes(), 3);
        out.push(Chunk::Owned(b"Z".to_vec()), 0);
        let mut w = Tight {
            room: 100,
            got: vec![],
        };
        out.flush(&mut w).unwrap();
        assert_eq!(w.got, b"bcdZ");

        let mut out = Outbox::default();
        out.push(Chunk::Owned(b"abcd".to_vec()), 0);
        out.drop_unstarted();
        assert!(out.is_empty());
        assert_eq!(out.queued_bytes(), 0);
    }
}
