//! Cluster mode when parts fail (contract "(v2) Cluster mode", issue 10 item 7 (c), (d), (g),
//! (h)): a session expires exactly once in the deployment, also when the node serving the page
//! is SIGKILLed; PostgreSQL restarted (503 during, streams stay, every node catches up); a node
//! SIGKILLed with 100 admin streams (they resume elsewhere, nothing lost); the paced drain.
//!
//! The longest waits are the contract's own bounds (expiry 8 s / 15 s, outage 10 s). The outage
//! test stops and starts its own PostgreSQL; the others share one (a database each).

mod common;

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::cluster_checks::*;
use common::*;
use serde_json::{json, Value};

/// Cluster, user, agent and admin streams for the expiry tests: returns the cluster, the user
/// id, and (admin, agent) recorders on the given nodes.
fn expiry_setup(
    admin_nodes: &[usize],
    agent_nodes: &[usize],
) -> (Cluster, i64, Vec<Recorder>, Vec<Recorder>) {
    let c = Cluster::start(
        3,
        &[
            "--session-minutes",
            "0.05",
            "--agent-key",
            CLUSTER_AGENT_KEY,
        ],
    );
    let cookie = c.admin_cookie();
    let user = c.nodes[0].create_user("Ada", "Lovelace", Some(10));
    let admins = admin_nodes
        .iter()
        .map(|&i| c.nodes[i].admin_recorder(&cookie))
        .collect();
    let agents = agent_nodes
        .iter()
        .map(|&i| c.nodes[i].agent_recorder(CLUSTER_AGENT_KEY))
        .collect();
    (c, id_of(&user), admins, agents)
}

/// Every admin stream gets one expired `user_update` and every agent one `session_expired`
/// (and one `session_started`), by `bound`; nothing more in the second after.
fn assert_expired_once(id: i64, admins: &[Recorder], agents: &[Recorder], bound: Instant) {
    let left = || bound.saturating_duration_since(Instant::now());
    for r in admins {
        r.wait("expired user_update", left(), |rec| {
            !updates_with_status(rec, id, "expired").is_empty()
        });
    }
    for r in agents {
        r.wait("session_expired", left(), |rec| {
            !agent_frames(rec, "session_expired", id).is_empty()
        });
    }
    thread::sleep(Duration::from_millis(1500));
    for r in admins {
        let rec = r.rec();
        let n = updates_with_status(&rec, id, "expired").len();
        assert_eq!(n, 1, "{}: expired user_updates: {}", r.what, rec.summary());
        assert_contiguous(
            &r.what,
            rec.first().unwrap()["seq"].as_u64().unwrap(),
            &rec.numbered(),
        );
    }
    for r in agents {
        let rec = r.rec();
        assert_eq!(
            agent_frames(&rec, "session_expired", id).len(),
            1,
            "{}: session_expired frames: {}",
            r.what,
            rec.summary()
        );
        assert_eq!(
            agent_frames(&rec, "session_started", id).len(),
            1,
            "{}: session_started frames (activation starts one clock): {}",
            r.what,
            rec.summary()
        );
    }
}

/// (c) A session expires exactly once in the deployment: invitee pages on two nodes, agents and
/// admins on all three.
#[test]
fn c_session_expires_exactly_once_across_nodes() {
    let (c, id, admins, agents) = expiry_setup(&[0, 1, 2], &[0, 1, 2]);
    let user = c.nodes[0].user(id);
    let sent = Instant::now();
    let (sid, token, _) = c.nodes[1].activate_ok(&invite_token(&user));
    let deadline = Instant::now() + SESSION;
    let pages = [
        open_page(&c.nodes[0], &sid, &token),
        open_page(&c.nodes[1], &sid, &token),
    ];
    let bound = deadline + Duration::from_secs(8);
    for p in &pages {
        let end =
            p.wait_end(bound.saturating_duration_since(Instant::now()) + Duration::from_secs(1));
        let rec = p.rec();
        let expired = rec.of_type("session_expired");
        assert_eq!(expired.len(), 1, "{}: {}", p.what, rec.summary());
        assert_eq!(
            end.close.as_ref().map(|c| c.0),
            Some(1000),
            "{}: close {end:?}",
            p.what
        );
        assert!(
            expired[0].at >= sent + SESSION - Duration::from_secs(1),
            "{}: expired {:?} after activation, before the deadline",
            p.what,
            expired[0].at - sent
        );
    }
    assert_expired_once(id, &admins, &agents, bound + Duration::from_secs(1));
    for node in &c.nodes {
        assert_eq!(
            node.user(id)["status"],
            "expired",
            "GET /api/users on {}",
            node.addr
        );
    }
    c.nodes[2]
        .activate(&invite_token(&user))
        .assert_error(410, "activate after expiry");
}

/// (d) As (c) when the node serving the invitee's page (and that activated it) is SIGKILLed
/// before the deadline: the others still expire it exactly once, within 15 s.
#[test]
fn d_expiry_exactly_once_when_the_page_node_dies() {
    let (mut c, id, admins, agents) = expiry_setup(&[0, 2], &[0, 2]);
    let user = c.nodes[0].user(id);
    let (sid, token, _) = c.nodes[1].activate_ok(&invite_token(&user));
    let deadline = Instant::now() + SESSION;
    let page = open_page(&c.nodes[1], &sid, &token);
    for r in &agents {
        r.wait("session_started", BUS, |rec| {
            !agent_frames(rec, "session_started", id).is_empty()
        });
    }
    c.nodes[1].kill();
    assert!(
        Instant::now() < deadline,
        "node 2 killed too late to test anything"
    );
    page.wait_end(WAIT);
    assert_expired_once(id, &admins, &agents, deadline + Duration::from_secs(15));
    for i in [0, 2] {
        assert_eq!(
            c.nodes[i].user(id)["status"],
            "expired",
            "GET /api/users on node {}",
            i + 1
        );
    }
}

/// (g) PostgreSQL restarted: writes 503 + Retry-After during the outage, streams stay open
/// (no 1013) with their heartbeats, `/readyz` 503; once it is back the next write reaches every
/// node and nothing refused during the outage was stored.
#[test]
fn g_postgres_outage_503_streams_stay_then_catch_up() {
    let pg = Pg::start();
    let c = Cluster::start_on(pg.clone(), 3, &["--heartbeat-secs", "1"]);
    let cookie = c.admin_cookie();
    let user = c.nodes[0].create_user("Ada", "Lovelace", Some(10));
    let (sid, token, _) = c.nodes[1].activate_ok(&invite_token(&user));
    let admins: Vec<Recorder> = c.nodes.iter().map(|n| n.admin_recorder(&cookie)).collect();
    let page = open_page(&c.nodes[2], &sid, &token);

    let t_stop = Instant::now();
    pg.stop();
    let mut refused = Vec::new();
    for (i, node) in c.nodes.iter().enumerate() {
        let email = format!("outage{i}@example.com");
        let body = json!({"first_name": "Out", "last_name": "Age", "email": email});
        let t = Instant::now();
        let r = node.json("POST", "/api/users", Some(&cookie), Some(&body));
        let took = t.elapsed();
        r.assert_error(503, &format!("POST during the outage on node {}", i + 1));
        let ra = r.header("Retry-After").unwrap_or("");
        assert!(
            !ra.is_empty() && ra.chars().all(|ch| ch.is_ascii_digit()),
            "Retry-After {ra:?} on node {}",
            i + 1
        );
        assert!(
            took < Duration::from_millis(2500),
            "503 on node {} took {took:?}",
            i + 1
        );
        refused.push(email);
    }
    let r = c.nodes[2].json(
        "PATCH",
        &format!("/api/users/{}", id_of(&user)),
        Some(&cookie),
        Some(&json!({"first_name": "Changed"})),
    );
    r.assert_error(503, "PATCH during the outage");
    for (i, node) in c.nodes.iter().enumerate() {
        let bound = t_stop + Duration::from_secs(4);
        while readyz(node) != Some(503) {
            assert!(
                Instant::now() < bound,
                "node {}: /readyz not 503 within 3 s of the outage",
                i + 1
            );
            thread::sleep(Duration::from_millis(100));
        }
    }
    // Hold the outage a few heartbeats long; every stream stays open and keeps its heartbeat.
    thread::sleep((t_stop + Duration::from_secs(4)).saturating_duration_since(Instant::now()));
    for r in admins.iter().chain([&page]) {
        r.assert_open("during the outage");
        let pings = r
            .rec()
            .pings
            .iter()
            .filter(|&&p| p > t_stop + Duration::from_millis(500))
            .count();
        assert!(
            pings >= 2,
            "{}: {pings} heartbeats during the outage",
            r.what
        );
    }

    let t_back = Instant::now();
    pg.resume();
    let back = loop {
        let body = json!({"first_name": "Back", "last_name": "Again", "email": "back@example.com"});
        let r = c.nodes[1].json("POST", "/api/users", Some(&cookie), Some(&body));
        if r.status == 201 {
            break r.json();
        }
        assert_eq!(
            r.status,
            503,
            "POST after PostgreSQL came back: {}",
            r.text()
        );
        assert!(
            t_back.elapsed() < Duration::from_secs(11),
            "writes still refused 10 s after PostgreSQL came back"
        );
        thread::sleep(Duration::from_millis(200));
    };
    eprintln!(
        "writes accepted again {:?} after PostgreSQL came back",
        t_back.elapsed()
    );
    for r in &admins {
        let rec = r.wait("the write after the outage", BUS, |rec| {
            rec.numbered()
                .iter()
                .any(|f| f.json["data"]["id"] == back["id"])
        });
        r.assert_open("after the outage");
        let s = rec.first().unwrap()["seq"].as_u64().unwrap();
        assert_contiguous(&r.what, s, &rec.numbered());
        let added = rec.of_type("user_added");
        assert_eq!(
            added.len(),
            1,
            "{}: only the write after the outage adds a user: {}",
            r.what,
            rec.summary()
        );
    }
    page.assert_open("after the outage");
    for i in 0..c.nodes.len() {
        c.wait_ready(i, Duration::from_secs(10));
    }
    let emails: Vec<Value> = c.nodes[0]
        .users()
        .iter()
        .map(|u| u["email"].clone())
        .collect();
    for e in &refused {
        assert!(
            !emails.contains(&json!(e)),
            "{e} was refused with 503 but stored"
        );
    }
    assert_eq!(
        c.nodes[2].user(id_of(&user))["first_name"],
        "Ada",
        "refused PATCH changed nothing"
    );
}

/// (h) A node SIGKILLed with 100 admin streams: they reconnect to the other nodes with
/// `?epoch=&since=` and resume with nothing lost or repeated, while writes go on.
#[test]
fn h_killed_node_streams_resume_elsewhere_with_nothing_lost() {
    let mut c = Cluster::start(3, &[]);
    let cookie = c.admin_cookie();
    const STREAMS: usize = 100;
    let reference = c.nodes[1].admin_recorder(&cookie);
    let doomed: Vec<Recorder> = (0..STREAMS)
        .map(|_| c.nodes[0].admin_recorder(&cookie))
        .collect();
    let init = reference.first();
    let (epoch, s0) = (
        init["epoch"].as_str().unwrap().to_string(),
        init["seq"].as_u64().unwrap(),
    );
    for r in &doomed {
        assert_eq!(r.first()["epoch"].as_str(), Some(epoch.as_str()));
    }

    let stop = AtomicBool::new(false);
    let written = AtomicUsize::new(0);
    // Node 1 dies; writes go to nodes 2 and 3 before, during and after, while its clients move.
    let (dying, alive) = c.nodes.split_at_mut(1);
    let alive = &*alive;
    let resumed: Vec<Recorder> = thread::scope(|s| {
        let w = s.spawn(|| {
            let mut k = 0;
            while !stop.load(Ordering::SeqCst) && k < 400 {
                post_user(&alive[k % 2], &cookie, &format!("live{k}@example.com"));
                written.fetch_add(1, Ordering::SeqCst);
                k += 1;
                thread::sleep(Duration::from_millis(10));
            }
        });
        let t = Instant::now() + BUS;
        while written.load(Ordering::SeqCst) < 10 && Instant::now() < t {
            thread::sleep(Duration::from_millis(5));
        }
        dying[0].kill();
        let mut resumed = Vec::with_capacity(STREAMS);
        for (i, r) in doomed.iter().enumerate() {
            let end = r.wait_end(WAIT);
            assert!(
                end.close.is_none(),
                "{}: a killed node sent a close frame? {end:?}",
                r.what
            );
            let since = r.rec().last_seq().unwrap();
            let node = &alive[i % 2];
            let path = format!("/admin/stream{}", resume_query(&epoch, since));
            let rr = node.admin_recorder_at(&path, &cookie);
            let first = rr.first();
            assert_eq!(
                (
                    first["type"].as_str(),
                    first["epoch"].as_str(),
                    first["seq"].as_u64()
                ),
                (Some("resumed"), Some(epoch.as_str()), Some(since)),
                "{}: first frame after resuming at #{since}: {first}",
                rr.what
            );
            resumed.push(rr);
        }
        thread::sleep(Duration::from_millis(300));
        stop.store(true, Ordering::SeqCst);
        w.join().unwrap();
        resumed
    });
    let last = s0 + written.load(Ordering::SeqCst) as u64;
    let want = texts(&reference.wait_seq(last, BUS).numbered());
    assert_eq!(want.len() as u64, last - s0);
    let mut resumed_at = BTreeSet::new();
    for (old, new) in doomed.iter().zip(&resumed) {
        let before = old.rec();
        let after = new.wait_seq(last, BUS);
        resumed_at.insert(before.last_seq().unwrap());
        let mut all = before.numbered();
        all.extend(after.numbered());
        assert_contiguous(&new.what, s0, &all);
        assert_same_texts(&new.what, &want, &texts(&all));
    }
    eprintln!(
        "{STREAMS} streams resumed after {} writes at seqs {resumed_at:?}",
        last - s0
    );
}

/// SIGTERM with `--drain-secs 2`: `/readyz` 503 within 0.5 s, new handshakes and API requests
/// 503, the 1001 closes spread over about 2 s, exit 0; a drained client resumes on node 2.
#[test]
fn drain_spreads_closes_over_drain_secs() {
    let mut c = Cluster::start(2, &["--drain-secs", "2"]);
    let cookie = c.admin_cookie();
    const STREAMS: usize = 20;
    let streams: Vec<Recorder> = (0..STREAMS)
        .map(|_| c.nodes[0].admin_recorder(&cookie))
        .collect();
    let epoch = streams[0].first()["epoch"].as_str().unwrap().to_string();
    post_user(&c.nodes[1], &cookie, "before.drain@example.com");
    for r in &streams {
        r.wait_seq(1, BUS);
    }

    let t0 = Instant::now();
    c.nodes[0].signal(libc::SIGTERM);
    loop {
        if readyz(&c.nodes[0]) == Some(503) {
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_millis(500),
            "/readyz not 503 within 0.5 s of SIGTERM"
        );
        thread::sleep(Duration::from_millis(20));
    }
    let ready_503 = t0.elapsed();
    let r = c.nodes[0].get("/api/users", Some(&cookie));
    assert_eq!(r.status, 503, "API request while draining: {}", r.text());
    match c.nodes[0].ws_connect("/admin/stream", Some(&cookie), None) {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(
                resp.status().as_u16(),
                503,
                "stream handshake while draining"
            )
        }
        Ok(_) => panic!("a new stream handshake was accepted while draining"),
        Err(e) => panic!("stream handshake while draining: {e}"),
    }

    let mut closes: Vec<Duration> = streams
        .iter()
        .map(|r| {
            let end = r.wait_end(Duration::from_secs(6));
            assert_eq!(
                end.close.as_ref().map(|c| c.0),
                Some(1001),
                "{}: {end:?}",
                r.what
            );
            end.at - t0
        })
        .collect();
    closes.sort();
    let st = c.nodes[0].wait_exit(Duration::from_secs(8));
    assert!(st.success(), "exit status after the drain: {st}");
    eprintln!("drain: /readyz 503 after {ready_503:?}; closes at {closes:?}");
    let (first, last) = (closes[0], closes[STREAMS - 1]);
    assert!(
        last <= Duration::from_millis(3500),
        "last close {last:?} after SIGTERM"
    );
    assert!(
        last - first >= Duration::from_secs(1),
        "closes not spread: {first:?}..{last:?}"
    );
    let window = Duration::from_millis(250);
    let crowded = closes
        .iter()
        .map(|&a| closes.iter().filter(|&&b| b >= a && b < a + window).count())
        .max()
        .unwrap();
    assert!(
        crowded <= STREAMS / 2,
        "{crowded} of {STREAMS} closes within 250 ms"
    );

    let since = streams[0].rec().last_seq().unwrap();
    let r = c.nodes[1].admin_recorder_at(
        &format!("/admin/stream{}", resume_query(&epoch, since)),
        &cookie,
    );
    assert_eq!(
        r.first()["type"],
        "resumed",
        "a drained client resumes on node 2"
    );
}
