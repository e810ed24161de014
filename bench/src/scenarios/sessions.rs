//! Session timers: 10,000 (`--sessions`) activated sessions, one stream each, and the
//! server's CPU while nothing happens but their timers (`time_update` every 10 s per
//! session, heartbeats). catalytic only: the floor has no sessions.
//!
//! Setup is `create_users`, `activate` and `open_streams` (with a baseline CPU reading
//! before any stream is open); drive is `measure_window`; report is `report`.

use super::batch::http_batch;
use super::report::table;
use super::{log, rand_hex, stop, Ctx};
use crate::driver::{Driver, ReadyOn};
use crate::server::Kind;
use crate::stats::round3;
use crate::sys;
use crate::Opts;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

pub(super) fn sessions(ctx: &mut Ctx, kind: Kind) -> Result<Value, String> {
    let o = ctx.o;
    if kind == Kind::Floor {
        return Ok(
            json!({"scenario": "sessions", "server": kind.name(), "skipped": "the floor server has no session streams"}),
        );
    }
    let s_total = o.sessions.max(1);
    let srv = ctx.start(kind, Some(o.session_minutes))?;
    let mut errors: Vec<String> = Vec::new();
    let mut d =
        Driver::new(srv.addr, ReadyOn::FirstMessage, o.per_addr).map_err(|e| e.to_string())?;
    let mut conns = Vec::new();
    for _ in 0..o.http_conns {
        conns.push(d.http_open().map_err(|e| format!("HTTP connect: {e}"))?);
    }
    let created = create_users(o, kind, &mut d, &mut conns, &srv.cookie, s_total);
    let activated = activate(o, kind, &mut d, &mut conns, &created.users);
    for c in conns {
        d.http_close(c);
    }
    if !created.failures.is_empty() {
        errors.push(format!("user creation failures: {:?}", created.failures));
    }
    if !activated.failures.is_empty() {
        errors.push(format!("activation failures: {:?}", activated.failures));
    }
    let win = Duration::from_secs_f64(o.window_secs.max(1.0));
    // Baseline: the server with its sessions running but no stream open.
    d.idle(Duration::from_millis(1000));
    let (base_cpu, _) = server_cpu_over(&mut d, srv.pid, win.min(Duration::from_secs(10)));
    let streams = open_streams(ctx, kind, &mut d, &activated.sessions, &mut errors);
    let w = measure_window(&mut d, srv.pid, win);
    d.close_all_ws();
    stop(o, srv, &mut errors);
    Ok(report(
        kind, s_total, &created, &activated, base_cpu, &streams, &w, errors,
    ))
}

/// Users made by `create_users`: (user id, invite token), and the failures by reason.
struct Created {
    users: Vec<(u64, String)>,
    secs: f64,
    failures: BTreeMap<String, usize>,
}

/// Sessions made by `activate`: (session id, user id, token), and the failures by reason.
struct Activated {
    sessions: Vec<(String, String, String)>,
    secs: f64,
    failures: BTreeMap<String, usize>,
}

/// The session streams `open_streams` opened, and which id their path carries.
struct Streams {
    use_user_id: bool,
    ready: usize,
    failed: usize,
    connect_secs: f64,
}

/// The measurement window with every stream open.
struct Window {
    secs: f64,
    cpu_pct: f64,
    time_updates_per_sec: f64,
    messages_per_sec: f64,
    pings: u64,
    still_open: usize,
    rss: u64,
}

/// Setup 1: `total` users over the keep-alive connections, each with its invite token.
fn create_users(
    o: &Opts,
    kind: Kind,
    d: &mut Driver,
    conns: &mut [usize],
    cookie: &str,
    total: usize,
) -> Created {
    let nonce = rand_hex();
    let t = Instant::now();
    let created = http_batch(
        d,
        conns,
        total,
        Instant::now() + Duration::from_secs(900),
        &mut |k| {
            let body = format!(
                r#"{{"first_name":"Session","last_name":"User {k}","email":"sess.{nonce}.{k}@example.com"}}"#
            );
            (
                "POST",
                "/api/users".to_string(),
                body.into_bytes(),
                Some(cookie.to_string()),
            )
        },
    );
    let secs = t.elapsed().as_secs_f64();
    let mut users: Vec<(u64, String)> = Vec::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for r in created.iter() {
        match r {
            Some(x) if x.status == 201 => {
                let v: Value = serde_json::from_slice(&x.body).unwrap_or(Value::Null);
                let id = v["id"].as_u64();
                let tok = v["invite_url"]
                    .as_str()
                    .and_then(|u| u.split("token=").nth(1))
                    .map(|s| s.split('&').next().unwrap_or("").to_string());
                match (id, tok) {
                    (Some(i), Some(tk)) if !tk.is_empty() => users.push((i, tk)),
                    _ => {
                        *failures
                            .entry("201 without id/invite_url token".into())
                            .or_insert(0) += 1
                    }
                }
            }
            Some(x) => *failures.entry(format!("http {}", x.status)).or_insert(0) += 1,
            None => *failures.entry("no answer".into()).or_insert(0) += 1,
        }
    }
    log(
        o,
        format!(
            "[{}] sessions: {} users created in {secs:.1} s",
            kind.name(),
            users.len()
        ),
    );
    Created {
        users,
        secs,
        failures,
    }
}

/// Setup 2: activate every user's session with its invite token (this starts its timers).
fn activate(
    o: &Opts,
    kind: Kind,
    d: &mut Driver,
    conns: &mut [usize],
    users: &[(u64, String)],
) -> Activated {
    let t = Instant::now();
    let activated = http_batch(
        d,
        conns,
        users.len(),
        Instant::now() + Duration::from_secs(900),
        &mut |k| {
            (
                "POST",
                "/api/session/activate".to_string(),
                format!(r#"{{"token":"{}"}}"#, users[k].1).into_bytes(),
                None,
            )
        },
    );
    let secs = t.elapsed().as_secs_f64();
    let mut sessions: Vec<(String, String, String)> = Vec::new();
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for (k, r) in activated.iter().enumerate() {
        match r {
            Some(x) if x.status == 200 => {
                let v: Value = serde_json::from_slice(&x.body).unwrap_or(Value::Null);
                let sid = match &v["session_id"] {
                    Value::Number(n) => n.to_string(),
                    Value::String(s) => s.clone(),
                    _ => users[k].0.to_string(),
                };
                sessions.push((sid, users[k].0.to_string(), users[k].1.clone()));
            }
            Some(x) => {
                *failures
                    .entry(format!(
                        "http {} {}",
                        x.status,
                        String::from_utf8_lossy(&x.body)
                    ))
                    .or_insert(0) += 1
            }
            None => *failures.entry("no answer".into()).or_insert(0) += 1,
        }
    }
    log(
        o,
        format!(
            "[{}] sessions: {} activated in {secs:.1} s",
            kind.name(),
            sessions.len()
        ),
    );
    Activated {
        sessions,
        secs,
        failures,
    }
}

/// The server's CPU use while the generator idles for `window`: (percent, seconds).
fn server_cpu_over(d: &mut Driver, pid: u32, window: Duration) -> (f64, f64) {
    let c0 = sys::cpu_seconds(pid).unwrap_or(f64::NAN);
    let t0 = Instant::now();
    d.idle(window);
    let secs = t0.elapsed().as_secs_f64();
    let pct = 100.0 * (sys::cpu_seconds(pid).unwrap_or(f64::NAN) - c0) / secs;
    (pct, secs)
}

/// Which id goes into `/session/{id}/stream`: the session_id, else the user id. One probe
/// stream with each, closed again.
fn stream_id_is_user_id(d: &mut Driver, first: &(String, String, String)) -> bool {
    let (r, _) = d.connect_many(1, 1, Instant::now() + Duration::from_secs(15), |_| {
        (
            format!("/session/{}/stream?token={}", first.0, first.2),
            None,
        )
    });
    let mut use_user_id = false;
    if r == 0 && first.0 != first.1 {
        let (r2, _) = d.connect_many(1, 1, Instant::now() + Duration::from_secs(15), |_| {
            (
                format!("/session/{}/stream?token={}", first.1, first.2),
                None,
            )
        });
        use_user_id = r2 == 1;
    }
    d.close_all_ws();
    use_user_id
}

/// Setup 3: one stream per session (ready on its first `time_update`).
fn open_streams(
    ctx: &Ctx,
    kind: Kind,
    d: &mut Driver,
    sess: &[(String, String, String)],
    errors: &mut Vec<String>,
) -> Streams {
    let use_user_id = match sess.first() {
        Some(first) => stream_id_is_user_id(d, first),
        None => false,
    };
    d.fail_reasons.clear();
    let t = Instant::now();
    let (ready, failed) = d.connect_many(
        sess.len(),
        ctx.o.inflight,
        ctx.deadline_for(sess.len()),
        |k| {
            let s = &sess[k];
            (
                format!(
                    "/session/{}/stream?token={}",
                    if use_user_id { &s.1 } else { &s.0 },
                    s.2
                ),
                None,
            )
        },
    );
    let connect_secs = t.elapsed().as_secs_f64();
    if failed > 0 {
        errors.push(format!("session stream failures: {:?}", d.fail_reasons));
    }
    log(
        ctx.o,
        format!(
            "[{}] sessions: {ready} streams ready ({failed} failed) in {connect_secs:.1} s",
            kind.name()
        ),
    );
    Streams {
        use_user_id,
        ready,
        failed,
        connect_secs,
    }
}

/// Drive: the server's CPU with every stream open and its timers running, and what the
/// streams received meanwhile.
fn measure_window(d: &mut Driver, pid: u32, win: Duration) -> Window {
    d.idle(Duration::from_millis(2000));
    let (tu0, m0, p0) = (d.time_updates, d.msgs, d.pings);
    let (cpu_pct, secs) = server_cpu_over(d, pid, win);
    Window {
        secs,
        cpu_pct,
        time_updates_per_sec: (d.time_updates - tu0) as f64 / secs,
        messages_per_sec: (d.msgs - m0) as f64 / secs,
        pings: d.pings - p0,
        still_open: d.ready_open(),
        rss: sys::rss_bytes(pid).unwrap_or(0),
    }
}

#[allow(clippy::too_many_arguments)]
fn report(
    kind: Kind,
    s_total: usize,
    c: &Created,
    a: &Activated,
    base_cpu: f64,
    s: &Streams,
    w: &Window,
    errors: Vec<String>,
) -> Value {
    table(
        &format!(
            "sessions — {}: {} session streams open, timers running, over {:.0} s",
            kind.name(),
            s.ready,
            w.secs
        ),
        &[
            "users created/s",
            "activations/s",
            "streams ready",
            "failed",
            "server CPU % idle (0 streams)",
            "server CPU % (streams)",
            "time_update/s",
            "still open",
            "RSS MiB",
        ],
        &[vec![
            format!("{:.0}", c.users.len() as f64 / c.secs.max(1e-9)),
            format!("{:.0}", a.sessions.len() as f64 / a.secs.max(1e-9)),
            s.ready.to_string(),
            s.failed.to_string(),
            format!("{base_cpu:.2}"),
            format!("{:.2}", w.cpu_pct),
            format!("{:.0}", w.time_updates_per_sec),
            w.still_open.to_string(),
            format!("{:.1}", w.rss as f64 / 1048576.0),
        ]],
    );
    json!({"scenario": "sessions", "server": kind.name(), "sessions": s_total, "users_created": c.users.len(),
           "create_secs": round3(c.secs), "activated": a.sessions.len(), "activate_secs": round3(a.secs),
           "stream_id": if s.use_user_id { "user_id" } else { "session_id" },
           "streams_ready": s.ready, "stream_failures": s.failed, "connect_secs": round3(s.connect_secs),
           "window_secs": round3(w.secs), "server_cpu_pct_no_streams": round3(base_cpu), "server_cpu_pct": round3(w.cpu_pct),
           "time_updates_per_sec": round3(w.time_updates_per_sec), "messages_per_sec": round3(w.messages_per_sec), "pings": w.pings,
           "streams_open_at_end": w.still_open, "rss_bytes": w.rss, "errors": errors})
}
