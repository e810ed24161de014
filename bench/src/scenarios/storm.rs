//! Connect storm: N clients connect at once (no in-flight limit); the time from each
//! `connect()` until it has `initial`, and what failed. One fresh server per run; the
//! clients of one count are closed before the next count connects.

use super::report::table;
use super::{log, stop, Ctx, DEFAULT_NS};
use crate::driver::{Driver, ReadyOn};
use crate::server::{Kind, ServerProc};
use crate::stats::{fmt_num, percentile, round3};
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// One storm at one client count.
struct StormPoint {
    n: usize,
    ready: usize,
    failed: usize,
    wall_secs: f64,
    /// connect() → `initial` per ready client, ms, ascending.
    ready_ms: Vec<f64>,
    reasons: BTreeMap<String, usize>,
}

impl StormPoint {
    fn all_ready_ms(&self) -> f64 {
        self.ready_ms.last().copied().unwrap_or(f64::NAN)
    }

    fn pct(&self, q: f64) -> f64 {
        percentile(&self.ready_ms, q).unwrap_or(f64::NAN)
    }

    fn row(&self, kind: Kind) -> Vec<String> {
        vec![
            kind.name().into(),
            self.n.to_string(),
            self.ready.to_string(),
            self.failed.to_string(),
            fmt_num(self.pct(50.0)),
            fmt_num(self.pct(99.0)),
            fmt_num(self.all_ready_ms()),
            self.reasons
                .iter()
                .map(|(k, v)| format!("{k} ×{v}"))
                .collect::<Vec<_>>()
                .join("; "),
        ]
    }

    fn json(&self) -> Value {
        json!({"clients": self.n, "ready": self.ready, "failures": self.failed, "all_ready_ms": round3(self.all_ready_ms()),
               "p50_ms": round3(self.pct(50.0)),
               "p99_ms": round3(self.pct(99.0)),
               "wall_secs": round3(self.wall_secs), "failure_reasons": self.reasons})
    }
}

pub(super) fn storm(ctx: &mut Ctx, kind: Kind) -> Result<Value, String> {
    let ns = ctx.ns(&DEFAULT_NS);
    let srv = ctx.start(kind, None)?;
    let mut d =
        Driver::new(srv.addr, ReadyOn::Initial, ctx.o.per_addr).map_err(|e| e.to_string())?;
    let pts: Vec<StormPoint> = ns.iter().map(|&n| drive(ctx, &mut d, &srv, n)).collect();
    d.close_all_ws();
    let mut errors = Vec::new();
    stop(ctx.o, srv, &mut errors);
    Ok(report(kind, &pts, errors))
}

/// Drive one storm: close what is open, let the server settle, then start all `n` at once.
fn drive(ctx: &Ctx, d: &mut Driver, srv: &ServerProc, n: usize) -> StormPoint {
    d.close_all_ws();
    d.idle(Duration::from_millis(1500));
    d.fail_reasons.clear();
    let t0 = Instant::now();
    let (ready, failed) = d.connect_many(n, n, ctx.deadline_for(n), |_| {
        ("/admin/stream".into(), Some(srv.cookie.clone()))
    });
    let wall_secs = t0.elapsed().as_secs_f64();
    let mut ready_ms: Vec<f64> = d.ready_us.iter().map(|&u| u as f64 / 1000.0).collect();
    ready_ms.sort_by(|a, b| a.total_cmp(b));
    let p = StormPoint {
        n,
        ready,
        failed,
        wall_secs,
        ready_ms,
        reasons: d.fail_reasons.clone(),
    };
    log(
        ctx.o,
        format!(
            "[{}] storm N={n}: {ready} ready, {failed} failed, last after {} ms",
            srv.kind.name(),
            fmt_num(p.all_ready_ms())
        ),
    );
    p
}

fn report(kind: Kind, pts: &[StormPoint], errors: Vec<String>) -> Value {
    let rows: Vec<Vec<String>> = pts.iter().map(|p| p.row(kind)).collect();
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
    let pts: Vec<Value> = pts.iter().map(StormPoint::json).collect();
    json!({"scenario": "storm", "server": kind.name(), "points": pts, "errors": errors})
}
