//! "The server still serves": the check every attack and every refusal ends with.
//!
//! A [`LiveAdmin`] is a legitimate admin stream connected BEFORE the attack and read by its own
//! thread. [`assert_serving`] then checks that no server thread panicked, that `/healthz`
//! answers 200 `ok` within a second, and that a POST /api/users reaches the live admin as
//! `user_added` — i.e. the reactor, the database and the fan-out all still work.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::{assert_user_shape, close_normal, next_event, Server, WsEvent, WAIT};

/// A legitimate admin stream read by its own thread: answers JSON pings (so it survives a
/// short `--heartbeat-secs`) and forwards every JSON message with its arrival time.
pub struct LiveAdmin {
    pub rx: Receiver<(Instant, Result<Value, String>)>,
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl LiveAdmin {
    /// Connects with the default admin's cookie.
    pub fn start(srv: &Server) -> LiveAdmin {
        let cookie = srv.admin_cookie();
        LiveAdmin::start_with(srv, &cookie)
    }

    pub fn start_with(srv: &Server, cookie: &str) -> LiveAdmin {
        let (ws, _) = srv.admin_ws(cookie);
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let handle = thread::spawn(move || {
            let mut ws = ws;
            // Bounded: no test lives longer than this.
            let deadline = Instant::now() + Duration::from_secs(120);
            while !stop2.load(Ordering::Relaxed) && Instant::now() < deadline {
                match next_event(&mut ws, Duration::from_millis(100), true) {
                    None => continue,
                    Some(WsEvent::Json(v)) => {
                        if tx.send((Instant::now(), Ok(v))).is_err() {
                            return;
                        }
                    }
                    Some(WsEvent::Close(c)) => {
                        let _ = tx.send((Instant::now(), Err(format!("live admin closed: {c:?}"))));
                        return;
                    }
                    Some(WsEvent::Ended(e)) => {
                        let _ = tx.send((Instant::now(), Err(format!("live admin ended: {e}"))));
                        return;
                    }
                    Some(_) => continue,
                }
            }
            close_normal(&mut ws);
        });
        LiveAdmin {
            rx,
            stop,
            handle: Some(handle),
        }
    }

    /// The next message matching `pred` (others are skipped); panics on timeout or close.
    pub fn wait_for(&self, what: &str, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!("live admin: no {what} within {timeout:?}");
            }
            match self.rx.recv_timeout(left) {
                Ok((_, Ok(v))) if pred(&v) => return v,
                Ok((_, Ok(_))) => continue,
                Ok((_, Err(e))) => panic!("live admin, waiting for {what}: {e}"),
                Err(RecvTimeoutError::Timeout) => {
                    panic!("live admin: no {what} within {timeout:?}")
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!("live admin reader gone while waiting for {what}")
                }
            }
        }
    }

    /// Asserts no message matching `pred` arrives within `dur` (others are skipped).
    pub fn assert_none(&self, what: &str, dur: Duration, pred: impl Fn(&Value) -> bool) {
        let deadline = Instant::now() + dur;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
            match self.rx.recv_timeout(left) {
                Ok((_, Ok(v))) if pred(&v) => panic!("live admin received {what}: {v}"),
                Ok((_, Ok(_))) => continue,
                Ok((_, Err(e))) => panic!("live admin, checking for no {what}: {e}"),
                Err(_) => return,
            }
        }
    }
}

impl Drop for LiveAdmin {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The after-the-attack check: no panic logged, `/healthz` answers 200 `ok` within a second,
/// and a POST /api/users reaches the live admin as `user_added`.
pub fn assert_serving(srv: &Server, live: &LiveAdmin, what: &str) {
    assert_no_panic(srv, what);
    let t = Instant::now();
    let r = srv.get("/healthz", None);
    let took = t.elapsed();
    assert_eq!(r.status, 200, "{what}: /healthz afterwards");
    assert_eq!(r.text(), "ok", "{what}: /healthz body");
    assert!(
        took < Duration::from_secs(1),
        "{what}: /healthz took {took:?}"
    );
    let email = format!("after.{}", srv.unique_email());
    let body = json!({"first_name": "After", "last_name": "Attack", "email": email});
    let r = srv.json("POST", "/api/users", Some(&srv.admin_cookie()), Some(&body));
    assert_eq!(
        r.status,
        201,
        "{what}: POST /api/users afterwards: {}",
        r.text()
    );
    let ev = live.wait_for("user_added after the attack", WAIT, |v| {
        v["type"] == "user_added" && v["data"]["email"] == email.as_str()
    });
    assert_user_shape(&ev["data"]);
    assert_no_panic(srv, what);
}

/// No line of the server's output says a thread panicked.
pub fn assert_no_panic(srv: &Server, what: &str) {
    let lines = srv.logs.lines();
    if let Some(i) = lines.iter().position(|l| l.contains("panicked")) {
        let end = (i + 20).min(lines.len());
        panic!(
            "{what}: the server panicked:\n{}",
            lines[i.saturating_sub(2)..end].join("\n")
        );
    }
}

/// A timed GET /healthz on a fresh connection (must be 200).
pub fn timed_healthz(srv: &Server) -> Duration {
    let t = Instant::now();
    let r = srv.get("/healthz", None);
    assert_eq!(r.status, 200, "/healthz during the attack");
    t.elapsed()
}
