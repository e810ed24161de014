//! Reconnect wave (contract v2 resume; catalytic only, the floor has no event numbers).
//!
//! N admin clients (default 10,000) are connected to a server holding `--users` users
//! (default 1,000). They all drop (RST, as a network hand-over or a node restart looks from
//! the server), `--writes` K writes (default 10) are made while they are away, and then they
//! all reconnect at once:
//! - a *resume* wave reconnects with `?epoch=E&since=S`, S being the event number the
//!   clients last saw, so each stream gets `resumed` and the K missed events;
//! - an *initial* wave reconnects without `since` and takes a full `initial` (the whole
//!   list, ~400 bytes per user).
//!
//! A client has caught up when its stream reflects event S + K. Measured per wave: from the
//! first connect() until the last client has caught up, each client's connect() → caught
//! up (p50/p99), what each stream opened with (a resume answered with `initial` fell back),
//! events out of order (gaps or repeats), bytes received, the server's CPU time, and the
//! kernel's listen-queue overflows (machine-wide: a dropped SYN is retried after a second,
//! which can make a whole wave a second slower). The two kinds alternate on one server
//! (resume, initial, resume, …; `--waves` of each), so both meet the same machine and a
//! list that grows by only K users per wave.
//!
//! Setup is `setup` (server, users, keep-alive connections) and `Rig::connect`; drive is
//! `Rig::wave` (drop, writes, reconnect); report is `Summary`s per kind, then `report`.

use super::batch::post_users;
use super::fanout::{ratio, show_ratio};
use super::report::table;
use super::{log, rand_hex, stop, Ctx};
use crate::driver::{Driver, ReadyOn};
use crate::server::{Kind, ServerProc};
use crate::stats::{fmt_num, percentile, round3, Summary};
use crate::sys;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// How the clients come back.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Wave {
    Resume,
    Initial,
}

impl Wave {
    fn name(self) -> &'static str {
        match self {
            Wave::Resume => "resume (since)",
            Wave::Initial => "full initial",
        }
    }

    fn key(self) -> &'static str {
        match self {
            Wave::Resume => "resume",
            Wave::Initial => "initial",
        }
    }
}

/// What one wave measured.
struct WaveSample {
    kind: Wave,
    failed: usize,
    /// First connect() → the last client caught up, ms.
    all_ms: f64,
    /// Per-client connect() → caught up, ms, ascending.
    client_ms: Vec<f64>,
    opened_resumed: u64,
    opened_initial: u64,
    gaps: u64,
    bytes: u64,
    server_cpu_ms: f64,
    /// The generator's time handling events over the wave's wall time (is it the limit?).
    gen_busy_pct: f64,
    /// Connections the kernel dropped from a full listen queue meanwhile (machine-wide).
    listen_overflows: u64,
    reasons: BTreeMap<String, usize>,
}

/// One server with its users and its HTTP connections; clients come and go per wave.
struct Rig {
    srv: ServerProc,
    d: Driver,
    conns: Vec<usize>,
    nonce: String,
    users: usize,
    writes: usize,
    waves_done: usize,
    errors: Vec<String>,
}

pub(super) fn reconnect(ctx: &mut Ctx, kind: Kind) -> Result<Value, String> {
    if kind == Kind::Floor {
        return Ok(
            json!({"scenario": "reconnect", "server": kind.name(), "skipped": "the floor server has no event numbers to resume from"}),
        );
    }
    let o = ctx.o;
    let mut rig = setup(ctx, kind)?;
    let mut points = Vec::new();
    for n in ctx.ns(&[10_000]) {
        let ready = rig.connect(ctx, n);
        if ready == 0 {
            rig.errors.push(format!("N={n}: no client connected"));
            continue;
        }
        let mut samples = Vec::new();
        for _ in 0..o.waves {
            for kind in [Wave::Resume, Wave::Initial] {
                match rig.wave(ctx, n, kind) {
                    Ok(s) => samples.push(s),
                    Err(e) => rig.errors.push(format!("N={n} {}: {e}", kind.key())),
                }
            }
        }
        points.push((n, samples));
    }
    rig.d.close_all_ws();
    let mut errors = std::mem::take(&mut rig.errors);
    stop(o, rig.srv, &mut errors);
    if points.iter().all(|(_, s)| s.is_empty()) {
        return Err(format!("no wave ran: {}", errors.join("; ")));
    }
    Ok(report(ctx, kind, rig.users, rig.writes, &points, errors))
}

/// Setup: a fresh server holding `--users` users, made over `--http-conns` connections.
fn setup(ctx: &Ctx, kind: Kind) -> Result<Rig, String> {
    let o = ctx.o;
    let srv = ctx.start(kind, None)?;
    let mut d = Driver::new(srv.addr, ReadyOn::Initial, o.per_addr).map_err(|e| e.to_string())?;
    d.exact = false;
    let mut conns = Vec::new();
    for _ in 0..o.http_conns {
        conns.push(d.http_open().map_err(|e| format!("HTTP connect: {e}"))?);
    }
    let nonce = rand_hex();
    let t = Instant::now();
    let deadline = t + Duration::from_secs(600);
    let prefix = format!("pre.{nonce}");
    let (ok, other) = post_users(&mut d, &mut conns, &srv.cookie, &prefix, o.users, deadline);
    log(
        o,
        format!(
            "[{}] reconnect: {ok} users created in {:.1} s",
            kind.name(),
            t.elapsed().as_secs_f64()
        ),
    );
    let mut errors = Vec::new();
    if !other.is_empty() {
        errors.push(format!("creating the users: {other:?}"));
    }
    Ok(Rig {
        srv,
        d,
        conns,
        nonce,
        users: ok,
        writes: o.writes.unwrap_or(10),
        waves_done: 0,
        errors,
    })
}

impl Rig {
    /// Setup for one client count: close what is open, connect `n` admin streams (each
    /// takes an `initial`, which names the epoch and the position to resume from).
    fn connect(&mut self, ctx: &Ctx, n: usize) -> usize {
        let d = &mut self.d;
        d.close_all_ws();
        d.idle(Duration::from_millis(1000));
        d.set_ready_on(ReadyOn::Initial);
        let cookie = self.srv.cookie.clone();
        let t = Instant::now();
        let (ready, failed) = d.connect_many(n, ctx.o.inflight, ctx.deadline_for(n), |_| {
            ("/admin/stream".into(), Some(cookie.clone()))
        });
        log(
            ctx.o,
            format!(
                "[catalytic] reconnect N={n}: {ready} clients ready ({failed} failed) in {:.1} s, epoch {:?}, seq {:?}",
                t.elapsed().as_secs_f64(),
                d.epoch,
                d.seq_range()
            ),
        );
        d.idle(Duration::from_millis(500));
        ready
    }

    /// Drive one wave: every client drops, K writes are made, every client reconnects at
    /// once (resuming or not), and the reactor runs until each has caught up (or failed).
    fn wave(&mut self, ctx: &Ctx, n: usize, kind: Wave) -> Result<WaveSample, String> {
        let o = ctx.o;
        let d = &mut self.d;
        let epoch = d
            .epoch
            .clone()
            .ok_or("no `initial` named an epoch (not contract v2?)")?;
        let (since, hi) = d
            .seq_range()
            .ok_or("no stream carries an event number (not contract v2?)")?;
        if since != hi {
            self.errors.push(format!(
                "before a wave the clients were at different events ({since}..{hi}); resuming from {since}"
            ));
        }
        // Drop, and let the server take the resets before the writes.
        d.close_all_ws();
        d.idle(Duration::from_millis(1000));
        let prefix = format!("wave.{}.{}", self.nonce, self.waves_done);
        self.waves_done += 1;
        let deadline = Instant::now() + Duration::from_secs(60);
        let (ok, other) = post_users(
            d,
            &mut self.conns,
            &self.srv.cookie,
            &prefix,
            self.writes,
            deadline,
        );
        if !other.is_empty() {
            self.errors
                .push(format!("writes while the clients were away: {other:?}"));
        }
        let target = since + ok as u64;
        d.idle(Duration::from_millis(200));
        // Reconnect everyone at once.
        d.set_ready_on(ReadyOn::Seq(target));
        d.fail_reasons.clear();
        d.last_ready = None;
        let (r0, i0, g0, b0) = (d.opened_resumed, d.opened_initial, d.seq_gaps, d.bytes);
        let cpu0 = sys::cpu_seconds(self.srv.pid);
        let busy0 = d.busy;
        let lo0 = sys::listen_overflows();
        let path = match kind {
            Wave::Resume => format!("/admin/stream?epoch={epoch}&since={since}"),
            Wave::Initial => "/admin/stream".to_string(),
        };
        let cookie = self.srv.cookie.clone();
        let t0 = Instant::now();
        let (ready, failed) = d.connect_many(n, n, ctx.deadline_for(n), |_| {
            (path.clone(), Some(cookie.clone()))
        });
        let all_ms = d.last_ready.map_or(f64::NAN, |t| {
            t.saturating_duration_since(t0).as_secs_f64() * 1000.0
        });
        let cpu1 = sys::cpu_seconds(self.srv.pid);
        let gen_busy_pct = 100.0 * (d.busy - busy0).as_secs_f64() / t0.elapsed().as_secs_f64();
        let mut client_ms: Vec<f64> = d.ready_us.iter().map(|&u| u as f64 / 1000.0).collect();
        client_ms.sort_by(|a, b| a.total_cmp(b));
        let s = WaveSample {
            kind,
            failed,
            all_ms,
            client_ms,
            opened_resumed: d.opened_resumed - r0,
            opened_initial: d.opened_initial - i0,
            gaps: d.seq_gaps - g0,
            bytes: d.bytes - b0,
            server_cpu_ms: match (cpu0, cpu1) {
                (Some(a), Some(b)) => (b - a) * 1000.0,
                _ => f64::NAN,
            },
            gen_busy_pct,
            listen_overflows: match (lo0, sys::listen_overflows()) {
                (Some(a), Some(b)) => b.saturating_sub(a),
                _ => 0,
            },
            reasons: d.fail_reasons.clone(),
        };
        log(
            o,
            format!(
                "[catalytic] reconnect N={n} {}: {ready} caught up ({failed} failed) after {} ms; opened resumed {} / initial {}; {:.1} MB",
                kind.key(),
                fmt_num(all_ms),
                s.opened_resumed,
                s.opened_initial,
                s.bytes as f64 / 1e6
            ),
        );
        d.idle(Duration::from_millis(500));
        Ok(s)
    }
}

/// The waves of one kind at one client count, as medians over the waves.
struct KindPoint {
    n: usize,
    kind: Wave,
    waves: usize,
    all_ms: Summary,
    p50: Summary,
    p99: Summary,
    cpu_ms: Summary,
    gen_busy: Summary,
    mb: Summary,
    failed: usize,
    resumed: u64,
    initial: u64,
    gaps: u64,
    listen_overflows: u64,
    reasons: BTreeMap<String, usize>,
}

impl KindPoint {
    fn of(n: usize, kind: Wave, samples: &[&WaveSample]) -> KindPoint {
        let of = |f: &dyn Fn(&WaveSample) -> f64| {
            Summary::of(&samples.iter().map(|s| f(s)).collect::<Vec<_>>())
        };
        let mut reasons = BTreeMap::new();
        for s in samples {
            for (k, v) in &s.reasons {
                *reasons.entry(k.clone()).or_insert(0) += v;
            }
        }
        KindPoint {
            n,
            kind,
            waves: samples.len(),
            all_ms: of(&|s| s.all_ms),
            p50: of(&|s| percentile(&s.client_ms, 50.0).unwrap_or(f64::NAN)),
            p99: of(&|s| percentile(&s.client_ms, 99.0).unwrap_or(f64::NAN)),
            cpu_ms: of(&|s| s.server_cpu_ms),
            gen_busy: of(&|s| s.gen_busy_pct),
            mb: of(&|s| s.bytes as f64 / 1e6),
            failed: samples.iter().map(|s| s.failed).sum(),
            resumed: samples.iter().map(|s| s.opened_resumed).sum(),
            initial: samples.iter().map(|s| s.opened_initial).sum(),
            gaps: samples.iter().map(|s| s.gaps).sum(),
            listen_overflows: samples.iter().map(|s| s.listen_overflows).sum(),
            reasons,
        }
    }

    fn row(&self) -> Vec<String> {
        vec![
            self.n.to_string(),
            self.kind.name().into(),
            self.waves.to_string(),
            self.all_ms.show(),
            fmt_num(self.p50.median),
            fmt_num(self.p99.median),
            format!("{} / {}", self.resumed, self.initial),
            self.gaps.to_string(),
            self.failed.to_string(),
            self.listen_overflows.to_string(),
            fmt_num(self.mb.median),
            fmt_num(self.cpu_ms.median),
            fmt_num(self.gen_busy.median),
        ]
    }

    fn json(&self) -> Value {
        json!({"clients": self.n, "wave": self.kind.key(), "waves": self.waves,
               "all_caught_up_ms": self.all_ms.json(), "client_p50_ms": self.p50.json(), "client_p99_ms": self.p99.json(),
               "opened_resumed": self.resumed, "opened_initial": self.initial, "seq_gaps": self.gaps,
               "failures": self.failed, "failure_reasons": self.reasons, "listen_overflows": self.listen_overflows,
               "mb_received": self.mb.json(), "server_cpu_ms": self.cpu_ms.json(),
               "generator_busy_pct": self.gen_busy.json()})
    }
}

/// Report: one row per client count and wave kind, the resume / initial ratio, the JSON line.
fn report(
    ctx: &Ctx,
    kind: Kind,
    users: usize,
    writes: usize,
    points: &[(usize, Vec<WaveSample>)],
    errors: Vec<String>,
) -> Value {
    let mut kps = Vec::new();
    for (n, samples) in points {
        for k in [Wave::Resume, Wave::Initial] {
            let of_kind: Vec<&WaveSample> = samples.iter().filter(|s| s.kind == k).collect();
            if !of_kind.is_empty() {
                kps.push(KindPoint::of(*n, k, &of_kind));
            }
        }
    }
    table(
        &format!(
            "reconnect wave — {}: N admins drop, {writes} writes, all reconnect at once; {users} users in the list; medians over the waves (min–max)",
            kind.name()
        ),
        &[
            "clients",
            "wave",
            "waves",
            "all caught up ms",
            "client p50 ms",
            "client p99 ms",
            "opened resumed / initial",
            "seq gaps",
            "failed",
            "listen overflows",
            "MB received",
            "server CPU ms",
            "gen busy %",
        ],
        &kps.iter().map(KindPoint::row).collect::<Vec<_>>(),
    );
    let mut ratios = Vec::new();
    for (n, _) in points {
        let med = |k: Wave| {
            kps.iter()
                .find(|p| p.n == *n && p.kind == k)
                .map_or(f64::NAN, |p| p.all_ms.median)
        };
        let r = ratio(med(Wave::Resume), med(Wave::Initial));
        println!(
            "  N={n}: resume wave / initial wave (all caught up) = {}",
            show_ratio(r)
        );
        ratios.push(json!({"clients": n, "ratio_resume_to_initial": round3(r)}));
    }
    for e in &errors {
        println!("  {e}");
    }
    json!({"scenario": "reconnect", "server": kind.name(), "users": users, "writes_while_away": writes,
           "waves_each": ctx.o.waves, "points": kps.iter().map(KindPoint::json).collect::<Vec<_>>(),
           "ratios": ratios, "errors": errors})
}
