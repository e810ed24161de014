//! Micro-benchmarks for `catalytic::timers::Timers` (harness = false).
//!
//! Run with `cargo bench --bench timers`. Prints the median of several runs, each on fresh data
//! from a fixed-seed PRNG, for 1k, 10k and 100k live timers.
//!
//! The load is the reactor's: of the live timers, 70 % are connection deadlines (10 s, or 30 s
//! for a close/drain), 20 % session expiries (30 min) and 10 % per-session `time_update` ticks
//! (every 10 s, re-armed when they fire). Time moves in 10 ms turns. Each turn re-arms 1 % of the
//! live timers (at least 100): a connection deadline is cancelled (its request completed) and a
//! new one inserted, so nearly every connection deadline is cancelled before it fires — the
//! pattern timing wheels are designed around. Scenarios:
//!
//! * `insert`, `cancel` — the re-arm halves of each turn, timed as batches, ns per operation;
//! * `advance per turn` — the turn's `advance` (usually nothing due, sometimes a few ticks);
//! * `advance, nothing due` — `advance` in a tight loop when no timer is due, ns per call;
//! * `advance per fired` — 10 ms turns over 10 s without re-arming (~70 % fire), ns per timer.
//!
//! `Instant` costs tens of ns per reading; the turn measurements subtract its measured cost.

use std::hint::black_box;
use std::time::Instant;

use catalytic::timers::{TimerId, Timers};

/// The implementation under test: pointing these two items at another type with the same methods
/// is how an alternative is compared (`docs/BENCHMARKS.md`, "Timers").
type Set = Timers<u64>;
fn fresh() -> Set {
    Timers::new()
}

const SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const RUNS: usize = 11;
const TURN_MS: u64 = 10;
/// Simulated time per churn run: long enough for every 10 s tick to fire once.
const TURNS: usize = 1_200;
/// Payload tag of a `time_update` tick (re-armed when it fires).
const TICK: u64 = 1 << 63;

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

/// A connection deadline: a request/handshake deadline (10 s) or a close/drain deadline (30 s).
fn conn_delay(rng: &mut XorShift) -> u64 {
    if rng.below(5) == 0 {
        30_000
    } else {
        10_000
    }
}

/// `n` live timers at time 0, as if armed over the last interval (deadlines spread over it).
/// Returns the set and the ids of the connection deadlines (the ones that get re-armed).
fn filled(rng: &mut XorShift, n: usize) -> (Set, Vec<TimerId>) {
    let mut set = fresh();
    let mut conn_ids = Vec::with_capacity(n);
    for i in 0..n as u64 {
        match rng.below(10) {
            0..=6 => {
                let delay = conn_delay(rng);
                conn_ids.push(set.insert(1 + rng.below(delay), i));
            }
            7..=8 => {
                set.insert(1 + rng.below(1_800_000), i);
            }
            _ => {
                set.insert(1 + rng.below(10_000), TICK | i);
            }
        }
    }
    (set, conn_ids)
}

/// The cost of one `Instant::now()` + `elapsed()` pair, to subtract from short timed regions.
fn instant_overhead_ns() -> f64 {
    let mut samples: Vec<u128> = (0..10_001)
        .map(|_| {
            let t = Instant::now();
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    samples[samples.len() / 2] as f64
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// ns per insert, per cancel and per turn's `advance` in the steady-state churn.
fn churn(n: usize, run: u64, overhead: f64) -> (f64, f64, f64) {
    let mut rng = XorShift(0x9E37_79B9_7F4A_7C15 ^ run ^ n as u64);
    let (mut set, mut conn_ids) = filled(&mut rng, n);
    let batch = (n / 100).max(100);
    let (mut insert_ns, mut cancel_ns, mut advance_ns) = (0f64, 0f64, 0f64);
    let mut fired = Vec::new();
    let mut now = 0u64;
    for turn in 0..TURNS {
        // Drawn before the clock starts, so the timed loops do set operations only.
        let picks: Vec<usize> = (0..batch)
            .map(|k| rng.below((conn_ids.len() - k) as u64) as usize)
            .collect();
        let deadlines: Vec<u64> = (0..batch).map(|_| now + conn_delay(&mut rng)).collect();

        let t = Instant::now();
        for &i in &picks {
            let id = conn_ids.swap_remove(i);
            black_box(set.cancel(black_box(id)));
        }
        cancel_ns += t.elapsed().as_nanos() as f64 - overhead;

        let t = Instant::now();
        for (k, &d) in deadlines.iter().enumerate() {
            conn_ids.push(set.insert(black_box(d), (turn * batch + k) as u64));
        }
        insert_ns += t.elapsed().as_nanos() as f64 - overhead;

        now += TURN_MS;
        let t = Instant::now();
        set.advance(black_box(now), &mut fired);
        advance_ns += t.elapsed().as_nanos() as f64 - overhead;

        // A fired tick re-arms 10 s later; a fired connection deadline (rare) stays in
        // `conn_ids`, where cancelling it later is a harmless stale cancel.
        for p in fired.drain(..) {
            if p & TICK != 0 {
                set.insert(now + 10_000, p);
            }
        }
    }
    let ops = (TURNS * batch) as f64;
    (
        (insert_ns / ops).max(0.0),
        (cancel_ns / ops).max(0.0),
        (advance_ns / TURNS as f64).max(0.0),
    )
}

fn nothing_due(n: usize, run: u64) -> f64 {
    let mut rng = XorShift(0xABCD_EF01_2345_6789 ^ run ^ n as u64);
    let (mut set, _) = filled(&mut rng, n);
    let mut fired = Vec::new();
    let calls = 100_000u64;
    let t = Instant::now();
    for _ in 0..calls {
        // Every deadline is >= 1 ms.
        set.advance(black_box(0), &mut fired);
    }
    let ns = t.elapsed().as_nanos() as f64;
    assert!(fired.is_empty());
    ns / calls as f64
}

fn per_fired(n: usize, run: u64) -> f64 {
    let mut rng = XorShift(0xDEAD_BEEF_0BAD_F00D ^ run ^ n as u64);
    let (mut set, _) = filled(&mut rng, n);
    let mut fired = Vec::with_capacity(n);
    let t = Instant::now();
    let mut now = 0;
    while now < 10_000 {
        now += TURN_MS;
        set.advance(black_box(now), &mut fired);
    }
    let ns = t.elapsed().as_nanos() as f64;
    black_box(&fired);
    ns / fired.len().max(1) as f64
}

fn main() {
    let overhead = instant_overhead_ns();
    let mut rows: Vec<(&str, Vec<f64>)> = vec![
        ("insert (re-arm), ns/op", Vec::new()),
        ("cancel (re-arm), ns/op", Vec::new()),
        ("advance per 10 ms turn, ns/call", Vec::new()),
        ("advance, nothing due, ns/call", Vec::new()),
        ("advance over 10 s, ns per fired", Vec::new()),
    ];
    for n in SIZES {
        let runs: Vec<(f64, f64, f64)> = (0..RUNS as u64).map(|r| churn(n, r, overhead)).collect();
        rows[0].1.push(median(runs.iter().map(|r| r.0).collect()));
        rows[1].1.push(median(runs.iter().map(|r| r.1).collect()));
        rows[2].1.push(median(runs.iter().map(|r| r.2).collect()));
        rows[3].1.push(median(
            (0..RUNS as u64).map(|r| nothing_due(n, r)).collect(),
        ));
        rows[4]
            .1
            .push(median((0..RUNS as u64).map(|r| per_fired(n, r)).collect()));
    }

    println!(
        "{}, median of {RUNS} runs, Instant overhead {overhead:.0} ns subtracted per timed turn phase",
        std::any::type_name::<Set>()
    );
    print!("{:<36}", "live timers");
    for n in SIZES {
        print!(" {n:>10}");
    }
    println!();
    println!("{:-<36}{:->33}", "", "");
    for (name, values) in rows {
        print!("{name:<36}");
        for v in values {
            print!(" {v:>10.1}");
        }
        println!();
    }
}
