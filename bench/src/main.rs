//! catalytic-bench — the bundled load generator for catalytic (and its floor reference).
//!
//! One thread, one mio reactor, up to ~19,000 WebSocket clients spread over source
//! addresses 127.0.0.1, 127.0.0.2, … . It starts the server under test itself (pinned to
//! one CPU, the generator to another), runs a scenario and prints a human table plus one
//! JSON line per scenario and server on stdout. Progress goes to stderr.
//!
//! It deliberately depends on external crates only, never on the catalytic library.

mod driver;
mod opts;
mod scenarios;
mod server;
mod stats;
mod sys;

pub use opts::Opts;

/// With autogroup scheduling (the Linux default for desktop-style kernels) `nice` only ranks
/// tasks inside one session's group, and other sessions' builds still take half of each CPU.
/// So the generator re-runs itself as the leader of a new session whose group gets the nice
/// value; the servers it starts join that group. The child dies with this process.
fn run_in_own_session(nice: i32) -> Option<i32> {
    const MARK: &str = "CATALYTIC_BENCH_SESSION";
    if std::env::var_os(MARK).is_some() {
        if std::fs::write("/proc/self/autogroup", nice.to_string()).is_err() {
            eprintln!("catalytic-bench: cannot set the session's scheduling group to nice {nice}");
        }
        return None;
    }
    let enabled = std::fs::read_to_string("/proc/sys/kernel/sched_autogroup_enabled")
        .is_ok_and(|s| s.trim() == "1");
    if !enabled {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1)).env(MARK, "1");
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::setsid();
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM);
            Ok(())
        });
    }
    match cmd.status() {
        Ok(st) => Some(st.code().unwrap_or(1)),
        Err(e) => {
            eprintln!(
                "catalytic-bench: cannot re-run in a new session ({e}); continuing in this one"
            );
            None
        }
    }
}

fn main() {
    let opts = opts::parse_args();
    if let Some(n) = opts.nice {
        if let Some(code) = run_in_own_session(n) {
            std::process::exit(code);
        }
    }
    let nofile = sys::raise_nofile();
    if let Some(cpu) = opts.cpu {
        if let Err(e) = sys::pin(0, cpu) {
            eprintln!("catalytic-bench: cannot pin to CPU {cpu}: {e}");
        }
    }
    if let Some(n) = opts.nice {
        if let Err(e) = sys::set_nice(n) {
            eprintln!(
                "catalytic-bench: cannot set nice {n}: {e} (running at the default priority)"
            );
        }
    }
    // A fan-out run's peer process (same options) leaves the banner to its parent.
    if !opts.quiet && !scenarios::is_fanout_peer() {
        let or_none = |v: Option<String>| v.unwrap_or_else(|| "none".into());
        eprintln!(
            "catalytic-bench: {} on {} ({} CPUs), nofile {nofile}, generator CPU {}, server CPU {}, nice {}, load {:?}",
            opts.scenario,
            sys::cpu_model(),
            sys::online_cpus(),
            or_none(opts.cpu.map(|c| c.to_string())),
            or_none(opts.server_cpu.map(|c| c.to_string())),
            or_none(opts.nice.map(|n| n.to_string())),
            sys::loadavg()
        );
    }
    let code = scenarios::run(&opts, nofile);
    std::process::exit(code);
}
