//! The server under test: one `catalytic serve` on a kernel-chosen loopback port with its own
//! temporary database, admin accounts made with the CLI, and plain TCP connections to it
//! (from other loopback source addresses too, for the per-IP rules). A cluster node
//! (`Server::cluster_node`) is the same thing on `--database-url` instead of `--db`.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::ExitStatus;
use std::sync::atomic::AtomicUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{
    command, run_cli, spawn_listening, wait_child, Logs, Proc, ADMIN_EMAIL, ADMIN_PASSWORD,
};

pub struct Server {
    pub dir: tempfile::TempDir,
    pub db: PathBuf,
    pub addr: SocketAddr,
    pub logs: Logs,
    /// Cluster mode: `--database-url` (then `db` is unused) and `--node-id`.
    pub database_url: Option<String>,
    pub node_id: Option<String>,
    args: Vec<String>,
    child: Option<Proc>,
    /// The default admin's cookie; shared by the nodes of a cluster (one deployment, one admin).
    admin: Arc<Mutex<Option<String>>>,
    pub(super) seq: AtomicUsize,
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
            database_url: None,
            node_id: None,
            args: args.iter().map(|s| s.to_string()).collect(),
            child: None,
            admin: Arc::new(Mutex::new(None)),
            seq: AtomicUsize::new(0),
        }
    }

    /// A cluster node that is not running yet: `--database-url URL --node-id ID ARGS`, sharing
    /// the default admin's cookie with the other nodes through `admin`.
    pub fn cluster_node(
        url: &str,
        node_id: &str,
        args: &[&str],
        admin: Arc<Mutex<Option<String>>>,
    ) -> Server {
        let mut s = Server::new(args);
        s.database_url = Some(url.to_string());
        s.node_id = Some(node_id.to_string());
        s.admin = admin;
        s
    }

    /// Where the data lives, as `serve` and `admin` take it: `--db PATH` or `--database-url URL`.
    pub fn store_args(&self) -> Vec<String> {
        match &self.database_url {
            Some(url) => vec!["--database-url".into(), url.clone()],
            None => vec!["--db".into(), self.db_arg()],
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
            .args(self.store_args());
        if let Some(id) = &self.node_id {
            cmd.arg("--node-id").arg(id);
        }
        cmd.args(&self.args);
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

    /// SIGKILL and reap (a crashed node).
    pub fn kill(&mut self) {
        self.signal(libc::SIGKILL);
        self.wait_exit(Duration::from_secs(10));
    }

    pub fn is_running(&self) -> bool {
        self.child.is_some()
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
        let store = self.store_args();
        let mut args = vec!["admin", "create", "--email", email];
        args.extend(store.iter().map(String::as_str));
        let out = run_cli(&args, &[("CATALYTIC_ADMIN_PASSWORD", password)], None);
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
        let store = self.store_args();
        let mut args = vec!["admin", "token", "--email", email];
        args.extend(store.iter().map(String::as_str));
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

    /// The one-time setup URL line the server logs while no admin exists, and its code.
    pub fn setup_code(&self) -> (String, String) {
        let line = self
            .logs
            .wait_line(Duration::from_secs(3), |l| l.contains("/setup?code="))
            .expect("setup URL logged when no admin exists");
        let code: String = line[line.find("/setup?code=").unwrap() + "/setup?code=".len()..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
            .collect();
        assert!(code.len() >= 8, "setup code {code:?} in {line:?}");
        (line, code)
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        s.set_nodelay(true).unwrap();
        s
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

impl Server {
    /// A connection from another loopback source address (e.g. "127.0.0.2"), so per-IP rules
    /// can be exercised from one machine.
    pub fn connect_from(&self, ip: &str) -> TcpStream {
        connect_from_ip(ip, self.addr, None).expect("connect from a loopback source address")
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
}

/// A connection to `to` from the loopback source address `ip` (127.0.0.x), optionally with a
/// small receive buffer; 10 s read/write timeouts, no Nagle. Errors are returned, not panicked
/// on, so a load generator can count them.
pub fn connect_from_ip(
    ip: &str,
    to: SocketAddr,
    rcvbuf: Option<usize>,
) -> std::io::Result<TcpStream> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None)?;
    if let Some(n) = rcvbuf {
        sock.set_recv_buffer_size(n)?;
    }
    let src: SocketAddr = format!("{ip}:0").parse().unwrap();
    sock.bind(&src.into())?;
    sock.connect_timeout(&to.into(), Duration::from_secs(5))?;
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    s.set_write_timeout(Some(Duration::from_secs(10)))?;
    s.set_nodelay(true)?;
    Ok(s)
}
