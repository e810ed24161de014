//! The numbered event log on the admin stream (API.md v2): `seq` +1 per user-list change under
//! an `epoch`, resume with `?epoch=E&since=N` (`resumed` + exactly the missed events, or a fresh
//! `initial`), retention (the last 1,000 events and every event of the last 10 minutes, stored
//! with the data), restarts, and `catalytic_resumes_total`. The agent stream's resume:
//! `agent_stream.rs`; presence: `presence.rs`.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

const RESUMED: [(&str, &str); 2] = [("stream", "admin"), ("result", "resumed")];
const INITIAL: [(&str, &str); 2] = [("stream", "admin"), ("result", "initial")];

/// `got` and `want` are the same events; on a difference, names the first one (the lists may
/// hold thousands, too many to print).
fn assert_same_events(got: &[Value], want: &[Value], what: &str) {
    if let Some(i) = (0..got.len().min(want.len())).find(|&i| got[i] != want[i]) {
        panic!(
            "{what}: event #{i} differs\n got: {}\nwant: {}",
            got[i], want[i]
        );
    }
    assert_eq!(got.len(), want.len(), "{what}: number of events");
}

/// Disconnects an admin at the log's current position, lets `missed` writes happen, resumes,
/// and checks the replay against what the reference admin `live` saw, then the live tail.
fn resume_after(srv: &Server, live: &LiveAdmin, id: i64, missed: usize) {
    let (mut ws, pos, _) = srv.admin_at();
    close_normal(&mut ws);
    drop(ws);
    let answers = srv.patch_burst(id, missed, &format!("missed{missed}"));
    let want = live.events_through(pos.seq, pos.seq + missed as u64, Duration::from_secs(30));
    for (ev, answer) in want.iter().zip(&answers) {
        assert_eq!(ev["type"], "user_update", "{ev}");
        assert_eq!(&ev["data"], answer, "the event carries the stored user");
    }

    let (mut ws, first) = srv.admin_open(&pos.query());
    assert_eq!(first["type"], "resumed", "after {missed} missed: {first}");
    assert_eq!(pos_of(&first), pos, "resumed names the position asked for");
    let got = recv_events(&mut ws, missed, Duration::from_secs(15));
    assert_same_events(&got, &want, &format!("replay after {missed} missed"));
    assert_silent(&mut ws, QUIET, "nothing after the replay");

    // Then the live tail, numbered on.
    let r = srv.patch_user(id, &json!({"first_name": format!("Tail{missed}")}));
    assert_eq!(r.status, 200, "{}", r.text());
    let tail = pos.seq + missed as u64 + 1;
    let want = json!({"type": "user_update", "seq": tail, "data": r.json()});
    assert_eq!(recv_json(&mut ws, WAIT), want, "live tail after the replay");
    assert_eq!(live.events_through(tail - 1, tail, WAIT), vec![want]);
    close_normal(&mut ws);
}

#[test]
fn resume_after_0_1_10_and_2000_missed_events() {
    let srv = Server::start(&[]);
    let id = id_of(&srv.create_user("Ada", "Lovelace", Some(5)));
    let live = LiveAdmin::start(&srv);
    let resumed = srv.metric("catalytic_resumes_total", &RESUMED);
    let initial = srv.metric("catalytic_resumes_total", &INITIAL);
    for missed in [0, 1, 10, 2000] {
        resume_after(&srv, &live, id, missed);
    }
    srv.wait_metric("catalytic_resumes_total", &RESUMED, WAIT, |v| {
        v == resumed + 4.0
    });
    assert_eq!(srv.metric("catalytic_resumes_total", &INITIAL), initial);
}

/// The server keeps about 2,048 events in memory; a resume from further back reads storage.
#[test]
fn resume_after_3000_missed_events_reads_storage() {
    let srv = Server::start(&[]);
    let id = id_of(&srv.create_user("Ada", "Lovelace", Some(5)));
    let live = LiveAdmin::start(&srv);
    resume_after(&srv, &live, id, 3000);
}

/// Resumes replayed from storage (and from memory) while writes keep coming: each stream gets
/// `resumed`, then every number once, in order, across the seam between replay and live tail.
#[test]
fn replays_racing_live_writes_have_no_gap_and_no_repeat() {
    let srv = Server::start(&[]);
    let id = id_of(&srv.create_user("Ada", "Lovelace", Some(5)));
    let from = srv.log_pos();
    srv.patch_burst(id, 2500, "before");
    let last = from.seq + 2500 + 300;
    let writing = AtomicBool::new(true);
    let raced = AtomicU64::new(0); // readers that resumed while the writes went on
    thread::scope(|s| {
        let (started, go) = std::sync::mpsc::channel();
        let (srv, writing, raced) = (&srv, &writing, &raced);
        let writer = s.spawn(move || {
            srv.patch_burst(id, 50, "racing");
            started.send(()).unwrap();
            srv.patch_burst(id, 250, "racing");
            writing.store(false, Ordering::SeqCst);
        });
        go.recv_timeout(WAIT).unwrap();
        let readers: Vec<_> = [0, 0, 0, 2400, 2490]
            .into_iter()
            .map(|ahead| {
                let from = &from;
                s.spawn(move || {
                    let at = Pos {
                        epoch: from.epoch.clone(),
                        seq: from.seq + ahead,
                    };
                    let (mut ws, first) = srv.admin_open(&at.query());
                    assert_eq!(first["type"], "resumed", "from {}: {first}", at.seq);
                    if writing.load(Ordering::SeqCst) {
                        raced.fetch_add(1, Ordering::SeqCst);
                    }
                    let n = (last - at.seq) as usize;
                    for (i, ev) in recv_events(&mut ws, n, Duration::from_secs(30))
                        .iter()
                        .enumerate()
                    {
                        assert_eq!(seq_of(ev), at.seq + 1 + i as u64, "from {}: {ev}", at.seq);
                    }
                    assert_silent(&mut ws, QUIET, "nothing after the last write");
                })
            })
            .collect();
        for r in readers {
            r.join().unwrap();
        }
        assert!(
            writer.is_finished(),
            "the writer finished before the readers"
        );
        writer.join().unwrap();
    });
}

/// Ages the stored events numbered `..=up_to` (all when `None`) by 11 minutes, on a second
/// connection to the database file while the server is stopped.
fn age_events(srv: &Server, up_to: Option<u64>) -> usize {
    let db = rusqlite::Connection::open(&srv.db).unwrap();
    let bound = up_to.map_or(i64::MAX, |s| s as i64);
    db.execute(
        "UPDATE events SET at_ms = at_ms - 660000 WHERE seq <= ?1",
        [bound],
    )
    .unwrap()
}

fn assert_initial(srv: &Server, query: &str, pos: &Pos, what: &str) {
    let (mut ws, first) = srv.admin_open(query);
    assert_eq!(first["type"], "initial", "{what} ({query}): {first}");
    assert_eq!(
        &pos_of(&first),
        pos,
        "{what}: initial at the log's position"
    );
    assert_eq!(
        first["data"].as_array().unwrap(),
        &srv.users(),
        "{what}: initial is the full list"
    );
    close_normal(&mut ws);
}

fn assert_resumes(srv: &Server, since: u64, log: &[Value], pos: &Pos, what: &str) {
    let from = Pos {
        epoch: pos.epoch.clone(),
        seq: since,
    };
    let (mut ws, first) = srv.admin_open(&from.query());
    assert_eq!(first["type"], "resumed", "{what} (since {since}): {first}");
    let want: Vec<Value> = log.iter().filter(|e| seq_of(e) > since).cloned().collect();
    let got = recv_events(&mut ws, want.len(), Duration::from_secs(15));
    assert_same_events(&got, &want, what);
    assert_silent(&mut ws, QUIET, what);
    close_normal(&mut ws);
}

/// Retention: at least the last 1,000 events and every event of the last 10 minutes; what is
/// older than both is trimmed, and a resume from there gets `initial`.
#[test]
fn events_past_retention_fall_back_to_initial() {
    let mut srv = Server::start(&[]);
    let id = id_of(&srv.create_user("Ada", "Lovelace", Some(5)));
    let live = LiveAdmin::start(&srv);
    srv.patch_burst(id, 1199, "old");
    let last = 1200;
    let log = live.events_through(1, last, Duration::from_secs(30));
    drop(live);
    let pos = srv.log_pos();
    assert_eq!(pos.seq, last);

    // Events 1..=100 grow old; 101..=1200 (1,100 events) are all recent and must be held.
    let st = srv.stop();
    assert!(st.success(), "{st}");
    assert_eq!(age_events(&srv, Some(100)), 100, "every event was stored");
    srv.spawn();
    assert_eq!(
        srv.log_pos(),
        pos,
        "same epoch and position after the restart"
    );
    assert_resumes(&srv, 150, &log, &pos, "1,050 recent events are held");
    assert_initial(
        &srv,
        &pos_q(&pos, 10),
        &pos,
        "old and beyond the last 1,000",
    );

    // Now everything is old: only the last 1,000 must be held.
    let st = srv.stop();
    assert!(st.success(), "{st}");
    age_events(&srv, None);
    srv.spawn();
    assert_resumes(&srv, last - 1000, &log, &pos, "the last 1,000 are held");
    assert_resumes(&srv, last - 10, &log, &pos, "the last 10");
    assert_initial(&srv, &pos_q(&pos, 150), &pos, "old, beyond the last 1,000");
    assert_initial(&srv, &pos_q(&pos, 0), &pos, "from the very start");
}

fn pos_q(pos: &Pos, since: u64) -> String {
    Pos {
        epoch: pos.epoch.clone(),
        seq: since,
    }
    .query()
}

/// Held means stored with the data: a resume works across a graceful restart and a SIGKILL,
/// under the same epoch, and the numbering goes on.
#[test]
fn resume_across_restart_and_crash() {
    let mut srv = Server::start(&[]);
    let start = srv.log_pos();
    assert_eq!(start.seq, 0, "a fresh database starts at 0");
    let live = LiveAdmin::start(&srv);
    let a = srv.create_user("Ada", "Lovelace", Some(3));
    let b = srv.create_user("Grace", "Hopper", None);
    assert_eq!(
        srv.patch_user(id_of(&a), &json!({"questions_answered": 2}))
            .status,
        200
    );
    srv.regenerate_invite(id_of(&b), &srv.admin_cookie());
    let r = srv.json(
        "DELETE",
        &format!("/api/users/{}", id_of(&b)),
        Some(&srv.admin_cookie()),
        None,
    );
    assert_eq!(r.status, 204);
    let mut log = live.events_through(0, 5, WAIT);
    drop(live);
    let kinds: Vec<&str> = log.iter().map(|e| e["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        [
            "user_added",
            "user_added",
            "user_update",
            "user_update",
            "user_deleted"
        ]
    );

    srv.restart();
    let (mut ws, first) = srv.admin_open(&start.query());
    assert_eq!(first["type"], "resumed", "{first}");
    assert_same_events(
        &recv_events(&mut ws, 5, WAIT),
        &log,
        "replay after a restart",
    );
    let c = srv.create_user("Katherine", "Johnson", None);
    let ev = recv_json(&mut ws, WAIT);
    assert_eq!(
        ev,
        json!({"type": "user_added", "seq": 6, "data": c}),
        "numbering goes on"
    );
    log.push(ev);
    close_normal(&mut ws);

    // A crash keeps every event whose write was answered.
    srv.signal(libc::SIGKILL);
    srv.wait_exit(Duration::from_secs(5));
    srv.spawn();
    assert_eq!(
        srv.log_pos(),
        Pos {
            epoch: start.epoch.clone(),
            seq: 6
        },
        "same epoch and position after a crash"
    );
    let (mut ws, first) = srv.admin_open(&pos_q(&start, 2));
    assert_eq!(first["type"], "resumed", "{first}");
    assert_same_events(
        &recv_events(&mut ws, 4, WAIT),
        &log[2..],
        "replay after a crash",
    );
    assert_silent(&mut ws, QUIET, "nothing more");
}

/// Every database names its own history; another one's epoch gets a fresh `initial`.
#[test]
fn a_wrong_epoch_gets_initial() {
    let a = Server::start(&[]);
    let b = Server::start(&[]);
    a.create_user("Ada", "Lovelace", None);
    a.create_user("Grace", "Hopper", None);
    b.create_user("Katherine", "Johnson", None);
    let pa = a.log_pos();
    let pb = b.log_pos();
    assert_ne!(pa.epoch, pb.epoch, "two databases, two epochs");
    let initial = a.metric("catalytic_resumes_total", &INITIAL);
    // b's epoch with a number a knows, and with b's own number.
    assert_initial(&a, &pos_q(&pb, 1), &pa, "another database's epoch");
    assert_initial(&a, &pb.query(), &pa, "another database's position");
    a.wait_metric("catalytic_resumes_total", &INITIAL, WAIT, |v| {
        v == initial + 2.0
    });
    assert_eq!(a.metric("catalytic_resumes_total", &RESUMED), 0.0);
}

/// `since` ahead of the log and malformed values start the stream with `initial`, as a full
/// replacement; `catalytic_resumes_total{result="initial"}` counts the handshakes that asked.
#[test]
fn since_ahead_or_malformed_gets_initial_and_is_counted() {
    let srv = Server::start(&[]);
    srv.create_user("Ada", "Lovelace", None);
    let u = srv.create_user("Grace", "Hopper", Some(4));
    assert_eq!(
        srv.patch_user(id_of(&u), &json!({"questions_answered": 1}))
            .status,
        200
    );
    let pos = srv.log_pos();
    assert_eq!(pos.seq, 3);
    let e = encode(&pos.epoch);
    let both = [
        format!("?epoch={e}&since=4"),
        format!("?epoch={e}&since=1000000"),
        format!("?epoch={e}&since=abc"),
        format!("?epoch={e}&since=-1"),
        format!("?epoch={e}&since="),
        format!("?epoch={e}&since=1.5"),
        format!("?epoch={e}&since=18446744073709551616"),
        "?epoch=&since=2".to_string(),
        "?epoch=not-an-epoch&since=2".to_string(),
    ];
    let partial = ["?since=2".to_string(), format!("?epoch={e}")];
    let initial = srv.metric("catalytic_resumes_total", &INITIAL);
    for q in both.iter().chain(&partial) {
        assert_initial(&srv, q, &pos, "not resumable");
    }
    // Every handshake that named both asked to resume; one that named only one of them may
    // count or not.
    let asked = both.len() as f64;
    let counted = srv.wait_metric("catalytic_resumes_total", &INITIAL, WAIT, |v| {
        v >= initial + asked
    });
    assert!(
        counted <= initial + asked + partial.len() as f64,
        "counted {counted} of {} handshakes",
        both.len() + partial.len()
    );
    assert_eq!(srv.metric("catalytic_resumes_total", &RESUMED), 0.0);

    // A plain handshake did not ask: not counted.
    let before = srv.metric("catalytic_resumes_total", &INITIAL);
    srv.log_pos();
    thread::sleep(Duration::from_millis(200));
    assert_eq!(srv.metric("catalytic_resumes_total", &INITIAL), before);
}

/// A client's view of the user list, kept up to date from `initial`/`resumed` + events, with
/// the checks a client relies on: every event numbered +1 from where it stands.
#[derive(Default)]
struct Replica {
    pos: Option<Pos>,
    users: BTreeMap<i64, Value>,
    /// Every number applied: the `initial`'s, then each event's.
    seqs: Vec<u64>,
    resumes: u64,
}

impl Replica {
    fn open(&mut self, srv: &Server) -> Ws {
        let query = self.pos.as_ref().map(Pos::query).unwrap_or_default();
        let (ws, first) = srv.admin_open(&query);
        match (&self.pos, first["type"].as_str()) {
            (None, Some("initial")) => {
                let p = pos_of(&first);
                self.seqs.push(p.seq);
                self.pos = Some(p);
                self.users = first["data"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|u| (id_of(u), u.clone()))
                    .collect();
            }
            (Some(p), Some("resumed")) => {
                assert_eq!(&pos_of(&first), p, "resumed where asked");
                self.resumes += 1;
            }
            (p, _) => panic!("at {p:?} (within retention, same epoch) the stream began {first}"),
        }
        ws
    }

    fn apply(&mut self, ev: &Value) {
        let pos = self.pos.as_mut().unwrap();
        assert_eq!(
            seq_of(ev),
            pos.seq + 1,
            "next number after {}: {ev}",
            pos.seq
        );
        pos.seq += 1;
        self.seqs.push(pos.seq);
        let data = &ev["data"];
        match ev["type"].as_str() {
            Some("user_added") | Some("user_update") => {
                self.users.insert(id_of(data), data.clone());
            }
            Some("user_deleted") => {
                assert!(
                    self.users.remove(&id_of(data)).is_some(),
                    "deleted unknown: {ev}"
                );
            }
            _ => panic!("unexpected admin frame {ev}"),
        }
    }
}

/// 20 clients disconnect and resume over and over while 200 writes race them: each ends with
/// exactly the final list and applied every number once (its `initial`'s, then +1 each).
#[test]
fn twenty_clients_resuming_while_200_writes_race_them() {
    let srv = Server::start(&[]);
    let mut ids: Vec<i64> = (0..10)
        .map(|i| id_of(&srv.create_user(&format!("Seed{i}"), "User", Some(10))))
        .collect();
    let resumed = srv.metric("catalytic_resumes_total", &RESUMED);
    let initial = srv.metric("catalytic_resumes_total", &INITIAL);
    let last = AtomicU64::new(0); // the final number, once the writes are done
    let abort = AtomicBool::new(false); // the writer failed: stop the clients at once
    let deadline = Instant::now() + Duration::from_secs(40);

    let replicas: Vec<Replica> = thread::scope(|s| {
        let clients: Vec<_> = (0..20u64)
            .map(|c| {
                let (srv, last, abort) = (&srv, &last, &abort);
                s.spawn(move || {
                    let mut rng = Rng(0xC0FFEE + c);
                    let mut r = Replica::default();
                    loop {
                        if abort.load(Ordering::SeqCst) {
                            return r;
                        }
                        assert!(Instant::now() < deadline, "client {c}: not done in time");
                        let mut ws = r.open(srv);
                        for _ in 0..rng.below(8) {
                            match next_event(&mut ws, Duration::from_millis(100), true) {
                                Some(WsEvent::Json(ev)) => r.apply(&ev),
                                None => break,
                                other => panic!("client {c}: {other:?}"),
                            }
                        }
                        let done = last.load(Ordering::SeqCst);
                        if done > 0 && r.pos.as_ref().unwrap().seq == done {
                            close_normal(&mut ws);
                            return r;
                        }
                        // Leave politely or just drop the connection.
                        if rng.below(2) == 0 {
                            close_normal(&mut ws);
                        }
                    }
                })
            })
            .collect();

        let _guard = AbortOnPanic(&abort);
        let mut rng = Rng(42);
        let mut conn = srv.http();
        for i in 0..200 {
            let r = match rng.below(10) {
                0..=3 => {
                    let body = json!({"first_name": format!("New{i}"), "last_name": "User",
                                      "email": srv.unique_email()});
                    let r = send_keepalive(&srv, &mut conn, "POST", "/api/users", &body);
                    if r.status == 201 {
                        ids.push(id_of(&r.json()));
                    }
                    r
                }
                4..=7 => {
                    let id = ids[rng.below(ids.len() as u64) as usize];
                    let body =
                        json!({"last_name": format!("Edit{i}"), "questions_answered": i % 10});
                    send_keepalive(&srv, &mut conn, "PATCH", &format!("/api/users/{id}"), &body)
                }
                _ => {
                    let id = ids.swap_remove(rng.below(ids.len() as u64) as usize);
                    srv.json(
                        "DELETE",
                        &format!("/api/users/{id}"),
                        Some(&srv.admin_cookie()),
                        None,
                    )
                }
            };
            assert!(
                [200, 201, 204].contains(&r.status),
                "write {i}: {} {}",
                r.status,
                r.text()
            );
            // About 1.5 s of writes, so that the clients reconnect many times meanwhile.
            thread::sleep(Duration::from_millis(7));
        }
        let end = srv.log_pos();
        assert_eq!(end.seq, 10 + 200, "one event per write");
        last.store(end.seq, Ordering::SeqCst);
        clients.into_iter().map(|h| h.join().unwrap()).collect()
    });

    let want: BTreeMap<i64, Value> = srv.users().into_iter().map(|u| (id_of(&u), u)).collect();
    let mut total_resumes = 0;
    for (c, r) in replicas.iter().enumerate() {
        assert!(r.resumes >= 1, "client {c} never resumed");
        assert!(
            r.users == want,
            "client {c}: final list differs from GET /api/users"
        );
        let first = r.seqs[0];
        let every: Vec<u64> = (first..=210).collect();
        assert_eq!(r.seqs, every, "client {c}: every number once, in order");
        total_resumes += r.resumes;
    }
    eprintln!("{total_resumes} resumes");
    srv.wait_metric("catalytic_resumes_total", &RESUMED, WAIT, |v| {
        v == resumed + total_resumes as f64
    });
    assert_eq!(srv.metric("catalytic_resumes_total", &INITIAL), initial);
}

/// Sets its flag when the thread unwinds, so that helper threads stop waiting for it.
struct AbortOnPanic<'a>(&'a AtomicBool);

impl Drop for AbortOnPanic<'_> {
    fn drop(&mut self) {
        if thread::panicking() {
            self.0.store(true, Ordering::SeqCst);
        }
    }
}
