//! A clock-free timer set: an ordered map from `(deadline_ms, seq)` to payload.
//!
//! Every deadline of the server waits in one of two sets: the reactor's (connection deadlines for
//! a request, handshake, close or drain; heartbeat slices; housekeeping; the retry of a paused
//! `accept`; the shutdown deadline) and the session clock's (session expiries and `time_update`
//! ticks). A set never reads a clock: every time-dependent call takes `now_ms` from the caller,
//! so it is deterministic and tested with made-up times.
//!
//! # Why a `BTreeMap`, not a timer wheel
//!
//! The load is at most a few thousand live timers (one per connection waiting on a deadline, two
//! per watched session, a handful of global ones), with deadlines of about 10 s, 30 s and 30 min,
//! and most of them are cancelled before they fire (a request completes, a stream closes). At
//! that size a B-tree is a few levels deep and every operation costs well under a microsecond
//! (`docs/BENCHMARKS.md`, "Timers"): a request re-arms one deadline (a cancel and an insert) and
//! then spends ~12 µs in each loopback `send` of its answer. A hierarchical timer wheel (the Linux kernel's, tokio's)
//! makes insert and cancel O(1), and was measured several times faster at both here; that pays at
//! hundreds of thousands of timers re-armed every second, not at this load, and it costs a tick,
//! cascades and per-slot caches that all have to stay consistent. The map has one invariant and
//! ordering for free. mini-redis's `db.rs` makes the same choice for its key expirations (a
//! B-tree ordered by `(when, unique id)`); Redis's `ae.c` keeps its few time events in a plain
//! unsorted list.
//!
//! # Invariants
//!
//! * Every pending timer is exactly one entry of `by_deadline`, keyed `(deadline_ms, seq)`.
//! * `seq` comes from `next_seq`, which only grows, so keys are unique: two timers with the same
//!   deadline are ordered by insertion, and a [`TimerId`] (which *is* the key) names at most one
//!   timer ever. Cancelling an id that fired or was cancelled finds nothing and changes nothing;
//!   it can never hit a later timer, because no later timer gets that `seq`. (`seq` would need
//!   2^64 inserts to wrap: centuries at a billion inserts a second.)
//! * [`Timers::advance`] removes and yields exactly the entries with `deadline_ms <= now_ms`, in
//!   key order: deadline order, ties in insertion order. A timer never fires early; it fires at
//!   the first `advance` whose `now_ms` reaches its deadline. There is no tick: deadlines are
//!   exact milliseconds, so nothing is rounded up or down.
//! * `now_ms` may go backwards (it is the caller's business); that only means fewer timers are
//!   due. A deadline already in the past fires on the next `advance`.
//! * The set holds no clock, no cursor and no cache, so there is nothing to keep consistent
//!   besides the map itself.
//!
//! A set is bounded by its users: the reactor holds at most one deadline per connection (capped
//! by `--max-connections`) plus a fixed number of global timers, and the session clock at most
//! one expiry and one tick per running session.
//!
//! # Complexity (n = pending timers)
//!
//! | operation | cost |
//! |---|---|
//! | [`insert`](Timers::insert), [`cancel`](Timers::cancel) | O(log n) |
//! | [`advance`](Timers::advance) | O(log n) to find nothing due; O(log n) per timer fired |
//! | [`next_deadline`](Timers::next_deadline) | O(log n) (walks the left edge of the tree) |
//! | [`len`](Timers::len), [`is_empty`](Timers::is_empty) | O(1) |

use std::collections::BTreeMap;

/// Handle of a pending timer, returned by [`Timers::insert`]; pass it to [`Timers::cancel`].
///
/// It is the timer's key in the set, `(deadline_ms, seq)`: 16 bytes, `Copy`, and unique for the
/// life of the set that issued it (see the module invariants), so a stale id is harmless. Ids are
/// only meaningful for the set that issued them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimerId {
    deadline_ms: u64,
    seq: u64,
}

impl TimerId {
    /// The key this id names in [`Timers::by_deadline`].
    fn key(self) -> (u64, u64) {
        (self.deadline_ms, self.seq)
    }
}

/// Pending timers carrying payloads of type `T`, fired in deadline order.
///
/// Time is the caller's milliseconds (the reactor passes milliseconds since it started).
pub struct Timers<T> {
    /// Every pending timer, keyed by `(deadline_ms, seq)`: the first entry is the next to fire.
    by_deadline: BTreeMap<(u64, u64), T>,
    /// The `seq` of the next insert; never reused, so keys and ids are unique.
    next_seq: u64,
}

impl<T> Timers<T> {
    /// An empty set.
    pub fn new() -> Self {
        Timers {
            by_deadline: BTreeMap::new(),
            next_seq: 0,
        }
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.by_deadline.len()
    }

    /// `true` if no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.by_deadline.is_empty()
    }

    /// Schedules `payload` to fire at `deadline_ms` and returns its id. O(log n).
    ///
    /// A deadline at or before the caller's "now" fires on the next [`advance`](Self::advance).
    pub fn insert(&mut self, deadline_ms: u64, payload: T) -> TimerId {
        let id = TimerId {
            deadline_ms,
            seq: self.next_seq,
        };
        // Unreachable wrap (see the module invariants); wrapping keeps release and debug alike.
        self.next_seq = self.next_seq.wrapping_add(1);
        self.by_deadline.insert(id.key(), payload);
        id
    }

    /// Cancels a pending timer and returns its payload. O(log n).
    ///
    /// Returns `None`, and changes nothing, if `id` already fired or was already cancelled.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        self.by_deadline.remove(&id.key())
    }

    /// Removes every pending timer with `deadline_ms <= now_ms` and appends its payload to
    /// `fired`, in deadline order, ties in insertion order. Timers due later stay.
    ///
    /// O(log n) when nothing is due (the common reactor turn), plus O(log n) per timer fired.
    /// `fired` is the caller's so a reused `Vec` makes a turn allocation-free.
    pub fn advance(&mut self, now_ms: u64, fired: &mut Vec<T>) {
        // Pop from the front rather than `split_off`: a turn usually fires nothing or a few
        // timers, and `split_off` would walk whichever half is smaller to recount lengths.
        while let Some(entry) = self.by_deadline.first_entry() {
            if entry.key().0 > now_ms {
                break;
            }
            fired.push(entry.remove());
        }
    }

    /// The earliest pending deadline in ms, or `None` if nothing is pending. O(log n).
    ///
    /// The reactor sleeps in `poll` until then; a deadline in the past means "do not sleep".
    pub fn next_deadline(&self) -> Option<u64> {
        self.by_deadline.first_key_value().map(|(key, _)| key.0)
    }
}

impl<T> Default for Timers<T> {
    fn default() -> Self {
        Self::new()
    }
}

/// Summary only, so `T` need not be `Debug` and a large set does not flood a log line.
impl<T> std::fmt::Debug for Timers<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Timers")
            .field("len", &self.len())
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64: a fixed-seed PRNG, so a failure reproduces exactly (no `rand` dependency).
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n.max(1)
        }
    }

    fn adv<T>(t: &mut Timers<T>, now: u64) -> Vec<T> {
        let mut out = Vec::new();
        t.advance(now, &mut out);
        out
    }

    #[test]
    fn insert_and_fire() {
        let mut t = Timers::new();
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
        assert!(adv(&mut t, u64::MAX).is_empty());
        t.insert(1100, "a");
        assert_eq!(t.len(), 1);
        assert_eq!(t.next_deadline(), Some(1100));
        assert!(adv(&mut t, 1099).is_empty());
        assert_eq!(adv(&mut t, 1100), vec!["a"]);
        assert!(t.is_empty());
        assert_eq!(t.next_deadline(), None);
        assert!(adv(&mut t, 5000).is_empty());
    }

    /// Stepping time 1 ms at a time, every timer fires exactly at its deadline; with coarse,
    /// irregular steps it fires at the first step that reaches it — late, never early.
    #[test]
    fn fires_late_never_early() {
        let deadlines = [15u64, 1, 99, 101, 1234, 6401, 10_000, 30_000, 1_800_000];
        let mut t = Timers::new();
        for d in deadlines {
            t.insert(d, d);
        }
        for now in 0..=1_800_000u64 {
            for d in adv(&mut t, now) {
                assert_eq!(d, now, "deadline {d} fired at {now}");
            }
        }
        assert!(t.is_empty());

        for step in [7u64, 333, 10_000, 65_536] {
            let mut t = Timers::new();
            for d in deadlines {
                t.insert(d, d);
            }
            let mut now = 0;
            let mut fired = Vec::new();
            while !t.is_empty() {
                let before = fired.len();
                now += step;
                t.advance(now, &mut fired);
                for &d in &fired[before..] {
                    assert!(d <= now, "early: deadline {d} at {now}");
                    assert!(d > now - step, "late by more than one step: {d} at {now}");
                }
                assert!(t.next_deadline().is_none_or(|d| d > now));
            }
            let mut sorted = deadlines;
            sorted.sort_unstable();
            assert_eq!(fired, sorted, "step {step}");
        }
    }

    #[test]
    fn overdue_fires_on_next_advance_and_time_may_go_back() {
        let mut t = Timers::new();
        t.insert(10, 1);
        t.insert(5000, 2);
        t.insert(4995, 3);
        t.insert(10_005, 4);
        assert_eq!(t.next_deadline(), Some(10));
        assert_eq!(adv(&mut t, 5000), vec![1, 3, 2]);
        t.insert(0, 5);
        // An older `now` fires only what is due at that older instant.
        assert_eq!(adv(&mut t, 4000), vec![5]);
        assert!(adv(&mut t, 10_004).is_empty());
        assert_eq!(adv(&mut t, 10_005), vec![4]);
    }

    #[test]
    fn ties_fire_in_insertion_order() {
        let mut t = Timers::new();
        t.insert(500, 5);
        t.insert(123, 1);
        t.insert(300, 3);
        t.insert(123, 2);
        t.insert(99_999, 9);
        t.insert(300, 4);
        t.insert(7, 0);
        assert_eq!(adv(&mut t, 100_000), vec![0, 1, 2, 3, 4, 5, 9]);
        // A tie inserted after time moved on still fires after the earlier one.
        let mut t = Timers::new();
        t.insert(1_000_000, 'a');
        assert!(adv(&mut t, 500_000).is_empty());
        t.insert(1_000_000, 'b');
        t.insert(999_999, 'z');
        assert_eq!(adv(&mut t, 2_000_000), vec!['z', 'a', 'b']);
    }

    #[test]
    fn stale_cancel_is_a_no_op() {
        let mut t = Timers::new();
        let a = t.insert(100, 'a');
        let b = t.insert(200, 'b');
        assert_eq!(t.cancel(a), Some('a'));
        assert_eq!(t.cancel(a), None, "double cancel");
        assert_eq!(t.len(), 1);
        assert_eq!(adv(&mut t, 1000), vec!['b']);
        assert_eq!(t.cancel(b), None, "cancel after fire");
        // A new timer at the very same deadline is a different timer to the old ids.
        let c = t.insert(100, 'c');
        let d = t.insert(200, 'd');
        assert_ne!(c, a);
        assert_ne!(d, b);
        assert_eq!(t.cancel(a), None);
        assert_eq!(t.cancel(b), None);
        assert_eq!(t.len(), 2);
        assert_eq!(t.cancel(d), Some('d'));
        assert_eq!(t.cancel(c), Some('c'));
        assert!(t.is_empty());
    }

    #[test]
    fn next_deadline_tracks_cancel_and_fire() {
        let mut t = Timers::new();
        let ids: Vec<_> = [50_000u64, 45_000, 47_000, 45_000, 60_000]
            .iter()
            .map(|&d| t.insert(d, d))
            .collect();
        assert_eq!(t.next_deadline(), Some(45_000));
        t.cancel(ids[1]);
        assert_eq!(
            t.next_deadline(),
            Some(45_000),
            "the other 45 s timer remains"
        );
        t.cancel(ids[3]);
        assert_eq!(t.next_deadline(), Some(47_000));
        t.cancel(ids[2]);
        assert_eq!(t.next_deadline(), Some(50_000));
        assert_eq!(adv(&mut t, 55_000), vec![50_000]);
        assert_eq!(t.next_deadline(), Some(60_000));
        t.cancel(ids[4]);
        assert_eq!(t.next_deadline(), None);
    }

    #[test]
    fn extreme_deadlines() {
        let mut t = Timers::new();
        let ids: Vec<_> = [u64::MAX, 0, u64::MAX - 1, 1, u64::MAX / 3]
            .iter()
            .map(|&d| t.insert(d, d))
            .collect();
        assert_eq!(t.next_deadline(), Some(0));
        assert_eq!(t.cancel(ids[2]), Some(u64::MAX - 1));
        assert_eq!(adv(&mut t, u64::MAX - 1), vec![0, 1, u64::MAX / 3]);
        assert_eq!(t.next_deadline(), Some(u64::MAX));
        assert_eq!(adv(&mut t, u64::MAX), vec![u64::MAX]);
        assert!(t.is_empty());
    }

    /// ~100k random operations checked against the obvious model: an unsorted `Vec` of
    /// `(deadline, seq, id, payload)`, searched linearly, and sorted when timers fire. Phases of
    /// 5,000 operations alternate between growing the set (to a few thousand timers, a tree
    /// several levels deep) and draining it (down to empty), so both ends are exercised.
    #[test]
    fn randomized_against_vec_model() {
        for seed in [0x9E37_79B9_7F4A_7C15u64, 12_345, 777] {
            let mut rng = XorShift(seed);
            let mut now = rng.below(1 << 40);
            let mut t = Timers::new();
            let mut model: Vec<(u64, u64, TimerId, u64)> = Vec::new();
            // Ids that fired or were cancelled: cancelling them again must be a no-op.
            let mut dead: Vec<TimerId> = Vec::new();
            let mut seq = 0u64;
            for op in 0..34_000 {
                let growing = (op / 5_000) % 2 == 0;
                let (insert_below, cancel_below) = if growing { (60, 72) } else { (20, 60) };
                let roll = rng.below(100);
                if roll < insert_below {
                    // The reactor's deadlines (10 s, 30 s, 30 min), exact ties, the past,
                    // and the far future.
                    let d = match rng.below(10) {
                        0 => now,
                        1..=3 => now + 10_000,
                        4 => now + 30_000,
                        5..=6 => now + 1_800_000,
                        7 => now.saturating_sub(rng.below(5_000)),
                        8 => now + rng.below(100_000),
                        _ => now + rng.below(1 << 36),
                    };
                    let id = t.insert(d, seq);
                    model.push((d, seq, id, seq));
                    seq += 1;
                } else if roll < cancel_below {
                    if rng.below(10) == 0 && !dead.is_empty() {
                        let id = dead[rng.below(dead.len() as u64) as usize];
                        assert_eq!(t.cancel(id), None, "stale cancel of {id:?}");
                    } else if !model.is_empty() {
                        let i = rng.below(model.len() as u64) as usize;
                        let (_, _, id, payload) = model.swap_remove(i);
                        assert_eq!(t.cancel(id), Some(payload));
                        dead.push(id);
                    }
                } else {
                    now += match (growing, rng.below(10)) {
                        (_, 0) => 0,
                        (true, _) => rng.below(20),
                        (false, 1..=8) => rng.below(100_000),
                        (false, _) => rng.below(1 << 34),
                    };
                    let got = adv(&mut t, now);
                    let mut due: Vec<_> = model.iter().filter(|e| e.0 <= now).copied().collect();
                    model.retain(|e| e.0 > now);
                    due.sort_unstable_by_key(|e| (e.0, e.1));
                    dead.extend(due.iter().map(|e| e.2));
                    let want: Vec<u64> = due.iter().map(|e| e.3).collect();
                    assert_eq!(got, want, "advance to {now}");
                }
                assert_eq!(t.len(), model.len());
                assert_eq!(t.next_deadline(), model.iter().map(|e| e.0).min());
            }
            model.sort_unstable_by_key(|e| (e.0, e.1));
            let want: Vec<u64> = model.iter().map(|e| e.3).collect();
            assert_eq!(adv(&mut t, u64::MAX), want);
            assert!(t.is_empty());
        }
    }
}
