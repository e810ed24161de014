//! Presence (API.md v2): `presence` frames on the admin stream and `GET /api/presence` — the
//! invitees with their session page open and the admins watching (K streams each, only K ≥ 1),
//! full state each time, right after `initial`/`resumed` and on change (a change shows within
//! 2 s; at most one frame a second; none without a change), never numbered, never replayed;
//! and the `catalytic_presence_sessions` gauge.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

/// A change shows within this long.
const SHOWS: Duration = Duration::from_secs(2);

/// `sessions` as user id → streams, `admins` as email → streams; checks the frame's shape.
fn state(p: &Value) -> (BTreeMap<String, u64>, BTreeMap<String, u64>) {
    let sessions = p["sessions"]
        .as_object()
        .unwrap_or_else(|| panic!("sessions object in {p}"))
        .iter()
        .map(|(k, v)| {
            assert!(k.parse::<i64>().is_ok(), "session key is a user id: {p}");
            let n = v.as_u64().unwrap_or_else(|| panic!("stream count in {p}"));
            assert!(n >= 1, "only entries with K >= 1: {p}");
            (k.clone(), n)
        })
        .collect();
    let admins = p["admins"]
        .as_array()
        .unwrap_or_else(|| panic!("admins array in {p}"))
        .iter()
        .map(|a| {
            assert_eq!(a.as_object().unwrap().len(), 2, "admin entry {a}");
            let n = a["streams"]
                .as_u64()
                .unwrap_or_else(|| panic!("streams in {a}"));
            assert!(n >= 1, "only entries with K >= 1: {p}");
            (a["email"].as_str().unwrap().to_string(), n)
        })
        .collect();
    (sessions, admins)
}

fn sessions(pairs: &[(i64, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(id, n)| (id.to_string(), *n)).collect()
}

fn admins(pairs: &[(&str, u64)]) -> BTreeMap<String, u64> {
    pairs.iter().map(|(e, n)| (e.to_string(), *n)).collect()
}

fn api_presence(srv: &Server) -> Value {
    let r = srv.get("/api/presence", Some(&srv.admin_cookie()));
    assert_eq!(r.status, 200, "GET /api/presence: {}", r.text());
    let v = r.json();
    assert_eq!(v.as_object().map(|o| o.len()), Some(2), "{v}");
    v
}

/// An admin stream watched for presence: every frame is checked for shape and for carrying
/// no `seq`; frames that only repeat the previous state are counted (the contract sends one only
/// on a change; `no_presence_frame_repeats_the_state_already_sent` holds the server to that,
/// the other tests look past such repeats to what they check).
struct Watch {
    ws: Ws,
    /// The last presence frame and when it came.
    last: (Value, Instant),
    /// Frames that repeated the state before them, and how long after it they came.
    repeats: Vec<(Duration, Value)>,
}

impl Watch {
    /// Opens an admin stream (`query`: "" or a resume); the presence frame right after its
    /// first frame must come before anything else.
    fn open(srv: &Server, query: &str) -> (Watch, Value) {
        let (mut ws, first) = srv.admin_open(query);
        let (p, others) = next_presence(&mut ws, SHOWS);
        let p = p.unwrap_or_else(|| panic!("no presence right after {first}"));
        if first["type"] == "initial" {
            assert!(
                others.is_empty(),
                "frames between initial and presence: {others:?}"
            );
        }
        check(&p);
        let w = Watch {
            ws,
            last: (p, Instant::now()),
            repeats: Vec::new(),
        };
        (w, first)
    }

    /// The next presence frame that is not a repeat, within `timeout`.
    fn next(&mut self, timeout: Duration) -> Option<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let (p, others) = next_presence(&mut self.ws, left);
            assert!(others.is_empty(), "unexpected frames: {others:?}");
            let p = p?;
            check(&p);
            if state(&p) == state(&self.last.0) {
                self.repeats.push((self.last.1.elapsed(), p));
                continue;
            }
            self.last = (p.clone(), Instant::now());
            return Some(p);
        }
    }

    /// The state satisfies `pred` now or within 2 s.
    fn shows(&mut self, what: &str, pred: impl Fn(&State) -> bool) -> Value {
        if pred(&state(&self.last.0)) {
            return self.last.0.clone();
        }
        self.until(what, pred)
    }

    /// Presence frames until one whose state satisfies `pred`, within 2 s of now (the change
    /// was just made).
    fn until(&mut self, what: &str, pred: impl Fn(&State) -> bool) -> Value {
        let deadline = Instant::now() + SHOWS;
        if pred(&state(&self.last.0)) {
            panic!("{what}: already shown before the change: {}", self.last.0);
        }
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.next(left) {
                Some(p) if pred(&state(&p)) => return p,
                Some(_) => continue,
                None => panic!("{what}: not shown within {SHOWS:?}; last {}", self.last.0),
            }
        }
    }
}

type State = (BTreeMap<String, u64>, BTreeMap<String, u64>);

/// Shape of a presence frame: exactly type, sessions, admins; no `seq`.
fn check(p: &Value) {
    assert!(p.get("seq").is_none(), "presence is not numbered: {p}");
    assert_eq!(p.as_object().unwrap().len(), 3, "presence fields: {p}");
    state(p);
}

#[test]
fn an_invitee_page_appears_and_disappears_within_2_s() {
    let srv = Server::start(&[]);
    let s = srv.started_session(5);
    let other = srv.started_session(5);
    let (mut w, _) = Watch::open(&srv, "");
    assert_eq!(
        state(&w.last.0).0,
        sessions(&[]),
        "no page open: {}",
        w.last.0
    );
    // (the admins part: admins_watching_appear_with_their_email_and_stream_counts)
    let p = w.shows("this admin watching", |st| {
        st.1 == admins(&[(ADMIN_EMAIL, 1)])
    });
    assert_eq!(
        api_presence(&srv),
        json!({"sessions": p["sessions"], "admins": p["admins"]})
    );

    let mut tab1 = srv.session_ws(&s.session_id, &s.token).unwrap();
    session_opening(&mut tab1);
    w.until("a page opened", |st| st.0 == sessions(&[(s.user_id, 1)]));
    assert_eq!(state(&api_presence(&srv)).0, sessions(&[(s.user_id, 1)]));

    let mut tab2 = srv.session_ws(&s.session_id, &s.token).unwrap();
    session_opening(&mut tab2);
    let mut page = srv.session_ws(&other.session_id, &other.token).unwrap();
    session_opening(&mut page);
    let want = sessions(&[(s.user_id, 2), (other.user_id, 1)]);
    w.until("two more pages", |st| st.0 == want);
    assert_eq!(state(&api_presence(&srv)).0, want);

    // One tab closes politely, the other just drops its connection.
    close_normal(&mut tab1);
    drop(tab2);
    w.until("two tabs closed", |st| {
        st.0 == sessions(&[(other.user_id, 1)])
    });
    close_normal(&mut page);
    let p = w.until("the last page closed", |st| st.0.is_empty());
    assert_eq!(state(&p).1, admins(&[(ADMIN_EMAIL, 1)]));
    assert_eq!(state(&api_presence(&srv)), state(&p));
}

#[test]
fn admins_watching_appear_with_their_email_and_stream_counts() {
    let srv = Server::start(&[]);
    let second = "second.admin@example.com";
    srv.create_admin(second, ADMIN_PASSWORD);
    let second_cookie = format!("admin_session={}", srv.admin_token(second));
    let (mut w, _) = Watch::open(&srv, "");
    w.shows("this admin watching", |st| {
        st.1 == admins(&[(ADMIN_EMAIL, 1)])
    });
    let (mut other_tab, _, _) = srv.admin_at();
    let (mut theirs, _) = srv.admin_ws(&second_cookie);
    let want = admins(&[(ADMIN_EMAIL, 2), (second, 1)]);
    w.until("two more admin streams", |st| st.1 == want);
    assert_eq!(state(&api_presence(&srv)).1, want);

    close_normal(&mut theirs);
    w.until("the other admin left", |st| {
        st.1 == admins(&[(ADMIN_EMAIL, 2)])
    });
    close_normal(&mut other_tab);
    let p = w.until("a second tab closed", |st| {
        st.1 == admins(&[(ADMIN_EMAIL, 1)])
    });
    assert_eq!(state(&api_presence(&srv)), state(&p));

    // It is an admin route.
    assert_eq!(srv.get("/api/presence", None).status, 401);
}

/// The frame right after `initial` is the state as it is then, the opening stream counted, also
/// when the state changed less than a second before (it used to be the state told up to a second
/// earlier, which could leave out the opening stream itself and a page opened just before).
#[test]
fn an_opening_stream_is_told_the_current_state_counting_itself() {
    let srv = Server::start(&[]);
    let s = srv.started_session(5);
    let (first, _) = Watch::open(&srv, "");
    assert_eq!(
        state(&first.last.0),
        (sessions(&[]), admins(&[(ADMIN_EMAIL, 1)])),
        "{}",
        first.last.0
    );
    let mut page = srv.session_ws(&s.session_id, &s.token).unwrap();
    session_opening(&mut page);
    let mut open = vec![first];
    for n in 2..=4u64 {
        let (w, _) = Watch::open(&srv, "");
        let want = (sessions(&[(s.user_id, 1)]), admins(&[(ADMIN_EMAIL, n)]));
        assert_eq!(
            state(&w.last.0),
            want,
            "stream {n}'s first frame: {}",
            w.last.0
        );
        open.push(w);
    }
    assert_eq!(state(&api_presence(&srv)), state(&open[3].last.0));
    // The streams opened before are brought up to date by the merged telling.
    open[0].until("the later streams and the page", |st| {
        st == &(sessions(&[(s.user_id, 1)]), admins(&[(ADMIN_EMAIL, 4)]))
    });
}

/// "Sent only on change": after the frame that follows `initial`, a stream is told again only
/// when the state differs from what it was last told; with nothing changing, nothing comes.
#[test]
fn no_presence_frame_repeats_the_state_already_sent() {
    let srv = Server::start(&[]);
    let s = srv.started_session(5);
    let mut page = srv.session_ws(&s.session_id, &s.token).unwrap();
    session_opening(&mut page);
    std::thread::sleep(Duration::from_millis(1500));
    for round in 0..2 {
        let (mut w, _) = Watch::open(&srv, "");
        let quiet = Instant::now() + Duration::from_millis(2500);
        while w
            .next(quiet.saturating_duration_since(Instant::now()))
            .is_some()
        {}
        assert!(
            w.repeats.is_empty(),
            "round {round}: after {} came the same state again (after, frame): {:?}",
            w.last.0,
            w.repeats
        );
        close_normal(&mut w.ws);
        std::thread::sleep(Duration::from_millis(1200));
    }
}

/// Every JSON frame (pings answered, not returned) within `dur`, with its arrival time.
fn frames_for(ws: &mut Ws, dur: Duration) -> Vec<(Instant, Value)> {
    let deadline = Instant::now() + dur;
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match next_event(ws, left, false) {
            None => return out,
            Some(WsEvent::Json(v)) if v["type"] == "ping" => {
                let _ = ws.send(Message::text(r#"{"type":"pong"}"#));
            }
            Some(WsEvent::Json(v)) => out.push((Instant::now(), v)),
            Some(WsEvent::Pong(_)) => {}
            other => panic!("admin stream: {other:?}"),
        }
    }
}

/// Pages opening and closing every 100 ms for 3 s, writes among them: presence comes at most
/// once a second (merged), only on change, never numbered, and the numbered events stay +1
/// each; once nothing changes, no presence comes at all.
#[test]
fn presence_under_churn_is_merged_unnumbered_and_silent_when_nothing_changes() {
    let srv = Server::start(&[]);
    let s = srv.started_session(5);
    let (mut w, first) = Watch::open(&srv, "");
    let pos = pos_of(&first);

    let frames = std::thread::scope(|sc| {
        let churn = sc.spawn(|| {
            for i in 0..30 {
                let mut page = srv.session_ws(&s.session_id, &s.token).unwrap();
                session_opening(&mut page);
                std::thread::sleep(Duration::from_millis(50));
                close_normal(&mut page);
                if i % 3 == 0 {
                    let r = srv.patch_user(s.user_id, &json!({"last_name": format!("Churn{i}")}));
                    assert_eq!(r.status, 200);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        let mut frames = Vec::new();
        while !churn.is_finished() {
            frames.extend(frames_for(&mut w.ws, Duration::from_millis(100)));
        }
        churn.join().unwrap();
        // The last change shows within 2 s.
        frames.extend(frames_for(&mut w.ws, Duration::from_millis(2200)));
        frames
    });

    let presence: Vec<&(Instant, Value)> = frames
        .iter()
        .filter(|(_, v)| v["type"] == "presence")
        .collect();
    let events: Vec<&Value> = frames
        .iter()
        .map(|(_, v)| v)
        .filter(|v| v["type"] != "presence")
        .collect();
    assert!(presence.len() >= 2, "churn shows: {presence:?}");
    for (_, p) in &presence {
        check(p);
    }
    // Arrival times carry this side's scheduling too: allow 100 ms.
    for pair in presence.windows(2) {
        let gap = pair[1].0 - pair[0].0;
        assert!(
            gap >= Duration::from_millis(900),
            "two presence frames {gap:?} apart"
        );
        assert_ne!(
            state(&pair[1].1),
            state(&pair[0].1),
            "a frame without a change"
        );
    }
    assert_eq!(events.len(), 10, "one event per write: {events:?}");
    for (i, ev) in events.iter().enumerate() {
        assert_eq!(
            seq_of(ev),
            pos.seq + 1 + i as u64,
            "presence never breaks the numbering"
        );
    }
    // The last frame is the state after the churn: no page open.
    let (_, last) = presence.last().unwrap();
    assert_eq!(state(last).0, sessions(&[]), "{last}");

    let quiet = frames_for(&mut w.ws, Duration::from_millis(2500));
    assert!(quiet.is_empty(), "nothing changed, yet: {quiet:?}");
}

/// Presence is never replayed: a resume gets the events it missed and the current presence,
/// not the states it was told of while away.
#[test]
fn a_resume_gets_current_presence_not_a_replay() {
    let srv = Server::start(&[]);
    let s = srv.started_session(5);
    let (mut ws, pos, _) = srv.admin_at();
    close_normal(&mut ws);
    drop(ws);
    // While away: the page opens, closes, opens again (and stays open for over 2 s).
    let mut page = srv.session_ws(&s.session_id, &s.token).unwrap();
    session_opening(&mut page);
    std::thread::sleep(Duration::from_millis(1200));
    let r = srv.patch_user(s.user_id, &json!({"first_name": "While"}));
    assert_eq!(r.status, 200);
    close_normal(&mut page);
    std::thread::sleep(Duration::from_millis(1200));
    let mut page = srv.session_ws(&s.session_id, &s.token).unwrap();
    session_opening(&mut page);
    std::thread::sleep(Duration::from_millis(2200));

    let (mut ws, first) = srv.admin_open(&pos.query());
    assert_eq!(first["type"], "resumed", "{first}");
    let frames: Vec<Value> = frames_for(&mut ws, SHOWS)
        .into_iter()
        .map(|(_, v)| v)
        .collect();
    let presence: Vec<&Value> = frames.iter().filter(|v| v["type"] == "presence").collect();
    assert!(!presence.is_empty(), "presence after resumed: {frames:?}");
    for p in &presence {
        check(p);
        assert_eq!(
            state(p).0,
            sessions(&[(s.user_id, 1)]),
            "only the current state: {frames:?}"
        );
    }
    assert!(
        presence
            .iter()
            .any(|p| state(p).1 == admins(&[(ADMIN_EMAIL, 1)])),
        "the resumed stream watching: {frames:?}"
    );
    let events: Vec<&Value> = frames.iter().filter(|v| v["type"] != "presence").collect();
    assert_eq!(
        events,
        [&json!({"type": "user_update", "seq": pos.seq + 1, "data": r.json()})]
    );
}

#[test]
fn presence_sessions_gauge_counts_invitees_with_a_page_open() {
    let srv = Server::start(&[]);
    let a = srv.started_session(5);
    let b = srv.started_session(5);
    let gauge = |want: f64| {
        srv.wait_metric("catalytic_presence_sessions", &[], SHOWS, |v| v == want);
    };
    gauge(0.0);
    let mut a1 = srv.session_ws(&a.session_id, &a.token).unwrap();
    let mut a2 = srv.session_ws(&a.session_id, &a.token).unwrap();
    let mut b1 = srv.session_ws(&b.session_id, &b.token).unwrap();
    for ws in [&mut a1, &mut a2, &mut b1] {
        session_opening(ws);
    }
    gauge(2.0);
    close_normal(&mut a1);
    close_normal(&mut a2);
    gauge(1.0);
    close_normal(&mut b1);
    gauge(0.0);
}
