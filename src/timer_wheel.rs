//! A pure, clock-free hierarchical timer wheel.
//!
//! The reactor uses it for session expiry, per-session `time_update` ticks,
//! handshake/request deadlines and shutdown deadlines. It never reads a clock:
//! every time-dependent call takes `now_ms` from the caller, so it is fully
//! deterministic and testable.
//!
//! # Design
//!
//! * **Hierarchical wheel** of [`LEVELS`] levels × 64 slots (the layout of the
//!   Linux kernel's and tokio's timer wheels). A slot at level `L` covers
//!   `64^L` ticks, and 11 levels cover the whole `u64` tick range, so a
//!   deadline of `u64::MAX` is an ordinary timer. A timer is placed at the
//!   level of the highest 6-bit digit in which its tick differs from the
//!   wheel's current tick, and is *cascaded* to a lower level when time
//!   reaches its slot; each timer cascades at most `LEVELS - 1` times.
//! * **Occupancy bitmaps** (one `u64` per level plus one word of non-empty
//!   levels) find the earliest occupied slot in O(1), so [`TimerWheel::advance`]
//!   jumps straight from one occupied slot to the next: an idle gap of an hour
//!   (or of `2^63` ms) costs nothing per elapsed tick.
//! * **Storage**: entries live in a slab-like `Vec` with an intrusive free list;
//!   each slot is an intrusive doubly-linked list, so [`TimerWheel::cancel`]
//!   unlinks in O(1) and frees the entry at once (the payload is dropped or
//!   returned immediately, no tombstones).
//! * **Exact firing**: the wheel buckets by tick (`ceil(deadline / tick)`), but
//!   each entry keeps its exact deadline in ms. `advance(now)` fires exactly the
//!   timers whose deadline is `<= now`: buckets that are wholly in the past fire
//!   entirely, and the one bucket straddling `now` is filtered by exact
//!   deadline. A timer therefore never fires early, and never later than the
//!   first `advance` at or after its deadline.
//! * **Next expiry**: [`TimerWheel::next_deadline`] returns the exact earliest
//!   deadline. It finds the earliest slot via the bitmaps and takes that slot's
//!   minimum, which is O(1) when the slot's list is sorted (the common case:
//!   timers of one kind are inserted with non-decreasing deadlines) and
//!   otherwise comes from a per-slot cache that is only recomputed (one scan of
//!   that slot) after the cached minimum itself was cancelled.

use std::cell::Cell;

/// Number of bits of the tick consumed by one level.
const SLOT_BITS: u32 = 6;
/// Slots per level.
const SLOTS: usize = 1 << SLOT_BITS;
/// Mask of a slot index within a level.
const SLOT_MASK: u64 = (SLOTS as u64) - 1;
/// Number of levels: `ceil(64 / 6)`, enough to cover every `u64` tick.
pub const LEVELS: usize = 11;
/// Null link in the intrusive lists.
const NIL: u32 = u32::MAX;

/// Handle of a pending timer, returned by [`TimerWheel::insert`].
///
/// It holds the entry's slab index plus the timer's unique insertion sequence
/// number, which acts as a generation: once the timer fired or was cancelled
/// and its slab entry is reused by another timer, the old id no longer matches
/// and [`TimerWheel::cancel`] returns `None` for it. Sequence numbers are
/// 64-bit and never reused within one wheel. Ids are only meaningful for the
/// wheel that issued them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerId {
    index: u32,
    seq: u64,
}

/// One slab entry: a pending timer (`payload` is `Some`) or a free cell
/// (`payload` is `None`, `next` links the free list).
struct Entry<T> {
    payload: Option<T>,
    /// Exact deadline in ms.
    deadline: u64,
    /// Insertion sequence number: generation for [`TimerId`] and tie-breaker
    /// for equal deadlines.
    seq: u64,
    prev: u32,
    next: u32,
    /// Index into `TimerWheel::slots` (`level * 64 + slot`).
    bucket: u16,
}

/// One wheel slot: an intrusive doubly-linked list of entries.
///
/// Invariants: `head == NIL` iff `tail == NIL` iff the slot is empty; an empty
/// slot has `sorted == true`. If `sorted`, the list's deadlines are
/// non-decreasing, so the head holds the minimum. Otherwise, if
/// `min_known.get()`, `min.get()` is the exact minimum deadline of the list.
struct Slot {
    head: u32,
    tail: u32,
    sorted: bool,
    min: Cell<u64>,
    min_known: Cell<bool>,
}

impl Slot {
    fn new() -> Self {
        Slot {
            head: NIL,
            tail: NIL,
            sorted: true,
            min: Cell::new(0),
            min_known: Cell::new(false),
        }
    }

    fn reset(&mut self) {
        *self = Slot::new();
    }
}

/// A hierarchical hashed timer wheel carrying payloads of type `T`.
///
/// Time is measured in caller-supplied milliseconds, grouped into ticks of
/// `tick_ms`. Guarantees:
///
/// * [`advance(now)`](Self::advance) yields every pending timer with
///   `deadline <= now` and none with `deadline > now` (never early), sorted by
///   deadline, ties in insertion order.
/// * [`next_deadline`](Self::next_deadline) is exactly the minimum pending
///   deadline.
/// * [`insert`](Self::insert) and [`cancel`](Self::cancel) are O(1); `advance`
///   is O(fired · log fired + occupied slots passed + cascaded entries), each
///   entry cascading at most `LEVELS - 1` times, independent of the number of
///   ticks elapsed.
/// * No operation panics for any `u64` input (arithmetic saturates).
///
/// `now_ms` is expected to be non-decreasing; a smaller `now_ms` is harmless
/// (it only fires timers whose deadline is `<=` that value).
///
/// The wheel is single-threaded (`!Sync`: `next_deadline` caches through
/// `Cell`s); it is `Send` when `T` is.
pub struct TimerWheel<T> {
    /// Tick length in ms, `>= 1`.
    tick_ms: u64,
    /// The first tick not yet wholly elapsed: `floor(last_now / tick) + 1`.
    /// Invariant: every stored entry's bucket tick `c` satisfies `c >= elapsed`;
    /// level-0 entries share `elapsed`'s 64-tick block; an entry at level
    /// `L >= 1` shares `elapsed`'s `64^(L+1)` block and has a larger level-`L`
    /// digit, so within a level, lower slot indices are earlier and the lowest
    /// non-empty level holds the earliest timers.
    elapsed: u64,
    entries: Vec<Entry<T>>,
    free_head: u32,
    len: usize,
    next_seq: u64,
    /// `LEVELS * 64` slots, level-major.
    slots: Vec<Slot>,
    /// Bit `s` of `occupied[L]` is set iff slot `s` of level `L` is non-empty.
    occupied: [u64; LEVELS],
    /// Bit `L` is set iff `occupied[L] != 0`.
    levels: u16,
    /// Reused buffer of `(deadline, seq, payload)` for the timers firing now
    /// (payloads are taken while their entry is hot in cache, then sorted).
    scratch: Vec<(u64, u64, T)>,
}

/// Level at which a timer with bucket tick `c >= elapsed` is stored.
fn level_for(elapsed: u64, c: u64) -> usize {
    let masked = (elapsed ^ c) | SLOT_MASK;
    let significant = 63 - masked.leading_zeros();
    (significant / SLOT_BITS) as usize
}

/// Slot index of tick `c` at `level`.
fn slot_for(c: u64, level: usize) -> usize {
    ((c >> (SLOT_BITS as usize * level)) & SLOT_MASK) as usize
}

impl<T> TimerWheel<T> {
    /// Creates an empty wheel with ticks of `tick_ms` (clamped to `>= 1`),
    /// positioned at `now_ms`.
    pub fn new(tick_ms: u64, now_ms: u64) -> Self {
        let tick_ms = tick_ms.max(1);
        let mut slots = Vec::with_capacity(LEVELS * SLOTS);
        slots.resize_with(LEVELS * SLOTS, Slot::new);
        TimerWheel {
            tick_ms,
            elapsed: (now_ms / tick_ms).saturating_add(1),
            entries: Vec::new(),
            free_head: NIL,
            len: 0,
            next_seq: 0,
            slots,
            occupied: [0; LEVELS],
            levels: 0,
            scratch: Vec::new(),
        }
    }

    /// Number of pending timers.
    pub fn len(&self) -> usize {
        self.len
    }

    /// `true` if no timer is pending.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Schedules `payload` to fire at `deadline_ms` and returns its id.
    ///
    /// A deadline at or before the last `now_ms` passed to [`new`](Self::new)
    /// or [`advance`](Self::advance) fires on the next `advance`. O(1).
    ///
    /// # Panics
    ///
    /// Only if more than `u32::MAX - 1` timers are pending at once (hundreds
    /// of GiB of entries), like `Vec` on capacity overflow.
    pub fn insert(&mut self, deadline_ms: u64, payload: T) -> TimerId {
        let seq = self.next_seq;
        self.next_seq = self.next_seq.wrapping_add(1);
        let entry = Entry {
            payload: Some(payload),
            deadline: deadline_ms,
            seq,
            prev: NIL,
            next: NIL,
            bucket: 0,
        };
        let index = if self.free_head != NIL {
            let index = self.free_head;
            let cell = &mut self.entries[index as usize];
            self.free_head = cell.next;
            *cell = entry;
            index
        } else {
            let index = u32::try_from(self.entries.len())
                .ok()
                .filter(|&i| i != NIL)
                .unwrap_or_else(|| panic!("TimerWheel: more than u32::MAX - 1 pending timers"));
            self.entries.push(entry);
            index
        };
        self.place(index);
        self.len += 1;
        TimerId { index, seq }
    }

    /// Cancels a pending timer and returns its payload. O(1).
    ///
    /// Returns `None` if `id` already fired, was already cancelled, or is stale
    /// (its slab entry now holds a different timer); such a call changes
    /// nothing.
    pub fn cancel(&mut self, id: TimerId) -> Option<T> {
        let entry = self.entries.get(id.index as usize)?;
        if entry.payload.is_none() || entry.seq != id.seq {
            return None;
        }
        self.unlink(id.index);
        self.len -= 1;
        Some(self.free(id.index))
    }

    /// Advances the wheel to `now_ms` and appends to `fired` the payload of
    /// every pending timer with `deadline <= now_ms`, in deadline order (ties in
    /// insertion order). Timers with `deadline > now_ms` never fire.
    ///
    /// Cost is independent of how many ticks elapsed: the wheel jumps between
    /// occupied slots using the occupancy bitmaps.
    pub fn advance(&mut self, now_ms: u64, fired: &mut Vec<T>) {
        let now_tick = now_ms / self.tick_ms;
        let target = now_tick.saturating_add(1);
        let mut batch = std::mem::take(&mut self.scratch);
        batch.clear();

        // Whole buckets: level-0 slots whose tick is <= now_tick fire entirely
        // (every deadline in them is <= tick * tick_ms <= now_ms); higher-level
        // slots whose range starts at or before the new `elapsed` cascade down.
        while let Some((level, slot)) = self.earliest_slot() {
            let start = self.slot_start(level, slot);
            let bucket = level * SLOTS + slot;
            if level == 0 {
                if start > now_tick {
                    break;
                }
                let mut cur = self.take_slot(bucket);
                while cur != NIL {
                    let e = &self.entries[cur as usize];
                    let (deadline, seq, next) = (e.deadline, e.seq, e.next);
                    batch.push((deadline, seq, self.free(cur)));
                    cur = next;
                }
                self.elapsed = self.elapsed.max(start.saturating_add(1));
            } else {
                if start > target {
                    break;
                }
                self.elapsed = self.elapsed.max(start);
                let mut cur = self.take_slot(bucket);
                while cur != NIL {
                    let next = self.entries[cur as usize].next;
                    self.place(cur);
                    cur = next;
                }
            }
        }
        self.elapsed = self.elapsed.max(target);

        // The bucket straddling `now_ms` (tick == elapsed): fire by exact deadline.
        let slot = slot_for(self.elapsed, 0);
        if self.occupied[0] & (1 << slot) != 0 {
            self.fire_partial(slot, now_ms, &mut batch);
        }

        // (deadline, seq) is unique, so an unstable sort is deterministic.
        batch.sort_unstable_by_key(|&(deadline, seq, _)| (deadline, seq));
        self.len -= batch.len();
        fired.extend(batch.drain(..).map(|(_, _, payload)| payload));
        self.scratch = batch;
    }

    /// The earliest pending deadline in ms (exact), or `None` if empty.
    ///
    /// O(1) via the occupancy bitmaps, except that if the earliest slot is
    /// unsorted and its cached minimum was cancelled, that one slot is scanned
    /// once and the result cached.
    pub fn next_deadline(&self) -> Option<u64> {
        let (level, slot) = self.earliest_slot()?;
        Some(self.slot_min(&self.slots[level * SLOTS + slot]))
    }

    // ---- internals -------------------------------------------------------

    /// Lowest non-empty level and its lowest non-empty slot: by the placement
    /// invariant this slot holds the earliest timers.
    fn earliest_slot(&self) -> Option<(usize, usize)> {
        if self.levels == 0 {
            return None;
        }
        let level = self.levels.trailing_zeros() as usize;
        let slot = self.occupied[level].trailing_zeros() as usize;
        Some((level, slot))
    }

    /// First tick covered by `slot` of `level`, relative to `elapsed`.
    fn slot_start(&self, level: usize, slot: usize) -> u64 {
        let shift = SLOT_BITS as usize * level;
        let upper = match 1u64.checked_shl((shift + SLOT_BITS as usize) as u32) {
            Some(span) => self.elapsed & !(span - 1),
            None => 0,
        };
        upper | ((slot as u64) << shift)
    }

    /// Bucket tick of a deadline: `ceil(deadline / tick_ms)`, clamped to
    /// `elapsed` so overdue timers land in the current bucket.
    fn bucket_tick(&self, deadline: u64) -> u64 {
        let c = deadline / self.tick_ms + u64::from(!deadline.is_multiple_of(self.tick_ms));
        c.max(self.elapsed)
    }

    /// Exact minimum deadline of a non-empty slot.
    fn slot_min(&self, s: &Slot) -> u64 {
        if s.sorted {
            return self.entries[s.head as usize].deadline;
        }
        if !s.min_known.get() {
            let mut min = u64::MAX;
            let mut cur = s.head;
            while cur != NIL {
                let e = &self.entries[cur as usize];
                min = min.min(e.deadline);
                cur = e.next;
            }
            s.min.set(min);
            s.min_known.set(true);
        }
        s.min.get()
    }

    /// Links entry `index` at the tail of the slot its deadline maps to.
    fn place(&mut self, index: u32) {
        let deadline = self.entries[index as usize].deadline;
        let c = self.bucket_tick(deadline);
        let level = level_for(self.elapsed, c);
        let slot = slot_for(c, level);
        let bucket = level * SLOTS + slot;
        let tail = self.slots[bucket].tail;
        {
            let e = &mut self.entries[index as usize];
            e.prev = tail;
            e.next = NIL;
            e.bucket = bucket as u16;
        }
        if tail == NIL {
            let s = &mut self.slots[bucket];
            s.head = index;
            s.tail = index;
            s.sorted = true;
            s.min_known.set(false);
            self.occupied[level] |= 1 << slot;
            self.levels |= 1 << level;
            return;
        }
        let tail_entry = &mut self.entries[tail as usize];
        tail_entry.next = index;
        let tail_deadline = tail_entry.deadline;
        let head = self.slots[bucket].head;
        if self.slots[bucket].sorted {
            if deadline < tail_deadline {
                // The list was sorted, so its minimum is the head.
                let min = self.entries[head as usize].deadline.min(deadline);
                let s = &mut self.slots[bucket];
                s.sorted = false;
                s.min.set(min);
                s.min_known.set(true);
            }
        } else {
            let s = &self.slots[bucket];
            if s.min_known.get() && deadline < s.min.get() {
                s.min.set(deadline);
            }
        }
        self.slots[bucket].tail = index;
    }

    /// Unlinks pending entry `index` from its slot (the entry stays allocated).
    fn unlink(&mut self, index: u32) {
        let (prev, next, bucket, deadline) = {
            let e = &self.entries[index as usize];
            (e.prev, e.next, e.bucket as usize, e.deadline)
        };
        if prev != NIL {
            self.entries[prev as usize].next = next;
        }
        if next != NIL {
            self.entries[next as usize].prev = prev;
        }
        let s = &mut self.slots[bucket];
        if prev == NIL {
            s.head = next;
        }
        if next == NIL {
            s.tail = prev;
        }
        if s.head == NIL {
            s.reset();
            let (level, slot) = (bucket / SLOTS, bucket % SLOTS);
            self.occupied[level] &= !(1 << slot);
            if self.occupied[level] == 0 {
                self.levels &= !(1 << level);
            }
        } else if s.head == s.tail {
            s.sorted = true;
            s.min_known.set(false);
        } else if !s.sorted && s.min_known.get() && s.min.get() == deadline {
            s.min_known.set(false);
        }
    }

    /// Detaches a slot's whole list, returning its head (the entries keep
    /// their `next` links).
    fn take_slot(&mut self, bucket: usize) -> u32 {
        let s = &mut self.slots[bucket];
        let head = s.head;
        s.reset();
        let (level, slot) = (bucket / SLOTS, bucket % SLOTS);
        self.occupied[level] &= !(1 << slot);
        if self.occupied[level] == 0 {
            self.levels &= !(1 << level);
        }
        head
    }

    /// Moves the entries of level-0 `slot` with `deadline <= now_ms` to `batch`
    /// (unlinked and freed; `len` is adjusted by the caller).
    fn fire_partial(&mut self, slot: usize, now_ms: u64, batch: &mut Vec<(u64, u64, T)>) {
        let s = &self.slots[slot];
        if s.sorted {
            while self.slots[slot].head != NIL {
                let head = self.slots[slot].head;
                let e = &self.entries[head as usize];
                if e.deadline > now_ms {
                    break;
                }
                let (deadline, seq) = (e.deadline, e.seq);
                self.unlink(head);
                batch.push((deadline, seq, self.free(head)));
            }
            return;
        }
        if s.min_known.get() && s.min.get() > now_ms {
            return;
        }
        let mut cur = s.head;
        while cur != NIL {
            let e = &self.entries[cur as usize];
            let next = e.next;
            if e.deadline <= now_ms {
                let (deadline, seq) = (e.deadline, e.seq);
                self.unlink(cur);
                batch.push((deadline, seq, self.free(cur)));
            }
            cur = next;
        }
        // Every survivor is > now_ms; refresh the cache for the next call.
        let s = &self.slots[slot];
        if s.head != NIL && !s.sorted {
            s.min_known.set(false);
            self.slot_min(s);
        }
    }

    /// Returns an unlinked entry to the free list and yields its payload.
    fn free(&mut self, index: u32) -> T {
        let e = &mut self.entries[index as usize];
        e.next = self.free_head;
        e.prev = NIL;
        self.free_head = index;
        match e.payload.take() {
            Some(payload) => payload,
            // Callers only free entries they just checked are pending.
            None => unreachable!("TimerWheel: freeing a free entry"),
        }
    }
}

impl<T> Default for TimerWheel<T> {
    /// A wheel with 10 ms ticks positioned at time 0.
    fn default() -> Self {
        Self::new(10, 0)
    }
}

impl<T> std::fmt::Debug for TimerWheel<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerWheel")
            .field("tick_ms", &self.tick_ms)
            .field("elapsed_tick", &self.elapsed)
            .field("len", &self.len)
            .field("next_deadline", &self.next_deadline())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, HashMap};

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
            if n == 0 {
                0
            } else {
                self.next() % n
            }
        }
    }

    fn adv<T>(w: &mut TimerWheel<T>, now: u64) -> Vec<T> {
        let mut out = Vec::new();
        w.advance(now, &mut out);
        out
    }

    #[test]
    fn insert_and_fire() {
        let mut w = TimerWheel::new(10, 1000);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        w.insert(1100, "a");
        assert_eq!(w.len(), 1);
        assert_eq!(w.next_deadline(), Some(1100));
        assert!(adv(&mut w, 1099).is_empty());
        assert_eq!(adv(&mut w, 1100), vec!["a"]);
        assert!(w.is_empty());
        assert_eq!(w.next_deadline(), None);
        assert!(adv(&mut w, 5000).is_empty());
    }

    #[test]
    fn never_early_unaligned_deadlines() {
        for tick in [1, 7, 10, 100] {
            let mut w = TimerWheel::new(tick, 0);
            for d in [15u64, 1, 99, 101, 1234, 6401, 640_001] {
                w.insert(d, d);
            }
            let mut fired_all = Vec::new();
            for now in 0..=700_000u64 {
                if w.next_deadline().is_none_or(|d| d > now) {
                    continue;
                }
                for d in adv(&mut w, now) {
                    assert_eq!(d, now, "tick {tick}: fired at {now}, deadline {d}");
                    fired_all.push(d);
                }
            }
            assert_eq!(fired_all, vec![1, 15, 99, 101, 1234, 6401, 640_001]);
        }
    }

    #[test]
    fn overdue_fires_on_next_advance() {
        let mut w = TimerWheel::new(10, 5000);
        w.insert(10, 1);
        w.insert(5000, 2);
        w.insert(4995, 3);
        assert_eq!(w.next_deadline(), Some(10));
        // Even an advance to the same (or an older) instant fires them.
        assert_eq!(adv(&mut w, 5000), vec![1, 3, 2]);
        w.insert(0, 4);
        assert_eq!(adv(&mut w, 4000), vec![4]);
    }

    #[test]
    fn time_going_backwards_never_fires_early() {
        let mut w = TimerWheel::new(10, 10_000);
        w.insert(10_005, 'a');
        w.insert(9_000, 'b');
        assert_eq!(adv(&mut w, 8_000), Vec::<char>::new());
        assert_eq!(adv(&mut w, 9_500), vec!['b']);
        assert_eq!(adv(&mut w, 10_004), Vec::<char>::new());
        assert_eq!(adv(&mut w, 10_005), vec!['a']);
    }

    #[test]
    fn cancel_semantics() {
        let mut w = TimerWheel::new(10, 0);
        let a = w.insert(100, 'a');
        let b = w.insert(200, 'b');
        assert_eq!(w.cancel(a), Some('a'));
        assert_eq!(w.cancel(a), None, "double cancel");
        assert_eq!(w.len(), 1);
        assert_eq!(w.next_deadline(), Some(200));
        assert_eq!(adv(&mut w, 1000), vec!['b']);
        assert_eq!(w.cancel(b), None, "cancel after fire");
        // Slot reuse: the new timer takes a freed entry; stale ids must not hit it.
        let c = w.insert(2000, 'c');
        assert!(c.index == a.index || c.index == b.index);
        assert_eq!(w.cancel(a), None);
        assert_eq!(w.cancel(b), None);
        assert_eq!(w.len(), 1);
        assert_eq!(w.cancel(c), Some('c'));
        assert!(w.is_empty());
        // Memory is reused, not grown.
        for i in 0..1000 {
            let id = w.insert(5000 + i, 'x');
            assert_eq!(w.cancel(id), Some('x'));
        }
        assert!(w.entries.len() <= 2);
        assert_eq!(w.levels, 0);
        assert_eq!(w.occupied, [0; LEVELS]);
    }

    #[test]
    fn fire_order_deadline_then_insertion() {
        let mut w = TimerWheel::new(10, 0);
        w.insert(500, 5);
        w.insert(123, 1);
        w.insert(300, 3);
        w.insert(123, 2);
        w.insert(99_999, 9);
        w.insert(300, 4);
        w.insert(7, 0);
        assert_eq!(w.next_deadline(), Some(7));
        assert_eq!(adv(&mut w, 100_000), vec![0, 1, 2, 3, 4, 5, 9]);
        // Ties across a cascade: same deadline inserted at different times.
        let mut w = TimerWheel::new(10, 0);
        w.insert(1_000_000, 'a');
        adv(&mut w, 500_000);
        w.insert(1_000_000, 'b');
        w.insert(999_999, 'z');
        assert_eq!(adv(&mut w, 2_000_000), vec!['z', 'a', 'b']);
    }

    #[test]
    fn cascading_across_all_levels() {
        // Deadlines just around each level boundary, fired with many step sizes.
        let tick = 10u64;
        let mut deadlines = Vec::new();
        for level in 0..LEVELS as u32 {
            let span = 1u64.checked_shl(6 * level).unwrap_or(u64::MAX);
            for k in [span.saturating_sub(1), span, span.saturating_add(1)] {
                deadlines.push(k.saturating_mul(tick).saturating_add(3));
            }
        }
        deadlines.push(u64::MAX);
        deadlines.push(u64::MAX - 1);
        deadlines.sort_unstable();
        for overshoot_shift in [0u32, 9, 20, 33, 50, 63] {
            let mut w = TimerWheel::new(tick, 0);
            for &d in &deadlines {
                w.insert(d, d);
            }
            let mut now = 0u64;
            let mut got = Vec::new();
            while let Some(d) = w.next_deadline() {
                assert!(d > now);
                // Halfway (cascades without firing), just before, then past it.
                for probe in [now + (d - now) / 2, d - 1] {
                    assert!(adv(&mut w, probe).is_empty(), "early at {probe}");
                    assert_eq!(w.next_deadline(), Some(d));
                }
                now = d.saturating_add((1u64 << overshoot_shift) - 1);
                let fired = adv(&mut w, now);
                assert!(!fired.is_empty() && fired.iter().all(|&f| f <= now));
                got.extend(fired);
                assert!(w.next_deadline().is_none_or(|n| n > now));
            }
            assert_eq!(got, deadlines, "overshoot 2^{overshoot_shift}");
        }
    }

    #[test]
    fn big_jumps_are_cheap_and_exact() {
        let hour = 3_600_000u64;
        let mut w = TimerWheel::new(10, 0);
        for i in 0..1000u64 {
            w.insert(i * 7_919 % (3 * hour), i);
        }
        w.insert(u64::MAX, 424_242);
        // Jump an hour at a time; then to the end of time.
        let mut fired = Vec::new();
        w.advance(hour, &mut fired);
        assert!(fired.iter().all(|&i| i * 7_919 % (3 * hour) <= hour));
        let n1 = fired.len();
        w.advance(3 * hour, &mut fired);
        assert_eq!(fired.len(), 1000);
        assert!(n1 > 0 && n1 < 1000);
        assert_eq!(w.next_deadline(), Some(u64::MAX));
        w.advance(u64::MAX - 1, &mut fired);
        assert_eq!(fired.len(), 1000);
        w.advance(u64::MAX, &mut fired);
        assert_eq!(fired.last(), Some(&424_242));
        assert!(w.is_empty());
        // Idle jumps of astronomical size do not iterate ticks.
        let mut w: TimerWheel<()> = TimerWheel::new(1, 0);
        w.insert(u64::MAX / 2, ());
        for now in [u64::MAX / 4, u64::MAX / 2 - 1, u64::MAX / 2] {
            w.advance(now, &mut Vec::new());
        }
        assert!(w.is_empty());
    }

    #[test]
    fn extreme_inputs_do_not_panic() {
        for tick in [0u64, 1, 3, u64::MAX / 2, u64::MAX] {
            for start in [0u64, 1, u64::MAX - 1, u64::MAX] {
                let mut w = TimerWheel::new(tick, start);
                let ids: Vec<_> = [0u64, 1, u64::MAX / 3, u64::MAX - 1, u64::MAX]
                    .iter()
                    .map(|&d| (d, w.insert(d, d)))
                    .collect();
                assert_eq!(w.next_deadline(), Some(0));
                assert_eq!(w.cancel(ids[3].1), Some(u64::MAX - 1));
                let mut fired = Vec::new();
                for now in [0u64, 5, u64::MAX / 3, u64::MAX - 1, u64::MAX, 0] {
                    w.advance(now, &mut fired);
                    assert!(w.next_deadline().is_none_or(|d| d > now));
                }
                assert_eq!(fired, vec![0, 1, u64::MAX / 3, u64::MAX]);
                assert!(w.is_empty());
            }
        }
    }

    #[test]
    fn next_deadline_unsorted_slot_after_cancelling_min() {
        let mut w = TimerWheel::new(10, 0);
        // All in one level-2 slot, inserted out of order.
        let ids: Vec<_> = [50_000u64, 45_000, 47_000, 45_000, 60_000]
            .iter()
            .map(|&d| w.insert(d, d))
            .collect();
        assert_eq!(w.next_deadline(), Some(45_000));
        w.cancel(ids[1]);
        assert_eq!(w.next_deadline(), Some(45_000));
        w.cancel(ids[3]);
        assert_eq!(w.next_deadline(), Some(47_000));
        w.cancel(ids[2]);
        assert_eq!(w.next_deadline(), Some(50_000));
        assert_eq!(adv(&mut w, 55_000), vec![50_000]);
        assert_eq!(w.next_deadline(), Some(60_000));
    }

    /// 100k random operations checked against a `BTreeMap` model.
    #[test]
    fn randomized_against_btreemap_model() {
        for (seed, tick) in [(0x9E37_79B9_7F4A_7C15u64, 10u64), (12345, 1), (777, 64)] {
            let mut rng = XorShift(seed);
            let mut now = rng.below(1 << 40);
            let mut w = TimerWheel::new(tick, now);
            // (deadline, seq) -> (id, payload)
            let mut model: BTreeMap<(u64, u64), (TimerId, u64)> = BTreeMap::new();
            let mut by_id: HashMap<TimerId, (u64, u64)> = HashMap::new();
            let mut live: Vec<TimerId> = Vec::new();
            let mut dead: Vec<TimerId> = Vec::new();
            let mut seq = 0u64;
            for _ in 0..100_000 {
                match rng.below(100) {
                    0..=44 => {
                        let spread = match rng.below(10) {
                            0 => 0,
                            1..=4 => 1_000,
                            5..=7 => 100_000,
                            8 => 10_000_000,
                            _ => 1 << 40,
                        };
                        let d = if rng.below(20) == 0 {
                            now.saturating_sub(rng.below(5_000))
                        } else {
                            now.saturating_add(rng.below(spread + 1))
                        };
                        let id = w.insert(d, seq);
                        model.insert((d, seq), (id, seq));
                        by_id.insert(id, (d, seq));
                        live.push(id);
                        seq += 1;
                    }
                    45..=79 => {
                        if rng.below(10) == 0 && !dead.is_empty() {
                            let id = dead[rng.below(dead.len() as u64) as usize];
                            assert_eq!(w.cancel(id), None);
                        } else if !live.is_empty() {
                            let i = rng.below(live.len() as u64) as usize;
                            let id = live.swap_remove(i);
                            match by_id.remove(&id) {
                                Some(key) => {
                                    let (_, payload) = model.remove(&key).unwrap();
                                    assert_eq!(w.cancel(id), Some(payload));
                                }
                                None => assert_eq!(w.cancel(id), None), // already fired
                            }
                            dead.push(id);
                        }
                    }
                    _ => {
                        now = now.saturating_add(match rng.below(10) {
                            0..=5 => rng.below(2 * tick),
                            6..=8 => rng.below(50_000),
                            _ => rng.below(1 << 36),
                        });
                        let got = adv(&mut w, now);
                        let mut want = Vec::new();
                        while let Some(entry) = model.first_entry() {
                            if entry.key().0 > now {
                                break;
                            }
                            let (id, payload) = entry.remove();
                            by_id.remove(&id);
                            want.push(payload);
                        }
                        assert_eq!(got, want, "advance to {now}");
                    }
                }
                assert_eq!(w.len(), model.len());
                assert_eq!(w.next_deadline(), model.keys().next().map(|k| k.0));
            }
            // Drain everything.
            let got = adv(&mut w, u64::MAX);
            let want: Vec<u64> = model.values().map(|v| v.1).collect();
            assert_eq!(got, want);
            assert!(w.is_empty());
            assert_eq!(w.levels, 0);
        }
    }
}
