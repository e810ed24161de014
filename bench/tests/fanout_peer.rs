//! The fan-out peer process (`scenarios/fanout/peer.rs`) from outside: a real catalytic server
//! on loopback, the real `catalytic-bench` started as a peer, and its line protocol spoken on
//! its stdin/stdout the way a 10,000-client `compare` run's parent speaks it.
//!
//! Needs the server binary beside the generator's (`cargo test --release` at the workspace
//! root builds both; `cargo build --release` does too).

use serde_json::{json, Value};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const GEN: &str = env!("CARGO_BIN_EXE_catalytic-bench");

/// A scratch directory removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Scratch {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let p =
            std::env::temp_dir().join(format!("catalytic-bench-peer-{}-{t}", std::process::id()));
        std::fs::create_dir_all(&p).unwrap();
        Scratch(p)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child killed on drop, so a failing assertion leaves no process behind.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn server_bin() -> PathBuf {
    let p = Path::new(GEN).with_file_name("catalytic");
    assert!(
        p.exists(),
        "{} missing: build the server first (`cargo build --release` at the workspace root)",
        p.display()
    );
    p
}

/// `catalytic admin …` to completion; its stdout.
fn admin(bin: &Path, args: &[&str]) -> String {
    let out = Command::new(bin)
        .args(args)
        .env("CATALYTIC_ADMIN_PASSWORD", "peer-test-password-0123456789")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "catalytic {args:?}: {out:?}");
    String::from_utf8(out.stdout).unwrap()
}

/// A catalytic server on a free loopback port with a fresh database: the process, its
/// address, and an admin cookie.
fn start_server(dir: &Path) -> (Killed, String, String) {
    let bin = server_bin();
    let db = dir.join("peer.db");
    let db = db.to_str().unwrap();
    let email = "peer@example.com";
    admin(&bin, &["admin", "create", "--email", email, "--db", db]);
    let token = admin(&bin, &["admin", "token", "--email", email, "--db", db]);
    let mut child = Command::new(&bin)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--db",
            db,
            "--log-level",
            "info",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(err).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on http://").nth(1) {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the server's `listening on` line");
    (
        Killed(child),
        addr,
        format!("admin_session={}", token.trim()),
    )
}

/// The parent's end of a peer process.
struct PeerProc {
    child: Killed,
    to: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl PeerProc {
    fn start(spec: &str, cookie: &str, args: &[&str]) -> PeerProc {
        let mut child = Command::new(GEN)
            .args(args)
            .env("CATALYTIC_BENCH_FANOUT_PEER", spec)
            .env("CATALYTIC_BENCH_FANOUT_PEER_COOKIE", cookie)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let to = child.stdin.take().unwrap();
        let from: ChildStdout = child.stdout.take().unwrap();
        // Answers through a channel, so every wait below has a bound.
        let (tx, answers) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(from).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        PeerProc {
            child: Killed(child),
            to,
            answers,
        }
    }

    fn call(&mut self, cmd: Value) -> Value {
        writeln!(self.to, "{cmd}").unwrap();
        self.to.flush().unwrap();
        let line = self
            .answers
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("no answer to {cmd}: {e}"));
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("answer {line:?}: {e}"))
    }

    /// Close its input; its exit status within `limit`.
    fn end(self, limit: Duration) -> std::process::ExitStatus {
        let PeerProc { mut child, to, .. } = self;
        drop(to);
        let deadline = Instant::now() + limit;
        loop {
            if let Some(st) = child.0.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "the peer did not end within {limit:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// Options as a parent run would pass them; unpinned and at the default priority, so the
/// test runs anywhere (and the generator does not re-run itself in a session of its own).
const ARGS: [&str; 16] = [
    "compare",
    "--rounds",
    "2",
    "--warmup",
    "1",
    "--gap-ms",
    "10",
    "--cold-gap-ms",
    "10",
    "--cpu",
    "none",
    "--server-cpu",
    "none",
    "--nice",
    "none",
    "--quiet",
];

fn column(v: &Value, name: &str) -> Vec<Option<f64>> {
    v["samples"][name]
        .as_array()
        .unwrap_or_else(|| panic!("no column {name} in {v}"))
        .iter()
        .map(Value::as_f64)
        .collect()
}

#[test]
fn a_peer_runs_the_rounds_it_is_told_and_answers_their_samples() {
    let dir = Scratch::new();
    let (_server, addr, cookie) = start_server(&dir.0);
    // The server's pid is only for its CPU figures; this process's own pid reads as well.
    let spec = format!("catalytic {addr} {}", std::process::id());
    let mut peer = PeerProc::start(&spec, &cookie, &ARGS);

    let ready = peer.call(json!({"op": "ready", "n": 20}));
    assert_eq!(ready["ready"], 20, "{ready}");
    assert_eq!(ready["connect_failures"], 0, "{ready}");
    assert_eq!(ready["errors"], json!([]), "{ready}");

    // Warm-up and measured rounds: only the measured ones come back.
    for _ in 0..3 {
        assert_eq!(peer.call(json!({"op": "step", "mode": "warm"})), json!({}));
    }
    let warm = peer.call(json!({"op": "end"}));
    let max = column(&warm, "max");
    assert_eq!(max.len(), 2, "{warm}");
    assert!(
        max.iter()
            .all(|m| m.is_some_and(|ms| ms > 0.0 && ms < 5000.0)),
        "every client got each round's user_added: {warm}"
    );
    assert_eq!(column(&warm, "lost"), vec![Some(0.0); 2], "{warm}");
    assert!(
        column(&warm, "connect").is_empty(),
        "warm rounds open no connection: {warm}"
    );
    assert_eq!(warm["errors"], json!([]), "{warm}");

    // A mode the parent gave up on without `end` does not leak into the next one.
    assert_eq!(peer.call(json!({"op": "step", "mode": "warm"})), json!({}));
    // A second mode starts its own rounds: cold ones time their fresh connection.
    for _ in 0..2 {
        assert_eq!(peer.call(json!({"op": "step", "mode": "cold"})), json!({}));
    }
    let cold = peer.call(json!({"op": "end"}));
    assert_eq!(column(&cold, "max").len(), 1, "{cold}");
    assert_eq!(column(&cold, "connect").len(), 1, "{cold}");

    // Mistakes are answered, not fatal.
    let bad = peer.call(json!({"op": "launch"}));
    assert!(
        bad["error"]
            .as_str()
            .is_some_and(|e| e.contains("unknown command")),
        "{bad}"
    );
    let early = peer.call(json!({"op": "end"}));
    assert!(early["error"].is_string(), "{early}");

    assert_eq!(peer.call(json!({"op": "close"})), json!({}));
    assert!(peer.end(Duration::from_secs(20)).success());
}

#[test]
fn a_peer_without_a_server_to_attach_to_exits_with_an_error() {
    // Nothing listens on port 1; and an address that is no address.
    for spec in ["catalytic 127.0.0.1:1 1", "catalytic nowhere 1"] {
        let peer = PeerProc::start(spec, "", &ARGS);
        let st = peer.end(Duration::from_secs(20));
        assert_eq!(st.code(), Some(1), "{spec}: {st}");
    }
}
