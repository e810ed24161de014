//! Idle memory: the server's RSS per idle admin connection, over its RSS with none, on a
//! fresh server. Clients are added (never closed) from one client count to the next.

use super::report::table;
use super::{log, stop, Ctx, DEFAULT_NS};
use crate::driver::{Driver, ReadyOn};
use crate::server::{Kind, ServerProc};
use crate::sys;
use serde_json::{json, Value};
use std::time::Duration;

/// The server's memory with `ready` idle clients.
struct MemPoint {
    n: usize,
    ready: usize,
    base: u64,
    rss: u64,
    /// (RSS − baseline) / ready clients, bytes.
    per: f64,
}

impl MemPoint {
    fn row(&self, kind: Kind) -> Vec<String> {
        vec![
            kind.name().into(),
            self.n.to_string(),
            self.ready.to_string(),
            format!("{:.1}", self.base as f64 / 1048576.0),
            format!("{:.1}", self.rss as f64 / 1048576.0),
            format!("{:.0}", self.per),
        ]
    }

    fn json(&self) -> Value {
        json!({"clients": self.n, "ready": self.ready, "baseline_rss_bytes": self.base, "rss_bytes": self.rss,
               "rss_bytes_per_conn": self.per.round()})
    }
}

pub(super) fn memory(ctx: &mut Ctx, kind: Kind) -> Result<Value, String> {
    let ns = ctx.ns(&DEFAULT_NS);
    let srv = ctx.start(kind, None)?;
    let mut d =
        Driver::new(srv.addr, ReadyOn::Initial, ctx.o.per_addr).map_err(|e| e.to_string())?;
    d.idle(Duration::from_millis(1000));
    let base = sys::rss_bytes(srv.pid).ok_or("cannot read the server's RSS")?;
    let pts: Vec<MemPoint> = ns
        .iter()
        .map(|&n| drive(ctx, &mut d, &srv, base, n))
        .collect();
    d.close_all_ws();
    let mut errors = Vec::new();
    stop(ctx.o, srv, &mut errors);
    Ok(report(kind, &pts, errors))
}

/// Drive one count: connect up to `n` clients, let the server settle, read its RSS.
fn drive(ctx: &Ctx, d: &mut Driver, srv: &ServerProc, base: u64, n: usize) -> MemPoint {
    let have = d.ready_open();
    if have < n {
        d.connect_many(n - have, ctx.o.inflight, ctx.deadline_for(n - have), |_| {
            ("/admin/stream".into(), Some(srv.cookie.clone()))
        });
    }
    d.idle(Duration::from_millis(1500));
    let ready = d.ready_open();
    let rss = sys::rss_bytes(srv.pid).unwrap_or(0);
    let per = (rss as f64 - base as f64) / ready.max(1) as f64;
    log(
        ctx.o,
        format!(
            "[{}] memory N={n}: {ready} ready, RSS {} KiB (+{} B/conn)",
            srv.kind.name(),
            rss / 1024,
            per.round()
        ),
    );
    MemPoint {
        n,
        ready,
        base,
        rss,
        per,
    }
}

fn report(kind: Kind, pts: &[MemPoint], errors: Vec<String>) -> Value {
    let rows: Vec<Vec<String>> = pts.iter().map(|p| p.row(kind)).collect();
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
    let pts: Vec<Value> = pts.iter().map(MemPoint::json).collect();
    json!({"scenario": "memory", "server": kind.name(), "points": pts, "errors": errors})
}
