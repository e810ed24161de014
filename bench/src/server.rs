//! Starting and stopping the servers under test (catalytic, or the floor reference), finding
//! the port they bound, getting an admin cookie, and building the floor from its sources.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Catalytic,
    Floor,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Catalytic => "catalytic",
            Kind::Floor => "floor",
        }
    }
}

pub struct Launch {
    pub kind: Kind,
    pub bin: PathBuf,
    pub server_cpu: Option<usize>,
    pub nice: Option<i32>,
    pub heartbeat_secs: u64,
    pub session_minutes: Option<f64>,
    pub extra_args: Vec<String>,
    /// A node of a cluster on PostgreSQL instead of a fresh SQLite file.
    pub cluster: Option<ClusterNode>,
}

/// How a catalytic node of a cluster starts: its database and name, and whether it makes the
/// deployment's admin account (the first node does; the others only take a session token).
pub struct ClusterNode {
    pub database_url: String,
    pub node_id: String,
    pub create_admin: bool,
}

pub struct ServerProc {
    pub kind: Kind,
    pub pid: u32,
    pub addr: SocketAddr,
    /// Full Cookie header value, e.g. `admin_session=...`.
    pub cookie: String,
    child: Option<Child>,
    tmp: Option<PathBuf>,
    tail: Arc<Mutex<VecDeque<String>>>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

const ADMIN_EMAIL: &str = "bench@example.com";
const ADMIN_PASSWORD: &str = "bench-password-0123456789";

/// A fresh scratch folder for one server: `catalytic-bench-PID-N` in the temp dir. The first
/// call of a process also removes the folders of generators that are gone (a run ended by
/// Ctrl-C or a kill leaves its servers' databases behind; a normal run removes its own).
fn tmp_dir() -> Result<PathBuf, String> {
    static SWEPT: std::sync::Once = std::sync::Once::new();
    SWEPT.call_once(sweep_orphans);
    let d = std::env::temp_dir().join(format!(
        "catalytic-bench-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).map_err(|e| format!("create {}: {e}", d.display()))?;
    Ok(d)
}

/// Remove `catalytic-bench-PID-N` folders whose generator process no longer exists. A folder
/// whose PID is alive (this run, another run, or a reused PID) is left alone.
fn sweep_orphans() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .and_then(|n| n.strip_prefix("catalytic-bench-"))
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(pid, n)| n.parse::<u32>().ok().and(pid.parse::<u32>().ok()))
        else {
            continue;
        };
        if !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// Run `catalytic admin ...` to completion (bounded), returning stdout.
fn run_admin(bin: &Path, args: &[&str]) -> Result<String, String> {
    let mut child = Command::new(bin)
        .args(args)
        .env("CATALYTIC_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        match child.try_wait() {
            Ok(Some(_)) => break,
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!(
                    "`catalytic {}` did not finish in 120 s",
                    args.join(" ")
                ));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
    let out = child.wait_with_output().map_err(|e| e.to_string())?;
    if !out.status.success() {
        return Err(format!(
            "`catalytic {}` failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// `... listening on http://127.0.0.1:PORT ...` → the address.
fn parse_listening(line: &str) -> Option<SocketAddr> {
    let at = line.find("listening on http://")? + "listening on http://".len();
    let rest = &line[at..];
    let end = rest
        .find(|c: char| c.is_whitespace() || c == '/' || c == ')' || c == ',' || c == '"')
        .unwrap_or(rest.len());
    rest[..end].parse().ok()
}

/// Fallback when no log line shows the port: the process's listening TCP socket.
fn listening_port_of(pid: u32) -> Option<SocketAddr> {
    let mut inodes = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .ok()?
        .take(100_000)
        .flatten()
    {
        if let Ok(l) = std::fs::read_link(e.path()) {
            let s = l.to_string_lossy();
            if let Some(ino) = s.strip_prefix("socket:[").and_then(|x| x.strip_suffix(']')) {
                inodes.push(ino.to_string());
            }
        }
    }
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    for line in tcp.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 10 || f[3] != "0A" || !inodes.iter().any(|i| i == f[9]) {
            continue;
        }
        let (ip_hex, port_hex) = f[1].split_once(':')?;
        let ip = u32::from_str_radix(ip_hex, 16).ok()?;
        let port = u16::from_str_radix(port_hex, 16).ok()?;
        let ip = std::net::Ipv4Addr::from(u32::from_be(ip));
        return Some(SocketAddr::new(ip.into(), port));
    }
    None
}

/// Start a server of `l.kind` on a free loopback port with a fresh database, and wait until
/// it answers `/healthz`.
pub fn start(l: &Launch) -> Result<ServerProc, String> {
    if !l.bin.exists() {
        return Err(format!("server binary not found: {}", l.bin.display()));
    }
    let tmp = tmp_dir()?;
    let mut cmd = Command::new(&l.bin);
    let cookie = prepare(l, &tmp, &mut cmd)?;
    cmd.args(&l.extra_args);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    pin_in_child(&mut cmd, l.server_cpu, l.nice);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("{}: {e}", l.bin.display()))?;
    let pid = child.id();
    let tail = Arc::new(Mutex::new(VecDeque::new()));
    let rx = watch_output(&mut child, &tail);
    let mut sp = ServerProc {
        kind: l.kind,
        pid,
        addr: "127.0.0.1:0".parse().unwrap(),
        cookie,
        child: Some(child),
        tmp: Some(tmp),
        tail,
    };
    sp.addr = sp.wait_listening(&rx)?;
    // Wait until it answers /healthz (bounded).
    let hd = Instant::now() + Duration::from_secs(10);
    while Instant::now() < hd {
        if healthz(sp.addr) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(sp)
}

/// The server's command line, and the admin cookie to use with it. catalytic gets a database
/// in `tmp` with an admin account and a session token made by its own `admin` commands (a
/// cluster node: the cluster's PostgreSQL, the account made by the first node only); the
/// floor accepts any `admin_session` cookie.
fn prepare(l: &Launch, tmp: &Path, cmd: &mut Command) -> Result<String, String> {
    let cookie;
    match (l.kind, &l.cluster) {
        (Kind::Catalytic, Some(c)) => {
            let url = c.database_url.as_str();
            if c.create_admin {
                run_admin(
                    &l.bin,
                    &[
                        "admin",
                        "create",
                        "--email",
                        ADMIN_EMAIL,
                        "--database-url",
                        url,
                    ],
                )?;
            }
            let token = run_admin(
                &l.bin,
                &[
                    "admin",
                    "token",
                    "--email",
                    ADMIN_EMAIL,
                    "--database-url",
                    url,
                ],
            )?;
            cookie = admin_cookie(&token)?;
            cmd.args(["serve", "--listen", "127.0.0.1:0", "--database-url", url]);
            cmd.args(["--node-id", &c.node_id, "--log-level", "warn"]);
            cmd.args([
                "--max-connections-per-ip",
                "0",
                "--heartbeat-secs",
                &l.heartbeat_secs.to_string(),
            ]);
        }
        (Kind::Catalytic, None) => {
            let db = tmp.join("bench.db");
            let db_s = db.to_string_lossy().into_owned();
            run_admin(
                &l.bin,
                &["admin", "create", "--email", ADMIN_EMAIL, "--db", &db_s],
            )?;
            let token = run_admin(
                &l.bin,
                &["admin", "token", "--email", ADMIN_EMAIL, "--db", &db_s],
            )?;
            cookie = admin_cookie(&token)?;
            cmd.args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--db",
                &db_s,
                "--log-level",
                "warn",
            ]);
            cmd.args([
                "--max-connections-per-ip",
                "0",
                "--heartbeat-secs",
                &l.heartbeat_secs.to_string(),
            ]);
            if let Some(m) = l.session_minutes {
                cmd.args(["--session-minutes", &m.to_string()]);
            }
        }
        (Kind::Floor, _) => {
            cookie = "admin_session=bench".to_string();
            cmd.args([
                "--listen",
                "127.0.0.1:0",
                "--heartbeat-secs",
                &l.heartbeat_secs.to_string(),
            ]);
        }
    }
    Ok(cookie)
}

/// The `Cookie` value for what `catalytic admin token` printed.
fn admin_cookie(token: &str) -> Result<String, String> {
    let token = token.trim();
    if token.is_empty() || token.contains(char::is_whitespace) {
        return Err(format!("`catalytic admin token` printed {token:?}"));
    }
    Ok(format!("admin_session={token}"))
}

/// Pin (and renice) in the child before exec, so every thread the server ever starts
/// inherits it, and make it die with the generator.
fn pin_in_child(cmd: &mut Command, cpu: Option<usize>, nice: Option<i32>) {
    // SAFETY: only async-signal-safe syscalls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            if let Some(cpu) = cpu {
                let mut set: libc::cpu_set_t = std::mem::zeroed();
                libc::CPU_ZERO(&mut set);
                libc::CPU_SET(cpu, &mut set);
                libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
            }
            if let Some(n) = nice {
                libc::setpriority(libc::PRIO_PROCESS, 0, n);
            }
            // Never outlive the generator (a crash or Ctrl-C must not leave servers behind).
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
}

/// Drain the server's stdout and stderr for its whole life (one thread each, ending at EOF
/// when it exits): keep the last 40 lines for error messages, and send the address of any
/// `listening on` line.
fn watch_output(
    child: &mut Child,
    tail: &Arc<Mutex<VecDeque<String>>>,
) -> mpsc::Receiver<SocketAddr> {
    let (tx, rx) = mpsc::channel::<SocketAddr>();
    let mut readers: Vec<Box<dyn std::io::Read + Send>> = Vec::new();
    if let Some(out) = child.stdout.take() {
        readers.push(Box::new(out));
    }
    if let Some(err) = child.stderr.take() {
        readers.push(Box::new(err));
    }
    for r in readers {
        let tx = tx.clone();
        let tail = tail.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(r).lines().map_while(Result::ok) {
                if let Some(a) = parse_listening(&line) {
                    let _ = tx.send(a);
                }
                if let Ok(mut t) = tail.lock() {
                    if t.len() >= 40 {
                        t.pop_front();
                    }
                    t.push_back(line);
                }
            }
        });
    }
    rx
}

fn healthz(addr: SocketAddr) -> bool {
    get_ok(addr, "/healthz")
}

/// Wait (up to `within`) until `addr` answers `/readyz` with 200: a cluster node has caught up
/// with the event log.
pub fn wait_ready(addr: SocketAddr, within: Duration) -> bool {
    let deadline = Instant::now() + within;
    while Instant::now() < deadline {
        if get_ok(addr, "/readyz") {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// `GET path` answered 200.
fn get_ok(addr: SocketAddr, path: &str) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .is_err()
    {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n >= 12 && &buf[9..12] == b"200")
}

impl ServerProc {
    /// The address the server bound: from its `listening on` line, else (catalytic logs it
    /// at info, below `--log-level warn`) from its listening socket in /proc. Up to 30 s.
    fn wait_listening(&mut self, rx: &mpsc::Receiver<SocketAddr>) -> Result<SocketAddr, String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(a) = rx.recv_timeout(Duration::from_millis(100)) {
                return Ok(a);
            }
            if let Some(Ok(Some(st))) = self.child.as_mut().map(|c| c.try_wait()) {
                return Err(format!(
                    "{} exited at start ({st}): {}",
                    self.kind.name(),
                    self.log_tail()
                ));
            }
            if deadline - Instant::now() < Duration::from_millis(29_500) {
                if let Some(a) = listening_port_of(self.pid) {
                    // Give the log line a moment to win, then settle for /proc.
                    std::thread::sleep(Duration::from_millis(200));
                    return Ok(rx.try_recv().unwrap_or(a));
                }
            }
        }
        Err(format!(
            "{}: no `listening on` line within 30 s: {}",
            self.kind.name(),
            self.log_tail()
        ))
    }

    pub fn log_tail(&self) -> String {
        self.tail
            .lock()
            .map(|t| t.iter().cloned().collect::<Vec<_>>().join(" | "))
            .unwrap_or_default()
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// SIGTERM, up to 10 s for a clean exit, then SIGKILL. Returns the exit description.
    pub fn stop(&mut self) -> String {
        let Some(mut child) = self.child.take() else {
            return "already stopped".into();
        };
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut res = String::new();
        while Instant::now() < deadline {
            match child.try_wait() {
                Ok(Some(st)) => {
                    res = st.to_string();
                    break;
                }
                Ok(None) => std::thread::sleep(Duration::from_millis(20)),
                Err(e) => {
                    res = e.to_string();
                    break;
                }
            }
        }
        if res.is_empty() {
            let _ = child.kill();
            let _ = child.wait();
            res = "killed after 10 s without exiting on SIGTERM".into();
        }
        if let Some(t) = self.tmp.take() {
            let _ = std::fs::remove_dir_all(t);
        }
        res
    }
}

impl Drop for ServerProc {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if let Some(t) = self.tmp.take() {
            let _ = std::fs::remove_dir_all(t);
        }
    }
}

/// Copy a small source tree (skipping `target/`), only rewriting files whose bytes changed so
/// cargo's incremental build stays valid. Bounded in depth and count.
fn sync_tree(src: &Path, dst: &Path, depth: u32, budget: &mut u32) -> std::io::Result<()> {
    if depth > 8 {
        return Ok(());
    }
    std::fs::create_dir_all(dst)?;
    for e in std::fs::read_dir(src)?.flatten() {
        if *budget == 0 {
            break;
        }
        *budget -= 1;
        let name = e.file_name();
        if name == "target" {
            continue;
        }
        let (s, d) = (e.path(), dst.join(&name));
        if e.file_type()?.is_dir() {
            sync_tree(&s, &d, depth + 1, budget)?;
        } else {
            let new = std::fs::read(&s)?;
            if std::fs::read(&d).ok().as_deref() != Some(&new[..]) {
                let _ = std::fs::remove_file(&d);
                std::fs::write(&d, &new)?;
            }
        }
    }
    Ok(())
}

/// Where the floor's sources are: an explicit dir, else `../shared/floor-server` next to
/// the repo this binary was built from (this package sits in the repo's `bench/`), else
/// relative to the working directory.
/// `Err` lists the places looked in, as absolute paths.
pub fn floor_src(explicit: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(p) = explicit {
        return Ok(p.to_path_buf());
    }
    let cands = [
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/floor-server"),
        PathBuf::from("../shared/floor-server"),
        PathBuf::from("shared/floor-server"),
    ];
    if let Some(found) = cands.iter().find(|p| p.join("Cargo.toml").exists()) {
        return Ok(found.clone());
    }
    let tried: Vec<String> = cands
        .iter()
        .map(|p| {
            std::path::absolute(p)
                .unwrap_or_else(|_| p.clone())
                .display()
                .to_string()
        })
        .collect();
    Err(format!("floor sources not found in {}", tried.join(", ")))
}

/// Build the floor server in a scratch folder (shared/ is read-only) and return its binary.
pub fn build_floor(src: &Path) -> Result<PathBuf, String> {
    let dir = std::env::temp_dir().join("catalytic-bench-floor");
    let proj = dir.join("floor-server");
    let mut budget = 1000;
    sync_tree(src, &proj, 0, &mut budget).map_err(|e| format!("copy {}: {e}", src.display()))?;
    let target = dir.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    eprintln!(
        "catalytic-bench: building the floor server in {}",
        dir.display()
    );
    let st = Command::new(cargo)
        .args(["build", "--release", "--quiet", "--manifest-path"])
        .arg(proj.join("Cargo.toml"))
        .env("CARGO_TARGET_DIR", &target)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .map_err(|e| format!("cargo: {e}"))?;
    if !st.success() {
        return Err(format!("building the floor failed ({st})"));
    }
    let bin = target.join("release/floor-server");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!("{} missing after build", bin.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[test]
    fn listening_line() {
        assert_eq!(
            parse_listening("floor-server: listening on http://127.0.0.1:4321 (nofile 20000)"),
            Some("127.0.0.1:4321".parse().unwrap())
        );
        assert_eq!(
            parse_listening(
                "2025-01-01T00:00:00Z INFO [catalytic] listening on http://127.0.0.1:80"
            ),
            Some("127.0.0.1:80".parse().unwrap())
        );
        assert_eq!(parse_listening("nothing"), None);
    }
}
