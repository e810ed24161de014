//! Admission control: bounded delivery latency past saturation (API.md, Limits: "broadcast
//! backlog … about 250 ms"; issue 14, item 5).
//!
//! Without it, a server fed more writes than it can fan out answers every one of them and lets
//! the broadcast output queue, so delivery latency grows for as long as the overload lasts.
//! With it, a write that would reach the streams later than [`BOUND_MS`] is answered 503 with
//! `Retry-After: 1` (an agent message: an `error` frame) before it reaches storage, so nothing
//! changes, and `catalytic_overload_refusals_total` counts it.
//!
//! ## The model
//! A write reaches a stream, counted from when it reached the server, after (0) the time it has
//! already waited to be read, (1) the loop has worked off the writes accepted before it and not
//! applied yet, then (2) the stream has taken the output already queued to it (one outbox per
//! stream, in order). So the estimate is
//!
//! ```text
//! lag = waited + in_flight × event_cost + Q¾ over reading streams of (backlog_i × behind_i ÷ drained_i)
//! ```
//!
//! * `waited` — how long the request's input has waited unhandled (`Conn::input_since_ms`):
//!   a connection is served one request at a time (its answer follows the broadcast), so a
//!   pipelining client's next requests wait in its buffer or the kernel meanwhile. This is
//!   where the backlog of a saturated server really is — the writes in flight are at most one
//!   per connection — and counting it is what lets the excess be refused (quickly, which
//!   empties the pipeline) rather than queued. It is a lower bound for the oldest input and an
//!   upper bound for the later requests behind it, so it errs towards refusing. An agent's
//!   messages are read at once (its stream never waits for a job), so theirs is about 0.
//! * `in_flight` — broadcasting writes ([`crate::app::Command::is_broadcast_write`]) handed to
//!   storage whose answer has not come back (HTTP requests and agent messages).
//! * `event_cost` — EWMA of the loop's busy time per applied event, over the turns that applied
//!   at least one: the turn's whole busy time (apply, encode once, queue to every member, and
//!   the `writev`s at the turn's end) divided by its events, so what batching saves is counted.
//! * `backlog_i` — bytes the kernel would not take at stream `i`'s last flush (a stream's
//!   send buffer is capped, `open::cap_send_buffer`, so what a slow reader has not taken shows
//!   here instead of hiding in the kernel); `behind_i` —
//!   how long the stream has had output left over without a break; `drained_i` — bytes it took
//!   in that time. Their quotient is the time the stream needs for what is queued at the pace
//!   it has been reading: its own rate, measured while it was behind (a rate measured while
//!   nothing waits says nothing about capacity). A stream behind for a while that took nothing
//!   counts as late by `behind_i`.
//! * Reading streams: a stream whose output has not moved for [`READING_MS`] has stopped
//!   reading; it does not count (it meets the outbox cap and is closed 1013).
//! * `Q¾` — the lag three quarters of the other open streams are within (the ones with nothing
//!   queued count 0; rounded down, so with one stream of two behind it is 0): when the admins
//!   lag together (one source of load, or a server out of CPU) it is their lag, while a few slow
//!   readers, or one that has just stopped reading and is not yet known to have, do not stop
//!   everyone's writes.
//!
//! ## Invariants
//! * An idle server refuses nothing: no input waiting, no write in flight and no stream behind
//!   make `lag` 0.
//! * Refusal happens before storage; sign-in, setup, sign-out, admin accounts, reads and
//!   `/healthz` are never refused (they broadcast nothing).
//! * The fan-out path gains no allocation and no walk: a flush updates a few counters of its
//!   connection and one total here. The streams are walked only when some stream is behind
//!   and a write asks, at most once per [`WALK_MS`].

use crate::conn::Conn;
use slab::Slab;

/// The bound on the estimated lag (API.md: about 250 ms). The estimate follows the streams'
/// own pace, which it learns while they fall behind, so it is slightly late at the start of an
/// overload; refusing a little below the contract's figure keeps the delivered writes within it.
pub(super) const BOUND_MS: f64 = 200.0;
/// A stream with output left over that took nothing for this long has stopped reading. (Until
/// then it counts, which the quantile makes harmless while it is one of a few.)
const READING_MS: u64 = 500;
/// A stream behind for less than this is counted as late by that time: its pace is not known
/// yet (one flush's worth of bytes over a millisecond says nothing).
const MIN_BEHIND_MS: u64 = 20;
/// The walk over the streams is redone at most this often (a cached answer in between).
const WALK_MS: u64 = 10;
/// Weight of a new sample in the per-event cost average.
const EWMA_WEIGHT: f64 = 0.2;

/// The counters the estimate is made from (see the module docs).
#[derive(Debug, Default)]
pub(super) struct Admission {
    /// Broadcasting writes handed to storage, answer not back yet.
    in_flight: usize,
    /// Events applied during the current turn.
    turn_events: u32,
    /// EWMA of the loop's busy time per applied event, in ms.
    event_cost_ms: f64,
    /// Sum of `Conn::backlog` over every connection (stalled streams included).
    backlog_total: usize,
    /// The output part of the estimate at the last walk, and when that was (monotonic ms).
    output_lag_ms: f64,
    walked_ms: Option<u64>,
    /// Monotonic ms at the start of the current turn (flushes are stamped with it).
    turn_ms: u64,
    /// The walk's per-stream lags (kept: one allocation, reused).
    lags: Vec<f32>,
}

impl Admission {
    /// A turn starts at `now_ms`.
    pub(super) fn turn_started(&mut self, now_ms: u64) {
        self.turn_ms = now_ms;
    }

    /// Monotonic ms at the start of the current turn.
    pub(super) fn turn_ms(&self) -> u64 {
        self.turn_ms
    }

    /// A broadcasting write went to storage.
    pub(super) fn submitted(&mut self) {
        self.in_flight += 1;
    }

    /// The storage answer of a broadcasting write came back (its event, if any, is applied).
    pub(super) fn answered(&mut self) {
        self.in_flight = self.in_flight.saturating_sub(1);
    }

    /// An event was applied (and broadcast) during this turn.
    pub(super) fn event_applied(&mut self) {
        self.turn_events += 1;
    }

    /// The turn is over; it kept the loop busy for `busy_ms`.
    pub(super) fn turn_done(&mut self, busy_ms: f64) {
        if self.turn_events == 0 {
            return;
        }
        let sample = busy_ms / f64::from(self.turn_events);
        self.turn_events = 0;
        self.event_cost_ms = if self.event_cost_ms == 0.0 {
            sample
        } else {
            self.event_cost_ms + EWMA_WEIGHT * (sample - self.event_cost_ms)
        };
    }

    /// Connection `conn` (a stream, or one that was) was flushed during this turn: it wrote
    /// `written` bytes and has `conn.out.queued_bytes()` left (counted only while it is a
    /// stream: answers an HTTP client has not read are not broadcast output).
    pub(super) fn flushed(&mut self, conn: &mut Conn, written: usize) {
        let now_ms = self.turn_ms;
        let left = if conn.ws().is_some() {
            conn.out.queued_bytes()
        } else {
            0
        };
        if written > 0 || left == 0 {
            conn.progress_ms = now_ms;
        }
        let before = conn.backlog;
        if before > 0 {
            conn.drained += written;
        }
        if left == 0 || before == 0 {
            // Behind from now (what this flush wrote only filled the kernel's buffer), or not.
            conn.behind_since_ms = now_ms;
            conn.drained = 0;
        }
        self.backlog_total = self.backlog_total - before + left;
        conn.backlog = left;
    }

    /// Connection `conn` is being removed: its backlog no longer counts.
    pub(super) fn removed(&mut self, conn: &Conn) {
        self.backlog_total -= conn.backlog;
    }

    /// Whether a new broadcasting write that has waited `waited_ms` since it reached the
    /// server would reach the reading streams later than the bound.
    pub(super) fn over(&mut self, conns: &Slab<Conn>, now_ms: u64, waited_ms: u64) -> bool {
        waited_ms as f64 + self.lag_ms(conns, now_ms) > BOUND_MS
    }

    /// The estimated lag of a write accepted now, in ms (the module docs' formula).
    pub(super) fn lag_ms(&mut self, conns: &Slab<Conn>, now_ms: u64) -> f64 {
        let queued = self.in_flight as f64 * self.event_cost_ms;
        if self.backlog_total == 0 {
            return queued;
        }
        let fresh = self
            .walked_ms
            .is_some_and(|at| now_ms.saturating_sub(at) < WALK_MS);
        if !fresh {
            self.output_lag_ms = output_lag_ms(conns, now_ms, &mut self.lags);
            self.walked_ms = Some(now_ms);
        }
        queued + self.output_lag_ms
    }
}

/// The lag of each reading stream (ms) into `lags`, and the one three quarters of them are
/// within (see the module docs: robust to a few slow readers, the common lag when most lag).
fn output_lag_ms(conns: &Slab<Conn>, now_ms: u64, lags: &mut Vec<f32>) -> f64 {
    lags.clear();
    for (_, c) in conns.iter() {
        if !c.is_live_stream() {
            continue;
        }
        if c.backlog == 0 {
            lags.push(0.0);
            continue;
        }
        if now_ms.saturating_sub(c.progress_ms) > READING_MS {
            continue; // stopped reading: the outbox cap deals with it
        }
        let behind = now_ms.saturating_sub(c.behind_since_ms);
        let lag = if c.drained == 0 || behind < MIN_BEHIND_MS {
            behind as f64
        } else {
            c.backlog as f64 * behind as f64 / c.drained as f64
        };
        lags.push(lag as f32);
    }
    if lags.is_empty() {
        return 0.0;
    }
    let at = (lags.len() - 1) * 3 / 4;
    let (_, q, _) = lags.select_nth_unstable_by(at, f32::total_cmp);
    f64::from(*q)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idle_is_never_over_and_writes_in_flight_count_at_their_measured_cost() {
        let conns = Slab::new();
        let mut a = Admission::default();
        a.turn_started(1_000);
        assert_eq!(a.lag_ms(&conns, 1_000), 0.0, "idle: nothing waits");
        assert!(!a.over(&conns, 1_000, 0));
        // A turn that applied 4 events in 40 ms: 10 ms each.
        for _ in 0..4 {
            a.event_applied();
        }
        a.turn_done(40.0);
        assert_eq!(a.event_cost_ms, 10.0);
        // Turns without events leave the average alone.
        a.turn_done(500.0);
        assert_eq!(a.event_cost_ms, 10.0);
        for _ in 0..15 {
            a.submitted();
        }
        assert_eq!(a.lag_ms(&conns, 1_000), 150.0);
        assert!(!a.over(&conns, 1_000, 40), "190 ms is within the bound");
        assert!(a.over(&conns, 1_000, 60), "210 ms is not");
        for _ in 0..15 {
            a.answered();
        }
        a.answered(); // never below zero
        assert!(!a.over(&conns, 1_000, 0));
        // The average moves a fifth of the way to a new sample.
        a.event_applied();
        a.turn_done(20.0);
        assert!((a.event_cost_ms - 12.0).abs() < 1e-9);
    }
}
