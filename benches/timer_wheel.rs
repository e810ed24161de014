//! Micro-benchmarks for `catalytic::timer_wheel::TimerWheel` (harness = false).
//!
//! Run with `cargo bench --bench timer_wheel`. Each scenario runs several
//! times on fresh data and the median ns/op is reported.

use std::hint::black_box;
use std::time::Instant;

use catalytic::timer_wheel::{TimerId, TimerWheel};

const N: usize = 100_000;
const RUNS: usize = 11;
const TICK_MS: u64 = 10;

/// Deterministic xorshift64 PRNG (no `rand` dependency).
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

/// Reactor-like deadlines: mostly short ticks/handshakes, some long expiries.
fn deadline(rng: &mut XorShift, now: u64) -> u64 {
    now + match rng.below(10) {
        0..=5 => 1_000 + rng.below(1_000),  // time_update ticks ~1-2 s
        6..=7 => rng.below(10_000),         // handshake / request deadlines
        _ => 60_000 + rng.below(1_800_000), // session expiry: 1-31 min
    }
}

fn shuffle<T>(v: &mut [T], rng: &mut XorShift) {
    for i in (1..v.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        v.swap(i, j);
    }
}

fn filled(rng: &mut XorShift, now: u64) -> (TimerWheel<u64>, Vec<TimerId>) {
    let mut w = TimerWheel::new(TICK_MS, now);
    let ids = (0..N as u64)
        .map(|i| w.insert(deadline(rng, now), i))
        .collect();
    (w, ids)
}

/// Runs `f` (which returns elapsed ns and op count) `RUNS` times; median ns/op.
fn median_ns_per_op(mut f: impl FnMut(u64) -> (u128, usize)) -> f64 {
    let mut samples: Vec<f64> = (0..RUNS as u64)
        .map(|run| {
            let (ns, ops) = f(run);
            ns as f64 / ops.max(1) as f64
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    samples[RUNS / 2]
}

fn main() {
    let mut rows: Vec<(&str, f64)> = Vec::new();

    rows.push((
        "insert 100k (fresh wheel)",
        median_ns_per_op(|run| {
            let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ run);
            let deadlines: Vec<u64> = (0..N).map(|_| deadline(&mut rng, 0)).collect();
            let mut w = TimerWheel::new(TICK_MS, 0);
            let t = Instant::now();
            for (i, &d) in deadlines.iter().enumerate() {
                black_box(w.insert(black_box(d), i));
            }
            let ns = t.elapsed().as_nanos();
            black_box(&w);
            (ns, N)
        }),
    ));

    rows.push((
        "cancel 100k (random order)",
        median_ns_per_op(|run| {
            let mut rng = XorShift(0xC0FF_EE00_D15E_A5E5 ^ run);
            let (mut w, mut ids) = filled(&mut rng, 0);
            shuffle(&mut ids, &mut rng);
            let t = Instant::now();
            for &id in &ids {
                black_box(w.cancel(black_box(id)));
            }
            let ns = t.elapsed().as_nanos();
            assert!(w.is_empty());
            (ns, N)
        }),
    ));

    rows.push((
        "advance 10 ms steps, per fired",
        median_ns_per_op(|run| {
            let mut rng = XorShift(0xDEAD_BEEF_0BAD_F00D ^ run);
            let (mut w, _) = filled(&mut rng, 0);
            let end = 2_000_000; // past every deadline
            let mut fired = Vec::with_capacity(N);
            let t = Instant::now();
            let mut now = 0;
            while now < end {
                now += TICK_MS;
                w.advance(black_box(now), &mut fired);
            }
            let ns = t.elapsed().as_nanos();
            assert_eq!(fired.len(), N);
            black_box(&fired);
            (ns, N)
        }),
    ));

    rows.push((
        "advance one 1 h jump, per fired",
        median_ns_per_op(|run| {
            let mut rng = XorShift(0x0123_4567_89AB_CDEF ^ run);
            let (mut w, _) = filled(&mut rng, 0);
            let mut fired = Vec::with_capacity(N);
            let t = Instant::now();
            w.advance(black_box(3_600_000), &mut fired);
            let ns = t.elapsed().as_nanos();
            assert_eq!(fired.len(), N);
            black_box(&fired);
            (ns, N)
        }),
    ));

    rows.push((
        "advance, nothing due @100k live",
        median_ns_per_op(|run| {
            let mut rng = XorShift(0xABCD_EF01_2345_6789 ^ run);
            let (mut w, _) = filled(&mut rng, 0);
            let mut fired = Vec::new();
            let t = Instant::now();
            for i in 0..N as u64 {
                // Reactor wake-ups within the first 10 ms tick: nothing is due.
                w.advance(black_box(i % 10), &mut fired);
            }
            let ns = t.elapsed().as_nanos();
            black_box(&fired);
            (ns, N)
        }),
    ));

    rows.push((
        "mixed cancel+insert @100k live, per op",
        median_ns_per_op(|run| {
            let mut rng = XorShift(0x5151_5151_A5A5_A5A5 ^ run);
            let (mut w, mut ids) = filled(&mut rng, 0);
            let picks: Vec<usize> = (0..N).map(|_| rng.below(N as u64) as usize).collect();
            let deadlines: Vec<u64> = (0..N).map(|i| deadline(&mut rng, i as u64 / 10)).collect();
            let t = Instant::now();
            for i in 0..N {
                let slot = picks[i];
                black_box(w.cancel(ids[slot]));
                ids[slot] = w.insert(deadlines[i], i as u64);
            }
            let ns = t.elapsed().as_nanos();
            assert_eq!(w.len(), N);
            (ns, 2 * N)
        }),
    ));

    rows.push((
        "cancel + next_deadline @100k, per pair",
        median_ns_per_op(|run| {
            let mut rng = XorShift(0x7777_1234_4321_7777 ^ run);
            let (mut w, mut ids) = filled(&mut rng, 0);
            shuffle(&mut ids, &mut rng);
            let t = Instant::now();
            for &id in &ids[..N / 2] {
                black_box(w.cancel(id));
                black_box(w.next_deadline());
            }
            let ns = t.elapsed().as_nanos();
            (ns, N / 2)
        }),
    ));

    println!("TimerWheel<u64>, tick {TICK_MS} ms, N = {N}, median of {RUNS} runs");
    println!("{:<40} {:>10}", "scenario", "ns/op");
    println!("{:-<40} {:->10}", "", "");
    for (name, ns) in rows {
        println!("{name:<40} {ns:>10.1}");
    }
}
