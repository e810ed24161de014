//! Cluster mode under test: n `catalytic serve` nodes on one PostgreSQL database
//! (`--database-url`, `--node-id`), and [`Recorder`]s that keep every frame of a stream with its
//! raw text and arrival time, so tests can compare streams across nodes byte for byte.
//!
//! - Each [`Cluster`] gets a fresh database on [`Pg::shared`] (or on a private [`Pg`] for tests
//!   that stop PostgreSQL); node ids are `<database prefix>-n<k>` (k from 1), unique per
//!   PostgreSQL, so a test can find a node's LISTEN connection by its `application_name`
//!   (`catalytic-bus-<node id>`) without touching another test's nodes.
//! - The nodes start together (they race the migration, as nodes of a deployment do) and
//!   `Cluster::start` returns once every node answers `/readyz` 200 (10 s bound each).
//! - Every node gets `--public-url` [`PUBLIC_URL`] (as behind a load balancer) unless the test
//!   passes its own.
//! - The nodes share the default admin (one deployment): the first `admin_cookie()` on any node
//!   creates it with the CLI on the cluster's database.
//! - On a failing test the last lines of every node's log are printed.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::Value;
use tungstenite::Message;

use super::{close_normal, session_id_of, Pg, Server, Ws, WAIT};

/// `--public-url` of every node unless a test gives its own: the address a load balancer in
/// front of the nodes would have (nothing listens there; clients talk to the nodes directly).
pub const PUBLIC_URL: &str = "http://cluster.test";

pub struct Cluster {
    pub pg: Arc<Pg>,
    /// The database name (in `pg`) and its URL.
    pub db: String,
    pub url: String,
    pub nodes: Vec<Server>,
    prefix: String,
}

impl Cluster {
    /// n nodes with `args` on a fresh database of the shared PostgreSQL, started and ready.
    pub fn start(n: usize, args: &[&str]) -> Cluster {
        Cluster::start_on(Pg::shared(), n, args)
    }

    /// Like [`Cluster::start`] on a given PostgreSQL (e.g. a private one the test restarts).
    pub fn start_on(pg: Arc<Pg>, n: usize, args: &[&str]) -> Cluster {
        let mut c = Cluster::new_on(pg, n, args);
        c.spawn_all();
        c
    }

    /// n nodes that are not running yet (prepare the database first, then `spawn_all`).
    pub fn new(n: usize, args: &[&str]) -> Cluster {
        Cluster::new_on(Pg::shared(), n, args)
    }

    pub fn new_on(pg: Arc<Pg>, n: usize, args: &[&str]) -> Cluster {
        let hint = thread::current()
            .name()
            .map(|s| s.rsplit("::").next().unwrap_or(s).to_string())
            .unwrap_or_else(|| "cluster".into());
        let db = pg.create_database(&hint);
        let url = pg.url(&db);
        let prefix = db.split('_').next().unwrap_or("t").to_string();
        let admin = Arc::new(Mutex::new(None));
        // The nodes of a deployment share one public URL (the load balancer's), so invite links
        // read the same whichever node renders them.
        let mut args = args.to_vec();
        if !args.contains(&"--public-url") {
            args.extend(["--public-url", PUBLIC_URL]);
        }
        let nodes = (1..=n)
            .map(|k| Server::cluster_node(&url, &format!("{prefix}-n{k}"), &args, admin.clone()))
            .collect();
        Cluster {
            pg,
            db,
            url,
            nodes,
            prefix,
        }
    }

    /// Starts every node that is not running, all at once, and waits until each is ready.
    pub fn spawn_all(&mut self) {
        let failed = thread::scope(|s| {
            let handles: Vec<_> = self
                .nodes
                .iter_mut()
                .filter(|n| !n.is_running())
                .map(|node| s.spawn(move || node.spawn()))
                .collect();
            handles.into_iter().find_map(|h| h.join().err())
        });
        if let Some(panic) = failed {
            // The node's own message (e.g. "server exited early … logs"), not "a scoped thread
            // panicked".
            std::panic::resume_unwind(panic);
        }
        for i in 0..self.nodes.len() {
            self.wait_ready(i, Duration::from_secs(10));
        }
    }

    /// `--node-id` of node i (0-based index; the id counts from 1).
    pub fn node_id(&self, i: usize) -> String {
        format!("{}-n{}", self.prefix, i + 1)
    }

    /// The `application_name` of node i's LISTEN connection, as the tests assume it.
    pub fn bus_application_name(&self, i: usize) -> String {
        format!("catalytic-bus-{}", self.node_id(i))
    }

    /// Polls `/readyz` on node i until it answers 200 (panics with the node's log otherwise).
    pub fn wait_ready(&self, i: usize, timeout: Duration) {
        let node = &self.nodes[i];
        let deadline = Instant::now() + timeout;
        loop {
            let st = readyz(node);
            if st == Some(200) {
                return;
            }
            if Instant::now() >= deadline {
                panic!(
                    "node {} not ready within {timeout:?} (last /readyz: {st:?}); log:\n{}",
                    self.node_id(i),
                    node.logs.joined()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// The default admin's cookie (created once for the whole cluster).
    pub fn admin_cookie(&self) -> String {
        self.nodes[0].admin_cookie()
    }

    /// Another session of the default admin (`admin token` on the cluster's database).
    pub fn second_admin_cookie(&self) -> String {
        self.nodes[0].second_admin_cookie()
    }

    /// A test-side SQL client on the cluster's database.
    pub fn sql(&self) -> postgres::Client {
        self.pg.connect(&self.db)
    }

    /// Ends node i's LISTEN connection(s) with `pg_terminate_backend`; returns how many.
    /// Panics, naming the connections it saw, when there is none.
    pub fn terminate_bus(&self, i: usize) -> usize {
        let app = self.bus_application_name(i);
        let n = self.pg.terminate_backends(&self.db, &app);
        assert!(
            n > 0,
            "no connection with application_name {app:?} on database {}; connections there: {:?}",
            self.db,
            self.pg.application_names(&self.db)
        );
        n
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        if thread::panicking() {
            for (i, n) in self.nodes.iter().enumerate() {
                let lines = n.logs.lines();
                let from = lines.len().saturating_sub(40);
                eprintln!(
                    "---- node {} ({}) last log lines ----\n{}",
                    self.node_id(i),
                    n.addr,
                    lines[from..].join("\n")
                );
            }
        }
        self.nodes.clear();
        self.pg.drop_database(&self.db);
    }
}

impl Pg {
    /// `pg_terminate_backend` on every connection to `db` with this `application_name`.
    pub fn terminate_backends(&self, db: &str, application_name: &str) -> usize {
        self.query(
            "postgres",
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND application_name = $2",
            &[&db, &application_name],
        )
        .iter()
        .filter(|r| r.get::<_, bool>(0))
        .count()
    }

    /// The `application_name`s of the connections to `db`.
    pub fn application_names(&self, db: &str) -> Vec<String> {
        self.query(
            "postgres",
            "SELECT application_name FROM pg_stat_activity WHERE datname = $1",
            &[&db],
        )
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect()
    }
}

/// The status of `GET /readyz` (None when the request failed).
pub fn readyz(node: &Server) -> Option<u16> {
    node.http()
        .send("GET", "/readyz", &[], None)
        .ok()
        .map(|r| r.status)
}

/// One text frame as it arrived: its raw text (for byte comparisons) and its JSON.
#[derive(Clone, Debug)]
pub struct Frame {
    pub at: Instant,
    pub text: String,
    pub json: Value,
}

/// How a recorded stream ended.
#[derive(Clone, Debug)]
pub struct End {
    pub at: Instant,
    /// The close frame's code and reason; None when the connection just ended.
    pub close: Option<(u16, String)>,
    pub detail: String,
}

/// Everything a stream received so far.
#[derive(Clone, Debug, Default)]
pub struct Rec {
    /// Every text frame but the server's JSON pings, in arrival order.
    pub frames: Vec<Frame>,
    /// Arrival of each JSON ping (answered with a pong by the recorder).
    pub pings: Vec<Instant>,
    pub end: Option<End>,
}

impl Rec {
    /// The first frame (`initial`, `resumed`, `time_update`).
    pub fn first(&self) -> Option<&Value> {
        self.frames.first().map(|f| &f.json)
    }

    /// Frames that carry an event number (`seq`), other than `initial`/`resumed`: on an admin
    /// stream the user-list events, on an agent stream the agent events.
    pub fn numbered(&self) -> Vec<&Frame> {
        self.frames
            .iter()
            .filter(|f| {
                f.json.get("seq").is_some_and(Value::is_u64)
                    && f.json["type"] != "initial"
                    && f.json["type"] != "resumed"
            })
            .collect()
    }

    /// The number of the last event this stream reflects: its last numbered frame, else the
    /// `seq` of its `initial`/`resumed`.
    pub fn last_seq(&self) -> Option<u64> {
        self.numbered()
            .last()
            .map(|f| &f.json)
            .or_else(|| self.first())
            .and_then(|v| v["seq"].as_u64())
    }

    pub fn of_type(&self, ty: &str) -> Vec<&Frame> {
        self.frames
            .iter()
            .filter(|f| f.json["type"] == ty)
            .collect()
    }

    /// The latest `presence` frame.
    pub fn presence(&self) -> Option<&Value> {
        self.of_type("presence").last().map(|f| &f.json)
    }

    /// A short description for failure messages: frame types with seqs, pings, end.
    pub fn summary(&self) -> String {
        let frames: Vec<String> = self
            .frames
            .iter()
            .map(|f| match f.json["seq"].as_u64() {
                Some(s) => format!("{}#{s}", f.json["type"].as_str().unwrap_or("?")),
                None => f.json["type"].as_str().unwrap_or("?").to_string(),
            })
            .collect();
        format!(
            "{} frames [{}], {} pings, end {:?}",
            self.frames.len(),
            frames.join(" "),
            self.pings.len(),
            self.end
        )
    }
}

type Shared = Arc<(Mutex<Rec>, Condvar)>;

/// A stream read by its own thread until it ends, the recorder is dropped, or 150 s pass.
pub struct Recorder {
    state: Shared,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
    pub what: String,
}

impl Recorder {
    pub fn start(ws: Ws, what: impl Into<String>) -> Recorder {
        let state: Shared = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let (state2, stop2) = (state.clone(), stop.clone());
        let handle = thread::spawn(move || record(ws, &state2, &stop2));
        Recorder {
            state,
            stop,
            handle: Some(handle),
            what: what.into(),
        }
    }

    pub fn rec(&self) -> Rec {
        self.state.0.lock().unwrap().clone()
    }

    /// Waits until `pred` holds for what was recorded; None on timeout.
    pub fn try_wait(&self, timeout: Duration, pred: impl Fn(&Rec) -> bool) -> Option<Rec> {
        let deadline = Instant::now() + timeout;
        let (m, cv) = &*self.state;
        let mut g = m.lock().unwrap();
        loop {
            if pred(&g) {
                return Some(g.clone());
            }
            let now = Instant::now();
            if now >= deadline {
                return None;
            }
            g = cv.wait_timeout(g, deadline - now).unwrap().0;
        }
    }

    /// Like `try_wait`, panicking with what was recorded on timeout.
    pub fn wait(&self, what: &str, timeout: Duration, pred: impl Fn(&Rec) -> bool) -> Rec {
        self.try_wait(timeout, pred).unwrap_or_else(|| {
            panic!(
                "{}: no {what} within {timeout:?}; recorded: {}",
                self.what,
                self.rec().summary()
            )
        })
    }

    /// The first frame (waits up to 5 s for it).
    pub fn first(&self) -> Value {
        self.wait("first frame", WAIT, |r| {
            !r.frames.is_empty() || r.end.is_some()
        })
        .first()
        .cloned()
        .unwrap_or_else(|| {
            panic!(
                "{}: ended before its first frame: {:?}",
                self.what,
                self.rec().end
            )
        })
    }

    /// Waits until the stream's last numbered frame is `seq` or later.
    pub fn wait_seq(&self, seq: u64, timeout: Duration) -> Rec {
        self.wait(&format!("event #{seq}"), timeout, |r| {
            r.last_seq().is_some_and(|s| s >= seq) || r.end.is_some()
        })
    }

    /// Waits until the stream has ended (close frame or EOF).
    pub fn wait_end(&self, timeout: Duration) -> End {
        self.wait("end", timeout, |r| r.end.is_some())
            .end
            .expect("ended")
    }

    /// Panics when the stream has ended.
    pub fn assert_open(&self, when: &str) {
        let r = self.rec();
        assert!(
            r.end.is_none(),
            "{}: ended {when}: {:?}; recorded: {}",
            self.what,
            r.end,
            r.summary()
        );
    }
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

fn record(mut ws: Ws, state: &Shared, stop: &AtomicBool) {
    let push = |f: &mut dyn FnMut(&mut Rec)| {
        let (m, cv) = &**state;
        f(&mut m.lock().unwrap());
        cv.notify_all();
    };
    let deadline = Instant::now() + Duration::from_secs(150);
    let _ = ws
        .get_ref()
        .set_read_timeout(Some(Duration::from_millis(100)));
    loop {
        if stop.load(Ordering::Relaxed) || Instant::now() >= deadline {
            close_normal(&mut ws);
            return;
        }
        match ws.read() {
            Ok(Message::Text(t)) => {
                let text = t.as_str().to_string();
                let json = serde_json::from_str(&text).unwrap_or(Value::Null);
                let at = Instant::now();
                if json["type"] == "ping" {
                    let _ = ws.send(Message::text(r#"{"type":"pong"}"#));
                    push(&mut |r| r.pings.push(at));
                } else {
                    push(&mut |r| {
                        r.frames.push(Frame {
                            at,
                            text: text.clone(),
                            json: json.clone(),
                        })
                    });
                }
            }
            Ok(Message::Close(f)) => {
                let close = f.map(|f| (u16::from(f.code), f.reason.as_str().to_string()));
                let _ = ws.flush();
                let end = End {
                    at: Instant::now(),
                    close,
                    detail: "close frame".into(),
                };
                push(&mut |r| r.end = Some(end.clone()));
                return;
            }
            Ok(_) => continue,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue
            }
            Err(e) => {
                let end = End {
                    at: Instant::now(),
                    close: None,
                    detail: e.to_string(),
                };
                push(&mut |r| r.end = Some(end.clone()));
                return;
            }
        }
    }
}

impl Server {
    /// An admin stream (`path` with its query) recorded from the handshake on.
    pub fn admin_recorder_at(&self, path: &str, cookie: &str) -> Recorder {
        let ws = self
            .ws_connect(path, Some(cookie), None)
            .unwrap_or_else(|e| panic!("admin stream handshake on {} ({path}): {e}", self.addr));
        Recorder::start(ws, format!("admin stream on {}{path}", self.addr))
    }

    /// An admin stream whose first frame must be `initial`.
    pub fn admin_recorder(&self, cookie: &str) -> Recorder {
        let r = self.admin_recorder_at("/admin/stream", cookie);
        let first = r.first();
        assert_eq!(first["type"], "initial", "{}: first frame {first}", r.what);
        r
    }

    /// An agent stream whose first frame must be `initial`.
    pub fn agent_recorder(&self, key: &str) -> Recorder {
        let ws = self
            .agent_ws(key)
            .unwrap_or_else(|e| panic!("agent stream handshake on {}: {e}", self.addr));
        let r = Recorder::start(ws, format!("agent stream on {}", self.addr));
        let first = r.first();
        assert_eq!(first["type"], "initial", "{}: first frame {first}", r.what);
        r
    }

    /// An invitee's session page stream (`?token=`) whose first frame must be `time_update`.
    pub fn session_recorder(&self, session_id: &str, token: &str) -> Recorder {
        let ws = self
            .session_ws(session_id, token)
            .unwrap_or_else(|e| panic!("session stream handshake on {}: {e}", self.addr));
        let r = Recorder::start(ws, format!("session stream on {}", self.addr));
        let first = r.first();
        assert_eq!(
            first["type"], "time_update",
            "{}: first frame {first}",
            r.what
        );
        r
    }

    /// POST /api/session/activate; asserts 200 and returns (session id, session token, body).
    pub fn activate_ok(&self, invite_token: &str) -> (String, String, Value) {
        let r = self.activate(invite_token);
        assert_eq!(r.status, 200, "activate on {}: {}", self.addr, r.text());
        let body = r.json();
        let cookie = r
            .cookie_value("session_token")
            .expect("session_token cookie on activate");
        (session_id_of(&body), cookie, body)
    }
}

/// `?epoch=E&since=N` with E percent-encoded.
pub fn resume_query(epoch: &str, since: u64) -> String {
    let mut e = String::new();
    for b in epoch.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            e.push(b as char);
        } else {
            e.push_str(&format!("%{b:02X}"));
        }
    }
    format!("?epoch={e}&since={since}")
}
