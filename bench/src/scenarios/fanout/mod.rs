//! Fan-out: N admin clients, R rounds of `POST /api/users`; per round the time from the POST
//! write to each client's receipt of that round's `user_added`. And `compare`: fan-out for
//! catalytic and the floor in the same run, interleaved round by round (past this process's
//! descriptor limit, with the second server's clients in a peer process: `drive`, `peer`),
//! with their ratios: of the medians, and the median of the paired rounds' ratios. And `cold`: the same comparison with cold rounds beside
//! the warm ones.
//!
//! Two kinds of rounds (`Mode`): *warm* POSTs go back to back over one keep-alive connection
//! (`--gap-ms` apart); *cold* ones are what an admin's action looks like: a fresh TCP
//! connection per POST (connect, POST, close) after an idle gap (`--cold-gap-ms`, 200 ms by
//! default), so the server meets each write with cold caches and a new connection to accept.
//! Latency counts from the POST write in both, so they compare directly; the cold connect
//! (done by the kernel, before the server wakes) is reported on its own.
//!
//! Setup is `FanRunner::new` (server, reactor, one keep-alive HTTP connection) and
//! `FanRunner::connect` (clients up to N); drive is `FanRunner::round`, once per warm-up and
//! measured round of each mode; report is `Samples::summarise` into a `FanPoint`, then
//! `report` (table and JSON line per server) and `compare_report` (the ratios).

mod compare;
mod drive;
mod peer;

use super::report::table;
use super::{log, rand_hex, stop, Ctx, DEFAULT_NS};
use crate::driver::{Driver, ReadyOn};
use crate::server::{Kind, ServerProc};
use crate::stats::{fmt_num, percentile, round3, Summary};
use crate::sys;
use crate::Opts;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use compare::compare_report;
pub(super) use compare::{ratio, show_ratio};
use drive::{drive_interleaved, drive_sequential};
pub(super) use peer::{is_peer, serve_if_peer};

/// The generator's own main thread, for its run-queue wait.
const SCHED_GEN: &str = "/proc/thread-self/schedstat";

/// How a round's POST reaches the server.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Default)]
pub(super) enum Mode {
    /// Back to back on the runner's keep-alive connection.
    #[default]
    Warm,
    /// A fresh connection for the POST, closed after the round, after an idle gap.
    Cold,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Warm => "warm",
            Mode::Cold => "cold",
        }
    }

    /// The idle time before each round.
    fn gap(self, o: &Opts) -> Duration {
        match self {
            Mode::Warm => o.gap,
            Mode::Cold => o.cold_gap,
        }
    }
}

/// One fan-out measurement at one client count and round mode.
#[derive(Clone, Default)]
pub(super) struct FanPoint {
    pub(super) n: usize,
    mode: Mode,
    gap_ms: f64,
    ready: usize,
    connect_failures: usize,
    connect_secs: f64,
    pub(super) p50: Summary,
    pub(super) p99: Summary,
    pub(super) max: Summary,
    pub(super) lost: Summary,
    pub(super) post_ms: Summary,
    /// Cold rounds: the fresh connection's connect() time.
    connect_ms: Summary,
    gen_cpu: Summary,
    server_cpu_ms: Summary,
    server_wait_ms: Summary,
    gen_wait_ms: Summary,
    /// The kept rounds' last-client times (ms), in the order run.
    max_rounds: Vec<f64>,
    /// Its rounds alternated with another server's, one each in turn (`alternate_rounds`):
    /// the k-th rounds of both ran under the same machine conditions and pair up.
    alternated: bool,
    /// Its clients were held by a peer process (`peer`), not by this one.
    peer_process: bool,
    pub(super) errors: Vec<String>,
}

impl FanPoint {
    pub(super) fn json(&self) -> Value {
        json!({
            "clients": self.n, "mode": self.mode.name(), "gap_ms": round3(self.gap_ms), "ready": self.ready, "connect_failures": self.connect_failures,
            "connect_secs": round3(self.connect_secs), "rounds": self.p50.n,
            "p50_ms": self.p50.json(), "p99_ms": self.p99.json(), "max_ms": self.max.json(),
            "lost": self.lost.json(), "post_ms": self.post_ms.json(),
            "cold_connect_ms": if self.mode == Mode::Cold { self.connect_ms.json() } else { Value::Null },
            "generator_busy_pct": self.gen_cpu.json(),
            "server_cpu_ms": self.server_cpu_ms.json(), "server_runqueue_wait_ms": self.server_wait_ms.json(),
            "generator_runqueue_wait_ms": self.gen_wait_ms.json(),
            "alternated": self.alternated, "peer_process": self.peer_process,
            "errors": self.errors,
        })
    }

    /// The table row; `with_mode` adds the round mode and its gap after the client count.
    pub(super) fn row(&self, kind: Kind, with_mode: bool) -> Vec<String> {
        let mut r = vec![kind.name().into(), self.n.to_string()];
        if with_mode {
            r.push(format!("{} {:.0} ms", self.mode.name(), self.gap_ms));
        }
        r.extend([
            self.ready.to_string(),
            self.p50.show(),
            self.p99.show(),
            self.max.show(),
            fmt_num(self.lost.median),
            self.post_ms.show(),
            fmt_num(self.server_cpu_ms.median),
            fmt_num(self.server_wait_ms.median),
            fmt_num(self.gen_cpu.median),
            fmt_num(self.gen_wait_ms.median),
        ]);
        r
    }
}

pub(super) const FANOUT_HEAD: [&str; 12] = [
    "server",
    "clients",
    "ready",
    "p50 ms",
    "p99 ms",
    "max ms (last client)",
    "lost",
    "POST answer ms",
    "server CPU ms",
    "server runq ms",
    "gen busy %",
    "gen runq ms",
];

/// What one round measured. Latencies in ms; `NAN` where a round had no deliveries.
struct RoundSample {
    /// POST write → its answer; `None` when no answer came.
    post_ms: Option<f64>,
    /// Cold rounds: connect() of the fresh connection.
    connect_ms: Option<f64>,
    p50: f64,
    p99: f64,
    /// The last client's latency: the figure the targets are about.
    max: f64,
    lost: f64,
    gen_busy_pct: f64,
    /// The server reactor's (on-CPU ms, run-queue wait ms), when /proc could be read.
    server: Option<(f64, f64)>,
    gen_wait_ms: Option<f64>,
}

/// The rounds of one mode at one client count, under way on one runner.
struct ModeRun {
    point: FanPoint,
    samples: Samples,
    /// The driver's count of dropped clients when the rounds began.
    dropped0: usize,
    /// Rounds run so far, warm-up included.
    done: usize,
}

/// The measured rounds' samples, per column, before they become medians.
#[derive(Default, Clone)]
struct Samples {
    p50: Vec<f64>,
    p99: Vec<f64>,
    max: Vec<f64>,
    lost: Vec<f64>,
    post: Vec<f64>,
    connect: Vec<f64>,
    gen_busy: Vec<f64>,
    server_cpu: Vec<f64>,
    server_wait: Vec<f64>,
    gen_wait: Vec<f64>,
}

impl Samples {
    fn add(&mut self, s: RoundSample) {
        if let Some(ms) = s.post_ms {
            self.post.push(ms);
        }
        if let Some(ms) = s.connect_ms {
            self.connect.push(ms);
        }
        self.p50.push(s.p50);
        self.p99.push(s.p99);
        self.max.push(s.max);
        self.lost.push(s.lost);
        self.gen_busy.push(s.gen_busy_pct);
        if let Some((cpu, wait)) = s.server {
            self.server_cpu.push(cpu);
            self.server_wait.push(wait);
        }
        if let Some(wait) = s.gen_wait_ms {
            self.gen_wait.push(wait);
        }
    }

    /// Every column by name (the names of a peer's answer).
    fn columns(&mut self) -> [(&'static str, &mut Vec<f64>); 10] {
        [
            ("p50", &mut self.p50),
            ("p99", &mut self.p99),
            ("max", &mut self.max),
            ("lost", &mut self.lost),
            ("post", &mut self.post),
            ("connect", &mut self.connect),
            ("gen_busy", &mut self.gen_busy),
            ("server_cpu", &mut self.server_cpu),
            ("server_wait", &mut self.server_wait),
            ("gen_wait", &mut self.gen_wait),
        ]
    }

    /// `{column: [ms, …]}`; a round without a figure (NaN) is `null`.
    fn json(&self) -> Value {
        let mut c = self.clone();
        Value::Object(
            c.columns()
                .into_iter()
                .map(|(k, v)| (k.to_string(), json!(v)))
                .collect(),
        )
    }

    /// The inverse of `json`; missing columns stay empty, `null` becomes NaN.
    fn from_json(v: &Value) -> Samples {
        let mut s = Samples::default();
        for (k, col) in s.columns() {
            if let Some(a) = v[k].as_array() {
                *col = a.iter().map(|x| x.as_f64().unwrap_or(f64::NAN)).collect();
            }
        }
        s
    }

    /// Median (min–max) of every column into `p`.
    fn summarise(&self, p: &mut FanPoint) {
        p.p50 = Summary::of(&self.p50);
        p.p99 = Summary::of(&self.p99);
        p.max = Summary::of(&self.max);
        p.max_rounds = self.max.clone();
        p.lost = Summary::of(&self.lost);
        p.post_ms = Summary::of(&self.post);
        p.connect_ms = Summary::of(&self.connect);
        p.gen_cpu = Summary::of(&self.gen_busy);
        p.server_cpu_ms = Summary::of(&self.server_cpu);
        p.server_wait_ms = Summary::of(&self.server_wait);
        p.gen_wait_ms = Summary::of(&self.gen_wait);
    }
}

/// One server (or the nodes of a cluster) under the fan-out probe: the process it started,
/// the generator's reactor, and the keep-alive HTTP connection the POSTs go over.
pub(super) struct FanRunner {
    kind: Kind,
    /// The server this runner started and stops (none for a cluster's nodes: their owner
    /// stops them).
    srv: Option<ServerProc>,
    cookie: String,
    /// Where the admin clients go, spread evenly; the POSTs go to the first.
    nodes: Vec<SocketAddr>,
    d: Driver,
    h: usize,
    nonce: String,
    /// `/proc/PID/schedstat` of each server's main thread (its reactor).
    sched_srv: Vec<String>,
    errors: Vec<String>,
    /// Set while a peer process holds this server's clients (`drive`): the rounds run there.
    peer: Option<peer::Peer>,
}

impl FanRunner {
    /// Setup: a fresh server, a reactor that keeps exact per-client latencies, the HTTP
    /// connection, and this run's round marker (`bench.<nonce>.<round>@example.com`).
    pub(super) fn new(ctx: &Ctx, kind: Kind) -> Result<FanRunner, String> {
        let srv = ctx.start(kind, None)?;
        let (addr, pid, cookie) = (srv.addr, srv.pid, srv.cookie.clone());
        let mut r = FanRunner::attach(kind, vec![addr], &[pid], cookie, ctx.o)?;
        r.srv = Some(srv);
        Ok(r)
    }

    /// Setup on servers that are already running: admin clients spread over `nodes`, POSTs
    /// to the first; `pids` (may be empty) are the processes whose CPU time is reported.
    pub(super) fn attach(
        kind: Kind,
        nodes: Vec<SocketAddr>,
        pids: &[u32],
        cookie: String,
        o: &Opts,
    ) -> Result<FanRunner, String> {
        let first = *nodes.first().ok_or("no server to attach to")?;
        let mut d = Driver::new(first, ReadyOn::Initial, o.per_addr).map_err(|e| e.to_string())?;
        let h = d.http_open().map_err(|e| format!("HTTP connect: {e}"))?;
        let nonce = rand_hex();
        d.marker = format!("bench.{nonce}.").into_bytes();
        d.exact = true;
        Ok(FanRunner {
            kind,
            srv: None,
            cookie,
            nodes,
            d,
            h,
            nonce,
            sched_srv: pids
                .iter()
                .map(|p| format!("/proc/{p}/schedstat"))
                .collect(),
            errors: Vec::new(),
            peer: None,
        })
    }

    /// Bring the admin clients up to `n` (keeping those already open), then run the rounds
    /// of each mode in turn (warm-up rounds first in each): one point per mode.
    pub(super) fn measure(
        &mut self,
        ctx: &Ctx,
        n: usize,
        modes: &[Mode],
    ) -> Result<Vec<FanPoint>, String> {
        let connected = self.ready(ctx, n);
        if connected.ready == 0 {
            return Ok(vec![connected]);
        }
        let mut pts = Vec::new();
        for &mode in modes {
            let mut run = self.start_mode(ctx.o, mode, &connected);
            for _ in 0..ctx.o.warmup + ctx.o.rounds {
                self.step(ctx.o, &mut run)?;
            }
            pts.push(self.end_mode(ctx.o, run));
        }
        Ok(pts)
    }

    /// Open clients up to `n` and let the server settle: the point with the connect figures
    /// (with an error, and no rounds to run, when no client could connect).
    fn ready(&mut self, ctx: &Ctx, n: usize) -> FanPoint {
        if let Some(p) = &mut self.peer {
            // The peer runs this very function on its side.
            return p.ready(ctx, n);
        }
        let mut connected = self.connect(ctx, n);
        if connected.ready == 0 {
            connected.errors.push("no client connected".into());
        } else {
            self.d.idle(Duration::from_millis(500));
        }
        connected
    }

    /// The rounds of one mode begin (`step` runs each, `end_mode` sums them up).
    fn start_mode(&self, o: &Opts, mode: Mode, connected: &FanPoint) -> ModeRun {
        ModeRun {
            point: FanPoint {
                mode,
                gap_ms: mode.gap(o).as_secs_f64() * 1000.0,
                ..connected.clone()
            },
            samples: Samples::default(),
            dropped0: self.d.n_dropped,
            done: 0,
        }
    }

    /// One round of `run`'s mode after its idle gap; warm-up rounds are not kept.
    fn step(&mut self, o: &Opts, run: &mut ModeRun) -> Result<(), String> {
        if let Some(p) = &mut self.peer {
            return p.step(o, run.point.mode);
        }
        self.d.idle(run.point.mode.gap(o));
        let s = self.round(o, run.point.mode, &mut run.point.errors)?;
        if run.done >= o.warmup {
            run.samples.add(s);
        }
        run.done += 1;
        Ok(())
    }

    /// The mode's point: medians of the kept rounds, and what was lost.
    fn end_mode(&mut self, o: &Opts, mut run: ModeRun) -> FanPoint {
        match &mut self.peer {
            // The peer notes its own dropped clients.
            Some(peer) => peer.end(o, &mut run),
            None => self.note_dropped(&mut run.point, run.dropped0),
        }
        let mut p = run.point;
        run.samples.summarise(&mut p);
        note_lost(o, &mut p);
        log(
            o,
            format!(
                "[{}] fan-out N={} {}: max {} ms, p99 {} ms, POST answered {} ms (medians)",
                self.kind.name(),
                p.n,
                p.mode.name(),
                fmt_num(p.max.median),
                fmt_num(p.p99.median),
                fmt_num(p.post_ms.median)
            ),
        );
        p
    }

    /// Setup for one client count: open admin streams until `n` are ready. The point comes
    /// back with the connect figures filled in and the connect failures as errors.
    fn connect(&mut self, ctx: &Ctx, n: usize) -> FanPoint {
        let o = ctx.o;
        let d = &mut self.d;
        let mut p = FanPoint {
            n,
            ..Default::default()
        };
        d.fail_reasons.clear();
        let t = Instant::now();
        let k = self.nodes.len();
        for (i, &addr) in self.nodes.iter().enumerate() {
            // An even share per node, the first nodes taking the remainder.
            let want = n / k + usize::from(i < n % k);
            let have = d.ready_open_on(i as u8);
            if have < want {
                d.set_server(addr, i as u8);
                let cookie = self.cookie.clone();
                d.connect_many(
                    want - have,
                    o.inflight,
                    ctx.deadline_for(want - have),
                    |_| ("/admin/stream".into(), Some(cookie.clone())),
                );
            }
        }
        d.set_server(self.nodes[0], 0);
        p.connect_secs = t.elapsed().as_secs_f64();
        p.ready = d.ready_open();
        p.connect_failures = n.saturating_sub(p.ready);
        for (r, c) in &d.fail_reasons {
            p.errors.push(format!("connect: {r} ×{c}"));
        }
        log(
            o,
            format!(
                "[{}] fan-out: {} of {n} clients ready in {:.2} s",
                self.kind.name(),
                p.ready,
                p.connect_secs
            ),
        );
        p
    }

    /// Drive one round: POST a user whose e-mail carries the round number (warm: on the
    /// keep-alive connection; cold: on a fresh one, closed afterwards), run the reactor until
    /// every ready client has that round's `user_added` (or the POST failed, or the timeout),
    /// and read what it cost. The round's problems go to `errors`; only an HTTP connection
    /// that cannot be (re)opened ends the measurement.
    fn round(
        &mut self,
        o: &Opts,
        mode: Mode,
        errors: &mut Vec<String>,
    ) -> Result<RoundSample, String> {
        let d = &mut self.d;
        let expected = d.ready_open();
        let mut connect_ms = None;
        let h = match mode {
            Mode::Warm => {
                if let Some(e) = d.http_dead(self.h) {
                    errors.push(format!("HTTP connection lost ({e}); reopened"));
                    d.http_close(self.h);
                    self.h = d.http_open().map_err(|e| format!("HTTP reconnect: {e}"))?;
                }
                self.h
            }
            Mode::Cold => {
                let t = Instant::now();
                let h = d.http_open().map_err(|e| format!("cold connect: {e}"))?;
                connect_ms = Some(t.elapsed().as_secs_f64() * 1000.0);
                h
            }
        };
        let nonce = &self.nonce;
        let busy0 = d.busy;
        let (ss0, gs0) = (
            sys::schedstat_sum(&self.sched_srv),
            sys::schedstat(SCHED_GEN),
        );
        let (r, t0) = d.broadcast_round(h, &self.cookie, expected, o.timeout, o.spin, |r| {
            format!(
                r#"{{"first_name":"Bench","last_name":"Round {r}","email":"bench.{nonce}.{r}@example.com"}}"#
            )
        });
        let wall = t0.elapsed().as_secs_f64();
        let busy = (d.busy - busy0).as_secs_f64();
        let (ss1, gs1) = (
            sys::schedstat_sum(&self.sched_srv),
            sys::schedstat(SCHED_GEN),
        );
        let resp = d.http_take(h);
        if mode == Mode::Cold {
            d.http_close(h);
        }
        let mut lat: Vec<f64> = d.rounds[r]
            .lat_us
            .iter()
            .map(|&u| u as f64 / 1000.0)
            .collect();
        lat.sort_by(|a, b| a.total_cmp(b));
        let got = d.rounds[r].got as usize;
        d.rounds[r].lat_us = Vec::new();
        d.rounds[r].nodes = Vec::new();
        match &resp {
            Some(x) if x.status == 201 => {}
            Some(x) => errors.push(format!(
                "round {r}: POST /api/users answered {} {}",
                x.status,
                String::from_utf8_lossy(&x.body)
            )),
            None => errors.push(format!(
                "round {r}: no answer to POST /api/users within {:?}",
                o.timeout
            )),
        }
        let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e6;
        Ok(RoundSample {
            post_ms: resp.map(|x| x.at.saturating_duration_since(t0).as_secs_f64() * 1000.0),
            connect_ms,
            p50: percentile(&lat, 50.0).unwrap_or(f64::NAN),
            p99: percentile(&lat, 99.0).unwrap_or(f64::NAN),
            max: lat.last().copied().unwrap_or(f64::NAN),
            lost: expected.saturating_sub(got) as f64,
            gen_busy_pct: 100.0 * busy / wall.max(1e-9),
            server: match (ss0, ss1) {
                (Some(a), Some(b)) => Some((ms(a.0, b.0), ms(a.1, b.1))),
                _ => None,
            },
            gen_wait_ms: match (gs0, gs1) {
                (Some(a), Some(b)) => Some(ms(a.1, b.1)),
                _ => None,
            },
        })
    }

    /// Clients that dropped out during the rounds are an error of the point: the latency
    /// figures alone would hide them.
    fn note_dropped(&self, p: &mut FanPoint, n_dropped0: usize) {
        let d = &self.d;
        if d.n_dropped > n_dropped0 {
            let after: Vec<String> = d
                .fail_reasons
                .iter()
                .filter(|(k, _)| k.starts_with("after ready"))
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect();
            p.errors.push(format!(
                "{} ready clients were dropped: {}",
                d.n_dropped - n_dropped0,
                after.join(", ")
            ));
        }
    }

    /// Close every admin client (here or in the peer), then answer pings for a second so
    /// the server has closed them too before anything else is measured.
    fn close_clients(&mut self, o: &Opts) {
        if let Some(p) = &mut self.peer {
            if let Err(e) = p.close(o) {
                self.errors.push(e);
            }
            return;
        }
        if self.d.ws_open() == 0 {
            return;
        }
        self.d.close_all_ws();
        self.d.idle(Duration::from_millis(1000));
    }

    pub(super) fn finish(mut self, o: &Opts) -> Vec<String> {
        self.d.close_all_ws();
        let mut errors = std::mem::take(&mut self.errors);
        if let Some(p) = self.peer.take() {
            p.finish(o, &mut errors);
        }
        if let Some(srv) = self.srv.take() {
            stop(o, srv, &mut errors);
        }
        errors
    }
}

/// Deliveries that never came are an error of the point: the latency figures alone would
/// hide them.
fn note_lost(o: &Opts, p: &mut FanPoint) {
    if p.lost.max > 0.0 {
        p.errors.push(format!(
            "lost deliveries (clients without the round's user_added within {:?}): max {} in a round",
            o.timeout, p.lost.max
        ));
    }
}

/// A server's fan-out points and its run-level errors, or why it could not run.
type FanResult = Result<(Vec<FanPoint>, Vec<String>), String>;

/// What a fan-out family run does: its name in the JSON lines, the client counts, whether
/// servers are interleaved, and which rounds run at each count.
struct Plan {
    scenario: &'static str,
    ns: Vec<usize>,
    interleave: bool,
    modes: &'static [Mode],
}

impl Plan {
    fn cold(&self) -> bool {
        self.modes.contains(&Mode::Cold)
    }
}

/// `fanout`: every server found, one after the other.
pub(super) fn fanout(ctx: &mut Ctx) {
    let plan = Plan {
        scenario: "fanout",
        ns: ctx.ns(&DEFAULT_NS),
        interleave: false,
        modes: &[Mode::Warm],
    };
    fan_out(ctx, &plan);
}

/// `compare`: interleaved fan-out of both servers, then their ratios.
pub(super) fn compare(ctx: &mut Ctx) {
    let plan = Plan {
        scenario: "fanout",
        ns: ctx.ns(&DEFAULT_NS),
        interleave: true,
        modes: &[Mode::Warm],
    };
    let res = fan_out(ctx, &plan);
    compare_report(ctx, &plan, &res);
}

/// `cold`: interleaved like `compare`, warm rounds and then cold rounds at each client
/// count (default 1,000 and 10,000, the counts of the issue's targets), then the ratios.
pub(super) fn cold(ctx: &mut Ctx) {
    let plan = Plan {
        scenario: "cold",
        ns: ctx.ns(&[1000, 10_000]),
        interleave: true,
        modes: &[Mode::Warm, Mode::Cold],
    };
    let res = fan_out(ctx, &plan);
    compare_report(ctx, &plan, &res);
}

/// Fan-out for every server found; prints and emits each, and returns the points of those
/// that ran.
fn fan_out(ctx: &mut Ctx, plan: &Plan) -> Vec<(Kind, Vec<FanPoint>)> {
    let kinds: Vec<Kind> = ctx.bins.iter().map(|(k, _)| *k).collect();
    let results = if plan.interleave {
        drive_interleaved(ctx, &kinds, plan)
    } else {
        drive_sequential(ctx, &kinds, plan)
    };
    let mut all = Vec::new();
    for (k, res) in results {
        match res {
            Ok((pts, errors)) => {
                report(ctx, k, &pts, errors, plan);
                all.push((k, pts));
            }
            Err(e) => {
                eprintln!("catalytic-bench: {} on {}: {e}", plan.scenario, k.name());
                ctx.emit(json!({"scenario": plan.scenario, "server": k.name(), "error": e}));
            }
        }
    }
    all
}

/// Report one server's fan-out: the table, the errors under it, the JSON line.
fn report(ctx: &mut Ctx, k: Kind, pts: &[FanPoint], errors: Vec<String>, plan: &Plan) {
    let cold = plan.cold();
    let rows: Vec<Vec<String>> = pts.iter().map(|p| p.row(k, cold)).collect();
    let mut head: Vec<&str> = FANOUT_HEAD.to_vec();
    if cold {
        head.insert(2, "rounds, gap");
    }
    table(
        &format!(
            "fan-out — {}: medians over {} round{} (min–max)",
            k.name(),
            ctx.o.rounds,
            if ctx.o.rounds == 1 { "" } else { "s" }
        ),
        &head,
        &rows,
    );
    if cold {
        let connect: Vec<String> = pts
            .iter()
            .filter(|p| p.mode == Mode::Cold)
            .map(|p| format!("N={}: {} ms", p.n, p.connect_ms.show()))
            .collect();
        println!("  cold rounds' connect(): {}", connect.join(", "));
    }
    for p in pts {
        for e in &p.errors {
            println!("  N={} {}: {e}", p.n, p.mode.name());
        }
    }
    for e in &errors {
        println!("  {e}");
    }
    let v = json!({"scenario": plan.scenario, "server": k.name(), "rounds": ctx.o.rounds, "warmup": ctx.o.warmup,
                   "timeout_ms": ctx.o.timeout.as_millis() as u64, "interleaved": plan.interleave,
                   "points": pts.iter().map(FanPoint::json).collect::<Vec<_>>(), "errors": errors});
    ctx.emit(v);
}
