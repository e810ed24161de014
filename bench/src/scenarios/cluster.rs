//! Cluster mode (issue 10): several catalytic nodes on one PostgreSQL.
//!
//! * `cluster-lag` — bus lag. POSTs one at a time, alternating over the nodes, each to admin
//!   clients on every node: per write, the time from the POST write to the receipt on the
//!   writing node (*local*: the node applies its own event as soon as its storage thread
//!   has committed it) and on the other nodes (*remote*: the event went through PostgreSQL's
//!   `NOTIFY` and the other node's bus thread). `remote − local` of one write is what the bus
//!   adds: commit on one node → delivery on another, minus the writer's own delivery.
//! * `cluster-fanout` — `fanout`'s rounds (same `FanRunner`, same table) on one SQLite node,
//!   on one node of the cluster, and spread evenly over the cluster's nodes with the POSTs on
//!   the first, in one run: the last client of the spread against the single node.
//! * `cluster-writes` — `burst`'s writes (same `Runner`) with the keep-alive connections and
//!   the admins spread over the nodes, against one SQLite node: writes per second the
//!   deployment takes, and every admin on every node has every write, in `seq` order.
//! * `cluster` — the three on one deployment (fan-out first, while the user list is short).
//!
//! The deployment is either started here — a scratch database created on `--database-url`'s
//! server, `--nodes` nodes on it (`serve --database-url … --node-id bench-nK`, pinned and
//! reniced like any server the generator starts), torn down and dropped at the end — or
//! given as `--node-urls` of running nodes with an admin `--cookie`.
//!
//! Setup is `Deployment::start`; drive and report are `lag`, `fanout` and `writes`.

use super::burst::{BurstPoint, Runner};
use super::fanout::{FanPoint, FanRunner, Mode, FANOUT_HEAD};
use super::report::table;
use super::{log, rand_hex, stop, Ctx};
use crate::driver::{Driver, ReadyOn};
use crate::server::{self, ClusterNode, Kind, Launch, ServerProc};
use crate::stats::{fmt_num, percentile, round3};
use serde_json::{json, Value};
use std::net::{SocketAddr, ToSocketAddrs};
use std::time::Duration;

/// How long a node may take to answer `/readyz` after it started.
const READY_WITHIN: Duration = Duration::from_secs(20);
/// `cluster-lag`: the pause between writes unless `--gap-ms` says otherwise.
const LAG_GAP: Duration = Duration::from_millis(20);
/// `cluster-lag`: writes before the measured ones (connections and caches warm).
const LAG_WARMUP: usize = 20;

/// A scratch database on the PostgreSQL the options name: created at start, dropped (its
/// connections ended first) when it goes.
struct ScratchDb {
    server_url: String,
    name: String,
    url: String,
}

/// A client on `url`, bounded (5 s connect, 10 s statements).
fn pg_connect(url: &str) -> Result<postgres::Client, String> {
    let mut cfg: postgres::Config = url
        .parse()
        .map_err(|e| format!("--database-url {url:?}: {e}"))?;
    cfg.connect_timeout(Duration::from_secs(5))
        .application_name("catalytic-bench")
        .options("-c statement_timeout=10000");
    cfg.connect(postgres::NoTls)
        .map_err(|e| format!("connect to PostgreSQL: {e}"))
}

/// `url` with its database name replaced by `name` (the query string kept).
fn with_database(url: &str, name: &str) -> Result<String, String> {
    let (scheme, rest) = url
        .split_once("://")
        .ok_or_else(|| format!("--database-url {url:?} is not a postgres:// URL"))?;
    let (main, query) = match rest.find('?') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = main.split('/').next().unwrap_or(main);
    Ok(format!("{scheme}://{authority}/{name}{query}"))
}

impl ScratchDb {
    fn create(server_url: &str) -> Result<ScratchDb, String> {
        let name = format!("catalytic_bench_{}_{}", std::process::id(), rand_hex());
        pg_connect(server_url)?
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .map_err(|e| format!("CREATE DATABASE {name}: {e}"))?;
        Ok(ScratchDb {
            server_url: server_url.to_string(),
            url: with_database(server_url, &name)?,
            name,
        })
    }
}

impl Drop for ScratchDb {
    fn drop(&mut self) {
        let dropped = pg_connect(&self.server_url).and_then(|mut c| {
            c.batch_execute(&format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .map_err(|e| e.to_string())
        });
        if let Err(e) = dropped {
            eprintln!(
                "catalytic-bench: could not drop the scratch database {}: {e}",
                self.name
            );
        }
    }
}

/// The nodes under test: their addresses, the processes (when started here), an admin
/// session valid on all of them.
struct Deployment {
    nodes: Vec<SocketAddr>,
    pids: Vec<u32>,
    cookie: String,
    /// Field order matters: the nodes stop before their database is dropped.
    procs: Vec<ServerProc>,
    db: Option<ScratchDb>,
}

/// `http://HOST:PORT[/]` → the address.
fn node_addr(url: &str) -> Result<SocketAddr, String> {
    let hostport = url
        .strip_prefix("http://")
        .ok_or_else(|| format!("--node-urls: {url:?} is not http://HOST:PORT"))?
        .trim_end_matches('/');
    hostport
        .to_socket_addrs()
        .map_err(|e| format!("--node-urls: {url:?}: {e}"))?
        .next()
        .ok_or_else(|| format!("--node-urls: {url:?} has no address"))
}

impl Deployment {
    fn start(ctx: &Ctx) -> Result<Deployment, String> {
        let o = ctx.o;
        if let Some(urls) = &o.node_urls {
            let nodes = urls
                .iter()
                .map(|u| node_addr(u))
                .collect::<Result<Vec<_>, _>>()?;
            let cookie = o
                .cookie
                .clone()
                .ok_or("--node-urls needs --cookie admin_session=TOKEN")?;
            return Ok(Deployment {
                nodes,
                pids: Vec::new(),
                cookie,
                procs: Vec::new(),
                db: None,
            });
        }
        let url = o.database_url.as_deref().ok_or(
            "cluster scenarios need --database-url (a PostgreSQL to make a scratch database on) or --node-urls",
        )?;
        let bin = ctx
            .bin(Kind::Catalytic)
            .ok_or("no catalytic binary (the cluster scenarios run catalytic only)")?;
        let db = ScratchDb::create(url)?;
        log(o, format!("cluster: scratch database {}", db.name));
        let mut dep = Deployment {
            nodes: Vec::new(),
            pids: Vec::new(),
            cookie: String::new(),
            procs: Vec::new(),
            db: None,
        };
        // Nodes start one after the other: the first makes the admin account.
        for k in 0..o.nodes {
            let l = Launch {
                kind: Kind::Catalytic,
                bin: bin.clone(),
                server_cpu: o.server_cpu,
                nice: o.nice,
                heartbeat_secs: o.heartbeat_secs,
                session_minutes: None,
                extra_args: Vec::new(),
                cluster: Some(ClusterNode {
                    database_url: db.url.clone(),
                    node_id: format!("bench-n{}", k + 1),
                    create_admin: k == 0,
                }),
            };
            let s = server::start(&l)?;
            log(
                o,
                format!("cluster: node bench-n{} pid {} on {}", k + 1, s.pid, s.addr),
            );
            if k == 0 {
                dep.cookie = s.cookie.clone();
            }
            dep.nodes.push(s.addr);
            dep.pids.push(s.pid);
            dep.procs.push(s);
        }
        dep.db = Some(db);
        for (k, &a) in dep.nodes.iter().enumerate() {
            if !server::wait_ready(a, READY_WITHIN) {
                return Err(format!(
                    "node bench-n{} ({a}) did not answer /readyz 200 within {READY_WITHIN:?}",
                    k + 1
                ));
            }
        }
        Ok(dep)
    }

    /// Stop the nodes started here (a node that died during the run is an error), then drop
    /// the scratch database.
    fn finish(mut self, ctx: &Ctx, errors: &mut Vec<String>) {
        for s in std::mem::take(&mut self.procs) {
            stop(ctx.o, s, errors);
        }
    }
}

/// One cluster scenario on a deployment: its JSON line, or why it could not run.
type Step = fn(&mut Ctx, &Deployment) -> Result<Value, String>;

/// The cluster scenario the options name.
pub(super) fn cluster(ctx: &mut Ctx) {
    let scenario = ctx.o.scenario.clone();
    let dep = match Deployment::start(ctx) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("catalytic-bench: {scenario}: {e}");
            ctx.emit(json!({"scenario": scenario, "server": "catalytic cluster", "error": e}));
            return;
        }
    };
    let all = scenario == "cluster";
    let steps: [(&str, Step); 3] = [
        ("cluster-fanout", fanout),
        ("cluster-lag", lag),
        ("cluster-writes", writes),
    ];
    for (name, f) in steps {
        if !all && scenario != name {
            continue;
        }
        match f(ctx, &dep) {
            Ok(v) => ctx.emit(v),
            Err(e) => {
                eprintln!("catalytic-bench: {name}: {e}");
                ctx.emit(json!({"scenario": name, "server": "catalytic cluster", "error": e}));
            }
        }
    }
    let mut errors = Vec::new();
    dep.finish(ctx, &mut errors);
    if !errors.is_empty() {
        ctx.emit(json!({"scenario": scenario, "server": "catalytic cluster", "error": errors.join("; ")}));
    }
}

/// `GET /metrics` of `addr`: the cumulative buckets of `catalytic_bus_lag_seconds` as
/// (upper bound in seconds, count), in the order served; empty when it cannot be read.
fn bus_lag_buckets(addr: SocketAddr) -> Vec<(f64, u64)> {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
        return Vec::new();
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let req = format!("GET /metrics HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    if s.write_all(req.as_bytes()).is_err() {
        return Vec::new();
    }
    let mut body = Vec::new();
    let _ = s.take(4 << 20).read_to_end(&mut body);
    String::from_utf8_lossy(&body)
        .lines()
        .filter_map(|l| {
            let rest = l.strip_prefix("catalytic_bus_lag_seconds_bucket{le=\"")?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The bucket bound (ms) under which the fraction `q` of the observations between two reads
/// of the same cumulative histogram falls.
fn bucket_quantile_ms(before: &[(f64, u64)], after: &[(f64, u64)], q: f64) -> f64 {
    let count = |v: &[(f64, u64)], le: f64| v.iter().find(|b| b.0 == le).map_or(0, |b| b.1);
    let total = after.last().map_or(0, |b| b.1) - before.last().map_or(0, |b| b.1);
    if total == 0 {
        return f64::NAN;
    }
    after
        .iter()
        .find(|(le, n)| (n - count(before, *le)) as f64 >= q * total as f64)
        .map_or(f64::NAN, |(le, _)| le * 1000.0)
}

/// p50 / p99 / max of `v` (sorted here), in ms.
fn spread(v: &mut [f64]) -> (f64, f64, f64) {
    v.sort_by(|a, b| a.total_cmp(b));
    let q = |p| percentile(v, p).unwrap_or(f64::NAN);
    (q(50.0), q(99.0), q(100.0))
}

/// `cluster-lag`: see the module notes.
fn lag(ctx: &mut Ctx, dep: &Deployment) -> Result<Value, String> {
    let o = ctx.o;
    let k = dep.nodes.len();
    if k < 2 {
        return Err("cluster-lag needs two nodes or more".into());
    }
    let per_node = ctx.ns(&[1])[0];
    let writes = o.writes.unwrap_or(1000);
    let gap = if o.gap_given { o.gap } else { LAG_GAP };
    let mut d =
        Driver::new(dep.nodes[0], ReadyOn::Initial, o.per_addr).map_err(|e| e.to_string())?;
    let nonce = rand_hex();
    d.marker = format!("bench.{nonce}.").into_bytes();
    d.exact = true;
    let mut hs = Vec::new();
    for (i, &a) in dep.nodes.iter().enumerate() {
        d.set_server(a, i as u8);
        let cookie = dep.cookie.clone();
        d.connect_many(per_node, o.inflight, ctx.deadline_for(per_node), |_| {
            ("/admin/stream".into(), Some(cookie.clone()))
        });
        hs.push(d.http_open().map_err(|e| format!("HTTP connect: {e}"))?);
    }
    let expected = d.ready_open();
    if expected < k * per_node {
        return Err(format!(
            "only {expected} of {} admin clients connected: {:?}",
            k * per_node,
            d.fail_reasons
        ));
    }
    d.idle(Duration::from_millis(500));
    log(
        o,
        format!("cluster-lag: {writes} writes over {k} nodes, {per_node} admin(s) per node"),
    );
    let mut hist0 = Vec::new();
    let (mut remote, mut local, mut extra, mut post) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let (mut lost, mut refused) = (0usize, Vec::new());
    // Per writing node: POST → remote receipt, and remote − local (the bus in one direction).
    let mut by_writer: Vec<(Vec<f64>, Vec<f64>)> = vec![(Vec::new(), Vec::new()); k];
    for w in 0..LAG_WARMUP + writes {
        if w == LAG_WARMUP {
            hist0 = dep.nodes.iter().map(|&a| bus_lag_buckets(a)).collect();
        }
        let writer = w % k;
        let h = hs[writer];
        if let Some(e) = d.http_dead(h) {
            return Err(format!("HTTP connection to node {} lost: {e}", writer + 1));
        }
        let (r, t0) = d.broadcast_round(h, &dep.cookie, expected, o.timeout, o.spin, |r| {
            format!(
                r#"{{"first_name":"Lag","last_name":"Write {r}","email":"bench.{nonce}.{r}@example.com"}}"#
            )
        });
        let resp = d.http_take(h);
        let round = std::mem::take(&mut d.rounds[r]);
        d.idle(gap);
        if w < LAG_WARMUP {
            continue;
        }
        match &resp {
            Some(x) if x.status == 201 => {
                post.push(x.at.saturating_duration_since(t0).as_secs_f64() * 1000.0)
            }
            Some(x) => {
                refused.push(x.status);
                continue;
            }
            None => {
                refused.push(0);
                continue;
            }
        }
        lost += expected.saturating_sub(round.got as usize);
        let (mut loc_max, mut rem_max) = (f64::NAN, f64::NAN);
        for (&us, &node) in round.lat_us.iter().zip(&round.nodes) {
            let ms = us as f64 / 1000.0;
            if node as usize == writer {
                local.push(ms);
                loc_max = loc_max.max(ms);
            } else {
                remote.push(ms);
                rem_max = rem_max.max(ms);
            }
        }
        extra.push(rem_max - loc_max);
        by_writer[writer].0.push(rem_max);
        by_writer[writer].1.push(rem_max - loc_max);
    }
    let gaps = d.seq_gaps;
    d.close_all_ws();
    // The nodes' own view (`catalytic_bus_lag_seconds`: every event, their own included, from
    // the timestamp its transaction took to its delivery), as bucket bounds.
    let server_view: Vec<(f64, f64)> = dep
        .nodes
        .iter()
        .zip(&hist0)
        .map(|(&a, h0)| {
            let h1 = bus_lag_buckets(a);
            (
                bucket_quantile_ms(h0, &h1, 0.5),
                bucket_quantile_ms(h0, &h1, 0.99),
            )
        })
        .collect();
    let (r50, r99, rmax) = spread(&mut remote);
    let (l50, l99, lmax) = spread(&mut local);
    let (e50, e99, emax) = spread(&mut extra);
    let (p50, p99, pmax) = spread(&mut post);
    let row = |what: &str, v: (f64, f64, f64), n: usize| {
        vec![
            what.to_string(),
            n.to_string(),
            fmt_num(v.0),
            fmt_num(v.1),
            fmt_num(v.2),
        ]
    };
    table(
        &format!(
            "cluster-lag — {} writes alternating over {k} nodes, {per_node} admin(s) per node, {} ms apart",
            post.len(),
            gap.as_millis()
        ),
        &["what", "samples", "p50 ms", "p99 ms", "max ms"],
        &[
            row("POST write → receipt on another node (remote)", (r50, r99, rmax), remote.len()),
            row("POST write → receipt on the writing node (local)", (l50, l99, lmax), local.len()),
            row("remote − local, per write (the bus)", (e50, e99, emax), extra.len()),
            row("POST write → its 201", (p50, p99, pmax), post.len()),
        ],
    );
    let mut dir_rows = Vec::new();
    let mut dirs = Vec::new();
    for (w, (rem, bus)) in by_writer.iter_mut().enumerate() {
        let (n_rem, n_bus) = (rem.len(), bus.len());
        let (r, b) = (spread(rem), spread(bus));
        dir_rows.push(row(
            &format!("writes on node {}: slowest other node", w + 1),
            r,
            n_rem,
        ));
        dir_rows.push(row(
            &format!("writes on node {}: remote − local", w + 1),
            b,
            n_bus,
        ));
        dirs.push(json!({"writer": w + 1, "remote_max_ms": {"p50": round3(r.0), "p99": round3(r.1), "max": round3(r.2)},
                         "bus_ms": {"p50": round3(b.0), "p99": round3(b.1), "max": round3(b.2)}}));
    }
    table(
        "cluster-lag — by writing node",
        &["what", "samples", "p50 ms", "p99 ms", "max ms"],
        &dir_rows,
    );
    println!(
        "  lost deliveries {lost}, seq gaps or repeats {gaps}, refused writes {}",
        refused.len()
    );
    let views: Vec<String> = server_view
        .iter()
        .enumerate()
        .map(|(i, (p50, p99))| {
            format!(
                "node {}: p50 ≤ {} ms, p99 ≤ {} ms",
                i + 1,
                fmt_num(*p50),
                fmt_num(*p99)
            )
        })
        .collect();
    println!(
        "  catalytic_bus_lag_seconds over the run (bucket bounds): {}",
        views.join("; ")
    );
    let ms3 =
        |v: (f64, f64, f64)| json!({"p50": round3(v.0), "p99": round3(v.1), "max": round3(v.2)});
    Ok(
        json!({"scenario": "cluster-lag", "server": "catalytic cluster", "nodes": k,
              "admins_per_node": per_node, "writes": post.len(), "gap_ms": gap.as_millis() as u64,
              "remote_ms": ms3((r50, r99, rmax)), "local_ms": ms3((l50, l99, lmax)),
              "bus_ms": ms3((e50, e99, emax)), "post_ms": ms3((p50, p99, pmax)),
              "by_writer": dirs,
              "server_bus_lag_bucket_ms": server_view.iter()
                  .map(|(a, b)| json!({"p50_le": round3(*a), "p99_le": round3(*b)}))
                  .collect::<Vec<_>>(),
              "lost": lost, "seq_gaps": gaps, "refused": refused}),
    )
}

/// `cluster-fanout`: see the module notes.
fn fanout(ctx: &mut Ctx, dep: &Deployment) -> Result<Value, String> {
    let o = ctx.o;
    let k = dep.nodes.len();
    let mut rows = Vec::new();
    let mut points = Vec::new();
    let label_spread = format!("cluster, spread over {k} nodes");
    for n in ctx.ns(&[1000]) {
        let runs: [(&str, Option<usize>); 3] = [
            ("single node, SQLite", None),
            ("cluster, 1 node", Some(1)),
            (&label_spread, Some(k)),
        ];
        let mut maxes = Vec::new();
        for (label, nodes) in runs {
            let runner = match nodes {
                None => FanRunner::new(ctx, Kind::Catalytic),
                Some(m) => FanRunner::attach(
                    Kind::Catalytic,
                    dep.nodes[..m].to_vec(),
                    &dep.pids[..dep.pids.len().min(m)],
                    dep.cookie.clone(),
                    o,
                ),
            };
            let mut runner = runner?;
            log(o, format!("cluster-fanout: {label}, N={n}"));
            let pts = runner.measure(ctx, n, &[Mode::Warm]);
            let errors = runner.finish(o);
            let mut pts: Vec<FanPoint> = pts?;
            let Some(mut p) = pts.pop() else {
                return Err(format!("{label}: no fan-out point"));
            };
            p.errors.extend(errors);
            let mut row = p.row(Kind::Catalytic, false);
            row[0] = label.to_string();
            rows.push(row);
            maxes.push(p.max.median);
            points.push(json!({"setup": label, "point": p.json()}));
            for e in &p.errors {
                println!("  {label}, N={n}: {e}");
            }
        }
        points.push(json!({"clients": n,
            "spread_minus_single_sqlite_ms": round3(maxes[2] - maxes[0]),
            "spread_minus_one_cluster_node_ms": round3(maxes[2] - maxes[1]),
            "one_cluster_node_minus_single_sqlite_ms": round3(maxes[1] - maxes[0])}));
        println!(
            "  N={n}: last client, spread − single SQLite node {} ms; spread − one cluster node {} ms; one cluster node − SQLite {} ms",
            fmt_num(maxes[2] - maxes[0]),
            fmt_num(maxes[2] - maxes[1]),
            fmt_num(maxes[1] - maxes[0])
        );
    }
    let mut head = FANOUT_HEAD.to_vec();
    head[0] = "setup";
    table(
        &format!(
            "cluster-fanout — medians over {} rounds (min–max); POSTs on node 1",
            o.rounds
        ),
        &head,
        &rows,
    );
    Ok(
        json!({"scenario": "cluster-fanout", "server": "catalytic cluster", "nodes": k,
              "rounds": o.rounds, "warmup": o.warmup, "points": points}),
    )
}

/// `cluster-writes`: see the module notes.
fn writes(ctx: &mut Ctx, dep: &Deployment) -> Result<Value, String> {
    let o = ctx.o;
    let k = dep.nodes.len();
    let n = ctx.ns(&[20])[0];
    let label_cluster = format!("cluster, {k} nodes");
    let mut runners = vec![
        (
            "single node, SQLite",
            Runner::start(ctx, Kind::Catalytic, n)?,
        ),
        (
            label_cluster.as_str(),
            Runner::attach(
                ctx,
                Kind::Catalytic,
                &dep.nodes,
                &dep.pids,
                dep.cookie.clone(),
                n,
            )?,
        ),
    ];
    let o_writes = super::Opts {
        writes: Some(o.writes.unwrap_or(2000)),
        ..o.clone()
    };
    let mut samples: Vec<Vec<_>> = runners.iter().map(|_| Vec::new()).collect();
    for b in 0..o.bursts {
        for (i, (label, r)) in runners.iter_mut().enumerate() {
            let s = r.burst(&o_writes);
            log(
                o,
                format!(
                    "cluster-writes {b}, {label}: {} answers, all delivered after {} ms, lost {}",
                    s.post_ms.len(),
                    fmt_num(s.all_delivered_ms),
                    s.lost
                ),
            );
            samples[i].push(s);
        }
    }
    let mut rows = Vec::new();
    let mut points = Vec::new();
    for ((label, r), s) in runners.into_iter().zip(samples) {
        let gaps = r.seq_gaps();
        let (_, errors) = r.finish(o);
        let p = BurstPoint::of(n, &s);
        let mut row = p.row(Kind::Catalytic);
        row[0] = label.to_string();
        row.push(gaps.to_string());
        rows.push(row);
        if p.statuses.keys().any(|s| *s != 201) || p.unanswered > 0 {
            println!(
                "  {label}: answers {:?}, unanswered {}",
                p.statuses, p.unanswered
            );
        }
        for e in &errors {
            println!("  {label}: {e}");
        }
        points.push(json!({"setup": label, "point": p.json(), "seq_gaps": gaps, "errors": errors}));
    }
    table(
        &format!(
            "cluster-writes — {} writes over {} keep-alive connections (one outstanding each) spread over the nodes, {n} admins spread likewise; medians over {} bursts (min–max)",
            o_writes.writes.unwrap_or(0),
            o.http_conns,
            o.bursts
        ),
        &[
            "setup",
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
            "seq gaps",
        ],
        &rows,
    );
    Ok(
        json!({"scenario": "cluster-writes", "server": "catalytic cluster", "nodes": k,
              "writes": o_writes.writes, "http_conns": o.http_conns, "points": points}),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_replaced_query_kept() {
        assert_eq!(
            with_database("postgres://u:p@127.0.0.1:5432/postgres", "x").unwrap(),
            "postgres://u:p@127.0.0.1:5432/x"
        );
        assert_eq!(
            with_database("postgresql://u@h?sslmode=disable", "x").unwrap(),
            "postgresql://u@h/x?sslmode=disable"
        );
        assert!(with_database("h:5432/db", "x").is_err());
    }

    #[test]
    fn node_urls() {
        assert_eq!(
            node_addr("http://127.0.0.1:8080/").unwrap(),
            "127.0.0.1:8080".parse().unwrap()
        );
        assert!(node_addr("https://127.0.0.1:8080").is_err());
    }
}
