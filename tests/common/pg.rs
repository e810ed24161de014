//! A real PostgreSQL for the cluster tests: `initdb` into a temporary directory, the server on a
//! free loopback port, one database per test, SQL from the test side with the `postgres` crate,
//! and stop/start for the outage tests.
//!
//! - PostgreSQL refuses to run as root. When the tests run as root (as CI does), `initdb` and
//!   the server run as the `postgres` system user (the package creates it) on a data directory
//!   `chown`ed to it; otherwise they run as the current user.
//! - The server is a direct child of the test process, started from a launcher thread that lives
//!   as long as the instance, with a parent-death signal: if the test process dies in any way
//!   (SIGKILL included) the postmaster gets SIGQUIT and stops, so a crashed run leaves no server
//!   behind. A clean end stops it with SIGINT (fast shutdown) and removes the directory: on drop
//!   for a private instance, at process exit for the shared one.
//! - Every wait is bounded: start (15 s), stop (10 s), connect (5 s), statements (10 s).
//! - `Pg::shared()` is one instance per test binary (tests take a database each, so they run in
//!   parallel); a test that stops the server takes its own `Pg::start()`.
//! - The binaries: `CATALYTIC_TEST_PG_BINDIR` if set, else the newest `/usr/lib/postgresql/*/bin`,
//!   else `pg_config --bindir`; the version must be 15 or newer (the contract's minimum).

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::thread;
use std::time::{Duration, Instant};

use super::{drain, Logs, Proc};

/// Spawns server processes from one long-lived thread: Linux sends the parent-death signal when
/// the *thread* that forked the child ends, so the postmaster must not be forked from a test's
/// own thread (which ends with the test) when another test still uses it.
struct Launcher {
    tx: Mutex<mpsc::Sender<(Command, mpsc::Sender<std::io::Result<Child>>)>>,
}

impl Launcher {
    fn new() -> Launcher {
        let (tx, rx) = mpsc::channel::<(Command, mpsc::Sender<std::io::Result<Child>>)>();
        thread::Builder::new()
            .name("pg-launcher".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("spawn the PostgreSQL launcher thread");
        Launcher { tx: Mutex::new(tx) }
    }

    fn spawn(&self, cmd: Command) -> std::io::Result<Child> {
        let (reply_tx, reply_rx) = mpsc::channel();
        self.tx
            .lock()
            .unwrap()
            .send((cmd, reply_tx))
            .expect("launcher thread alive");
        reply_rx
            .recv_timeout(Duration::from_secs(10))
            .expect("launcher answered within 10 s")
    }
}

/// One PostgreSQL server and its data directory.
pub struct Pg {
    bindir: PathBuf,
    /// The temporary directory: `data/` (the cluster) and the Unix socket.
    root: PathBuf,
    tmp: Mutex<Option<tempfile::TempDir>>,
    port: u16,
    /// uid/gid to run as (the `postgres` user when the tests run as root).
    owner: Option<(u32, u32)>,
    child: Mutex<Option<Proc>>,
    /// The server's output across restarts.
    pub logs: Logs,
    launcher: Launcher,
    next_db: AtomicUsize,
}

static SHARED: OnceLock<Arc<Pg>> = OnceLock::new();

extern "C" fn stop_shared_at_exit() {
    if let Some(pg) = SHARED.get() {
        pg.shutdown();
    }
}

impl Pg {
    /// The instance this test binary shares (started on first use, stopped at exit).
    pub fn shared() -> Arc<Pg> {
        SHARED
            .get_or_init(|| {
                let pg = Pg::start();
                // SAFETY: registers a plain function; it only signals and waits on a child.
                unsafe { libc::atexit(stop_shared_at_exit) };
                pg
            })
            .clone()
    }

    /// A private instance (for tests that stop or restart PostgreSQL); stopped and removed
    /// when the last `Arc` goes.
    pub fn start() -> Arc<Pg> {
        let bindir = pg_bindir();
        let tmp = tempfile::Builder::new()
            .prefix("catalytic-pg-")
            .tempdir()
            .expect("tempdir for PostgreSQL");
        let root = tmp.path().to_path_buf();
        let owner = run_as();
        if let Some((uid, gid)) = owner {
            chown(&root, uid, gid);
        }
        let t = Instant::now();
        let mut initdb = Command::new(bindir.join("initdb"));
        initdb
            .arg("--no-sync")
            .arg("-D")
            .arg(root.join("data"))
            .args(["--auth=trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .env("LC_ALL", "C")
            .current_dir(&root)
            .stdin(Stdio::null());
        if let Some((uid, gid)) = owner {
            initdb.uid(uid).gid(gid);
        }
        let out = initdb.output().expect("run initdb");
        assert!(
            out.status.success(),
            "initdb failed ({}):\n{}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let initdb_took = t.elapsed();
        let mut last_err = String::new();
        // A free port is picked by binding port 0 and letting it go; another process may take
        // it in between, so a refused bind is retried on a new port.
        for _ in 0..5 {
            let port = free_port();
            let pg = Pg {
                bindir: bindir.clone(),
                root: root.clone(),
                tmp: Mutex::new(None),
                port,
                owner,
                child: Mutex::new(None),
                logs: Logs::default(),
                launcher: Launcher::new(),
                next_db: AtomicUsize::new(0),
            };
            match pg.try_spawn() {
                Ok(()) => {
                    *pg.tmp.lock().unwrap() = Some(tmp);
                    eprintln!(
                        "PostgreSQL ({}) on 127.0.0.1:{port}: initdb {initdb_took:?}, up after {:?}",
                        bindir.display(),
                        t.elapsed()
                    );
                    return Arc::new(pg);
                }
                Err(e) => last_err = e,
            }
        }
        panic!("PostgreSQL did not start: {last_err}");
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory (data in `data/`, the Unix socket beside it).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `postgres://postgres@127.0.0.1:PORT/DB`, as given to `--database-url`.
    pub fn url(&self, db: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{db}", self.port)
    }

    /// Creates a fresh, empty database named after `hint` (made unique) and returns its name.
    pub fn create_database(&self, hint: &str) -> String {
        let n = self.next_db.fetch_add(1, Ordering::SeqCst);
        let mut name = format!("t{n}_");
        name.extend(
            hint.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() {
                        c.to_ascii_lowercase()
                    } else {
                        '_'
                    }
                })
                .take(50),
        );
        self.batch("postgres", &format!("CREATE DATABASE \"{name}\""));
        name
    }

    /// Drops a database, ending its connections first; errors are ignored (clean-up only).
    pub fn drop_database(&self, db: &str) {
        if let Ok(mut c) = self.try_connect("postgres") {
            let _ = c.batch_execute(&format!("DROP DATABASE IF EXISTS \"{db}\" WITH (FORCE)"));
        }
    }

    /// A client on database `db` as the superuser (5 s connect bound, 10 s statement bound).
    pub fn connect(&self, db: &str) -> postgres::Client {
        self.try_connect(db)
            .unwrap_or_else(|e| panic!("connect to PostgreSQL database {db}: {e}"))
    }

    pub fn try_connect(&self, db: &str) -> Result<postgres::Client, postgres::Error> {
        postgres::Config::new()
            .host("127.0.0.1")
            .port(self.port)
            .user("postgres")
            .dbname(db)
            .application_name("catalytic-tests")
            .connect_timeout(Duration::from_secs(5))
            .options("-c statement_timeout=10000")
            .connect(postgres::NoTls)
    }

    /// Runs statements (simple protocol, no results) on database `db`.
    pub fn batch(&self, db: &str, sql: &str) {
        self.connect(db)
            .batch_execute(sql)
            .unwrap_or_else(|e| panic!("SQL on {db} failed: {e}\n{sql}"));
    }

    /// Rows of one query on database `db`.
    pub fn query(
        &self,
        db: &str,
        sql: &str,
        params: &[&(dyn postgres::types::ToSql + Sync)],
    ) -> Vec<postgres::Row> {
        self.connect(db)
            .query(sql, params)
            .unwrap_or_else(|e| panic!("query on {db} failed: {e}\n{sql}"))
    }

    pub fn is_running(&self) -> bool {
        self.child().is_some()
    }

    /// The running server; a test that panicked elsewhere does not stop the clean-up.
    fn child(&self) -> std::sync::MutexGuard<'_, Option<Proc>> {
        self.child.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stops the server (fast shutdown: open connections are ended). The data stays.
    pub fn stop(&self) {
        let child = self.child().take();
        if let Some(child) = child {
            stop_postmaster(child);
        }
    }

    /// Starts the stopped server again on the same port and data.
    pub fn resume(&self) {
        assert!(!self.is_running(), "PostgreSQL is already running");
        // The port was ours a moment ago; the server binds with SO_REUSEADDR, so a retry only
        // covers a slow release of the old socket.
        let mut last = String::new();
        for _ in 0..10 {
            match self.try_spawn() {
                Ok(()) => return,
                Err(e) => last = e,
            }
            thread::sleep(Duration::from_millis(200));
        }
        panic!(
            "PostgreSQL did not start again on port {}: {last}",
            self.port
        );
    }

    pub fn restart(&self) {
        self.stop();
        self.resume();
    }

    /// Stops the server and removes its directory.
    fn shutdown(&self) {
        self.stop();
        self.tmp.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Starts `postgres` and waits (15 s) until it accepts connections.
    fn try_spawn(&self) -> Result<(), String> {
        let mut cmd = Command::new(self.bindir.join("postgres"));
        cmd.arg("-D")
            .arg(self.root.join("data"))
            .arg("-p")
            .arg(self.port.to_string())
            .arg("-c")
            .arg("listen_addresses=127.0.0.1")
            .arg("-c")
            .arg(format!("unix_socket_directories={}", self.root.display()))
            .args(["-c", "fsync=off", "-c", "synchronous_commit=off"])
            .args(["-c", "full_page_writes=off", "-c", "max_connections=200"])
            .args([
                "-c",
                "shared_buffers=32MB",
                "-c",
                "log_min_messages=warning",
            ])
            .args(["-c", "log_connections=off", "-c", "log_disconnections=off"])
            .env("LC_ALL", "C")
            .current_dir(&self.root)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some((uid, gid)) = self.owner {
            cmd.uid(uid).gid(gid);
        }
        // SAFETY: prctl is async-signal-safe; it runs in the child after the uid change (a
        // credential change clears the parent-death signal, so it must come after).
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let from = self.logs.len();
        let mut child = Proc(
            self.launcher
                .spawn(cmd)
                .map_err(|e| format!("spawn postgres: {e}"))?,
        );
        drain(child.stderr.take().unwrap(), self.logs.clone(), "pg");
        drain(child.stdout.take().unwrap(), self.logs.clone(), "pg");
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Ok(Some(st)) = child.try_wait() {
                return Err(format!(
                    "postgres exited with {st}:\n{}",
                    self.logs.lines()[from..].join("\n")
                ));
            }
            if self.try_connect("postgres").is_ok() {
                *self.child() = Some(child);
                return Ok(());
            }
            if Instant::now() >= deadline {
                stop_postmaster(child);
                return Err(format!(
                    "postgres did not accept connections within 15 s:\n{}",
                    self.logs.lines()[from..].join("\n")
                ));
            }
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Pg {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// SIGINT (fast shutdown), then SIGQUIT and SIGKILL if it takes more than 10 s.
fn stop_postmaster(mut child: Proc) {
    let pid = child.id() as i32;
    // SAFETY: signals our own child (still unreaped, so the pid is not reused).
    unsafe { libc::kill(pid, libc::SIGINT) };
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        thread::sleep(Duration::from_millis(20));
    }
    unsafe { libc::kill(pid, libc::SIGQUIT) };
    thread::sleep(Duration::from_millis(500));
    // `Proc`'s drop kills (SIGKILL) and reaps whatever is left.
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The `postgres` user's uid/gid when we are root (PostgreSQL refuses to run as root).
fn run_as() -> Option<(u32, u32)> {
    // SAFETY: plain libc calls; getpwnam's static result is copied out at once.
    unsafe {
        if libc::geteuid() != 0 {
            return None;
        }
        let pw = libc::getpwnam(c"postgres".as_ptr());
        assert!(
            !pw.is_null(),
            "running as root, and there is no `postgres` user to run PostgreSQL as \
             (install the `postgresql` package)"
        );
        Some(((*pw).pw_uid, (*pw).pw_gid))
    }
}

fn chown(path: &Path, uid: u32, gid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(gid))
        .unwrap_or_else(|e| panic!("chown {} to postgres: {e}", path.display()));
}

/// The directory holding `initdb` and `postgres` (version 15 or newer).
pub fn pg_bindir() -> PathBuf {
    if let Some(d) = std::env::var_os("CATALYTIC_TEST_PG_BINDIR") {
        return PathBuf::from(d);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let v: u32 = e.file_name().to_str()?.parse().ok()?;
            let bin = e.path().join("bin");
            bin.join("postgres").is_file().then_some((v, bin))
        })
        .collect();
    found.sort();
    if let Some((v, bin)) = found.pop() {
        assert!(
            v >= 15,
            "PostgreSQL {v} found; the cluster needs 15 or newer"
        );
        return bin;
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output() {
        let d = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
        if out.status.success() && d.join("postgres").is_file() {
            return d;
        }
    }
    panic!(
        "no PostgreSQL server binaries (looked in /usr/lib/postgresql/*/bin and pg_config); \
         install the `postgresql` package (.ci/run does) or set CATALYTIC_TEST_PG_BINDIR"
    );
}
