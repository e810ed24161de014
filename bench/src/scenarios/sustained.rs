//! Sustained rate: 1,000 admin clients (`--clients`) while `POST /api/users` arrives at a
//! fixed rate for one step (`--step-secs`); the rate doubles while a step passes, then
//! bisects between the best pass and the first failure. A step passes when p99 delivery
//! latency stays within `--p99-bound-ms`, nothing is lost, every POST is answered 201 and
//! the rate was reached.
//!
//! Setup is `setup` (server, clients, a pool of keep-alive HTTP connections), drive is
//! `Rig::search` over `Rig::step`s (send at the rate, then settle), report is `Step::judge`
//! per step and `report` for the run.

use super::report::table;
use super::{log, rand_hex, stop, Ctx};
use crate::driver::{Driver, ReadyOn};
use crate::server::{Kind, ServerProc};
use crate::stats::{fmt_num, round3};
use crate::sys;
use crate::Opts;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// Rate steps at most per run (doubling from 10/s reaches 20,000/s in 11).
const MAX_STEPS: usize = 16;
/// Dead HTTP connections reopened per step at most: a server refusing them ends the step's
/// sending instead of spinning on reconnects.
const MAX_REOPENS: usize = 64;

/// One rate step's outcome: its table row and JSON point.
struct Step {
    rate: f64,
    pass: bool,
    json: Value,
    row: Vec<String>,
}

/// What the sending half of a step did.
pub(super) struct Sent {
    /// POSTs the step should have made, and made.
    pub(super) total: usize,
    pub(super) sent: usize,
    /// Most POSTs due but not yet sent (every connection busy) at any moment.
    pub(super) max_backlog: usize,
    pub(super) secs: f64,
    pub(super) server_cpu_pct: f64,
    pub(super) gen_busy_pct: f64,
}

/// The step's HTTP answers by status, and the connections reopened on the way.
#[derive(Default)]
pub(super) struct Answers {
    pub(super) statuses: BTreeMap<u16, usize>,
    pub(super) reopened: usize,
    /// Dead connections replaced at most this many times; 0 = `MAX_REOPENS`. (A server
    /// that closes the connection after each refusal needs more.)
    pub(super) max_reopens: usize,
    /// The rounds (request tags) answered 201.
    pub(super) accepted: Vec<usize>,
    /// 503 answers that carried `Retry-After`.
    pub(super) retry_after: usize,
    /// POST write → answer, ms, in the order answered.
    pub(super) post_ms: Vec<f64>,
}

impl Answers {
    /// Take every answer that arrived; replace dead connections (bounded per step).
    pub(super) fn drain(&mut self, d: &mut Driver, conns: &mut [usize]) {
        let budget = if self.max_reopens == 0 {
            MAX_REOPENS
        } else {
            self.max_reopens
        };
        for c in conns.iter_mut() {
            while let Some(x) = d.http_take(*c) {
                *self.statuses.entry(x.status).or_insert(0) += 1;
                if let Some(t0) = d.rounds.get(x.tag as usize).and_then(|r| r.t0) {
                    let ms = x.at.saturating_duration_since(t0).as_secs_f64() * 1000.0;
                    self.post_ms.push(ms);
                }
                if x.status == 201 {
                    self.accepted.push(x.tag as usize);
                } else if x.status == 503 && x.retry_after.is_some() {
                    self.retry_after += 1;
                }
            }
            if d.http_dead(*c).is_some() && self.reopened < budget {
                d.http_close(*c);
                if let Ok(n) = d.http_open() {
                    *c = n;
                }
                self.reopened += 1;
            }
        }
    }
}

/// The rate search's steps, the best passing rate and the lowest failing one.
struct Search {
    steps: Vec<Step>,
    best: Option<f64>,
    worst: Option<f64>,
}

/// One server with its clients connected and its HTTP connections open.
pub(super) struct Rig {
    kind: Kind,
    pub(super) srv: ServerProc,
    pub(super) d: Driver,
    pub(super) conns: Vec<usize>,
    nonce: String,
    pub(super) ready: usize,
}

pub(super) fn sustained(ctx: &mut Ctx, kind: Kind) -> Result<Value, String> {
    let o = ctx.o;
    let mut rig = setup(ctx, kind)?;
    let search = rig.search(o);
    rig.d.close_all_ws();
    let mut errors = Vec::new();
    stop(o, rig.srv, &mut errors);
    Ok(report(o, kind, rig.ready, &search, errors))
}

/// Setup: a fresh server, N admin clients (histogram only: a step has thousands of
/// deliveries per client), `--http-conns` keep-alive connections.
pub(super) fn setup(ctx: &Ctx, kind: Kind) -> Result<Rig, String> {
    let o = ctx.o;
    let n = ctx.ns(&[1000])[0];
    let srv = ctx.start(kind, None)?;
    let mut d = Driver::new(srv.addr, ReadyOn::Initial, o.per_addr).map_err(|e| e.to_string())?;
    d.exact = false;
    let nonce = rand_hex();
    d.marker = format!("bench.{nonce}.").into_bytes();
    d.connect_many(n, o.inflight, ctx.deadline_for(n), |_| {
        ("/admin/stream".into(), Some(srv.cookie.clone()))
    });
    let ready = d.ready_open();
    log(
        o,
        format!("[{}] sustained: {ready} of {n} clients ready", kind.name()),
    );
    if ready == 0 {
        return Err("no client connected".into());
    }
    let mut conns = Vec::new();
    for _ in 0..o.http_conns {
        conns.push(d.http_open().map_err(|e| format!("HTTP connect: {e}"))?);
    }
    d.idle(Duration::from_millis(500));
    Ok(Rig {
        kind,
        srv,
        d,
        conns,
        nonce,
        ready,
    })
}

impl Rig {
    /// Drive: steps from `--start-rate`, doubling while they pass, then bisecting between
    /// the best pass and the first failure until they are within 12 %.
    fn search(&mut self, o: &Opts) -> Search {
        let mut steps: Vec<Step> = Vec::new();
        let mut rate = o.start_rate.max(1.0);
        let (mut best, mut worst): (Option<f64>, Option<f64>) = (None, None);
        for _ in 0..MAX_STEPS {
            let s = self.step(rate, o);
            log(
                o,
                format!("[{}] sustained {rate:.0}/s: {}", self.kind.name(), s.json),
            );
            if s.pass {
                best = Some(best.map_or(rate, |b: f64| b.max(rate)));
            } else {
                worst = Some(worst.map_or(rate, |w: f64| w.min(rate)));
            }
            steps.push(s);
            rate = match (best, worst) {
                (Some(b), None) => b * 2.0,
                (Some(b), Some(w)) if w / b > 1.12 => (b * w).sqrt(),
                // Even the first rate failed: go down until one passes.
                (None, Some(w)) if w > 1.0 => (w / 4.0).max(1.0),
                _ => break,
            };
            if rate > o.max_rate {
                break;
            }
            self.d.idle(Duration::from_millis(1000));
        }
        Search { steps, best, worst }
    }

    /// One step at `rate`: send for `--step-secs`, wait for the deliveries, judge.
    fn step(&mut self, rate: f64, o: &Opts) -> Step {
        self.d.hist.clear();
        let expected = self.d.ready_open();
        let mut answers = Answers::default();
        let sent = self.send_at_rate(rate, 1, o, &mut answers);
        self.settle((sent.sent * expected) as u64, o, &mut answers);
        Step::judge(rate, expected, &sent, &answers, &self.d, o)
    }

    /// Drive: POST at `rate` over the connections with fewer than `depth` requests in
    /// flight (1: no pipelining) for one step, or until three step lengths (+5 s) have
    /// passed. A POST due while every connection is full waits (`max_backlog`).
    pub(super) fn send_at_rate(
        &mut self,
        rate: f64,
        depth: usize,
        o: &Opts,
        answers: &mut Answers,
    ) -> Sent {
        let d = &mut self.d;
        let conns = &mut self.conns;
        let nonce = &self.nonce;
        let total = (rate * o.step_secs).round().max(1.0) as usize;
        let sched_srv = format!("/proc/{}/schedstat", self.srv.pid);
        let ss0 = sys::schedstat(&sched_srv);
        let busy0 = d.busy;
        let t_start = Instant::now();
        let hard_end = t_start + Duration::from_secs_f64(o.step_secs * 3.0 + 5.0);
        let mut sent = 0usize;
        let mut max_backlog = 0usize;
        let mut rr = 0usize;
        while sent < total {
            let now = Instant::now();
            if now >= hard_end {
                break;
            }
            let due = (((now - t_start).as_secs_f64() * rate) as usize + 1).min(total);
            let mut tries = 0;
            while sent < due && tries < conns.len() {
                let c = conns[rr % conns.len()];
                rr += 1;
                tries += 1;
                if d.http_inflight(c) < depth && d.http_dead(c).is_none() {
                    d.post_round(c, &self.srv.cookie, |r| {
                        format!(
                            r#"{{"first_name":"Rate","last_name":"Step","email":"bench.{nonce}.{r}@example.com"}}"#
                        )
                    });
                    sent += 1;
                    tries = 0;
                }
            }
            max_backlog = max_backlog.max(due - sent);
            answers.drain(d, conns);
            let next_due = t_start + Duration::from_secs_f64(sent as f64 / rate);
            let wait = next_due
                .saturating_duration_since(Instant::now())
                .min(Duration::from_millis(2));
            d.poll_once(wait);
        }
        let secs = t_start.elapsed().as_secs_f64();
        let ss1 = sys::schedstat(&sched_srv);
        let server_cpu_pct = match (ss0, ss1) {
            (Some(a), Some(b)) => 100.0 * b.0.saturating_sub(a.0) as f64 / 1e9 / secs.max(1e-9),
            _ => f64::NAN,
        };
        Sent {
            total,
            sent,
            max_backlog,
            secs,
            server_cpu_pct,
            gen_busy_pct: 100.0 * (d.busy - busy0).as_secs_f64() / secs.max(1e-9),
        }
    }

    /// Drive: after the last POST, wait (up to `--timeout-ms`) for the `want` deliveries and
    /// every answer.
    fn settle(&mut self, want: u64, o: &Opts, answers: &mut Answers) {
        let conns_ro: Vec<usize> = self.conns.clone();
        self.d.run_until(Instant::now() + o.timeout, |d| {
            d.hist.count() >= want && conns_ro.iter().all(|&c| d.http_inflight(c) == 0)
        });
        answers.drain(&mut self.d, &mut self.conns);
    }
}

impl Step {
    /// Report one step: latencies from the histogram, losses, pass or fail.
    fn judge(
        rate: f64,
        expected: usize,
        s: &Sent,
        answers: &Answers,
        d: &Driver,
        o: &Opts,
    ) -> Step {
        let want = (s.sent * expected) as u64;
        let lost = want.saturating_sub(d.hist.count());
        let achieved = s.sent as f64 / s.secs.max(1e-9);
        let (p50, p99, mx) = (
            d.hist.percentile_ms(50.0),
            d.hist.percentile_ms(99.0),
            d.hist.max_ms(),
        );
        let statuses = &answers.statuses;
        let non201: usize = statuses
            .iter()
            .filter(|(s, _)| **s != 201)
            .map(|(_, c)| c)
            .sum();
        let pass = lost == 0
            && non201 == 0
            && p99 <= o.p99_bound_ms
            && achieved >= 0.95 * rate
            && s.sent == s.total;
        let (srv_cpu, gen_busy, max_backlog) = (s.server_cpu_pct, s.gen_busy_pct, s.max_backlog);
        let row = vec![
            format!("{rate:.0}"),
            format!("{achieved:.0}"),
            format!("{:.0}", achieved * expected as f64),
            fmt_num(p50),
            fmt_num(p99),
            fmt_num(mx),
            lost.to_string(),
            max_backlog.to_string(),
            format!("{srv_cpu:.0}"),
            format!("{gen_busy:.0}"),
            if pass { "ok".into() } else { "FAIL".into() },
        ];
        let json = json!({"target_rate": rate, "posts": s.sent, "achieved_rate": round3(achieved),
                          "deliveries_per_sec": round3(achieved * expected as f64), "p50_ms": round3(p50), "p99_ms": round3(p99),
                          "max_ms": round3(mx), "lost": lost, "max_backlog": max_backlog,
                          "server_cpu_pct": round3(srv_cpu), "generator_busy_pct": round3(gen_busy),
                          "http_statuses": statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
                          "pass": pass});
        Step {
            rate,
            pass,
            json,
            row,
        }
    }
}

/// Report the run: every step's row, the highest passing rate, the JSON line.
fn report(o: &Opts, kind: Kind, ready: usize, s: &Search, errors: Vec<String>) -> Value {
    let (steps, best, worst) = (&s.steps, s.best, s.worst);
    let rows: Vec<Vec<String>> = steps.iter().map(|s| s.row.clone()).collect();
    table(
        &format!(
            "sustained — {}: {ready} clients, {}-s steps, pass = p99 ≤ {} ms, nothing lost, rate reached",
            kind.name(),
            o.step_secs,
            o.p99_bound_ms
        ),
        &[
            "target POST/s",
            "achieved POST/s",
            "deliveries/s",
            "p50 ms",
            "p99 ms",
            "max ms",
            "lost",
            "max backlog",
            "server CPU %",
            "gen busy %",
            "result",
        ],
        &rows,
    );
    let best_step = steps
        .iter()
        .filter(|s| s.pass)
        .max_by(|a, b| a.rate.total_cmp(&b.rate));
    println!(
        "  max sustained: {} POST/s = {} deliveries/s",
        best.map_or("-".into(), |b| format!("{b:.0}")),
        best_step.map_or("-".into(), |s| format!(
            "{:.0}",
            s.json["deliveries_per_sec"].as_f64().unwrap_or(0.0)
        ))
    );
    json!({"scenario": "sustained", "server": kind.name(), "clients": ready, "p99_bound_ms": o.p99_bound_ms,
           "step_secs": o.step_secs, "max_sustained_posts_per_sec": best.map(|b| b.round()),
           "max_sustained_deliveries_per_sec": best_step.map(|s| s.json["deliveries_per_sec"].clone()),
           "first_failing_rate": worst.map(|w| w.round()), "steps": steps.iter().map(|s| s.json.clone()).collect::<Vec<_>>(), "errors": errors})
}
