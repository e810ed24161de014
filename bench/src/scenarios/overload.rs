//! Overload: open-loop `POST /api/users` at a fixed rate beyond what the server can fan out,
//! for `--step-secs` (default 3 s), to N admin clients (default 1,000). The rate is `--rate`,
//! or twice the floor's sustainable rate, measured first in the same run with the
//! `sustained` search on the floor (its table and JSON line are printed too).
//!
//! Each POST is written at its scheduled time on one of `--http-conns` keep-alive
//! connections, pipelined up to `--pipeline` requests deep on each (default 32), so the
//! offered load does not depend on how soon the server answers: a server that answers a
//! POST only after its broadcast would otherwise slow the sender down to what it can take,
//! and never meet the overload. A POST due while every connection is full waits, and
//! `max backlog` says how far sending fell behind. Measured per server: delivery latency
//! (POST write → each admin's receipt) p50/p99/max, how many POSTs were accepted (201) and
//! refused (503, and how many of those carried `Retry-After`), and that nothing was lost:
//! every accepted write reached every admin, and no refused write reached anyone.
//!
//! Setup is `sustained::setup`; drive is `Rig::send_at_rate` and `settle`; report is
//! `Outcome::of` and `report`, then `compare_report`.

use super::fanout::{ratio, show_ratio};
use super::report::table;
use super::sustained::{self, Answers, Rig, Sent};
use super::{log, stop, Ctx};
use crate::server::Kind;
use crate::stats::{fmt_num, percentile, round3};
use crate::Opts;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Dead connections replaced during one run: generous, as a server may close the
/// connection after each refusal.
const MAX_REOPENS: usize = 100_000;

/// What one server did under the overload.
struct Outcome {
    rate: f64,
    clients: usize,
    sent: Sent,
    accepted: usize,
    refused_503: usize,
    with_retry_after: usize,
    statuses: BTreeMap<u16, usize>,
    unanswered: usize,
    p50: f64,
    p99: f64,
    max: f64,
    /// POST write → answer: p50, p99 (waiting to be read counts here, not in the delivery).
    post_p50: f64,
    post_p99: f64,
    /// Admin deliveries of accepted writes that never came.
    lost: u64,
    /// Deliveries of writes that were not accepted (a refusal must change nothing).
    ghost: u64,
}

impl Outcome {
    fn accepted_per_sec(&self) -> f64 {
        self.accepted as f64 / self.sent.secs.max(1e-9)
    }

    fn row(&self, kind: Kind) -> Vec<String> {
        vec![
            kind.name().into(),
            format!("{:.0}", self.rate),
            format!("{:.0}", self.sent.sent as f64 / self.sent.secs.max(1e-9)),
            self.sent.max_backlog.to_string(),
            format!("{} ({:.0}/s)", self.accepted, self.accepted_per_sec()),
            format!("{} ({})", self.refused_503, self.with_retry_after),
            (self.sent.sent - self.accepted - self.refused_503).to_string(),
            fmt_num(self.p50),
            fmt_num(self.p99),
            fmt_num(self.max),
            format!("{} / {}", fmt_num(self.post_p50), fmt_num(self.post_p99)),
            self.lost.to_string(),
            self.ghost.to_string(),
            format!("{:.0}", self.sent.server_cpu_pct),
            format!("{:.0}", self.sent.gen_busy_pct),
        ]
    }

    fn json(&self, kind: Kind) -> Value {
        json!({"scenario": "overload", "server": kind.name(), "clients": self.clients, "target_rate": round3(self.rate),
               "secs": round3(self.sent.secs), "scheduled": self.sent.total, "sent": self.sent.sent,
               "sent_rate": round3(self.sent.sent as f64 / self.sent.secs.max(1e-9)), "max_backlog": self.sent.max_backlog,
               "accepted": self.accepted, "accepted_per_sec": round3(self.accepted_per_sec()),
               "refused_503": self.refused_503, "refused_with_retry_after": self.with_retry_after,
               "http_statuses": self.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
               "unanswered": self.unanswered, "delivery_p50_ms": round3(self.p50), "delivery_p99_ms": round3(self.p99),
               "delivery_max_ms": round3(self.max),
               "post_p50_ms": round3(self.post_p50), "post_p99_ms": round3(self.post_p99), "lost": self.lost, "delivered_refused": self.ghost,
               "server_cpu_pct": round3(self.sent.server_cpu_pct), "generator_busy_pct": round3(self.sent.gen_busy_pct)})
    }
}

/// `overload`: find the rate, then run it against every server found.
pub(super) fn overload(ctx: &mut Ctx) {
    let rate = match ctx.o.rate {
        Some(r) => r,
        None => match floor_rate(ctx) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("catalytic-bench: overload: {e}");
                ctx.emit(json!({"scenario": "overload", "server": "-", "error": e}));
                return;
            }
        },
    };
    log(ctx.o, format!("overload: {rate:.0} POST/s"));
    let kinds: Vec<Kind> = ctx.bins.iter().map(|(k, _)| *k).collect();
    let mut outcomes = Vec::new();
    for k in kinds {
        match run(ctx, k, rate) {
            Ok((out, errors)) => {
                let mut v = out.json(k);
                v["errors"] = json!(errors);
                report(ctx.o, k, &out, &errors);
                ctx.emit(v);
                outcomes.push((k, out));
            }
            Err(e) => {
                eprintln!("catalytic-bench: overload on {}: {e}", k.name());
                ctx.emit(json!({"scenario": "overload", "server": k.name(), "error": e}));
            }
        }
    }
    compare_report(ctx, &outcomes);
}

/// Twice the floor's sustainable rate, from the `sustained` search on a fresh floor.
fn floor_rate(ctx: &mut Ctx) -> Result<f64, String> {
    if ctx.bin(Kind::Floor).is_none() {
        return Err("no --rate given and no floor to measure it on".into());
    }
    log(
        ctx.o,
        "overload: measuring the floor's sustainable rate first (sustained search)",
    );
    let v = sustained::sustained(ctx, Kind::Floor)?;
    let best = v["max_sustained_posts_per_sec"].as_f64();
    ctx.emit(v);
    match best {
        Some(b) if b > 0.0 => Ok(2.0 * b),
        _ => Err("the floor sustained no rate; give --rate".into()),
    }
}

/// Setup, drive and measure one server at `rate`.
fn run(ctx: &Ctx, kind: Kind, rate: f64) -> Result<(Outcome, Vec<String>), String> {
    let o = ctx.o;
    let mut rig = sustained::setup(ctx, kind)?;
    rig.d.hist.clear();
    let expected = rig.d.ready_open();
    let first = rig.d.rounds.len();
    let mut answers = Answers {
        max_reopens: MAX_REOPENS,
        ..Answers::default()
    };
    let sent = rig.send_at_rate(rate, o.pipeline, o, &mut answers);
    settle(&mut rig, o, &mut answers, expected as u64);
    let out = Outcome::of(&rig, rate, expected, sent, &answers, first);
    rig.d.close_all_ws();
    let mut errors = Vec::new();
    stop(o, rig.srv, &mut errors);
    Ok((out, errors))
}

/// Drive: after the last POST, run until every POST is answered and every accepted write
/// has reached every admin, or `--timeout-ms` has passed.
fn settle(rig: &mut Rig, o: &Opts, answers: &mut Answers, expected: u64) {
    let deadline = Instant::now() + o.timeout;
    loop {
        answers.drain(&mut rig.d, &mut rig.conns);
        let idle = rig.conns.iter().all(|&c| rig.d.http_inflight(c) == 0);
        if idle && rig.d.hist.count() >= answers.accepted.len() as u64 * expected {
            break;
        }
        if Instant::now() >= deadline {
            break;
        }
        rig.d.poll_once(Duration::from_millis(5));
    }
}

impl Outcome {
    /// Report: what was answered, what arrived, what is missing.
    fn of(rig: &Rig, rate: f64, expected: usize, sent: Sent, a: &Answers, first: usize) -> Outcome {
        let d = &rig.d;
        let exp = expected as u64;
        let mut accepted = vec![false; d.rounds.len()];
        for &r in &a.accepted {
            if let Some(x) = accepted.get_mut(r) {
                *x = true;
            }
        }
        let (mut lost, mut ghost) = (0u64, 0u64);
        for (r, round) in d.rounds.iter().enumerate().skip(first) {
            let got = round.got as u64;
            if accepted[r] {
                lost += exp.saturating_sub(got);
            } else {
                ghost += got;
            }
        }
        let answered: usize = a.statuses.values().sum();
        let mut post = a.post_ms.clone();
        post.sort_by(|a, b| a.total_cmp(b));
        Outcome {
            rate,
            clients: expected,
            accepted: a.accepted.len(),
            refused_503: a.statuses.get(&503).copied().unwrap_or(0),
            with_retry_after: a.retry_after,
            statuses: a.statuses.clone(),
            unanswered: sent.sent.saturating_sub(answered),
            p50: d.hist.percentile_ms(50.0),
            p99: d.hist.percentile_ms(99.0),
            max: d.hist.max_ms(),
            post_p50: percentile(&post, 50.0).unwrap_or(f64::NAN),
            post_p99: percentile(&post, 99.0).unwrap_or(f64::NAN),
            lost,
            ghost,
            sent,
        }
    }
}

fn report(o: &Opts, kind: Kind, out: &Outcome, errors: &[String]) {
    table(
        &format!(
            "overload — {}: open-loop POSTs for {} s to {} admins ({} keep-alive connections, pipelined ≤ {})",
            kind.name(),
            o.step_secs,
            out.clients,
            o.http_conns,
            o.pipeline
        ),
        &[
            "server",
            "target POST/s",
            "sent POST/s",
            "max backlog",
            "accepted 201",
            "refused 503 (Retry-After)",
            "other/none",
            "delivery p50 ms",
            "p99 ms",
            "max ms",
            "POST answer p50 / p99 ms",
            "lost",
            "refused but delivered",
            "server CPU %",
            "gen busy %",
        ],
        &[out.row(kind)],
    );
    if out.statuses.keys().any(|s| *s != 201 && *s != 503) || out.unanswered > 0 {
        println!(
            "  answers: {:?}, unanswered {}",
            out.statuses, out.unanswered
        );
    }
    for e in errors {
        println!("  {e}");
    }
}

/// catalytic against the floor: delivery p99 and the accepted rate.
fn compare_report(ctx: &mut Ctx, outs: &[(Kind, Outcome)]) {
    let find = |kind: Kind| outs.iter().find(|(k, _)| *k == kind).map(|(_, o)| o);
    let (Some(c), Some(f)) = (find(Kind::Catalytic), find(Kind::Floor)) else {
        return;
    };
    let r99 = ratio(c.p99, f.p99);
    let racc = ratio(c.accepted_per_sec(), f.accepted_per_sec());
    table(
        "overload — catalytic / floor (same run)",
        &[
            "rate POST/s",
            "delivery p99 ms c / f",
            "p99 ratio",
            "accepted/s c / f",
            "accepted ratio",
            "lost c / f",
        ],
        &[vec![
            format!("{:.0}", c.rate),
            format!("{} / {}", fmt_num(c.p99), fmt_num(f.p99)),
            show_ratio(r99),
            format!("{:.0} / {:.0}", c.accepted_per_sec(), f.accepted_per_sec()),
            show_ratio(racc),
            format!("{} / {}", c.lost, f.lost),
        ]],
    );
    ctx.emit(
        json!({"scenario": "overload", "server": "catalytic/floor", "target_rate": round3(c.rate),
                    "ratio_delivery_p99": round3(r99), "ratio_accepted_per_sec": round3(racc)}),
    );
}
