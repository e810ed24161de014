//! The scenarios: fan-out and the catalytic/floor comparison, connect storm, idle memory,
//! sustained rate, session timers. Each prints a human table and one JSON line per server.
//!
//! Every scenario has the same three steps, in this order, as functions of their own:
//! *setup* (start a fresh server, open the generator's reactor, connect clients), *drive*
//! (the measured work, returning plain values) and *report* (the human table on stdout, then
//! the JSON line through `Ctx::emit`). A scenario returns its JSON value, or an error that
//! `run` turns into `{"scenario", "server", "error"}` and a non-zero exit code.
//!
//! One file per scenario family: `fanout` (fan-out, `compare` and `cold`), `storm`,
//! `memory`, `sustained`, `sessions`, `burst`, `overload` (built on `sustained`'s sender),
//! `reconnect`, `cluster` (several nodes on PostgreSQL, on `fanout`'s and `burst`'s runners);
//! `report` holds the two output forms they share and `batch` the bulk HTTP requests of
//! setup steps.

mod batch;
mod burst;
mod cluster;
mod fanout;
mod memory;
mod overload;
mod reconnect;
mod report;
mod sessions;
mod storm;
mod sustained;

use crate::server::{self, Kind, Launch, ServerProc};
use crate::Opts;
use serde_json::{json, Value};
use std::path::PathBuf;
use std::time::{Duration, Instant};

const DEFAULT_NS: [usize; 3] = [100, 1000, 10_000];

/// What every scenario needs: the options, the server binaries found, and the run's outcome.
struct Ctx<'a> {
    o: &'a Opts,
    bins: Vec<(Kind, PathBuf)>,
    /// Set when a JSON line carrying `"error"` was emitted: the exit code becomes 1.
    failed: bool,
    nofile: u64,
}

/// Progress on stderr (silenced by `--quiet`); stdout carries only tables and JSON lines.
fn log(o: &Opts, msg: impl AsRef<str>) {
    if !o.quiet {
        eprintln!("catalytic-bench: {}", msg.as_ref());
    }
}

/// A run nonce, so this run's users (and round markers) never match an earlier run's.
fn rand_hex() -> String {
    let mut b = [0u8; 4];
    let _ = getrandom::fill(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

impl<'a> Ctx<'a> {
    fn bin(&self, k: Kind) -> Option<PathBuf> {
        self.bins
            .iter()
            .find(|(kk, _)| *kk == k)
            .map(|(_, p)| p.clone())
    }

    /// A fresh server of kind `k` (own temp DB, pinned and reniced as the options say).
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
            cluster: None,
        };
        let s = server::start(&l)?;
        log(
            self.o,
            format!("[{}] started pid {} on {}", k.name(), s.pid, s.addr),
        );
        Ok(s)
    }

    /// The client counts to run: `--clients`, else `default`; ascending, no repeats.
    fn ns(&self, default: &[usize]) -> Vec<usize> {
        let mut v = self.o.clients.clone().unwrap_or_else(|| default.to_vec());
        v.sort_unstable();
        v.dedup();
        v
    }

    /// How long connecting `n` clients may take before the stragglers count as failed.
    fn deadline_for(&self, n: usize) -> Instant {
        Instant::now() + Duration::from_secs(30) + Duration::from_millis(3 * n as u64)
    }
}

/// Stop a server; a server that died during the run makes that run's result an error.
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

/// The binaries of the selected servers. A floor that cannot be found or built is reported
/// and left out: it is only the reference, not what is measured.
fn find_bins(ctx: &mut Ctx) {
    let o = ctx.o;
    for &k in &o.servers {
        match k {
            Kind::Catalytic => {
                // Default: `catalytic` next to this executable (both land in target/release).
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
                        Ok(src) => server::build_floor(&src),
                        Err(e) => Err(format!("{e}; pass --floor-bin or --floor-src")),
                    },
                };
                match p {
                    Ok(p) => ctx.bins.push((k, p)),
                    Err(e) => {
                        eprintln!("catalytic-bench: floor unavailable, running without it: {e}");
                        ctx.emit(json!({"scenario": o.scenario, "server": "floor", "skipped": format!("floor unavailable: {e}")}));
                    }
                }
            }
        }
    }
}

/// A scenario run once per server: returns its JSON line, or why it could not run.
type PerServer = fn(&mut Ctx, Kind) -> Result<Value, String>;

/// Run `f` for every server found, emitting each result (or error) as it comes.
fn each(ctx: &mut Ctx, name: &str, f: PerServer) {
    let kinds: Vec<Kind> = ctx.bins.iter().map(|(k, _)| *k).collect();
    for k in kinds {
        match f(ctx, k) {
            Ok(v) => ctx.emit(v),
            Err(e) => {
                eprintln!("catalytic-bench: {name} on {}: {e}", k.name());
                ctx.emit(json!({"scenario": name, "server": k.name(), "error": e}));
            }
        }
    }
}

/// This process is a fan-out run's peer process (`fanout::peer`).
pub fn is_fanout_peer() -> bool {
    fanout::is_peer()
}

/// Run the scenario the options name; returns the process exit code (1 if any server's
/// result was an error).
pub fn run(o: &Opts, nofile: u64) -> i32 {
    let mut ctx = Ctx {
        o,
        bins: Vec::new(),
        failed: false,
        nofile,
    };
    // A peer process of a fan-out run (`fanout::peer`) serves its parent and nothing else.
    if let Some(code) = fanout::serve_if_peer(&ctx) {
        return code;
    }
    find_bins(&mut ctx);
    match o.scenario.as_str() {
        "fanout" => fanout::fanout(&mut ctx),
        "compare" => fanout::compare(&mut ctx),
        "storm" => each(&mut ctx, "storm", storm::storm),
        "memory" => each(&mut ctx, "memory", memory::memory),
        "sustained" => each(&mut ctx, "sustained", sustained::sustained),
        "sessions" => each(&mut ctx, "sessions", sessions::sessions),
        "cold" => fanout::cold(&mut ctx),
        "burst" => burst::burst(&mut ctx),
        "overload" => overload::overload(&mut ctx),
        "reconnect" => each(&mut ctx, "reconnect", reconnect::reconnect),
        "cluster" | "cluster-lag" | "cluster-fanout" | "cluster-writes" => {
            cluster::cluster(&mut ctx)
        }
        "all" => {
            fanout::compare(&mut ctx);
            each(&mut ctx, "storm", storm::storm);
            each(&mut ctx, "memory", memory::memory);
            // sustained uses 1,000 clients unless --clients was given for it alone.
            let o2 = Opts {
                clients: None,
                ..o.clone()
            };
            let mut ctx2 = Ctx {
                o: &o2,
                bins: std::mem::take(&mut ctx.bins),
                failed: ctx.failed,
                nofile,
            };
            each(&mut ctx2, "sustained", sustained::sustained);
            each(&mut ctx2, "sessions", sessions::sessions);
            ctx.failed = ctx2.failed;
        }
        _ => unreachable!(),
    }
    if ctx.failed {
        1
    } else {
        0
    }
}
