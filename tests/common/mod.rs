//! Black-box test harness: runs the real `catalytic` binary on a loopback port against a
//! temporary SQLite file and talks to it over raw TCP (HTTP/1.1) and tungstenite clients.
//!
//! Rules every helper follows:
//! - loopback only, ports picked by the kernel (`--listen 127.0.0.1:0`);
//! - every wait is bounded: sockets carry read timeouts, child processes are polled with deadlines;
//! - the server's stderr/stdout are drained by background threads into `Server::logs`, so the
//!   pipes never fill and tests can assert on log lines (e.g. the setup URL).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use tungstenite::client::IntoClientRequest;
use tungstenite::handshake::HandshakeError;
use tungstenite::protocol::frame::coding::CloseCode;
use tungstenite::protocol::WebSocketConfig;
use tungstenite::{ClientRequestBuilder, Message, WebSocket};

pub const BIN: &str = env!("CARGO_BIN_EXE_catalytic");
pub const ADMIN_EMAIL: &str = "admin@example.com";
pub const ADMIN_PASSWORD: &str = "correct horse battery staple 42";

/// Default bound for "this should arrive".
pub const WAIT: Duration = Duration::from_secs(5);
/// Bound for "this should NOT arrive" checks.
pub const QUIET: Duration = Duration::from_millis(400);

pub type Ws = WebSocket<TcpStream>;

// ---------------------------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------------------------

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

// ---------------------------------------------------------------------------------------------
// Server under test
// ---------------------------------------------------------------------------------------------

pub struct Server {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub addr: SocketAddr,
    pub logs: Logs,
    args: Vec<String>,
    child: Option<Proc>,
    admin: Mutex<Option<String>>,
    seq: AtomicUsize,
}

impl Server {
    /// A server that is not running yet (use `spawn`); lets a test prepare the database first.
    pub fn new(args: &[&str]) -> Server {
        let dir = tempfile::tempdir().expect("tempdir");
        let db = dir.path().join("db.sqlite");
        Server {
            dir,
            db,
            addr: "127.0.0.1:0".parse().unwrap(),
            logs: Logs::default(),
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            admin: Mutex::new(None),
            seq: AtomicUsize::new(0),
        }
    }

    pub fn start(args: &[&str]) -> Server {
        let mut s = Server::new(args);
        s.spawn();
        s
    }

    pub fn spawn(&mut self) {
        assert!(self.child.is_none(), "already running");
        let mut cmd = command();
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--db")
            .arg(&self.db)
            .args(&self.args);
        let (child, logs, addr) = spawn_listening(cmd);
        self.child = Some(child);
        self.logs = logs;
        self.addr = addr;
    }

    pub fn pid(&self) -> i32 {
        self.child.as_ref().expect("running").id() as i32
    }

    pub fn signal(&self, sig: i32) {
        let rc = unsafe { libc::kill(self.pid(), sig) };
        assert_eq!(rc, 0, "kill({sig}) failed");
    }

    /// SIGTERM and wait (10 s bound) for exit.
    pub fn stop(&mut self) -> ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().unwrap();
        wait_child(&mut child, Duration::from_secs(10))
    }

    /// Graceful stop, then start again on the same database (new port).
    pub fn restart(&mut self) {
        let st = self.stop();
        assert!(st.success(), "server exit status on SIGTERM: {st}");
        self.spawn();
    }

    /// Waits for the process to exit (after a signal sent by the test).
    pub fn wait_exit(&mut self, timeout: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        wait_child(&mut child, timeout)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    pub fn origin(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn db_arg(&self) -> String {
        self.db.to_string_lossy().into_owned()
    }

    /// Creates an admin account with the CLI (works before or while the server runs).
    pub fn create_admin(&self, email: &str, password: &str) {
        let db = self.db_arg();
        let out = run_cli(
            &["admin", "create", "--email", email, "--db", &db],
            &[("CATALYTIC_ADMIN_PASSWORD", password)],
            None,
        );
        assert!(
            out.status.success(),
            "admin create failed: {}\nstdout: {}\nstderr: {}",
            out.status,
            out.stdout,
            out.stderr
        );
    }

    /// A fresh admin session token from `catalytic admin token`.
    pub fn admin_token(&self, email: &str) -> String {
        self.admin_token_args(email, &[])
    }

    /// Like [`Server::admin_token`], with `--ttl-hours TTL_HOURS` (passed to the CLI verbatim).
    pub fn admin_token_with_ttl(&self, email: &str, ttl_hours: &str) -> String {
        self.admin_token_args(email, &["--ttl-hours", ttl_hours])
    }

    fn admin_token_args(&self, email: &str, extra: &[&str]) -> String {
        let db = self.db_arg();
        let mut args = vec!["admin", "token", "--email", email, "--db", &db];
        args.extend_from_slice(extra);
        let out = run_cli(&args, &[], None);
        assert!(
            out.status.success(),
            "admin token failed: {}\nstderr: {}",
            out.status,
            out.stderr
        );
        let tok = out.stdout.trim().to_string();
        assert!(!tok.is_empty(), "admin token printed nothing");
        tok
    }

    /// `admin_session=TOKEN` for the default admin (created once via the CLI).
    pub fn admin_cookie(&self) -> String {
        let mut g = self.admin.lock().unwrap();
        if let Some(c) = &*g {
            return c.clone();
        }
        self.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD);
        let c = format!("admin_session={}", self.admin_token(ADMIN_EMAIL));
        *g = Some(c.clone());
        c
    }

    /// Another, independent admin session for the default admin.
    pub fn second_admin_cookie(&self) -> String {
        self.admin_cookie();
        format!("admin_session={}", self.admin_token(ADMIN_EMAIL))
    }

    // ---- HTTP -------------------------------------------------------------------------------

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    pub fn http(&self) -> HttpConn {
        HttpConn::new(self.connect(), self.addr)
    }

    /// One request on a fresh connection.
    pub fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> Resp {
        self.http()
            .send(method, path, headers, body)
            .unwrap_or_else(|e| panic!("{method} {path}: {e}"))
    }

    pub fn get(&self, path: &str, cookie: Option<&str>) -> Resp {
        let h: Vec<(&str, &str)> = cookie.map(|c| ("Cookie", c)).into_iter().collect();
        self.request("GET", path, &h, None)
    }

    /// A JSON request (`Content-Type: application/json` when there is a body).
    pub fn json(
        &self,
        method: &str,
        path: &str,
        cookie: Option<&str>,
        body: Option<&Value>,
    ) -> Resp {
        let mut h: Vec<(&str, &str)> = Vec::new();
        if let Some(c) = cookie {
            h.push(("Cookie", c));
        }
        let bytes = body.map(|b| serde_json::to_vec(b).unwrap());
        if bytes.is_some() {
            h.push(("Content-Type", "application/json"));
        }
        self.request(method, path, &h, bytes.as_deref())
    }

    pub fn metrics(&self) -> String {
        let r = self.get("/metrics", None);
        assert_eq!(r.status, 200, "GET /metrics");
        r.text()
    }

    /// Value of one metric sample (exact name and exact label set), 0 when absent.
    pub fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        metric_value(&self.metrics(), name, labels).unwrap_or(0.0)
    }

    /// Polls /metrics until `pred(value)` holds; returns the last value (panics on timeout).
    pub fn wait_metric(
        &self,
        name: &str,
        labels: &[(&str, &str)],
        timeout: Duration,
        pred: impl Fn(f64) -> bool,
    ) -> f64 {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self.metric(name, labels);
            if pred(v) {
                return v;
            }
            if Instant::now() >= deadline {
                panic!(
                    "metric {name}{labels:?} = {v} did not reach the expected value; /metrics:\n{}",
                    self.metrics()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    // ---- users ------------------------------------------------------------------------------

    pub fn unique_email(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        format!("user{n}.{}@example.com", self.port())
    }

    /// POST /api/users with a unique email; asserts 201 and returns the user object.
    pub fn create_user(&self, first: &str, last: &str, questions_total: Option<u64>) -> Value {
        let mut body =
            json!({"first_name": first, "last_name": last, "email": self.unique_email()});
        if let Some(t) = questions_total {
            body["questions_total"] = json!(t);
        }
        let r = self.json(
            "POST",
            "/api/users",
            Some(&self.admin_cookie()),
            Some(&body),
        );
        assert_eq!(r.status, 201, "POST /api/users {body}: {}", r.text());
        r.json()
    }

    pub fn users(&self) -> Vec<Value> {
        let r = self.get("/api/users", Some(&self.admin_cookie()));
        assert_eq!(r.status, 200, "GET /api/users: {}", r.text());
        r.json().as_array().expect("array").clone()
    }

    pub fn user(&self, id: i64) -> Value {
        self.users()
            .into_iter()
            .find(|u| u["id"].as_i64() == Some(id))
            .unwrap_or_else(|| panic!("user {id} not in GET /api/users"))
    }

    pub fn patch_user(&self, id: i64, body: &Value) -> Resp {
        self.json(
            "PATCH",
            &format!("/api/users/{id}"),
            Some(&self.admin_cookie()),
            Some(body),
        )
    }

    /// POST /api/users with raw JSON bytes on a fresh connection. A failed write is ignored:
    /// the server may answer (and stop reading) before the whole body is in, e.g. with a 413.
    pub fn post_user_bytes(&self, cookie: &str, body: &[u8]) -> std::io::Result<Resp> {
        let mut conn = self.http();
        let headers = [("Cookie", cookie), ("Content-Type", "application/json")];
        let req = build_request(&conn.host, "POST", "/api/users", &headers, Some(body));
        let _ = conn.write_raw(&req);
        conn.read_response()
    }

    /// POST /api/users/{id}/invite (must be 200); the user with the new invite.
    pub fn regenerate_invite(&self, id: i64, cookie: &str) -> Value {
        let r = self.json(
            "POST",
            &format!("/api/users/{id}/invite"),
            Some(cookie),
            None,
        );
        assert_eq!(r.status, 200, "regenerate invite: {}", r.text());
        r.json()
    }

    /// POST /api/session/activate {"token"}.
    pub fn activate(&self, token: &str) -> Resp {
        self.json(
            "POST",
            "/api/session/activate",
            None,
            Some(&json!({ "token": token })),
        )
    }

    /// Creates a user and activates its invite; returns (user, invite token, session id,
    /// session_token cookie value).
    pub fn started_session(&self, questions_total: u64) -> Session {
        let user = self.create_user("Ada", "Lovelace", Some(questions_total));
        let token = invite_token(&user);
        let r = self.activate(&token);
        assert_eq!(r.status, 200, "activate: {}", r.text());
        let body = r.json();
        let session_id = session_id_of(&body);
        let cookie = r
            .cookie_value("session_token")
            .expect("session_token cookie on activate");
        Session {
            user_id: user["id"].as_i64().unwrap(),
            user,
            token,
            session_id,
            cookie,
        }
    }

    // ---- WebSocket --------------------------------------------------------------------------

    pub fn ws_url(&self, path: &str) -> String {
        format!("ws://{}{}", self.addr, path)
    }

    /// WebSocket handshake with extra headers. `Err` carries tungstenite's error (e.g.
    /// `Error::Http(response)` when the server answered something other than 101).
    pub fn ws_with(&self, path: &str, headers: &[(&str, &str)]) -> Result<Ws, tungstenite::Error> {
        let stream = self.connect();
        ws_handshake(stream, &self.ws_url(path), headers)
    }

    pub fn ws_connect(
        &self,
        path: &str,
        cookie: Option<&str>,
        origin: Option<&str>,
    ) -> Result<Ws, tungstenite::Error> {
        let mut h = Vec::new();
        if let Some(c) = cookie {
            h.push(("Cookie", c));
        }
        if let Some(o) = origin {
            h.push(("Origin", o));
        }
        self.ws_with(path, &h)
    }

    /// Admin stream with the given cookie; asserts the handshake succeeds and returns the
    /// socket together with the `initial` payload.
    pub fn admin_ws(&self, cookie: &str) -> (Ws, Vec<Value>) {
        let mut ws = self
            .ws_connect("/admin/stream", Some(cookie), None)
            .expect("admin stream handshake");
        let init = recv_json(&mut ws, WAIT);
        assert_eq!(init["type"], "initial", "first admin message: {init}");
        let data = init["data"].as_array().expect("initial.data array").clone();
        (ws, data)
    }

    pub fn agent_ws(&self, key: &str) -> Result<Ws, tungstenite::Error> {
        let auth = format!("Bearer {key}");
        self.ws_with("/agent/stream", &[("Authorization", &auth)])
    }

    /// Session stream authenticated with `?token=`.
    pub fn session_ws(&self, session_id: &str, token: &str) -> Result<Ws, tungstenite::Error> {
        self.ws_with(&format!("/session/{session_id}/stream?token={token}"), &[])
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

pub struct Session {
    pub user_id: i64,
    pub user: Value,
    /// The invite token (from invite_url).
    pub token: String,
    pub session_id: String,
    /// Value of the `session_token` cookie set by activate.
    pub cookie: String,
}

/// The `token` query parameter of a user's invite_url.
pub fn invite_token(user: &Value) -> String {
    let url = user["invite_url"]
        .as_str()
        .unwrap_or_else(|| panic!("invite_url in {user}"));
    let i = url
        .find("/session?token=")
        .unwrap_or_else(|| panic!("invite_url {url:?} lacks /session?token="));
    let t = &url[i + "/session?token=".len()..];
    let t = t.split('&').next().unwrap();
    assert!(!t.is_empty(), "empty token in {url}");
    t.to_string()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn headers_named(&self, name: &str) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {} body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }

    /// The whole `Set-Cookie` value for cookie `name`.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        let prefix = format!("{name}=");
        self.headers_named("Set-Cookie")
            .into_iter()
            .find(|v| v.trim_start().starts_with(&prefix))
            .map(str::to_string)
    }

    pub fn cookie_value(&self, name: &str) -> Option<String> {
        let sc = self.set_cookie(name)?;
        let first = sc.split(';').next().unwrap().trim();
        Some(first[name.len() + 1..].to_string())
    }

    /// Asserts the status and the `{"error": "..."}` JSON body shape.
    pub fn assert_error(&self, status: u16, what: &str) {
        assert_eq!(self.status, status, "{what}: body {:?}", self.text());
        let ct = self.header("Content-Type").unwrap_or("");
        assert!(
            ct.starts_with("application/json"),
            "{what}: error Content-Type {ct:?}"
        );
        let v = self.json();
        let obj = v
            .as_object()
            .unwrap_or_else(|| panic!("{what}: error body not an object: {v}"));
        assert!(
            obj.get("error")
                .and_then(Value::as_str)
                .is_some_and(|s| !s.is_empty()),
            "{what}: error body lacks a non-empty \"error\" string: {v}"
        );
    }
}

/// Cookie attribute check: `attr` present (case-insensitive) among `;`-separated parts.
pub fn cookie_has_attr(set_cookie: &str, attr: &str) -> bool {
    set_cookie
        .split(';')
        .skip(1)
        .any(|p| p.trim().eq_ignore_ascii_case(attr))
}

pub struct HttpConn {
    pub reader: BufReader<TcpStream>,
    host: String,
}

impl HttpConn {
    pub fn new(stream: TcpStream, addr: SocketAddr) -> HttpConn {
        HttpConn {
            reader: BufReader::new(stream),
            host: addr.to_string(),
        }
    }

    pub fn stream(&mut self) -> &mut TcpStream {
        self.reader.get_mut()
    }

    pub fn write_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let s = self.reader.get_mut();
        s.write_all(bytes)?;
        s.flush()
    }

    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<&[u8]>,
    ) -> std::io::Result<Resp> {
        let req = build_request(&self.host, method, path, headers, body);
        self.write_raw(&req)?;
        self.read_response()
    }

    pub fn read_response(&mut self) -> std::io::Result<Resp> {
        read_response(&mut self.reader)
    }

    /// True when the server closed the connection (EOF or reset) within `timeout`.
    pub fn closed_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut buf = [0u8; 4096];
        loop {
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            self.reader
                .get_ref()
                .set_read_timeout(Some(deadline - now))
                .unwrap();
            match self.reader.read(&mut buf) {
                Ok(0) => return true,
                Ok(_) => continue,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    continue
                }
                Err(_) => return true,
            }
        }
    }
}

pub fn build_request(
    host: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Vec<u8> {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\n");
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!("Content-Length: {}\r\n", b.len()));
    }
    req.push_str("\r\n");
    let mut bytes = req.into_bytes();
    if let Some(b) = body {
        bytes.extend_from_slice(b);
    }
    bytes
}

fn io_err(msg: String) -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::InvalidData, msg)
}

fn read_line(r: &mut impl BufRead) -> std::io::Result<String> {
    let mut buf = Vec::new();
    let n = r.read_until(b'\n', &mut buf)?;
    if n == 0 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "connection closed before a response",
        ));
    }
    Ok(String::from_utf8_lossy(&buf)
        .trim_end_matches(['\r', '\n'])
        .to_string())
}

/// Reads one HTTP/1.1 response (body by Content-Length, chunked, or to EOF).
pub fn read_response(r: &mut BufReader<TcpStream>) -> std::io::Result<Resp> {
    let status_line = read_line(r)?;
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(io_err(format!("bad status line {status_line:?}")));
    }
    let status: u16 = parts
        .next()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| io_err(format!("bad status line {status_line:?}")))?;
    let mut headers = Vec::new();
    loop {
        let line = read_line(r)?;
        if line.is_empty() {
            break;
        }
        let (k, v) = line
            .split_once(':')
            .ok_or_else(|| io_err(format!("bad header line {line:?}")))?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let mut resp = Resp {
        status,
        headers,
        body: Vec::new(),
    };
    if status == 204 || status == 304 || (100..200).contains(&status) {
        return Ok(resp);
    }
    if let Some(cl) = resp.header("Content-Length") {
        let n: usize = cl
            .parse()
            .map_err(|_| io_err(format!("bad Content-Length {cl:?}")))?;
        let mut body = vec![0u8; n];
        r.read_exact(&mut body)?;
        resp.body = body;
    } else if resp
        .header("Transfer-Encoding")
        .is_some_and(|te| te.to_ascii_lowercase().contains("chunked"))
    {
        loop {
            let size_line = read_line(r)?;
            let size = usize::from_str_radix(size_line.split(';').next().unwrap().trim(), 16)
                .map_err(|_| io_err(format!("bad chunk size {size_line:?}")))?;
            if size == 0 {
                // trailers
                while !read_line(r)?.is_empty() {}
                break;
            }
            let mut chunk = vec![0u8; size];
            r.read_exact(&mut chunk)?;
            resp.body.extend_from_slice(&chunk);
            read_line(r)?;
        }
    } else {
        r.read_to_end(&mut resp.body)?;
    }
    Ok(resp)
}

// ---------------------------------------------------------------------------------------------
// WebSocket client helpers
// ---------------------------------------------------------------------------------------------

/// Client handshake over an existing stream (which should carry a read timeout).
pub fn ws_handshake(
    stream: TcpStream,
    url: &str,
    headers: &[(&str, &str)],
) -> Result<Ws, tungstenite::Error> {
    let uri: tungstenite::http::Uri = url.parse().expect("ws url");
    let mut b = ClientRequestBuilder::new(uri);
    for (k, v) in headers {
        b = b.with_header(*k, *v);
    }
    let req = b.into_client_request()?;
    let cfg = WebSocketConfig::default();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut res = tungstenite::client::client_with_config(req, stream, Some(cfg));
    loop {
        match res {
            Ok((ws, _resp)) => return Ok(ws),
            Err(HandshakeError::Failure(e)) => return Err(e),
            Err(HandshakeError::Interrupted(mid)) => {
                if Instant::now() >= deadline {
                    return Err(tungstenite::Error::Io(std::io::Error::new(
                        std::io::ErrorKind::TimedOut,
                        "handshake timed out",
                    )));
                }
                res = mid.handshake();
            }
        }
    }
}

/// What a WebSocket read produced.
#[derive(Debug)]
pub enum WsEvent {
    Json(Value),
    /// Non-JSON text message.
    Text(String),
    Binary(Vec<u8>),
    Pong(Vec<u8>),
    /// A close frame: code and reason (`None` when the frame carried no code).
    Close(Option<(u16, String)>),
    /// The TCP connection ended (EOF/reset) without (further) frames.
    Ended(String),
}

/// Reads the next message within `timeout` (None on timeout). Protocol Pings are answered by
/// tungstenite itself; JSON `{"type":"ping"}` is answered with `{"type":"pong"}` and skipped
/// when `auto_pong` is set.
pub fn next_event(ws: &mut Ws, timeout: Duration, auto_pong: bool) -> Option<WsEvent> {
    let deadline = Instant::now() + timeout;
    loop {
        let now = Instant::now();
        if now >= deadline {
            return None;
        }
        let remaining = (deadline - now).max(Duration::from_millis(1));
        let _ = ws.get_ref().set_read_timeout(Some(remaining));
        match ws.read() {
            Ok(Message::Text(t)) => match serde_json::from_str::<Value>(t.as_str()) {
                Ok(v) => {
                    if auto_pong && v["type"] == "ping" {
                        let _ = ws.send(Message::text(r#"{"type":"pong"}"#));
                        continue;
                    }
                    return Some(WsEvent::Json(v));
                }
                Err(_) => return Some(WsEvent::Text(t.as_str().to_string())),
            },
            Ok(Message::Binary(b)) => return Some(WsEvent::Binary(b.to_vec())),
            Ok(Message::Pong(p)) => return Some(WsEvent::Pong(p.to_vec())),
            Ok(Message::Ping(_)) | Ok(Message::Frame(_)) => continue,
            Ok(Message::Close(f)) => {
                return Some(WsEvent::Close(
                    f.map(|f| (u16::from(f.code), f.reason.as_str().to_string())),
                ))
            }
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => return Some(WsEvent::Ended(e.to_string())),
        }
    }
}

/// The next JSON message (JSON pings answered and skipped); panics on anything else.
pub fn recv_json(ws: &mut Ws, timeout: Duration) -> Value {
    match next_event(ws, timeout, true) {
        Some(WsEvent::Json(v)) => v,
        other => panic!("expected a JSON message within {timeout:?}, got {other:?}"),
    }
}

/// The next JSON message of the given type, skipping others (which are returned too).
pub fn recv_type(ws: &mut Ws, ty: &str, timeout: Duration) -> (Value, Vec<Value>) {
    let deadline = Instant::now() + timeout;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(ws, left, true) {
            Some(WsEvent::Json(v)) if v["type"] == ty => return (v, skipped),
            Some(WsEvent::Json(v)) => skipped.push(v),
            other => panic!("waiting for {ty:?}: got {other:?} (skipped {skipped:?})"),
        }
    }
}

/// Asserts that no message (other than JSON pings) arrives within `dur`.
pub fn assert_silent(ws: &mut Ws, dur: Duration, what: &str) {
    if let Some(ev) = next_event(ws, dur, true) {
        panic!("{what}: expected nothing, got {ev:?}");
    }
}

/// The next event must be a close frame; returns (code, reason). Panics when a JSON message
/// arrives first, when the connection just ends, or on timeout.
pub fn expect_close(ws: &mut Ws, timeout: Duration) -> (u16, String) {
    match next_event(ws, timeout, true) {
        Some(WsEvent::Close(Some(cr))) => cr,
        other => panic!("expected a close frame within {timeout:?}, got {other:?}"),
    }
}

/// Skips messages until a close frame; returns (code, reason) and the skipped JSON messages.
pub fn close_after(ws: &mut Ws, timeout: Duration) -> ((u16, String), Vec<Value>) {
    let deadline = Instant::now() + timeout;
    let mut skipped = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(ws, left, true) {
            Some(WsEvent::Json(v)) => skipped.push(v),
            Some(WsEvent::Close(Some(cr))) => return (cr, skipped),
            other => panic!(
                "expected a close frame within {timeout:?}, got {other:?} (skipped {skipped:?})"
            ),
        }
    }
}

/// Reads until the connection is over (close frame or EOF/reset); returns the close frame if
/// one came. Panics if it is still open after `timeout`.
pub fn wait_ended(ws: &mut Ws, timeout: Duration) -> Option<(u16, String)> {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(ws, left, true) {
            Some(WsEvent::Close(c)) => return c,
            Some(WsEvent::Ended(_)) => return None,
            Some(_) => continue,
            None => panic!("connection still open after {timeout:?}"),
        }
    }
}

/// A handshake outcome counts as "refused" when it is an HTTP error status before the upgrade
/// or a 101 followed at once by close 1008 (no message before it). Returns a description.
pub fn assert_refused(res: Result<Ws, tungstenite::Error>, what: &str) -> String {
    match res {
        Err(tungstenite::Error::Http(resp)) => {
            let st = resp.status().as_u16();
            assert!(
                (400..500).contains(&st),
                "{what}: refused with unexpected status {st}"
            );
            format!("http {st}")
        }
        Err(e) => panic!("{what}: handshake failed oddly: {e}"),
        Ok(mut ws) => {
            let (code, reason) = expect_close(&mut ws, WAIT);
            assert_eq!(code, 1008, "{what}: close code (reason {reason:?})");
            format!("close 1008 {reason}")
        }
    }
}

/// Handshake must complete (101) and the server must close at once with 1008 + `reason`.
pub fn assert_closed_1008(res: Result<Ws, tungstenite::Error>, reason: &str, what: &str) {
    let mut ws = match res {
        Ok(ws) => ws,
        Err(e) => panic!("{what}: expected a 101 then close 1008, handshake gave {e}"),
    };
    let (code, r) = expect_close(&mut ws, WAIT);
    assert_eq!(
        (code, r.as_str()),
        (1008, reason),
        "{what}: close code/reason"
    );
}

pub fn send_json(ws: &mut Ws, v: &Value) {
    ws.send(Message::text(v.to_string())).expect("ws send");
}

pub fn close_normal(ws: &mut Ws) {
    let _ = ws.close(Some(tungstenite::protocol::CloseFrame {
        code: CloseCode::Normal,
        reason: "".into(),
    }));
    let _ = ws.flush();
}

// ---------------------------------------------------------------------------------------------
// Metrics text
// ---------------------------------------------------------------------------------------------

/// A Prometheus sample: name, labels, value.
pub type Sample = (String, Vec<(String, String)>, f64);

/// Parses a Prometheus sample line.
pub fn parse_sample(line: &str) -> Option<Sample> {
    let line = line.trim();
    if line.is_empty() || line.starts_with('#') {
        return None;
    }
    let (name, labels, rest) = if let Some(open) = line.find('{') {
        let close = line.rfind('}')?;
        let name = line[..open].to_string();
        let mut labels = Vec::new();
        let inner = &line[open + 1..close];
        for part in inner.split(',') {
            let part = part.trim();
            if part.is_empty() {
                continue;
            }
            let (k, v) = part.split_once('=')?;
            labels.push((k.trim().to_string(), v.trim().trim_matches('"').to_string()));
        }
        (name, labels, &line[close + 1..])
    } else {
        let sp = line.find(char::is_whitespace)?;
        (line[..sp].to_string(), Vec::new(), &line[sp..])
    };
    let value: f64 = rest.split_whitespace().next()?.parse().ok()?;
    Some((name, labels, value))
}

pub fn metric_value(text: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    text.lines().filter_map(parse_sample).find_map(|(n, l, v)| {
        let same = n == name
            && l.len() == labels.len()
            && labels
                .iter()
                .all(|(k, want)| l.iter().any(|(lk, lv)| lk == k && lv == want));
        same.then_some(v)
    })
}

// ---------------------------------------------------------------------------------------------
// Misc
// ---------------------------------------------------------------------------------------------

pub const USER_KEYS: [&str; 11] = [
    "id",
    "first_name",
    "last_name",
    "email",
    "status",
    "progress",
    "invite_url",
    "token_valid",
    "session_timer",
    "transcript",
    "summary",
];

/// Asserts a value has exactly the contract's user-object keys and value types.
pub fn assert_user_shape(u: &Value) {
    let obj = u
        .as_object()
        .unwrap_or_else(|| panic!("user is not an object: {u}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = USER_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "user object keys: {u}");
    assert!(u["id"].is_i64() || u["id"].is_u64(), "id: {u}");
    for k in ["first_name", "last_name", "email", "progress", "invite_url"] {
        assert!(u[k].is_string(), "{k} must be a string: {u}");
    }
    let st = u["status"].as_str().unwrap_or("");
    assert!(
        ["invited", "in_progress", "completed", "expired"].contains(&st),
        "status {st:?}: {u}"
    );
    let p = u["progress"].as_str().unwrap();
    let (a, t) = p
        .split_once('/')
        .unwrap_or_else(|| panic!("progress {p:?} is not A/T"));
    assert!(
        a.parse::<u64>().is_ok() && t.parse::<u64>().is_ok(),
        "progress {p:?}"
    );
    assert!(u["token_valid"].is_boolean(), "token_valid: {u}");
    match &u["session_timer"] {
        Value::Null => {}
        Value::String(s) => assert!(is_mm_ss(s), "session_timer {s:?}"),
        other => panic!("session_timer {other}"),
    }
    for k in ["transcript", "summary"] {
        assert!(u[k].is_null() || u[k].is_string(), "{k}: {u}");
    }
}

/// "MM:SS" (minutes may have more than two digits).
pub fn is_mm_ss(s: &str) -> bool {
    match s.split_once(':') {
        Some((m, sec)) => {
            !m.is_empty()
                && m.chars().all(|c| c.is_ascii_digit())
                && sec.len() == 2
                && sec.chars().all(|c| c.is_ascii_digit())
                && sec.parse::<u32>().unwrap() < 60
        }
        None => false,
    }
}

/// `session_id` of an activate answer, as it goes into `/session/{id}/stream`.
pub fn session_id_of(body: &Value) -> String {
    match &body["session_id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => panic!("session_id in {body}"),
    }
}

pub fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("id in {v}"))
}

/// A tempdir-relative path that is guaranteed unusable as a database: its parent is a file.
pub fn unusable_db_path(dir: &Path) -> PathBuf {
    let f = dir.join("not-a-dir");
    std::fs::write(&f, b"x").unwrap();
    f.join("sub").join("db.sqlite")
}

// ---------------------------------------------------------------------------------------------
// Source addresses and raw WebSocket frames
// ---------------------------------------------------------------------------------------------

impl Server {
    /// A connection from another loopback source address (e.g. "127.0.0.2"), so per-IP rules
    /// can be exercised from one machine.
    pub fn connect_from(&self, ip: &str) -> TcpStream {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        let src: SocketAddr = format!("{ip}:0").parse().unwrap();
        sock.bind(&src.into())
            .expect("bind loopback source address");
        sock.connect_timeout(&self.addr.into(), Duration::from_secs(5))
            .expect("connect");
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
    }

    pub fn http_from(&self, ip: &str) -> HttpConn {
        HttpConn::new(self.connect_from(ip), self.addr)
    }

    /// A connection with a 2 KiB receive buffer, for a client that stops reading: the kernel
    /// window fills quickly and the server's writes back up into its outbox.
    pub fn tiny_buffer_stream(&self) -> TcpStream {
        use socket2::{Domain, Socket, Type};
        let sock = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        sock.set_recv_buffer_size(2048).unwrap();
        sock.connect_timeout(&self.addr.into(), Duration::from_secs(5))
            .unwrap();
        let s: TcpStream = sock.into();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// Raw WebSocket: sends the upgrade request (plus `extra` bytes in the same write) and
    /// reads the response head. Returns the socket and the parsed head.
    pub fn raw_ws(&self, path: &str, headers: &[(&str, &str)], extra: &[u8]) -> (RawWs, Resp) {
        let mut s = self.connect();
        let mut req = format!(
            "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
            self.addr
        );
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        let mut bytes = req.into_bytes();
        bytes.extend_from_slice(extra);
        s.write_all(&bytes).unwrap();
        // Read up to the end of the head; keep anything after it.
        let mut buf = Vec::new();
        let deadline = Instant::now() + WAIT;
        let end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            assert!(Instant::now() < deadline, "no handshake response");
            let mut tmp = [0u8; 4096];
            match s.read(&mut tmp) {
                Ok(0) => panic!(
                    "closed during handshake; got {:?}",
                    String::from_utf8_lossy(&buf)
                ),
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => panic!("handshake read: {e}"),
            }
        };
        let head = buf[..end].to_vec();
        let rest = buf[end..].to_vec();
        let mut r = BufReader::new(&head[..]);
        let status_line = read_line(&mut r).unwrap();
        let status: u16 = status_line.split(' ').nth(1).unwrap().parse().unwrap();
        let mut hs = Vec::new();
        loop {
            let l = read_line(&mut r).unwrap();
            if l.is_empty() {
                break;
            }
            let (k, v) = l.split_once(':').unwrap();
            hs.push((k.trim().to_string(), v.trim().to_string()));
        }
        (
            RawWs { s, buf: rest },
            Resp {
                status,
                headers: hs,
                body: Vec::new(),
            },
        )
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct RawFrame {
    pub fin: bool,
    pub rsv: u8,
    pub opcode: u8,
    pub masked: bool,
    pub payload: Vec<u8>,
}

impl RawFrame {
    /// (code, reason) of a close frame.
    pub fn close_code(&self) -> Option<(u16, String)> {
        if self.opcode != 8 || self.payload.len() < 2 {
            return None;
        }
        Some((
            u16::from_be_bytes([self.payload[0], self.payload[1]]),
            String::from_utf8_lossy(&self.payload[2..]).into_owned(),
        ))
    }
}

pub struct RawWs {
    pub s: TcpStream,
    buf: Vec<u8>,
}

/// Encodes one frame; `mask` None sends it unmasked (a protocol violation from a client).
pub fn encode_frame(
    fin: bool,
    rsv: u8,
    opcode: u8,
    payload: &[u8],
    mask: Option<[u8; 4]>,
) -> Vec<u8> {
    let mut out = vec![(if fin { 0x80 } else { 0 }) | ((rsv & 7) << 4) | (opcode & 0x0f)];
    let mbit = if mask.is_some() { 0x80 } else { 0 };
    let n = payload.len();
    if n < 126 {
        out.push(mbit | n as u8);
    } else if n <= 0xffff {
        out.push(mbit | 126);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(mbit | 127);
        out.extend_from_slice(&(n as u64).to_be_bytes());
    }
    match mask {
        Some(m) => {
            out.extend_from_slice(&m);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ m[i % 4]));
        }
        None => out.extend_from_slice(payload),
    }
    out
}

pub const MASK: [u8; 4] = [0x12, 0x34, 0x56, 0x78];

impl RawWs {
    pub fn send_raw(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.s.write_all(bytes)
    }

    /// A well-formed masked frame.
    pub fn send(&mut self, fin: bool, opcode: u8, payload: &[u8]) -> std::io::Result<()> {
        self.send_raw(&encode_frame(fin, 0, opcode, payload, Some(MASK)))
    }

    fn parse(&mut self) -> Option<RawFrame> {
        let b = &self.buf;
        if b.len() < 2 {
            return None;
        }
        let fin = b[0] & 0x80 != 0;
        let rsv = (b[0] >> 4) & 7;
        let opcode = b[0] & 0x0f;
        let masked = b[1] & 0x80 != 0;
        let mut len = (b[1] & 0x7f) as usize;
        let mut i = 2;
        if len == 126 {
            if b.len() < 4 {
                return None;
            }
            len = u16::from_be_bytes([b[2], b[3]]) as usize;
            i = 4;
        } else if len == 127 {
            if b.len() < 10 {
                return None;
            }
            len = u64::from_be_bytes(b[2..10].try_into().unwrap()) as usize;
            i = 10;
        }
        let mut key = [0u8; 4];
        if masked {
            if b.len() < i + 4 {
                return None;
            }
            key.copy_from_slice(&b[i..i + 4]);
            i += 4;
        }
        if b.len() < i + len {
            return None;
        }
        let mut payload = b[i..i + len].to_vec();
        if masked {
            for (j, x) in payload.iter_mut().enumerate() {
                *x ^= key[j % 4];
            }
        }
        self.buf.drain(..i + len);
        Some(RawFrame {
            fin,
            rsv,
            opcode,
            masked,
            payload,
        })
    }

    /// The next frame; `Err(description)` on EOF/reset/timeout.
    pub fn read_frame(&mut self, timeout: Duration) -> Result<RawFrame, String> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(f) = self.parse() {
                return Ok(f);
            }
            let now = Instant::now();
            if now >= deadline {
                return Err("timeout".into());
            }
            self.s.set_read_timeout(Some(deadline - now)).unwrap();
            let mut tmp = [0u8; 16 * 1024];
            match self.s.read(&mut tmp) {
                Ok(0) => return Err("eof".into()),
                Ok(n) => self.buf.extend_from_slice(&tmp[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) => {}
                Err(e) => return Err(format!("read error: {e}")),
            }
        }
    }

    /// Reads frames until a close frame (skipping data/ping/pong); returns its code and reason.
    pub fn read_close(&mut self, timeout: Duration) -> (u16, String) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(f) if f.opcode == 8 => {
                    return f
                        .close_code()
                        .unwrap_or_else(|| panic!("close frame without a code: {f:?}"))
                }
                Ok(_) => continue,
                Err(e) => panic!("expected a close frame, got {e}"),
            }
        }
    }

    /// True when the TCP connection ends (EOF/reset) within `timeout`, ignoring frames.
    pub fn ends_within(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.read_frame(left) {
                Ok(_) => continue,
                Err(e) => return e != "timeout",
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Seeded randomness
// ---------------------------------------------------------------------------------------------

/// SplitMix64: a small seeded PRNG, so failures can be replayed.
#[derive(Clone)]
pub struct Rng(pub u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform-ish in `0..n` (modulo bias is fine for tests).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    /// `n` pseudo-random bytes (the low byte of each draw).
    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}
