//! The scenarios: fan-out, connect storm, idle memory, sustained rate, session timers, and
//! the catalytic/floor comparison. Each prints a human table and one JSON line per server.

use crate::driver::{Driver, HttpResp, ReadyOn, Round};
use crate::server::{self, Kind, Launch, ServerProc};
use crate::stats::{fmt_num, percentile, round3, Summary};
use crate::sys;
use crate::Opts;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::io::Write;
use std::path::PathBuf;
use std::time::{Duration, Instant};

const DEFAULT_NS: [usize; 3] = [100, 1000, 10_000];

struct Ctx<'a> {
    o: &'a Opts,
    bins: Vec<(Kind, PathBuf)>,
    failed: bool,
    nofile: u64,
}

/// One fan-out measurement at one client count.
#[derive(Clone, Default)]
struct FanPoint {
    n: usize,
    ready: usize,
    connect_failures: usize,
    connect_secs: f64,
    p50: Summary,
    p99: Summary,
    max: Summary,
    lost: Summary,
    post_ms: Summary,
    gen_cpu: Summary,
    server_cpu_ms: Summary,
    server_wait_ms: Summary,
    gen_wait_ms: Summary,
    errors: Vec<String>,
}

impl FanPoint {
    fn json(&self) -> Value {
        json!({
            "clients": self.n, "ready": self.ready, "connect_failures": self.connect_failures,
            "connect_secs": round3(self.connect_secs), "rounds": self.p50.n,
            "p50_ms": self.p50.json(), "p99_ms": self.p99.json(), "max_ms": self.max.json(),
            "lost": self.lost.json(), "post_ms": self.post_ms.json(), "generator_busy_pct": self.gen_cpu.json(),
            "server_cpu_ms": self.server_cpu_ms.json(), "server_runqueue_wait_ms": self.server_wait_ms.json(),
            "generator_runqueue_wait_ms": self.gen_wait_ms.json(),
            "errors": self.errors,
        })
    }
}

fn log(o: &Opts, msg: impl AsRef<str>) {
    if !o.quiet {
        eprintln!("catalytic-bench: {}", msg.as_ref());
    }
}

fn table(title: &str, head: &[&str], rows: &[Vec<String>]) {
    let mut w: Vec<usize> = head.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < w.len() {
                w[i] = w[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<String>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:>width$}", width = w[i]))
            .collect();
        format!("| {} |", s.join(" | "))
    };
    let mut out = format!("\n{title}\n");
    out += &line(head.iter().map(|s| s.to_string()).collect());
    out += "\n";
    out += &format!(
        "|{}|",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    out += "\n";
    for r in rows {
        out += &line(r.clone());
        out += "\n";
    }
    print!("{out}");
    let _ = std::io::stdout().flush();
}

fn rand_hex() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl<'a> Ctx<'a> {
    fn emit(&mut self, mut v: Value) {
        if let Value::Object(m) = &mut v {
            m.insert(
                "machine".into(),
                json!({"cpu": sys::cpu_model(), "cpus": sys::online_cpus(), "nofile": self.nofile,
                       "generator_cpu": self.o.cpu, "server_cpu": self.o.server_cpu, "nice": self.o.nice,
                       "loadavg": sys::loadavg()}),
            );
            let ts = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0);
            m.insert("unix_time".into(), json!(ts));
            if m.contains_key("error") {
                self.failed = true;
            }
        }
        let line = v.to_string();
        println!("{line}");
        let _ = std::io::stdout().flush();
        if let Some(p) = &self.o.json_out {
            if let Ok(mut f) = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
            {
                let _ = writeln!(f, "{line}");
            }
        }
    }

    fn bin(&self, k: Kind) -> Option<PathBuf> {
        self.bins
            .iter()
            .find(|(kk, _)| *kk == k)
            .map(|(_, p)| p.clone())
    }

    fn start(&self, k: Kind, session_minutes: Option<f64>) -> Result<ServerProc, String> {
        let bin = self
            .bin(k)
            .ok_or_else(|| format!("no {} binary", k.name()))?;
        let l = Launch {
            kind: k,
            bin,
            server_cpu: self.o.server_cpu,
            nice: self.o.nice,
            heartbeat_secs: self.o.heartbeat_secs,
            session_minutes,
            extra_args: Vec::new(),
        };
        let s = server::start(&l)?;
        log(
            self.o,
            format!("[{}] started pid {} on {}", k.name(), s.pid, s.addr),
        );
        Ok(s)
    }

    fn ns(&self, default: &[usize]) -> Vec<usize> {
        let mut v = self.o.clients.clone().unwrap_or_else(|| default.to_vec());
        v.sort_unstable();
        v.dedup();
        v
    }

    fn deadline_for(&self, n: usize) -> Instant {
        Instant::now() + Duration::from_secs(30) + Duration::from_millis(3 * n as u64)
    }
}

fn stop(o: &Opts, mut s: ServerProc, errors: &mut Vec<String>) {
    let alive = s.alive();
    let how = s.stop();
    if !alive {
        errors.push(format!(
            "server had exited during the run: {how}; log: {}",
            s.log_tail()
        ));
    } else if !how.contains("exit status: 0") && !how.contains("exit code: 0") {
        log(o, format!("[{}] stop: {how}", s.kind.name()));
    }
}

// ------------------------------------------------------------------------------- fan-out

/// One server under the fan-out probe: its process, the generator's reactor, and the
/// keep-alive HTTP connection the POSTs go over.
struct FanRunner {
    kind: Kind,
    srv: ServerProc,
    d: Driver,
    h: usize,
    nonce: String,
    errors: Vec<String>,
}

impl FanRunner {
    fn new(ctx: &Ctx, kind: Kind) -> Result<FanRunner, String> {
        let srv = ctx.start(kind, None)?;
        let mut d =
            Driver::new(srv.addr, ReadyOn::Initial, ctx.o.per_addr).map_err(|e| e.to_string())?;
        let h = d.http_open().map_err(|e| format!("HTTP connect: {e}"))?;
        let nonce = rand_hex();
        d.marker = format!("bench.{nonce}.").into_bytes();
        d.exact = true;
        Ok(FanRunner {
            kind,
            srv,
            d,
            h,
            nonce,
            errors: Vec::new(),
        })
    }

    /// Bring the admin clients up to `n` (keeping those already open), then run the rounds.
    fn measure(&mut self, ctx: &Ctx, n: usize) -> Result<FanPoint, String> {
        let o = ctx.o;
        let kind = self.kind;
        let d = &mut self.d;
        let mut p = FanPoint {
            n,
            ..Default::default()
        };
        d.fail_reasons.clear();
        let have = d.ready_open();
        let t = Instant::now();
        if have < n {
            let cookie = self.srv.cookie.clone();
            d.connect_many(n - have, o.inflight, ctx.deadline_for(n - have), |_| {
                ("/admin/stream".into(), Some(cookie.clone()))
            });
        }
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
                kind.name(),
                p.ready,
                p.connect_secs
            ),
        );
        if p.ready == 0 {
            p.errors.push("no client connected".into());
            return Ok(p);
        }
        d.idle(Duration::from_millis(500));
        let (mut p50, mut p99, mut mx, mut lost, mut post, mut cpu) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let (mut scpu, mut swait, mut gwait) = (vec![], vec![], vec![]);
        let sched_srv = format!("/proc/{}/schedstat", self.srv.pid);
        let sched_gen = "/proc/thread-self/schedstat";
        let n_dropped0 = d.n_dropped;
        for k in 0..o.warmup + o.rounds {
            let expected = d.ready_open();
            let r = d.rounds.len();
            d.rounds.push(Round::default());
            if let Some(e) = d.http_dead(self.h) {
                p.errors
                    .push(format!("HTTP connection lost ({e}); reopened"));
                d.http_close(self.h);
                self.h = d.http_open().map_err(|e| format!("HTTP reconnect: {e}"))?;
            }
            let h = self.h;
            let nonce = &self.nonce;
            let body = format!(
                r#"{{"first_name":"Bench","last_name":"Round {r}","email":"bench.{nonce}.{r}@example.com"}}"#
            );
            let busy0 = d.busy;
            let (ss0, gs0) = (sys::schedstat(&sched_srv), sys::schedstat(sched_gen));
            d.spin = o.spin;
            let t0 = d.http_send(
                h,
                "POST",
                "/api/users",
                Some(&self.srv.cookie),
                Some(body.as_bytes()),
                r as u64,
            );
            d.rounds[r].t0 = Some(t0);
            d.run_until(t0 + o.timeout, |d| {
                let st = d.http_peek_status(h);
                (st.is_some() && d.rounds[r].got as usize >= expected)
                    || st.is_some_and(|s| s != 201)
                    || d.http_dead(h).is_some()
            });
            d.spin = false;
            let wall = t0.elapsed().as_secs_f64();
            let busy = (d.busy - busy0).as_secs_f64();
            let (ss1, gs1) = (sys::schedstat(&sched_srv), sys::schedstat(sched_gen));
            let resp = d.http_take(h);
            let mut lat: Vec<f64> = d.rounds[r]
                .lat_us
                .iter()
                .map(|&u| u as f64 / 1000.0)
                .collect();
            lat.sort_by(|a, b| a.total_cmp(b));
            let got = d.rounds[r].got as usize;
            d.rounds[r].lat_us = Vec::new();
            match &resp {
                Some(x) if x.status == 201 => {}
                Some(x) => p.errors.push(format!(
                    "round {r}: POST /api/users answered {} {}",
                    x.status,
                    String::from_utf8_lossy(&x.body)
                )),
                None => p.errors.push(format!(
                    "round {r}: no answer to POST /api/users within {:?}",
                    o.timeout
                )),
            }
            if k >= o.warmup {
                if let Some(x) = &resp {
                    post.push(x.at.saturating_duration_since(t0).as_secs_f64() * 1000.0);
                }
                p50.push(percentile(&lat, 50.0).unwrap_or(f64::NAN));
                p99.push(percentile(&lat, 99.0).unwrap_or(f64::NAN));
                mx.push(lat.last().copied().unwrap_or(f64::NAN));
                lost.push(expected.saturating_sub(got) as f64);
                cpu.push(100.0 * busy / wall.max(1e-9));
                let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e6;
                if let (Some(a), Some(b)) = (ss0, ss1) {
                    scpu.push(ms(a.0, b.0));
                    swait.push(ms(a.1, b.1));
                }
                if let (Some(a), Some(b)) = (gs0, gs1) {
                    gwait.push(ms(a.1, b.1));
                }
            }
            d.idle(o.gap);
        }
        p.p50 = Summary::of(&p50);
        p.p99 = Summary::of(&p99);
        p.max = Summary::of(&mx);
        p.lost = Summary::of(&lost);
        p.post_ms = Summary::of(&post);
        p.gen_cpu = Summary::of(&cpu);
        p.server_cpu_ms = Summary::of(&scpu);
        p.server_wait_ms = Summary::of(&swait);
        p.gen_wait_ms = Summary::of(&gwait);
        if p.lost.max > 0.0 {
            p.errors.push(format!(
                "lost deliveries (clients without the round's user_added within {:?}): max {} in a round",
                o.timeout, p.lost.max
            ));
        }
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
        log(
            o,
            format!(
                "[{}] fan-out N={n}: max {} ms, p99 {} ms (medians)",
                kind.name(),
                fmt_num(p.max.median),
                fmt_num(p.p99.median)
            ),
        );
        Ok(p)
    }

    fn finish(mut self, o: &Opts) -> Vec<String> {
        self.d.close_all_ws();
        let mut errors = std::mem::take(&mut self.errors);
        stop(o, self.srv, &mut errors);
        errors
    }
}

/// A server's fan-out points and its run-level errors, or why it could not run.
type FanResult = Result<(Vec<FanPoint>, Vec<String>), String>;

/// Fan-out for each server. Alone: one server after the other, clients kept open from one
/// client count to the next. With `interleave` (compare): both servers up at once, and for
/// each client count one server is measured right after the other (clients closed in
/// between), so both see the same machine conditions.
fn fanout_all(ctx: &Ctx, kinds: &[Kind], ns: &[usize], interleave: bool) -> Vec<(Kind, FanResult)> {
    let mut out = Vec::new();
    if !interleave {
        for &k in kinds {
            let res = FanRunner::new(ctx, k).map(|mut r| {
                let mut pts = Vec::new();
                for &n in ns {
                    match r.measure(ctx, n) {
                        Ok(p) => pts.push(p),
                        Err(e) => r.errors.push(e),
                    }
                }
                (pts, r.finish(ctx.o))
            });
            out.push((k, res));
        }
        return out;
    }
    let mut runners: Vec<(Kind, Result<FanRunner, String>, Vec<FanPoint>)> = kinds
        .iter()
        .map(|&k| (k, FanRunner::new(ctx, k), Vec::new()))
        .collect();
    for &n in ns {
        for (_, r, pts) in runners.iter_mut() {
            if let Ok(r) = r {
                match r.measure(ctx, n) {
                    Ok(p) => pts.push(p),
                    Err(e) => r.errors.push(e),
                }
                r.d.close_all_ws();
                r.d.idle(Duration::from_millis(1000));
            }
        }
    }
    for (k, r, pts) in runners {
        out.push((k, r.map(|r| (pts, r.finish(ctx.o)))));
    }
    out
}

fn fanout_rows(kind: Kind, pts: &[FanPoint]) -> Vec<Vec<String>> {
    pts.iter()
        .map(|p| {
            vec![
                kind.name().into(),
                p.n.to_string(),
                p.ready.to_string(),
                p.p50.show(),
                p.p99.show(),
                p.max.show(),
                fmt_num(p.lost.median),
                p.post_ms.show(),
                fmt_num(p.server_cpu_ms.median),
                fmt_num(p.server_wait_ms.median),
                fmt_num(p.gen_cpu.median),
                fmt_num(p.gen_wait_ms.median),
            ]
        })
        .collect()
}

const FANOUT_HEAD: [&str; 12] = [
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

fn fanout(ctx: &mut Ctx, kinds: &[Kind], interleave: bool) -> Vec<(Kind, Vec<FanPoint>)> {
    let ns = ctx.ns(&DEFAULT_NS);
    let mut all = Vec::new();
    for (k, res) in fanout_all(ctx, kinds, &ns, interleave) {
        match res {
            Ok((pts, errors)) => {
                table(
                    &format!(
                        "fan-out — {}: medians over {} rounds (min–max)",
                        k.name(),
                        ctx.o.rounds
                    ),
                    &FANOUT_HEAD,
                    &fanout_rows(k, &pts),
                );
                for p in &pts {
                    for e in &p.errors {
                        println!("  N={}: {e}", p.n);
                    }
                }
                for e in &errors {
                    println!("  {e}");
                }
                let v = json!({"scenario": "fanout", "server": k.name(), "rounds": ctx.o.rounds, "warmup": ctx.o.warmup,
                               "timeout_ms": ctx.o.timeout.as_millis() as u64, "interleaved": interleave,
                               "points": pts.iter().map(FanPoint::json).collect::<Vec<_>>(), "errors": errors});
                ctx.emit(v);
                all.push((k, pts));
            }
            Err(e) => ctx.emit(json!({"scenario": "fanout", "server": k.name(), "error": e})),
        }
    }
    all
}

fn compare_report(ctx: &mut Ctx, res: &[(Kind, Vec<FanPoint>)]) {
    let cat = res
        .iter()
        .find(|(k, _)| *k == Kind::Catalytic)
        .map(|(_, p)| p);
    let flo = res.iter().find(|(k, _)| *k == Kind::Floor).map(|(_, p)| p);
    let (Some(cat), Some(flo)) = (cat, flo) else {
        let which = if cat.is_none() {
            "catalytic"
        } else {
            "the floor"
        };
        println!("\ncompare — skipped: no fan-out results from {which}");
        ctx.emit(json!({"scenario": "compare", "server": "catalytic/floor", "skipped": format!("no fan-out results from {which}")}));
        return;
    };
    let ratio = |a: f64, b: f64| {
        if a.is_finite() && b.is_finite() && b > 0.0 {
            a / b
        } else {
            f64::NAN
        }
    };
    let mut rows = Vec::new();
    let mut pts = Vec::new();
    for c in cat {
        let Some(f) = flo.iter().find(|f| f.n == c.n) else {
            continue;
        };
        let (rm, r99, r50) = (
            ratio(c.max.median, f.max.median),
            ratio(c.p99.median, f.p99.median),
            ratio(c.p50.median, f.p50.median),
        );
        rows.push(vec![
            c.n.to_string(),
            fmt_num(c.max.median),
            fmt_num(f.max.median),
            format!("{}×", fmt_num(rm)),
            fmt_num(c.p99.median),
            fmt_num(f.p99.median),
            format!("{}×", fmt_num(r99)),
            format!("{}×", fmt_num(r50)),
            format!("{}/{}", fmt_num(c.lost.median), fmt_num(f.lost.median)),
        ]);
        pts.push(json!({"clients": c.n, "catalytic_max_ms": round3(c.max.median), "floor_max_ms": round3(f.max.median),
                        "ratio_max": round3(rm), "catalytic_p99_ms": round3(c.p99.median), "floor_p99_ms": round3(f.p99.median),
                        "ratio_p99": round3(r99), "ratio_p50": round3(r50),
                        "catalytic_lost": round3(c.lost.median), "floor_lost": round3(f.lost.median)}));
    }
    table(
        "compare — fan-out medians, catalytic / floor (same run)",
        &[
            "clients",
            "catalytic max ms",
            "floor max ms",
            "max ratio",
            "catalytic p99",
            "floor p99",
            "p99 ratio",
            "p50 ratio",
            "lost c/f",
        ],
        &rows,
    );
    ctx.emit(json!({"scenario": "compare", "server": "catalytic/floor", "points": pts}));
}

// ------------------------------------------------------------------------------- storm

fn storm(ctx: &mut Ctx, kind: Kind) -> Result<Value, String> {
    let o = ctx.o;
    let ns = ctx.ns(&DEFAULT_NS);
    let srv = ctx.start(kind, None)?;
    let mut errors = Vec::new();
    let mut d = Driver::new(srv.addr, ReadyOn::Initial, o.per_addr).map_err(|e| e.to_string())?;
    let mut rows = Vec::new();
    let mut pts = Vec::new();
    for &n in &ns {
        d.close_all_ws();
        d.idle(Duration::from_millis(1500));
        d.fail_reasons.clear();
        let t0 = Instant::now();
        let (ready, failed) = d.connect_many(n, n, ctx.deadline_for(n), |_| {
            ("/admin/stream".into(), Some(srv.cookie.clone()))
        });
        let wall = t0.elapsed().as_secs_f64();
        let mut v: Vec<f64> = d.ready_us.iter().map(|&u| u as f64 / 1000.0).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        let all_ms = v.last().copied().unwrap_or(f64::NAN);
        let reasons: BTreeMap<String, usize> = d.fail_reasons.clone();
        log(
            o,
            format!(
                "[{}] storm N={n}: {ready} ready, {failed} failed, last after {} ms",
                kind.name(),
                fmt_num(all_ms)
            ),
        );
        rows.push(vec![
            kind.name().into(),
            n.to_string(),
            ready.to_string(),
            failed.to_string(),
            fmt_num(percentile(&v, 50.0).unwrap_or(f64::NAN)),
            fmt_num(percentile(&v, 99.0).unwrap_or(f64::NAN)),
            fmt_num(all_ms),
            reasons
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect::<Vec<_>>()
                .join("; "),
        ]);
        pts.push(
            json!({"clients": n, "ready": ready, "failures": failed, "all_ready_ms": round3(all_ms),
                        "p50_ms": round3(percentile(&v, 50.0).unwrap_or(f64::NAN)),
                        "p99_ms": round3(percentile(&v, 99.0).unwrap_or(f64::NAN)),
                        "wall_secs": round3(wall), "failure_reasons": reasons}),
        );
    }
    d.close_all_ws();
    stop(o, srv, &mut errors);
    table(
        &format!(
            "connect storm — {}: N clients connect at once (connect() → `initial`)",
            kind.name()
        ),
        &[
            "server",
            "clients",
            "ready",
            "failed",
            "p50 ms",
            "p99 ms",
            "all ready ms",
            "failure reasons",
        ],
        &rows,
    );
    Ok(json!({"scenario": "storm", "server": kind.name(), "points": pts, "errors": errors}))
}

// ------------------------------------------------------------------------------- memory

fn memory(ctx: &mut Ctx, kind: Kind) -> Result<Value, String> {
    let o = ctx.o;
    let ns = ctx.ns(&DEFAULT_NS);
    let srv = ctx.start(kind, None)?;
    let mut errors = Vec::new();
    let mut d = Driver::new(srv.addr, ReadyOn::Initial, o.per_addr).map_err(|e| e.to_string())?;
    d.idle(Duration::from_millis(1000));
    let base = sys::rss_bytes(srv.pid).ok_or("cannot read the server's RSS")?;
    let mut rows = Vec::new();
    let mut pts = Vec::new();
    for &n in &ns {
        let have = d.ready_open();
        if have < n {
            d.connect_many(n - have, o.inflight, ctx.deadline_for(n - have), |_| {
                ("/admin/stream".into(), Some(srv.cookie.clone()))
            });
        }
        d.idle(Duration::from_millis(1500));
        let ready = d.ready_open();
        let rss = sys::rss_bytes(srv.pid).unwrap_or(0);
        let per = (rss as f64 - base as f64) / ready.max(1) as f64;
        log(
            o,
            format!(
                "[{}] memory N={n}: {ready} ready, RSS {} KiB (+{} B/conn)",
                kind.name(),
                rss / 1024,
                per.round()
            ),
        );
        rows.push(vec![
            kind.name().into(),
            n.to_string(),
            ready.to_string(),
            format!("{:.1}", base as f64 / 1048576.0),
            format!("{:.1}", rss as f64 / 1048576.0),
            format!("{:.0}", per),
        ]);
        pts.push(
            json!({"clients": n, "ready": ready, "baseline_rss_bytes": base, "rss_bytes": rss,
                        "rss_bytes_per_conn": per.round()}),
        );
    }
    d.close_all_ws();
    stop(o, srv, &mut errors);
    table(
        &format!(
            "idle memory — {}: server RSS (smaps_rollup) per idle admin connection",
            kind.name()
        ),
        &[
            "server",
            "clients",
            "ready",
            "baseline MiB",
            "RSS MiB",
            "RSS B/conn (over baseline)",
        ],
        &rows,
    );
    Ok(json!({"scenario": "memory", "server": kind.name(), "points": pts, "errors": errors}))
}

// ------------------------------------------------------------------------------- sustained

struct Step {
    rate: f64,
    pass: bool,
    json: Value,
    row: Vec<String>,
}

#[allow(clippy::too_many_arguments)]
fn sustained_step(
    d: &mut Driver,
    conns: &mut [usize],
    cookie: &str,
    nonce: &str,
    rate: f64,
    o: &Opts,
    pid: u32,
) -> Step {
    d.hist.clear();
    let expected = d.ready_open();
    let total = (rate * o.step_secs).round().max(1.0) as usize;
    let sched_srv = format!("/proc/{pid}/schedstat");
    let ss0 = sys::schedstat(&sched_srv);
    let busy0 = d.busy;
    let t_start = Instant::now();
    let hard_end = t_start + Duration::from_secs_f64(o.step_secs * 3.0 + 5.0);
    let mut sent = 0usize;
    let mut max_backlog = 0usize;
    let mut statuses: BTreeMap<u16, usize> = BTreeMap::new();
    let mut rr = 0usize;
    let mut reopened = 0;
    let drain = |d: &mut Driver,
                 conns: &mut [usize],
                 statuses: &mut BTreeMap<u16, usize>,
                 reopened: &mut usize| {
        for c in conns.iter_mut() {
            while let Some(x) = d.http_take(*c) {
                *statuses.entry(x.status).or_insert(0) += 1;
            }
            if d.http_dead(*c).is_some() && *reopened < 64 {
                d.http_close(*c);
                if let Ok(n) = d.http_open() {
                    *c = n;
                }
                *reopened += 1;
            }
        }
    };
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
            if d.http_inflight(c) == 0 && d.http_dead(c).is_none() {
                let r = d.rounds.len();
                let body = format!(
                    r#"{{"first_name":"Rate","last_name":"Step","email":"bench.{nonce}.{r}@example.com"}}"#
                );
                d.rounds.push(Round::default());
                let t0 = d.http_send(
                    c,
                    "POST",
                    "/api/users",
                    Some(cookie),
                    Some(body.as_bytes()),
                    r as u64,
                );
                d.rounds[r].t0 = Some(t0);
                sent += 1;
                tries = 0;
            }
        }
        max_backlog = max_backlog.max(due - sent);
        drain(d, conns, &mut statuses, &mut reopened);
        let next_due = t_start + Duration::from_secs_f64(sent as f64 / rate);
        let wait = next_due
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(2));
        d.poll_once(wait);
    }
    let send_secs = t_start.elapsed().as_secs_f64();
    let ss1 = sys::schedstat(&sched_srv);
    let srv_cpu = match (ss0, ss1) {
        (Some(a), Some(b)) => 100.0 * b.0.saturating_sub(a.0) as f64 / 1e9 / send_secs.max(1e-9),
        _ => f64::NAN,
    };
    let gen_busy = 100.0 * (d.busy - busy0).as_secs_f64() / send_secs.max(1e-9);
    let want = (sent * expected) as u64;
    let conns_ro: Vec<usize> = conns.to_vec();
    d.run_until(Instant::now() + o.timeout, |d| {
        d.hist.count() >= want && conns_ro.iter().all(|&c| d.http_inflight(c) == 0)
    });
    drain(d, conns, &mut statuses, &mut reopened);
    let delivered = d.hist.count();
    let lost = want.saturating_sub(delivered);
    let achieved = sent as f64 / send_secs.max(1e-9);
    let (p50, p99, mx) = (
        d.hist.percentile_ms(50.0),
        d.hist.percentile_ms(99.0),
        d.hist.max_ms(),
    );
    let non201: usize = statuses
        .iter()
        .filter(|(s, _)| **s != 201)
        .map(|(_, c)| c)
        .sum();
    let pass = lost == 0
        && non201 == 0
        && p99 <= o.p99_bound_ms
        && achieved >= 0.95 * rate
        && sent == total;
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
    let json = json!({"target_rate": rate, "posts": sent, "achieved_rate": round3(achieved),
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

fn sustained(ctx: &mut Ctx, kind: Kind) -> Result<Value, String> {
    let o = ctx.o;
    let n = ctx.ns(&[1000])[0];
    let srv = ctx.start(kind, None)?;
    let mut errors = Vec::new();
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
    let mut steps: Vec<Step> = Vec::new();
    let mut rate = o.start_rate.max(1.0);
    let (mut best, mut worst): (Option<f64>, Option<f64>) = (None, None);
    for _ in 0..16 {
        let s = sustained_step(&mut d, &mut conns, &srv.cookie, &nonce, rate, o, srv.pid);
        log(
            o,
            format!("[{}] sustained {rate:.0}/s: {}", kind.name(), s.json),
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
        d.idle(Duration::from_millis(1000));
    }
    d.close_all_ws();
    stop(o, srv, &mut errors);
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
    Ok(
        json!({"scenario": "sustained", "server": kind.name(), "clients": ready, "p99_bound_ms": o.p99_bound_ms,
              "step_secs": o.step_secs, "max_sustained_posts_per_sec": best.map(|b| b.round()),
              "max_sustained_deliveries_per_sec": best_step.map(|s| s.json["deliveries_per_sec"].clone()),
              "first_failing_rate": worst.map(|w| w.round()), "steps": steps.iter().map(|s| s.json.clone()).collect::<Vec<_>>(), "errors": errors}),
    )
}

// ------------------------------------------------------------------------------- sessions

type ReqFn<'a> = dyn FnMut(usize) -> (&'static str, String, Vec<u8>, Option<String>) + 'a;

/// Issue `total` requests over keep-alive connections (one outstanding per connection),
/// retrying a request whose connection died at most twice. Returns responses by index.
fn http_batch(
    d: &mut Driver,
    conns: &mut [usize],
    total: usize,
    deadline: Instant,
    req: &mut ReqFn,
) -> Vec<Option<HttpResp>> {
    let mut out: Vec<Option<HttpResp>> = (0..total).map(|_| None).collect();
    let mut attempts = vec![0u8; total];
    let mut queue: VecDeque<usize> = (0..total).collect();
    let mut done = 0usize;
    let mut inflight_tag: Vec<Option<usize>> = vec![None; conns.len()];
    while done < total && Instant::now() < deadline {
        for (ci, c) in conns.iter_mut().enumerate() {
            // Answers first: a connection may have answered and then been closed.
            while let Some(x) = d.http_take(*c) {
                let k = x.tag as usize;
                if inflight_tag[ci] == Some(k) {
                    inflight_tag[ci] = None;
                }
                if k < total && out[k].is_none() {
                    out[k] = Some(x);
                    done += 1;
                }
            }
            if d.http_dead(*c).is_some() {
                if let Some(t) = inflight_tag[ci].take() {
                    if attempts[t] < 3 {
                        queue.push_front(t);
                    } else {
                        done += 1;
                    }
                }
                d.http_close(*c);
                match d.http_open() {
                    Ok(n) => *c = n,
                    Err(_) => continue,
                }
            }
            if inflight_tag[ci].is_none() {
                if let Some(k) = queue.pop_front() {
                    attempts[k] += 1;
                    let (method, path, body, cookie) = req(k);
                    d.http_send(*c, method, &path, cookie.as_deref(), Some(&body), k as u64);
                    inflight_tag[ci] = Some(k);
                }
            }
        }
        d.poll_once(Duration::from_millis(5));
    }
    out
}

fn sessions(ctx: &mut Ctx, kind: Kind) -> Result<Value, String> {
    let o = ctx.o;
    if kind == Kind::Floor {
        return Ok(
            json!({"scenario": "sessions", "server": kind.name(), "skipped": "the floor server has no session streams"}),
        );
    }
    let s_total = o.sessions.max(1);
    let srv = ctx.start(kind, Some(o.session_minutes))?;
    let mut errors: Vec<String> = Vec::new();
    let mut d =
        Driver::new(srv.addr, ReadyOn::FirstMessage, o.per_addr).map_err(|e| e.to_string())?;
    let mut conns = Vec::new();
    for _ in 0..o.http_conns {
        conns.push(d.http_open().map_err(|e| format!("HTTP connect: {e}"))?);
    }
    let nonce = rand_hex();
    // 1. users
    let t = Instant::now();
    let cookie = srv.cookie.clone();
    let created = http_batch(
        &mut d,
        &mut conns,
        s_total,
        Instant::now() + Duration::from_secs(900),
        &mut |k| {
            let body = format!(
                r#"{{"first_name":"Session","last_name":"User {k}","email":"sess.{nonce}.{k}@example.com"}}"#
            );
            (
                "POST",
                "/api/users".to_string(),
                body.into_bytes(),
                Some(cookie.clone()),
            )
        },
    );
    let create_secs = t.elapsed().as_secs_f64();
    let mut users: Vec<(u64, String)> = Vec::new(); // (user id, invite token)
    let mut create_fail: BTreeMap<String, usize> = BTreeMap::new();
    for r in created.iter() {
        match r {
            Some(x) if x.status == 201 => {
                let v: Value = serde_json::from_slice(&x.body).unwrap_or(Value::Null);
                let id = v["id"].as_u64();
                let tok = v["invite_url"]
                    .as_str()
                    .and_then(|u| u.split("token=").nth(1))
                    .map(|s| s.split('&').next().unwrap_or("").to_string());
                match (id, tok) {
                    (Some(i), Some(tk)) if !tk.is_empty() => users.push((i, tk)),
                    _ => {
                        *create_fail
                            .entry("201 without id/invite_url token".into())
                            .or_insert(0) += 1
                    }
                }
            }
            Some(x) => *create_fail.entry(format!("http {}", x.status)).or_insert(0) += 1,
            None => *create_fail.entry("no answer".into()).or_insert(0) += 1,
        }
    }
    log(
        o,
        format!(
            "[{}] sessions: {} users created in {create_secs:.1} s",
            kind.name(),
            users.len()
        ),
    );
    // 2. activation
    let t = Instant::now();
    let toks: Vec<String> = users.iter().map(|u| u.1.clone()).collect();
    let activated = http_batch(
        &mut d,
        &mut conns,
        users.len(),
        Instant::now() + Duration::from_secs(900),
        &mut |k| {
            (
                "POST",
                "/api/session/activate".to_string(),
                format!(r#"{{"token":"{}"}}"#, toks[k]).into_bytes(),
                None,
            )
        },
    );
    let activate_secs = t.elapsed().as_secs_f64();
    let mut sess: Vec<(String, String, String)> = Vec::new(); // (session id, user id, token)
    let mut act_fail: BTreeMap<String, usize> = BTreeMap::new();
    for (k, r) in activated.iter().enumerate() {
        match r {
            Some(x) if x.status == 200 => {
                let v: Value = serde_json::from_slice(&x.body).unwrap_or(Value::Null);
                let sid = match &v["session_id"] {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.clone(),
                    _ => users[k].0.to_string(),
                };
                sess.push((sid, users[k].0.to_string(), users[k].1.clone()));
            }
            Some(x) => {
                *act_fail
                    .entry(format!(
                        "http {} {}",
                        x.status,
                        String::from_utf8_lossy(&x.body)
                    ))
                    .or_insert(0) += 1
            }
            None => *act_fail.entry("no answer".into()).or_insert(0) += 1,
        }
    }
    log(
        o,
        format!(
            "[{}] sessions: {} activated in {activate_secs:.1} s",
            kind.name(),
            sess.len()
        ),
    );
    for c in conns.clone() {
        d.http_close(c);
    }
    if !create_fail.is_empty() {
        errors.push(format!("user creation failures: {create_fail:?}"));
    }
    if !act_fail.is_empty() {
        errors.push(format!("activation failures: {act_fail:?}"));
    }
    // 3. server CPU with no streams
    let win = Duration::from_secs_f64(o.window_secs.max(1.0));
    let base_win = win.min(Duration::from_secs(10));
    d.idle(Duration::from_millis(1000));
    let c0 = sys::cpu_seconds(srv.pid).unwrap_or(f64::NAN);
    let t0 = Instant::now();
    d.idle(base_win);
    let base_cpu =
        100.0 * (sys::cpu_seconds(srv.pid).unwrap_or(f64::NAN) - c0) / t0.elapsed().as_secs_f64();
    // 4. which id goes into /session/{id}/stream: the session_id, else the user id.
    let mut use_user_id = false;
    if let Some(first) = sess.first() {
        let (r, _) = d.connect_many(1, 1, Instant::now() + Duration::from_secs(15), |_| {
            (
                format!("/session/{}/stream?token={}", first.0, first.2),
                None,
            )
        });
        if r == 0 && first.0 != first.1 {
            let (r2, _) = d.connect_many(1, 1, Instant::now() + Duration::from_secs(15), |_| {
                (
                    format!("/session/{}/stream?token={}", first.1, first.2),
                    None,
                )
            });
            use_user_id = r2 == 1;
        }
        d.close_all_ws();
    }
    d.fail_reasons.clear();
    let t = Instant::now();
    let (ready, failed) =
        d.connect_many(sess.len(), o.inflight, ctx.deadline_for(sess.len()), |k| {
            let s = &sess[k];
            (
                format!(
                    "/session/{}/stream?token={}",
                    if use_user_id { &s.1 } else { &s.0 },
                    s.2
                ),
                None,
            )
        });
    let connect_secs = t.elapsed().as_secs_f64();
    if failed > 0 {
        errors.push(format!("session stream failures: {:?}", d.fail_reasons));
    }
    log(
        o,
        format!(
            "[{}] sessions: {ready} streams ready ({failed} failed) in {connect_secs:.1} s",
            kind.name()
        ),
    );
    // 5. server CPU with the streams open and their timers running
    d.idle(Duration::from_millis(2000));
    let (tu0, m0, p0) = (d.time_updates, d.msgs, d.pings);
    let c0 = sys::cpu_seconds(srv.pid).unwrap_or(f64::NAN);
    let t0 = Instant::now();
    d.idle(win);
    let secs = t0.elapsed().as_secs_f64();
    let cpu = 100.0 * (sys::cpu_seconds(srv.pid).unwrap_or(f64::NAN) - c0) / secs;
    let tu_rate = (d.time_updates - tu0) as f64 / secs;
    let msg_rate = (d.msgs - m0) as f64 / secs;
    let still_open = d.ready_open();
    let rss = sys::rss_bytes(srv.pid).unwrap_or(0);
    d.close_all_ws();
    stop(o, srv, &mut errors);
    table(
        &format!(
            "sessions — {}: {} session streams open, timers running, over {:.0} s",
            kind.name(),
            ready,
            secs
        ),
        &[
            "users created/s",
            "activations/s",
            "streams ready",
            "failed",
            "server CPU % idle (0 streams)",
            "server CPU % (streams)",
            "time_update/s",
            "still open",
            "RSS MiB",
        ],
        &[vec![
            format!("{:.0}", users.len() as f64 / create_secs.max(1e-9)),
            format!("{:.0}", sess.len() as f64 / activate_secs.max(1e-9)),
            ready.to_string(),
            failed.to_string(),
            format!("{base_cpu:.2}"),
            format!("{cpu:.2}"),
            format!("{tu_rate:.0}"),
            still_open.to_string(),
            format!("{:.1}", rss as f64 / 1048576.0),
        ]],
    );
    Ok(
        json!({"scenario": "sessions", "server": kind.name(), "sessions": s_total, "users_created": users.len(),
              "create_secs": round3(create_secs), "activated": sess.len(), "activate_secs": round3(activate_secs),
              "stream_id": if use_user_id { "user_id" } else { "session_id" },
              "streams_ready": ready, "stream_failures": failed, "connect_secs": round3(connect_secs),
              "window_secs": round3(secs), "server_cpu_pct_no_streams": round3(base_cpu), "server_cpu_pct": round3(cpu),
              "time_updates_per_sec": round3(tu_rate), "messages_per_sec": round3(msg_rate), "pings": d.pings - p0,
              "streams_open_at_end": still_open, "rss_bytes": rss, "errors": errors}),
    )
}

// ------------------------------------------------------------------------------- entry

pub fn run(o: &Opts, nofile: u64) -> i32 {
    let mut ctx = Ctx {
        o,
        bins: Vec::new(),
        failed: false,
        nofile,
    };
    for &k in &o.servers {
        match k {
            Kind::Catalytic => {
                let p = o.catalytic_bin.clone().unwrap_or_else(|| {
                    std::env::current_exe()
                        .ok()
                        .and_then(|e| e.parent().map(|d| d.join("catalytic")))
                        .unwrap_or_else(|| "catalytic".into())
                });
                ctx.bins.push((k, p));
            }
            Kind::Floor => {
                let p = match &o.floor_bin {
                    Some(p) => Ok(p.clone()),
                    None => match server::floor_src(o.floor_src.as_deref()) {
                        Some(src) => server::build_floor(&src),
                        None => Err("floor sources not found (../shared/floor-server); pass --floor-bin or --floor-src".into()),
                    },
                };
                match p {
                    Ok(p) => ctx.bins.push((k, p)),
                    Err(e) => {
                        // Not a failure of the run: the floor is only the reference.
                        eprintln!("catalytic-bench: floor unavailable, running without it: {e}");
                        ctx.emit(json!({"scenario": o.scenario, "server": "floor", "skipped": format!("floor unavailable: {e}")}));
                    }
                }
            }
        }
    }
    let kinds: Vec<Kind> = ctx.bins.iter().map(|(k, _)| *k).collect();
    let each = |ctx: &mut Ctx, name: &str, f: fn(&mut Ctx, Kind) -> Result<Value, String>| {
        for &k in &kinds {
            match f(ctx, k) {
                Ok(v) => ctx.emit(v),
                Err(e) => {
                    eprintln!("catalytic-bench: {name} on {}: {e}", k.name());
                    ctx.emit(json!({"scenario": name, "server": k.name(), "error": e}));
                }
            }
        }
    };
    match o.scenario.as_str() {
        "fanout" => {
            fanout(&mut ctx, &kinds, false);
        }
        "compare" => {
            let res = fanout(&mut ctx, &kinds, true);
            compare_report(&mut ctx, &res);
        }
        "storm" => each(&mut ctx, "storm", storm),
        "memory" => each(&mut ctx, "memory", memory),
        "sustained" => each(&mut ctx, "sustained", sustained),
        "sessions" => each(&mut ctx, "sessions", sessions),
        "all" => {
            let res = fanout(&mut ctx, &kinds, true);
            compare_report(&mut ctx, &res);
            each(&mut ctx, "storm", storm);
            each(&mut ctx, "memory", memory);
            let saved = ctx.o;
            // sustained uses 1,000 clients unless --clients was given for it alone.
            let mut o2 = saved.clone();
            o2.clients = None;
            ctx.o = Box::leak(Box::new(o2));
            each(&mut ctx, "sustained", sustained);
            each(&mut ctx, "sessions", sessions);
            ctx.o = saved;
        }
        _ => unreachable!(),
    }
    if ctx.failed {
        1
    } else {
        0
    }
}
