//! `cargo bench --bench fanout`: admin fan-out latency of catalytic at modest client counts,
//! next to the floor reference (../shared/floor-server, built in a temp dir) for the ratio.
//!
//! It runs the load generator (`catalytic-bench compare`), which starts both servers itself
//! (server pinned to CPU 0, generator to CPU 1), and prints its tables. When the floor cannot
//! be built, only catalytic is measured. Knobs (environment):
//!   CATALYTIC_BENCH_CLIENTS  client counts, default "100,1000"
//!   CATALYTIC_BENCH_ROUNDS   measured rounds per count, default 5
//! The full sweep (10,000 clients, every scenario) is `catalytic-bench all`; see docs/BENCHMARKS.md.
//!
//! The server is another package of the workspace, and Cargo only builds the binaries of the
//! package a bench belongs to. So this bench first runs `cargo build --release --bin catalytic`
//! itself (a no-op when it is up to date): the figures are always those of the current sources,
//! never of a stale `target/release/catalytic`.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn main() {
    // `cargo bench` passes `--bench` (and maybe a filter); `cargo test --benches` passes nothing
    // special either way, so there is nothing to parse. Skip under `cargo test` (no --bench).
    if !std::env::args().any(|a| a == "--bench") {
        println!("fanout: skipped (run with `cargo bench --bench fanout`)");
        return;
    }
    let gen = env!("CARGO_BIN_EXE_catalytic-bench");
    let server = build_server();
    let clients = std::env::var("CATALYTIC_BENCH_CLIENTS").unwrap_or_else(|_| "100,1000".into());
    let rounds = std::env::var("CATALYTIC_BENCH_ROUNDS").unwrap_or_else(|_| "5".into());
    let t = Instant::now();
    let mut child = Command::new(gen)
        .args([
            "compare",
            "--clients",
            &clients,
            "--rounds",
            &rounds,
            "--timeout-ms",
            "5000",
            "--catalytic-bin",
        ])
        .arg(&server)
        .stdin(Stdio::null())
        .spawn()
        .expect("start catalytic-bench");
    // Bounded: the generator's own timeouts end it well before this.
    let deadline = t + Duration::from_secs(600);
    let status = loop {
        match child.try_wait().expect("wait for catalytic-bench") {
            Some(st) => break st,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                panic!("catalytic-bench did not finish in 600 s");
            }
            None => std::thread::sleep(Duration::from_millis(100)),
        }
    };
    println!("\nfanout bench: {:.1} s", t.elapsed().as_secs_f64());
    assert!(
        status.success(),
        "catalytic-bench compare failed ({status}); see its output above"
    );
}

/// Build the server binary of the current sources and return its path (beside the generator,
/// in the workspace's shared `target/release/`).
fn build_server() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&root)
        .args([
            "build",
            "--release",
            "--quiet",
            "-p",
            "catalytic",
            "--bin",
            "catalytic",
        ])
        .stdin(Stdio::null())
        .status()
        .expect("run cargo build for the server");
    assert!(status.success(), "building the server failed ({status})");
    let server = Path::new(env!("CARGO_BIN_EXE_catalytic-bench")).with_file_name("catalytic");
    assert!(
        server.exists(),
        "{} missing after the build",
        server.display()
    );
    server
}
