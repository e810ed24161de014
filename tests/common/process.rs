//! The server process: spawning the real binary, draining its output into [`Logs`], bounded
//! waits for exit, one-shot CLI runs, and what `/proc` says about a running process.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::BIN;

/// Lines the child wrote on stderr/stdout, shared with the draining threads.
#[derive(Clone, Default)]
pub struct Logs(Arc<(Mutex<Vec<String>>, Condvar)>);

impl Logs {
    fn push(&self, line: String) {
        let (m, cv) = &*self.0;
        m.lock().unwrap().push(line);
        cv.notify_all();
    }

    pub fn lines(&self) -> Vec<String> {
        self.0 .0.lock().unwrap().clone()
    }

    pub fn joined(&self) -> String {
        self.lines().join("\n")
    }

    /// First line (from index `from`) matching `pred`, waiting up to `timeout`.
    pub fn wait_line_from(
        &self,
        from: usize,
        timeout: Duration,
        pred: impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.0;
        let mut g = m.lock().unwrap();
        loop {
            if let Some(l) = g.iter().skip(from).find(|l| pred(l)) {
                return Some(l.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    pub fn wait_line(&self, timeout: Duration, pred: impl Fn(&str) -> bool) -> Option<String> {
        self.wait_line_from(0, timeout, pred)
    }

    pub fn len(&self) -> usize {
        self.0 .0.lock().unwrap().len()
    }
}

pub fn drain<R: Read + Send + 'static>(r: R, logs: Logs, tag: &'static str) {
    thread::spawn(move || {
        let mut r = BufReader::new(r);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let line = String::from_utf8_lossy(&buf).trim_end().to_string();
                    if std::env::var_os("CATALYTIC_TEST_ECHO").is_some() {
                        eprintln!("[{tag}] {line}");
                    }
                    logs.push(line);
                }
            }
        }
    });
}

/// A `catalytic` command with no inherited `CATALYTIC_*` configuration.
pub fn command() -> Command {
    let mut c = Command::new(BIN);
    for (k, _) in std::env::vars_os() {
        if k.to_string_lossy().starts_with("CATALYTIC_") {
            c.env_remove(k);
        }
    }
    c
}

/// A child process that is killed (and reaped) when dropped, so a failing test never leaves
/// a server running.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Proc {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Proc {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Spawns `cmd` with piped output and waits for the `listening on http://HOST:PORT` line.
/// Returns the child, its logs and the bound address.
pub fn spawn_listening(mut cmd: Command) -> (Proc, Logs, SocketAddr) {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = Proc(cmd.spawn().expect("spawn catalytic"));
    let logs = Logs::default();
    drain(child.stderr.take().unwrap(), logs.clone(), "stderr");
    drain(child.stdout.take().unwrap(), logs.clone(), "stdout");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(line) = logs.wait_line(Duration::from_millis(100), |l| {
            l.contains("listening on http://")
        }) {
            let rest =
                &line[line.find("listening on http://").unwrap() + "listening on http://".len()..];
            let hostport: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '/' && *c != '"' && *c != '\'')
                .collect();
            let addr: SocketAddr = hostport
                .parse()
                .unwrap_or_else(|_| panic!("cannot parse address from log line {line:?}"));
            return (child, logs, addr);
        }
        if let Ok(Some(st)) = child.try_wait() {
            panic!("server exited early with {st}; logs:\n{}", logs.joined());
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "no `listening on http://` line within 10 s; logs:\n{}",
                logs.joined()
            );
        }
    }
}

/// Waits for a child with a deadline; kills it (and panics) when it does not exit in time.
pub fn wait_child(child: &mut Child, timeout: Duration) -> ExitStatus {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("process did not exit within {timeout:?}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

pub struct CliOut {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `catalytic ARGS` to completion (30 s bound) with extra env vars and optional stdin.
pub fn run_cli(args: &[&str], envs: &[(&str, &str)], stdin: Option<&str>) -> CliOut {
    let mut cmd = command();
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("spawn catalytic");
    if let Some(input) = stdin {
        let mut si = child.stdin.take().unwrap();
        let _ = si.write_all(input.as_bytes());
        drop(si);
    }
    let mut so = child.stdout.take().unwrap();
    let mut se = child.stderr.take().unwrap();
    let t1 = thread::spawn(move || {
        let mut s = String::new();
        let _ = so.read_to_string(&mut s);
        s
    });
    let t2 = thread::spawn(move || {
        let mut s = String::new();
        let _ = se.read_to_string(&mut s);
        s
    });
    let status = wait_child(&mut child, Duration::from_secs(30));
    CliOut {
        status,
        stdout: t1.join().unwrap(),
        stderr: t2.join().unwrap(),
    }
}

/// Resident memory of a process in KiB (0 when unreadable).
pub fn vm_rss_kib(pid: i32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Open file descriptors of a process (0 when unreadable).
pub fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}
