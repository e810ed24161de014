//! Burst: K writes (`--writes`, default 1,000) as fast as the API takes them, over M
//! keep-alive connections (`--http-conns`, default 8) with one request outstanding on each,
//! to N admin clients (default 1,000) — a CSV import while other admins watch. Measured per
//! burst: the time from the first POST until every admin has all K `user_added`, the POST
//! latency (write → answer) p50/p99/max over all K and how evenly the connections were
//! served (requests and p99 per connection, lowest–highest), delivery latency, losses, the
//! server's CPU. `--bursts` bursts per server, the servers interleaved burst by burst.
//!
//! Setup is `Runner::new` (server, clients, connections); drive is `Runner::burst`; report
//! is `BurstPoint::of` (medians over the bursts) and `report`, then `compare_report`.

use super::fanout::{ratio, show_ratio};
use super::report::table;
use super::{log, rand_hex, stop, Ctx};
use crate::driver::{Driver, ReadyOn};
use crate::server::{Kind, ServerProc};
use crate::stats::{fmt_num, percentile, round3, Summary};
use crate::sys;
use crate::Opts;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Dead connections replaced per burst at most.
const MAX_REOPENS: usize = 64;

/// What one burst measured. Times in ms from the first POST write.
pub(super) struct BurstSample {
    /// The last admin's receipt of the last write: every admin has all accepted writes.
    pub(super) all_delivered_ms: f64,
    /// The last POST's answer.
    posts_done_ms: f64,
    /// POST write → answer, ascending.
    pub(super) post_ms: Vec<f64>,
    /// Per connection: (requests answered, their p99 ms).
    per_conn: Vec<(usize, f64)>,
    deliv_p50: f64,
    deliv_p99: f64,
    deliv_max: f64,
    /// Admin deliveries of accepted writes that never came.
    pub(super) lost: u64,
    statuses: BTreeMap<u16, usize>,
    unanswered: usize,
    server_cpu_ms: f64,
    gen_busy_pct: f64,
}

/// One server (or the nodes of a cluster) with N admins connected and M keep-alive
/// connections.
pub(super) struct Runner {
    kind: Kind,
    /// The server this runner started and stops (none for a cluster's nodes).
    srv: Option<ServerProc>,
    cookie: String,
    /// The servers' reactors (`/proc/PID/schedstat`), for their CPU time.
    sched: Vec<String>,
    d: Driver,
    conns: Vec<usize>,
    nonce: String,
    n: usize,
    samples: Vec<BurstSample>,
    errors: Vec<String>,
}

impl Runner {
    /// Setup: a fresh server, N admin clients (histogram only: a burst is N × K
    /// deliveries), the keep-alive connections.
    fn new(ctx: &Ctx, kind: Kind) -> Result<Runner, String> {
        Runner::start(ctx, kind, ctx.ns(&[1000])[0])
    }

    /// `new` with `n` admin clients.
    pub(super) fn start(ctx: &Ctx, kind: Kind, n: usize) -> Result<Runner, String> {
        let srv = ctx.start(kind, None)?;
        let (addr, pid, cookie) = (srv.addr, srv.pid, srv.cookie.clone());
        let mut r = Runner::attach(ctx, kind, &[addr], &[pid], cookie, n)?;
        r.srv = Some(srv);
        Ok(r)
    }

    /// Setup on servers that are already running: `n` admin clients and the keep-alive
    /// connections, both spread evenly over `nodes`.
    pub(super) fn attach(
        ctx: &Ctx,
        kind: Kind,
        nodes: &[SocketAddr],
        pids: &[u32],
        cookie: String,
        n: usize,
    ) -> Result<Runner, String> {
        let o = ctx.o;
        let first = *nodes.first().ok_or("no server to attach to")?;
        let mut d = Driver::new(first, ReadyOn::Initial, o.per_addr).map_err(|e| e.to_string())?;
        d.exact = false;
        let nonce = rand_hex();
        d.marker = format!("bench.{nonce}.").into_bytes();
        let k = nodes.len();
        for (i, &addr) in nodes.iter().enumerate() {
            let want = n / k + usize::from(i < n % k);
            d.set_server(addr, i as u8);
            let cookie = cookie.clone();
            d.connect_many(want, o.inflight, ctx.deadline_for(want), |_| {
                ("/admin/stream".into(), Some(cookie.clone()))
            });
        }
        let ready = d.ready_open();
        log(
            o,
            format!("[{}] burst: {ready} of {n} clients ready", kind.name()),
        );
        if ready == 0 {
            return Err("no client connected".into());
        }
        let mut conns = Vec::new();
        for c in 0..o.http_conns {
            d.set_server(nodes[c % k], (c % k) as u8);
            conns.push(d.http_open().map_err(|e| format!("HTTP connect: {e}"))?);
        }
        d.set_server(first, 0);
        d.idle(Duration::from_millis(500));
        Ok(Runner {
            kind,
            srv: None,
            cookie,
            sched: pids
                .iter()
                .map(|p| format!("/proc/{p}/schedstat"))
                .collect(),
            d,
            conns,
            nonce,
            n,
            samples: Vec::new(),
            errors: Vec::new(),
        })
    }

    /// Drive one burst: keep every connection busy with the next POST until K are sent,
    /// then run until every answer and every admin's deliveries are in (or the timeout
    /// after the last answer).
    pub(super) fn burst(&mut self, o: &Opts) -> BurstSample {
        let k = o.writes.unwrap_or(1000);
        let d = &mut self.d;
        let expected = d.ready_open() as u64;
        d.hist.clear();
        d.last_rx = None;
        let ss0 = sys::schedstat_sum(&self.sched);
        let busy0 = d.busy;
        let mut post_ms = Vec::with_capacity(k);
        let mut per_conn: Vec<Vec<f64>> = vec![Vec::new(); self.conns.len()];
        let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
        let (mut sent, mut answered, mut accepted, mut reopened) = (0usize, 0usize, 0u64, 0usize);
        let mut accepted_rounds = Vec::with_capacity(k);
        let mut last_answer = None;
        let t0 = Instant::now();
        let hard_end = t0 + Duration::from_secs(120) + o.timeout;
        d.spin = o.spin;
        loop {
            for (ci, c) in self.conns.iter_mut().enumerate() {
                while let Some(x) = d.http_take(*c) {
                    let r = x.tag as usize;
                    if let Some(sent_at) = d.rounds.get(r).and_then(|r| r.t0) {
                        let ms = x.at.saturating_duration_since(sent_at).as_secs_f64() * 1000.0;
                        post_ms.push(ms);
                        per_conn[ci].push(ms);
                    }
                    *statuses.entry(x.status).or_insert(0) += 1;
                    if x.status == 201 {
                        accepted += 1;
                        accepted_rounds.push(r);
                    }
                    answered += 1;
                    last_answer = Some(x.at);
                }
                if let Some(why) = d.http_dead(*c) {
                    if reopened >= MAX_REOPENS {
                        continue;
                    }
                    // The request in flight on it, if any, stays unanswered.
                    self.errors
                        .push(format!("HTTP connection lost ({why}); reopened"));
                    d.http_close(*c);
                    reopened += 1;
                    match d.http_open() {
                        Ok(h) => *c = h,
                        Err(e) => {
                            self.errors.push(format!("HTTP reconnect: {e}"));
                            continue;
                        }
                    }
                }
                if sent < k && d.http_inflight(*c) == 0 {
                    let nonce = &self.nonce;
                    d.post_round(*c, &self.cookie, |r| {
                        format!(
                            r#"{{"first_name":"Burst","last_name":"Write {r}","email":"bench.{nonce}.{r}@example.com"}}"#
                        )
                    });
                    sent += 1;
                }
            }
            let idle_conns = self.conns.iter().all(|&c| d.http_inflight(c) == 0);
            let all_in = sent == k && idle_conns && d.hist.count() >= accepted * expected;
            let now = Instant::now();
            let settled_out = sent == k
                && idle_conns
                && last_answer.is_some_and(|t: Instant| now >= t + o.timeout);
            if all_in || settled_out || now >= hard_end {
                break;
            }
            d.poll_once(Duration::from_millis(1));
        }
        d.spin = false;
        let wall = t0.elapsed().as_secs_f64();
        let ss1 = sys::schedstat_sum(&self.sched);
        post_ms.sort_by(|a, b| a.total_cmp(b));
        let per_conn = per_conn
            .into_iter()
            .map(|mut v| {
                v.sort_by(|a, b| a.total_cmp(b));
                (v.len(), percentile(&v, 99.0).unwrap_or(f64::NAN))
            })
            .collect();
        let got: u64 = accepted_rounds
            .iter()
            .map(|&r| d.rounds.get(r).map_or(0, |x| x.got as u64).min(expected))
            .sum();
        let since = |t: Option<Instant>| {
            t.map_or(f64::NAN, |t| {
                t.saturating_duration_since(t0).as_secs_f64() * 1000.0
            })
        };
        let complete = got == accepted * expected;
        BurstSample {
            all_delivered_ms: if complete { since(d.last_rx) } else { f64::NAN },
            posts_done_ms: since(last_answer),
            post_ms,
            per_conn,
            deliv_p50: d.hist.percentile_ms(50.0),
            deliv_p99: d.hist.percentile_ms(99.0),
            deliv_max: d.hist.max_ms(),
            lost: accepted * expected - got,
            statuses,
            unanswered: sent - answered,
            server_cpu_ms: match (ss0, ss1) {
                (Some(a), Some(b)) => b.0.saturating_sub(a.0) as f64 / 1e6,
                _ => f64::NAN,
            },
            gen_busy_pct: 100.0 * (d.busy - busy0).as_secs_f64() / wall.max(1e-9),
        }
    }

    /// Events the admin streams saw out of their `seq` order (gaps or repeats), so far.
    pub(super) fn seq_gaps(&self) -> u64 {
        self.d.seq_gaps
    }

    pub(super) fn finish(mut self, o: &Opts) -> (Vec<BurstSample>, Vec<String>) {
        self.d.close_all_ws();
        let mut errors = std::mem::take(&mut self.errors);
        if let Some(srv) = self.srv.take() {
            stop(o, srv, &mut errors);
        }
        (self.samples, errors)
    }
}

/// A server's bursts as medians (min–max) over the bursts.
pub(super) struct BurstPoint {
    n: usize,
    bursts: usize,
    pub(super) all_delivered_ms: Summary,
    posts_done_ms: Summary,
    pub(super) posts_per_sec: Summary,
    pub(super) post_p50: Summary,
    pub(super) post_p99: Summary,
    post_max: Summary,
    /// Per burst: the lowest and highest per-connection p99, and requests per connection.
    conn_p99_lo: Summary,
    conn_p99_hi: Summary,
    conn_n_lo: Summary,
    conn_n_hi: Summary,
    deliv_p50: Summary,
    deliv_p99: Summary,
    deliv_max: Summary,
    pub(super) lost: u64,
    pub(super) unanswered: usize,
    pub(super) statuses: BTreeMap<u16, usize>,
    server_cpu_ms: Summary,
    gen_busy_pct: Summary,
}

impl BurstPoint {
    pub(super) fn of(n: usize, s: &[BurstSample]) -> BurstPoint {
        let of =
            |f: &dyn Fn(&BurstSample) -> f64| Summary::of(&s.iter().map(f).collect::<Vec<_>>());
        let pct = |q: f64| move |b: &BurstSample| percentile(&b.post_ms, q).unwrap_or(f64::NAN);
        let conn = |hi: bool, f: fn(&(usize, f64)) -> f64| {
            move |b: &BurstSample| {
                let v = b.per_conn.iter().map(f).filter(|x| x.is_finite());
                if hi {
                    v.fold(f64::NAN, f64::max)
                } else {
                    v.fold(f64::NAN, f64::min)
                }
            }
        };
        let mut statuses = BTreeMap::new();
        for b in s {
            for (k, v) in &b.statuses {
                *statuses.entry(*k).or_insert(0) += v;
            }
        }
        BurstPoint {
            n,
            bursts: s.len(),
            all_delivered_ms: of(&|b| b.all_delivered_ms),
            posts_done_ms: of(&|b| b.posts_done_ms),
            posts_per_sec: of(&|b| b.post_ms.len() as f64 / (b.posts_done_ms / 1000.0)),
            post_p50: of(&pct(50.0)),
            post_p99: of(&pct(99.0)),
            post_max: of(&pct(100.0)),
            conn_p99_lo: of(&conn(false, |c| c.1)),
            conn_p99_hi: of(&conn(true, |c| c.1)),
            conn_n_lo: of(&conn(false, |c| c.0 as f64)),
            conn_n_hi: of(&conn(true, |c| c.0 as f64)),
            deliv_p50: of(&|b| b.deliv_p50),
            deliv_p99: of(&|b| b.deliv_p99),
            deliv_max: of(&|b| b.deliv_max),
            lost: s.iter().map(|b| b.lost).sum(),
            unanswered: s.iter().map(|b| b.unanswered).sum(),
            statuses,
            server_cpu_ms: of(&|b| b.server_cpu_ms),
            gen_busy_pct: of(&|b| b.gen_busy_pct),
        }
    }

    pub(super) fn row(&self, kind: Kind) -> Vec<String> {
        vec![
            kind.name().into(),
            self.n.to_string(),
            self.all_delivered_ms.show(),
            fmt_num(self.posts_per_sec.median),
            fmt_num(self.post_p50.median),
            self.post_p99.show(),
            fmt_num(self.post_max.median),
            format!(
                "{}–{}",
                fmt_num(self.conn_p99_lo.median),
                fmt_num(self.conn_p99_hi.median)
            ),
            format!("{:.0}–{:.0}", self.conn_n_lo.median, self.conn_n_hi.median),
            format!(
                "{} / {} / {}",
                fmt_num(self.deliv_p50.median),
                fmt_num(self.deliv_p99.median),
                fmt_num(self.deliv_max.median)
            ),
            self.lost.to_string(),
            fmt_num(self.server_cpu_ms.median),
            fmt_num(self.gen_busy_pct.median),
        ]
    }

    pub(super) fn json(&self) -> Value {
        json!({"clients": self.n, "bursts": self.bursts, "all_delivered_ms": self.all_delivered_ms.json(),
               "posts_done_ms": self.posts_done_ms.json(), "posts_per_sec": self.posts_per_sec.json(),
               "post_p50_ms": self.post_p50.json(), "post_p99_ms": self.post_p99.json(), "post_max_ms": self.post_max.json(),
               "conn_p99_lowest_ms": self.conn_p99_lo.json(), "conn_p99_highest_ms": self.conn_p99_hi.json(),
               "conn_requests_lowest": self.conn_n_lo.json(), "conn_requests_highest": self.conn_n_hi.json(),
               "delivery_p50_ms": self.deliv_p50.json(), "delivery_p99_ms": self.deliv_p99.json(), "delivery_max_ms": self.deliv_max.json(),
               "lost": self.lost, "unanswered": self.unanswered,
               "http_statuses": self.statuses.iter().map(|(k, v)| (k.to_string(), json!(v))).collect::<serde_json::Map<_, _>>(),
               "server_cpu_ms": self.server_cpu_ms.json(), "generator_busy_pct": self.gen_busy_pct.json()})
    }
}

/// `burst`: every server found, interleaved burst by burst; each reported, then the ratios.
pub(super) fn burst(ctx: &mut Ctx) {
    let o = ctx.o;
    let kinds: Vec<Kind> = ctx.bins.iter().map(|(k, _)| *k).collect();
    let mut runners: Vec<(Kind, Result<Runner, String>)> =
        kinds.iter().map(|&k| (k, Runner::new(ctx, k))).collect();
    for b in 0..o.bursts {
        for (_, r) in runners.iter_mut() {
            let Ok(r) = r else { continue };
            let s = r.burst(o);
            log(
                o,
                format!(
                    "[{}] burst {b}: all delivered after {} ms, POST p50 {} / p99 {} ms, lost {}",
                    r.kind.name(),
                    fmt_num(s.all_delivered_ms),
                    fmt_num(percentile(&s.post_ms, 50.0).unwrap_or(f64::NAN)),
                    fmt_num(percentile(&s.post_ms, 99.0).unwrap_or(f64::NAN)),
                    s.lost
                ),
            );
            r.samples.push(s);
            r.d.idle(Duration::from_millis(1000));
        }
    }
    let mut points = Vec::new();
    for (k, r) in runners {
        match r {
            Ok(r) => {
                let n = r.n;
                let (samples, errors) = r.finish(o);
                let p = BurstPoint::of(n, &samples);
                ctx.emit(report(o, k, &p, errors));
                points.push((k, p));
            }
            Err(e) => {
                eprintln!("catalytic-bench: burst on {}: {e}", k.name());
                ctx.emit(json!({"scenario": "burst", "server": k.name(), "error": e}));
            }
        }
    }
    compare_report(ctx, &points);
}

/// Report one server: the table row, its errors, the JSON line.
fn report(o: &Opts, kind: Kind, p: &BurstPoint, errors: Vec<String>) -> Value {
    let k = o.writes.unwrap_or(1000);
    table(
        &format!(
            "burst — {}: {k} writes over {} keep-alive connections (one outstanding each); medians over {} bursts (min–max)",
            kind.name(),
            o.http_conns,
            p.bursts
        ),
        &[
            "server",
            "clients",
            "all delivered ms",
            "POST/s",
            "POST p50 ms",
            "POST p99 ms",
            "POST max ms",
            "per-conn p99 ms",
            "per-conn requests",
            "delivery p50 / p99 / max ms",
            "lost",
            "server CPU ms",
            "gen busy %",
        ],
        &[p.row(kind)],
    );
    let non201: usize = p
        .statuses
        .iter()
        .filter(|(s, _)| **s != 201)
        .map(|(_, c)| c)
        .sum();
    if non201 > 0 || p.unanswered > 0 {
        println!("  answers: {:?}, unanswered {}", p.statuses, p.unanswered);
    }
    for e in &errors {
        println!("  {e}");
    }
    json!({"scenario": "burst", "server": kind.name(), "writes": k, "http_conns": o.http_conns,
           "point": p.json(), "errors": errors})
}

/// The catalytic / floor ratios, and the issue's fairness figure (POST p99 / p50).
fn compare_report(ctx: &mut Ctx, points: &[(Kind, BurstPoint)]) {
    let find = |kind: Kind| points.iter().find(|(k, _)| *k == kind).map(|(_, p)| p);
    let (Some(c), Some(f)) = (find(Kind::Catalytic), find(Kind::Floor)) else {
        return;
    };
    let r_all = ratio(c.all_delivered_ms.median, f.all_delivered_ms.median);
    let fair_c = ratio(c.post_p99.median, c.post_p50.median);
    let fair_f = ratio(f.post_p99.median, f.post_p50.median);
    table(
        "burst — catalytic / floor (same run, medians over the bursts)",
        &[
            "clients",
            "all delivered ms c / f",
            "ratio",
            "POST p99 / p50, catalytic",
            "POST p99 / p50, floor",
        ],
        &[vec![
            c.n.to_string(),
            format!(
                "{} / {}",
                fmt_num(c.all_delivered_ms.median),
                fmt_num(f.all_delivered_ms.median)
            ),
            show_ratio(r_all),
            show_ratio(fair_c),
            show_ratio(fair_f),
        ]],
    );
    ctx.emit(json!({"scenario": "burst", "server": "catalytic/floor", "clients": c.n,
                    "ratio_all_delivered": round3(r_all), "catalytic_post_p99_over_p50": round3(fair_c),
                    "floor_post_p99_over_p50": round3(fair_f)}));
}
