//! A peer process that holds one server's fan-out clients for the run that drives it, so
//! rounds can alternate between two servers whose clients together exceed one process's
//! descriptor limit (`drive::drive_interleaved`).
//!
//! The peer is this executable again, with the same options, told by environment variables
//! which running server to attach to (`PEER_ENV`, `COOKIE_ENV`). It answers one JSON line on
//! stdout per command line on stdin, one command at a time, so only one of the two
//! generator processes works at any moment:
//!
//! | command | the peer | answer |
//! |---|---|---|
//! | `{"op":"ready","n":N}` | opens clients up to N | `{"ready","connect_failures","connect_secs","errors"}` |
//! | `{"op":"step","mode":M}` | runs one round of mode M (after its gap) | `{}` |
//! | `{"op":"end"}` | ends the mode's rounds | `{"samples":{column: [ms…]},"errors":[…]}` |
//! | `{"op":"close"}` | closes its clients | `{}` |
//!
//! Any command's failure answers `{"error": why}`. The peer ends at end of input, and with its
//! parent (`PR_SET_PDEATHSIG`). Progress goes to stderr like the parent's; stdout carries
//! nothing but answers.

use super::*;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;

/// `KIND ADDR PID` of the server a peer attaches to.
const PEER_ENV: &str = "CATALYTIC_BENCH_FANOUT_PEER";
/// The admin cookie its clients present (not on the command line, where `ps` shows it).
const COOKIE_ENV: &str = "CATALYTIC_BENCH_FANOUT_PEER_COOKIE";
/// Added to every wait for an answer, beyond what the command itself may take.
const SLACK: Duration = Duration::from_secs(10);

/// The parent's end of a peer process.
pub(super) struct Peer {
    child: Child,
    to: ChildStdin,
    /// The peer's answer lines, read on a thread of their own so every wait has a limit.
    answers: mpsc::Receiver<String>,
}

impl Peer {
    /// Start a peer attached to the running server `kind` at `addr` (process `pid`).
    pub(super) fn spawn(
        o: &Opts,
        kind: Kind,
        addr: SocketAddr,
        pid: u32,
        cookie: &str,
    ) -> Result<Peer, String> {
        let exe = std::env::current_exe().map_err(|e| format!("own executable: {e}"))?;
        let mut cmd = Command::new(exe);
        cmd.args(std::env::args_os().skip(1))
            .env(PEER_ENV, format!("{} {addr} {pid}", kind.name()))
            .env(COOKIE_ENV, cookie)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped());
        // SAFETY: only an async-signal-safe syscall between fork and exec.
        unsafe {
            use std::os::unix::process::CommandExt;
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
                Ok(())
            });
        }
        let mut child = cmd.spawn().map_err(|e| format!("spawn: {e}"))?;
        let (Some(to), Some(from)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err("no pipes to the peer".into());
        };
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        log(
            o,
            format!("[{}] clients in peer process {}", kind.name(), child.id()),
        );
        Ok(Peer { child, to, answers })
    }

    /// One command and its answer within `limit` (plus `SLACK`). A peer that does not answer
    /// in time is killed: every later command then fails at once.
    fn call(&mut self, cmd: Value, limit: Duration) -> Result<Value, String> {
        writeln!(self.to, "{cmd}")
            .and_then(|()| self.to.flush())
            .map_err(|e| format!("peer gone: {e}"))?;
        let line = match self.answers.recv_timeout(limit + SLACK) {
            Ok(line) => line,
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let _ = self.child.kill();
                return Err(format!(
                    "peer: no answer to {cmd} within {:?}; killed",
                    limit + SLACK
                ));
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err("peer ended".into()),
        };
        let v: Value = serde_json::from_str(&line).map_err(|e| format!("peer answer: {e}"))?;
        match v.get("error").and_then(Value::as_str) {
            Some(e) => Err(format!("peer: {e}")),
            None => Ok(v),
        }
    }

    /// `FanRunner::ready` in the peer: the connect figures of `n` clients, with its errors.
    pub(super) fn ready(&mut self, ctx: &Ctx, n: usize) -> FanPoint {
        let mut p = FanPoint {
            n,
            peer_process: true,
            ..Default::default()
        };
        let limit = ctx
            .deadline_for(n)
            .saturating_duration_since(Instant::now());
        match self.call(json!({"op": "ready", "n": n}), limit) {
            Ok(v) => {
                p.ready = v["ready"].as_u64().unwrap_or(0) as usize;
                p.connect_failures = v["connect_failures"].as_u64().unwrap_or(n as u64) as usize;
                p.connect_secs = v["connect_secs"].as_f64().unwrap_or(f64::NAN);
                p.errors = strings(&v["errors"]);
            }
            Err(e) => p.errors.push(e),
        }
        p
    }

    /// One round of `mode` in the peer: its idle gap, then the round (bounded by the round's
    /// own timeout).
    pub(super) fn step(&mut self, o: &Opts, mode: Mode) -> Result<(), String> {
        self.call(
            json!({"op": "step", "mode": mode.name()}),
            mode.gap(o) + o.timeout,
        )
        .map(drop)
    }

    /// The peer's samples of the mode's kept rounds into `run`, and the problems its rounds
    /// met into the point.
    pub(super) fn end(&mut self, o: &Opts, run: &mut ModeRun) {
        match self.call(json!({"op": "end"}), o.timeout) {
            Ok(v) => {
                run.samples = Samples::from_json(&v["samples"]);
                run.point.errors.extend(strings(&v["errors"]));
            }
            Err(e) => run.point.errors.push(e),
        }
    }

    /// Close the peer's clients.
    pub(super) fn close(&mut self, o: &Opts) -> Result<(), String> {
        self.call(json!({"op": "close"}), o.timeout).map(drop)
    }

    /// End the peer: end of input, then its exit status (killed if it does not end in time).
    pub(super) fn finish(self, o: &Opts, errors: &mut Vec<String>) {
        let Peer { mut child, to, .. } = self;
        drop(to);
        let deadline = Instant::now() + o.timeout + SLACK;
        let status = loop {
            match child.try_wait() {
                Ok(Some(st)) => break Ok(st),
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20))
                }
                Ok(None) => {
                    let _ = child.kill();
                    break child.wait().map_err(|e| e.to_string());
                }
                Err(e) => break Err(e.to_string()),
            }
        };
        match status {
            Ok(st) if st.success() => {}
            Ok(st) => errors.push(format!("peer process: {st}")),
            Err(e) => errors.push(format!("peer process: {e}")),
        }
    }
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// This process is a peer (its parent set `PEER_ENV`).
pub(in crate::scenarios) fn is_peer() -> bool {
    std::env::var_os(PEER_ENV).is_some()
}

/// In a peer process (the environment says so): serve the parent's commands until end of
/// input. `None` in any other process; `Some(exit code)` in a peer.
pub(in crate::scenarios) fn serve_if_peer(ctx: &Ctx) -> Option<i32> {
    let spec = std::env::var(PEER_ENV).ok()?;
    let cookie = std::env::var(COOKIE_ENV).unwrap_or_default();
    let mut it = spec.split(' ');
    let (kind, addr, pid) = (it.next(), it.next(), it.next());
    let kind = match kind {
        Some("catalytic") => Kind::Catalytic,
        Some("floor") => Kind::Floor,
        _ => return Some(fail(&format!("bad {PEER_ENV}: {spec:?}"))),
    };
    let (Some(Ok(addr)), Some(Ok(pid))) = (addr.map(str::parse), pid.map(str::parse::<u32>)) else {
        return Some(fail(&format!("bad {PEER_ENV}: {spec:?}")));
    };
    let mut r = match FanRunner::attach(kind, vec![addr], &[pid], cookie, ctx.o) {
        Ok(r) => r,
        Err(e) => return Some(fail(&e)),
    };
    let mut connected = FanPoint::default();
    let mut run: Option<ModeRun> = None;
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    for line in stdin.lock().lines() {
        let Ok(line) = line else { break };
        let cmd: Value = serde_json::from_str(&line).unwrap_or(Value::Null);
        let answer = match cmd["op"].as_str() {
            Some("ready") => {
                let n = cmd["n"].as_u64().unwrap_or(0) as usize;
                connected = r.ready(ctx, n);
                json!({"ready": connected.ready, "connect_failures": connected.connect_failures,
                       "connect_secs": connected.connect_secs, "errors": connected.errors})
            }
            Some("step") => {
                let mode = if cmd["mode"] == "cold" {
                    Mode::Cold
                } else {
                    Mode::Warm
                };
                // A new mode starts its own rounds, also when the parent gave up on the last
                // mode's without asking for their end.
                if run.as_ref().is_some_and(|m| m.point.mode != mode) {
                    run = None;
                }
                let m = run.get_or_insert_with(|| r.start_mode(ctx.o, mode, &connected));
                match r.step(ctx.o, m) {
                    Ok(()) => json!({}),
                    Err(e) => json!({"error": e}),
                }
            }
            Some("end") => match run.take() {
                Some(mut m) => {
                    r.note_dropped(&mut m.point, m.dropped0);
                    // Only what the rounds added: the connect errors went with `ready`.
                    let errors = m.point.errors.split_off(connected.errors.len());
                    json!({"samples": m.samples.json(), "errors": errors})
                }
                None => json!({"error": "no rounds to end"}),
            },
            Some("close") => {
                r.close_clients(ctx.o);
                json!({})
            }
            _ => json!({"error": format!("unknown command {line:?}")}),
        };
        if writeln!(out, "{answer}")
            .and_then(|()| out.flush())
            .is_err()
        {
            break;
        }
    }
    r.close_clients(ctx.o);
    Some(0)
}

fn fail(why: &str) -> i32 {
    eprintln!("catalytic-bench peer: {why}");
    1
}
