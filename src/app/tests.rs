//! The application's rules with a fake clock and no sockets: commands against a real SQLite
//! file in a temp directory, events applied to a real view, effects inspected as values.

use super::*;
use crate::store::{Sqlite, Tx};
use serde_json::Value;

const MIN: i64 = 60_000;
const T0: i64 = 1_800_000_000_000;

/// A deployment with the default lengths: 30-minute sessions, week-long invite links and admin
/// sessions.
fn rules() -> Rules {
    Rules {
        public_url: "http://h".into(),
        session_ms: 30 * MIN,
        invite_ttl_ms: 168 * 60 * MIN,
        admin_session_ms: 7 * 24 * 60 * MIN,
    }
}

const INVITE_TTL: i64 = 168 * 60 * MIN;

/// A real SQLite store in a temp directory and the view built from it: commands run in real
/// transactions and their events are applied as the reactor applies them.
struct World {
    _dir: tempfile::TempDir,
    store: Sqlite,
    app: App,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let mut store = Sqlite::open(&dir.path().join("app.db"), Some([7; 32])).unwrap();
        let app = load(&mut store);
        World {
            _dir: dir,
            store,
            app,
        }
    }

    /// A fresh view from what is stored, as the server builds it at start.
    fn reload(&mut self) {
        self.app = load(&mut self.store);
    }

    /// Run `cmd`, which must succeed.
    fn ok(&mut self, now: i64, cmd: Command) {
        let (out, _) = self.run(now, cmd);
        assert!(out.is_ok(), "{out:?}");
    }

    /// Run `cmd` at `now`; apply its event; return the outcome and the effects.
    fn run(&mut self, now: i64, cmd: Command) -> (AppResult<Outcome>, Vec<Effect>) {
        let rules = rules();
        let out = if cmd.is_read() {
            self.store.read(|tx| command::execute(tx, &rules, now, cmd))
        } else {
            self.store
                .write(|tx| command::execute(tx, &rules, now, cmd))
        };
        let mut effects = Vec::new();
        if let Ok(Outcome::Changed(e)) = &out {
            assert!(self.app.apply(e, &mut effects), "applied in order");
        }
        (out, effects)
    }

    /// Create a user with `total` questions at `now`; returns the stored row.
    fn add(&mut self, now: i64, email: &str, total: i64) -> User {
        let (out, _) = self.run(
            now,
            Command::CreateUser {
                first_name: "Ada".into(),
                last_name: "Lovelace".into(),
                email: email.into(),
                questions_total: total,
            },
        );
        match out {
            Ok(Outcome::Changed(Event::User(l))) => match l.change {
                UserChange::Added(u) => *u,
                other => panic!("{other:?}"),
            },
            other => panic!("{other:?}"),
        }
    }

    /// The digest of user `id`'s current invite token (what commands take).
    fn token(&self, id: i64) -> Digest32 {
        auth::digest(&self.app.user(id).unwrap().invite_token)
    }
}

/// The view as `reactor/open.rs` builds it: users, the log's head and every stored event.
fn load(store: &mut Sqlite) -> App {
    let users = store.load_users().unwrap();
    let (head, events, from) = store
        .read(|tx| {
            let head = tx.log_head()?;
            let events = tx.events_between(1, head.head)?;
            let from = tx.oldest_event()?.unwrap_or(head.head + 1);
            Ok::<_, crate::store::DbError>((head, events, from))
        })
        .unwrap();
    App::new(users, head, &events, from, "http://h".into(), None)
}

/// The frames of an opening that did not need storage.
fn frames(o: Opening) -> (Vec<Rc<[u8]>>, bool) {
    match o {
        Opening::Frames { frames, resumed } => (frames, resumed),
        Opening::ReadStorage { from, to } => panic!("storage replay {from}..={to}"),
    }
}

/// The JSON of a server text frame (header of 2, 4 or 10 bytes).
fn payload(frame: &[u8]) -> Value {
    let start = match frame[1] {
        126 => 4,
        127 => 10,
        _ => 2,
    };
    serde_json::from_slice(&frame[start..]).unwrap()
}

/// The broadcasts among `effects`, as (stream, message type).
fn broadcasts(effects: &[Effect]) -> Vec<(Stream, String)> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Broadcast(s, f) => Some((*s, payload(f)["type"].as_str()?.to_string())),
            _ => None,
        })
        .collect()
}

/// The row and cause of an outcome that must be a stored update.
fn updated(out: AppResult<Outcome>) -> (User, Cause) {
    match out {
        Ok(Outcome::Changed(Event::User(l))) => match l.change {
            UserChange::Updated(u, c) => (*u, c),
            other => panic!("{other:?}"),
        },
        other => panic!("{other:?}"),
    }
}

/// `POST /api/users`: one `user_added` to admins (none to agents: no session runs), the invite
/// link valid for the TTL; an email that exists in another case is 409 and changes nothing.
#[test]
fn creating_a_user_tells_the_admins_and_fills_the_view() {
    let mut w = World::new();
    let (out, effects) = w.run(
        T0,
        Command::CreateUser {
            first_name: "Ada".into(),
            last_name: "Lovelace".into(),
            email: "ada@example.com".into(),
            questions_total: 10,
        },
    );
    assert!(matches!(out, Ok(Outcome::Changed(_))));
    assert_eq!(broadcasts(&effects), [(Stream::Admin, "user_added".into())]);
    let u = w.app.list(T0)[0].id;
    let stored = w.app.user(u).unwrap();
    assert_eq!(stored.invite_expires_at, T0 + INVITE_TTL);
    assert!(w.app.user_by_token(&stored.invite_token.clone()).is_some());
    let (dup, effects) = w.run(
        T0,
        Command::CreateUser {
            first_name: "B".into(),
            last_name: "C".into(),
            email: "ADA@example.com".into(),
            questions_total: 10,
        },
    );
    assert!(matches!(dup, Err(AppError::Conflict(_))));
    assert!(effects.is_empty());
    assert_eq!(w.app.user_count(), 1);
}

/// `POST /api/session/activate`: the first call starts the session clock and tells admins and
/// the agent; a reload is the same session (no event, the end unchanged); after the end, 410.
#[test]
fn activation_starts_the_clock_once() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 10);
    let token = w.token(u.id);
    let (out, effects) = w.run(T0 + 5_000, Command::Activate { token });
    let (user, cause) = updated(out);
    assert_eq!(cause, Cause::Activated);
    assert_eq!(user.session_started_at, Some(T0 + 5_000));
    assert_eq!(user.session_expires_at, Some(T0 + 5_000 + 30 * MIN));
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::StartClock { user_id, expires_at } if *user_id == u.id && *expires_at == T0 + 5_000 + 30 * MIN
    )));
    assert_eq!(
        broadcasts(&effects),
        [
            (Stream::Admin, "user_update".into()),
            (Stream::Agent, "session_started".into())
        ]
    );
    // Again, a minute later: the same session, the clock not restarted, nobody told.
    let (again, effects) = w.run(T0 + MIN, Command::Activate { token });
    match again {
        Ok(Outcome::Unchanged(same)) => {
            assert_eq!(same.session_expires_at, user.session_expires_at)
        }
        other => panic!("{other:?}"),
    }
    assert!(effects.is_empty());
    // Once the session is over the link is dead.
    let (late, _) = w.run(T0 + 31 * MIN, Command::Activate { token });
    assert_eq!(late.unwrap_err(), AppError::Gone("this session has ended"));
}

/// An invite used after its TTL is 410; a token nobody holds is 401. Neither changes anything.
#[test]
fn an_expired_or_unknown_invite_does_not_activate() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 10);
    let token = w.token(u.id);
    let (out, effects) = w.run(T0 + INVITE_TTL, Command::Activate { token });
    assert_eq!(
        out.unwrap_err(),
        AppError::Gone("this invite link has expired")
    );
    assert!(effects.is_empty());
    let (out, _) = w.run(
        T0,
        Command::Activate {
            token: auth::digest("nope"),
        },
    );
    assert_eq!(out.unwrap_err(), AppError::Unauthorized);
}

/// `POST /api/session/answer`: only on an activated, live session; `progress` to the page first
/// (a person waits on it), then admins and the agent; capped at the total (→ completed); 410
/// once the clock ran out.
#[test]
fn answers_count_up_to_the_total_and_complete_the_interview() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 2);
    let token = w.token(u.id);
    let (before, _) = w.run(T0, Command::Answer { token });
    assert_eq!(
        before.unwrap_err(),
        AppError::Unauthorized,
        "not activated yet"
    );
    w.ok(T0, Command::Activate { token });
    let (out, effects) = w.run(T0 + 1_000, Command::Answer { token });
    let (user, _) = updated(out);
    assert_eq!(user.questions_answered, 1);
    assert_eq!(
        broadcasts(&effects),
        [
            (Stream::Session(u.id), "progress".into()),
            (Stream::Admin, "user_update".into()),
            (Stream::Agent, "progress".into())
        ]
    );
    w.ok(T0 + 2_000, Command::Answer { token });
    let (out, _) = w.run(T0 + 3_000, Command::Answer { token });
    let (user, _) = updated(out);
    assert_eq!(user.questions_answered, 2, "capped at the total");
    assert_eq!(user.status(), crate::model::Status::Completed);
    let (late, _) = w.run(T0 + 30 * MIN, Command::Answer { token });
    assert_eq!(late.unwrap_err(), AppError::Gone("this session has ended"));
}

/// The session clock's expiry: a timer that fires early changes nothing (`NotYet`); at the end
/// the page gets `session_expired` and close 1000, admins and the agent are told, the clock
/// stops; a second expiry is `Nothing` (the contract: exactly once).
#[test]
fn expiry_waits_for_the_stored_end_and_happens_once() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 10);
    let (out, _) = w.run(T0, Command::ExpireSession { id: u.id });
    assert!(matches!(out, Ok(Outcome::Nothing)), "never activated");
    let token = w.token(u.id);
    w.ok(T0, Command::Activate { token });
    let (early, effects) = w.run(T0 + 29 * MIN, Command::ExpireSession { id: u.id });
    match early {
        Ok(Outcome::NotYet { expires_at }) => assert_eq!(expires_at, T0 + 30 * MIN),
        other => panic!("{other:?}"),
    }
    assert!(effects.is_empty());
    let (out, effects) = w.run(T0 + 30 * MIN, Command::ExpireSession { id: u.id });
    let (user, cause) = updated(out);
    assert_eq!(cause, Cause::SessionExpired);
    assert!(user.session_expired);
    assert_eq!(
        broadcasts(&effects),
        [
            (Stream::Session(u.id), "session_expired".into()),
            (Stream::Admin, "user_update".into()),
            (Stream::Agent, "session_expired".into())
        ]
    );
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::StopClock(id) if *id == u.id)));
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::CloseSession { user_id, code: 1000, .. } if *user_id == u.id
    )));
    let (again, effects) = w.run(T0 + 31 * MIN, Command::ExpireSession { id: u.id });
    assert!(matches!(again, Ok(Outcome::Nothing)));
    assert!(effects.is_empty());
}

/// `POST /api/users/{id}/invite`: the old token dies at once, the session starts over, and the
/// page on the old link is closed 1008 (it must not reconnect).
#[test]
fn a_new_invite_link_kills_the_old_one_and_resets_the_session() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 10);
    let old = w.token(u.id);
    w.ok(T0, Command::Activate { token: old });
    let (out, effects) = w.run(T0 + MIN, Command::RegenerateInvite { id: u.id });
    let (user, cause) = updated(out);
    assert_eq!(cause, Cause::InviteRegenerated);
    assert!(!user.token_activated && user.session_expires_at.is_none());
    assert_eq!(user.invite_expires_at, T0 + MIN + INVITE_TTL);
    assert_ne!(auth::digest(&user.invite_token), old);
    assert!(effects.iter().any(|e| matches!(e, Effect::StopClock(_))));
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::CloseSession { code: 1008, .. })));
    let (dead, _) = w.run(T0 + MIN, Command::Activate { token: old });
    assert_eq!(dead.unwrap_err(), AppError::Unauthorized);
    let (fresh, _) = w.run(
        T0 + MIN,
        Command::Activate {
            token: w.token(u.id),
        },
    );
    assert_eq!(updated(fresh).1, Cause::Activated);
}

/// `DELETE /api/users/{id}`: `user_deleted`, the session's streams closed and its clocks
/// stopped, the token forgotten; deleting again is 404.
#[test]
fn deleting_a_user_closes_its_session_and_forgets_its_token() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 10);
    let token = u.invite_token.clone();
    let (out, effects) = w.run(T0, Command::DeleteUser { id: u.id });
    assert!(matches!(out, Ok(Outcome::Changed(_))));
    assert_eq!(
        broadcasts(&effects),
        [(Stream::Admin, "user_deleted".into())]
    );
    assert!(effects
        .iter()
        .any(|e| matches!(e, Effect::CloseSession { code: 1008, .. })));
    assert!(w.app.user(u.id).is_none());
    assert!(w.app.user_by_token(&token).is_none());
    let (again, effects) = w.run(T0, Command::DeleteUser { id: u.id });
    assert_eq!(again.unwrap_err(), AppError::NotFound);
    assert!(effects.is_empty());
}

/// `PATCH` and agent edits: answered above the total is 422 and changes nothing; progress by an
/// admin reaches the page and the agent; progress the agent reported is not echoed to it;
/// other edits reach the admins only.
#[test]
fn edits_are_checked_and_the_agent_is_not_told_what_it_said() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 5);
    let patch = |answered| UserPatch {
        questions_answered: Some(answered),
        ..UserPatch::default()
    };
    let (bad, effects) = w.run(
        T0,
        Command::UpdateUser {
            id: u.id,
            patch: patch(6),
            agent_request: None,
        },
    );
    assert!(matches!(bad, Err(AppError::Invalid(_))));
    assert!(effects.is_empty());
    assert_eq!(w.app.user(u.id).unwrap().questions_answered, 0);

    let (_, by_admin) = w.run(
        T0,
        Command::UpdateUser {
            id: u.id,
            patch: patch(2),
            agent_request: None,
        },
    );
    assert_eq!(
        broadcasts(&by_admin),
        [
            (Stream::Session(u.id), "progress".into()),
            (Stream::Admin, "user_update".into()),
            (Stream::Agent, "progress".into())
        ]
    );
    let (_, by_agent) = w.run(
        T0,
        Command::UpdateUser {
            id: u.id,
            patch: patch(3),
            agent_request: Some(None),
        },
    );
    assert_eq!(
        broadcasts(&by_agent),
        [
            (Stream::Session(u.id), "progress".into()),
            (Stream::Admin, "user_update".into())
        ]
    );
    let (_, rename) = w.run(
        T0,
        Command::UpdateUser {
            id: u.id,
            patch: UserPatch {
                first_name: Some("Augusta".into()),
                ..UserPatch::default()
            },
            agent_request: None,
        },
    );
    assert_eq!(broadcasts(&rename), [(Stream::Admin, "user_update".into())]);
    assert_eq!(w.app.user(u.id).unwrap().first_name, "Augusta");
}

/// The `initial` frame a stream opening at `now` without a resume point gets.
fn initial(w: &mut World, stream: Stream, now: i64) -> Rc<[u8]> {
    let (frames, resumed) = frames(w.app.open(stream, None, now));
    assert!(!resumed);
    assert_eq!(frames.len(), 1);
    Rc::clone(&frames[0])
}

/// A reconnect wave costs one encoding: streams that open between two changes share one
/// `initial` (the same `Rc`), which names the event it reflects and the log's epoch.
#[test]
fn the_initial_snapshot_is_shared_until_the_list_changes() {
    let mut w = World::new();
    w.add(T0, "a@x.io", 10);
    let first = initial(&mut w, Stream::Admin, T0);
    assert!(Rc::ptr_eq(
        &first,
        &initial(&mut w, Stream::Admin, T0 + 5_000)
    ));
    w.add(T0, "b@x.io", 10);
    let second = initial(&mut w, Stream::Admin, T0);
    assert!(!Rc::ptr_eq(&first, &second));
    let msg = payload(&second);
    assert_eq!(msg["data"].as_array().unwrap().len(), 2);
    assert_eq!(msg["seq"], 2, "the list as of event 2");
    assert_eq!(msg["epoch"].as_str().unwrap().len(), 16);
}

/// Every user-list change takes the next number and its messages carry it; what admins are not
/// sent (a failed write, a sign-out) takes none, so no stream ever sees a gap.
#[test]
fn every_change_takes_the_next_number_and_carries_it() {
    let mut w = World::new();
    let a = w.add(T0, "a@x.io", 10);
    let b = w.add(T0, "b@x.io", 10);
    let (_, effects) = w.run(T0, Command::DeleteUser { id: a.id });
    let token = w.token(b.id);
    let (_, started) = w.run(T0, Command::Activate { token });
    let seq_of = |effects: &[Effect], stream| {
        effects
            .iter()
            .find_map(|e| match e {
                Effect::Broadcast(s, f) if *s == stream => payload(f)["seq"].as_u64(),
                _ => None,
            })
            .unwrap()
    };
    assert_eq!(seq_of(&effects, Stream::Admin), 3);
    assert_eq!(seq_of(&started, Stream::Admin), 4);
    assert_eq!(
        seq_of(&started, Stream::Agent),
        4,
        "agent events carry the number of their cause"
    );
    assert_eq!(w.app.head(), 4);
    // Nothing numbered for what admins are not sent: a failed write, a sign-out.
    let (dup, _) = w.run(T0, Command::DeleteUser { id: a.id });
    assert!(dup.is_err());
    w.ok(T0, Command::EndAdminSession { token: [1; 32] });
    assert_eq!(w.app.head(), 4);
}

/// `?epoch=E&since=N`: `resumed`, then exactly the events after N, also from a view rebuilt
/// from storage (a restart); another epoch or a number ahead of the log gets `initial`.
#[test]
fn a_stream_resumes_with_exactly_what_it_missed_even_after_a_restart() {
    let mut w = World::new();
    for i in 0..5 {
        w.add(T0, &format!("u{i}@x.io"), 10);
    }
    let epoch = payload(&initial(&mut w, Stream::Admin, T0))["epoch"]
        .as_str()
        .unwrap()
        .to_string();
    w.reload();
    let at = |since| ResumePoint {
        epoch: epoch.clone(),
        since,
    };
    let (opening, resumed) = frames(w.app.open(Stream::Admin, Some(&at(2)), T0));
    assert!(resumed);
    let msgs: Vec<Value> = opening.iter().map(|f| payload(f)).collect();
    assert_eq!(msgs[0]["type"], "resumed");
    assert_eq!(msgs[0]["seq"], 2);
    let seqs: Vec<u64> = msgs[1..]
        .iter()
        .map(|m| m["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, [3, 4, 5]);
    let (up_to_date, resumed) = frames(w.app.open(Stream::Admin, Some(&at(5)), T0));
    assert!(resumed && up_to_date.len() == 1);
    for wrong in [
        ResumePoint {
            epoch: "0000000000000000".into(),
            since: 2,
        },
        at(6),
    ] {
        let (o, resumed) = frames(w.app.open(Stream::Admin, Some(&wrong), T0));
        assert!(!resumed, "{wrong:?}");
        assert_eq!(payload(&o[0])["type"], "initial");
    }
}

/// The agent's `initial` lists only sessions in progress; its replay holds only the changes
/// that caused an agent message, with their own numbers (gaps allowed).
#[test]
fn agents_get_the_running_sessions_and_their_own_replay() {
    let mut w = World::new();
    let a = w.add(T0, "a@x.io", 10);
    let _b = w.add(T0, "b@x.io", 10);
    let token = w.token(a.id);
    w.ok(T0, Command::Activate { token });
    let first = payload(&initial(&mut w, Stream::Agent, T0));
    let data = first["data"].as_array().unwrap();
    assert_eq!(data.len(), 1, "only the session in progress: {first}");
    assert_eq!(data[0]["id"], a.id);
    let point = ResumePoint {
        epoch: first["epoch"].as_str().unwrap().into(),
        since: 1,
    };
    let replay: Vec<Value> = frames(w.app.open(Stream::Agent, Some(&point), T0))
        .0
        .iter()
        .map(|f| payload(f))
        .collect();
    let kinds: Vec<_> = replay.iter().map(|m| m["type"].as_str().unwrap()).collect();
    assert_eq!(
        kinds,
        ["resumed", "session_started"],
        "event 2 had no agent message"
    );
    assert_eq!(replay[1]["seq"], 3);
}

/// An unused invite runs out at its stored expiry, once, with a `user_update` whose
/// `token_valid` is false; a new link is valid again and arms a new invite clock.
#[test]
fn an_unused_invite_runs_out_once_and_admins_hear_of_it() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 10);
    let (early, _) = w.run(T0 + MIN, Command::ExpireInvite { id: u.id });
    assert!(matches!(early, Ok(Outcome::NotYet { expires_at }) if expires_at == T0 + INVITE_TTL));
    let (out, effects) = w.run(T0 + INVITE_TTL, Command::ExpireInvite { id: u.id });
    let (user, cause) = updated(out);
    assert_eq!(cause, Cause::InviteExpired);
    assert_eq!(user.status(), crate::model::Status::Expired);
    let update = effects
        .iter()
        .find_map(|e| match e {
            Effect::Broadcast(Stream::Admin, f) => Some(payload(f)),
            _ => None,
        })
        .unwrap();
    assert_eq!(update["data"]["token_valid"], false);
    let (again, _) = w.run(T0 + INVITE_TTL + 1, Command::ExpireInvite { id: u.id });
    assert!(matches!(again, Ok(Outcome::Nothing)));
    // A new link is valid again and arms a new clock.
    let (_, effects) = w.run(T0 + INVITE_TTL, Command::RegenerateInvite { id: u.id });
    assert!(effects.iter().any(|e| matches!(
        e,
        Effect::InviteClock { expires_at: Some(at), .. } if *at == T0 + 2 * INVITE_TTL
    )));
    assert_eq!(
        w.app.user(u.id).unwrap().status(),
        crate::model::Status::Invited
    );
}

/// An agent `request_id` repeated within 10 minutes is acked (`Duplicate`) and applied once;
/// after 10 minutes it is forgotten (API.md).
#[test]
fn a_repeated_agent_request_is_applied_once() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 10);
    let progress = |n| Command::UpdateUser {
        id: u.id,
        patch: UserPatch {
            questions_answered: Some(n),
            ..UserPatch::default()
        },
        agent_request: Some(Some("\"r1\"".into())),
    };
    let (first, _) = w.run(T0, progress(3));
    assert!(matches!(first, Ok(Outcome::Changed(_))));
    let (again, effects) = w.run(T0 + MIN, progress(4));
    assert!(matches!(again, Ok(Outcome::Duplicate)));
    assert!(effects.is_empty());
    assert_eq!(w.app.user(u.id).unwrap().questions_answered, 3);
    // Ten minutes on, the id is forgotten.
    let (later, _) = w.run(T0 + 11 * MIN, progress(4));
    assert!(matches!(later, Ok(Outcome::Changed(_))));
}

/// `session_ended_at`: when the last answer came, or the stored expiry for a session that ran
/// out — never the moment the expiry command happened to run.
#[test]
fn completion_and_expiry_record_when_the_interview_ended() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 1);
    let token = w.token(u.id);
    w.ok(T0, Command::Activate { token });
    let (out, _) = w.run(T0 + 5_000, Command::Answer { token });
    assert_eq!(updated(out).0.session_ended_at, Some(T0 + 5_000));
    let v = w.add(T0, "b@x.io", 1);
    let token = w.token(v.id);
    w.ok(T0, Command::Activate { token });
    let (out, _) = w.run(T0 + 31 * MIN, Command::ExpireSession { id: v.id });
    assert_eq!(updated(out).0.session_ended_at, Some(T0 + 30 * MIN));
}

/// Admin sessions: a look-up tries every cookie value sent and takes the first valid one; the
/// periodic re-check reports the ones that expired or never existed; housekeeping deletes the
/// expired rows.
#[test]
fn admin_sessions_are_looked_up_by_any_value_rechecked_and_pruned() {
    let mut w = World::new();
    let id = w.store.create_admin("root@x.io", "hash", T0).unwrap();
    let sign_in = |w: &mut World, now: i64| {
        let (out, _) = w.run(
            now,
            Command::CreateAdminSession {
                admin_id: id,
                email: "root@x.io".into(),
            },
        );
        match out {
            Ok(Outcome::SignedIn { session, .. }) => session.token_digest,
            other => panic!("{other:?}"),
        }
    };
    let short_lived = sign_in(&mut w, T0 - 7 * 24 * 60 * MIN + MIN);
    let live = sign_in(&mut w, T0);
    let stale = auth::digest("never issued");
    // Several cookie values: the first valid one opens the door.
    let (out, _) = w.run(
        T0,
        Command::LookupAdminSession {
            tokens: vec![stale, live],
        },
    );
    assert!(matches!(out, Ok(Outcome::AdminSession(Some(s))) if s.token_digest == live));
    // The periodic re-check: what ran out or was deleted is gone, the live one is not.
    let (out, _) = w.run(
        T0 + 2 * MIN,
        Command::AdminSessionsGone {
            tokens: vec![short_lived, live, stale],
            always: true,
        },
    );
    match out {
        Ok(Outcome::SessionsGone(gone)) => assert_eq!(gone, [short_lived, stale]),
        other => panic!("{other:?}"),
    }
    // Housekeeping (every minute) deletes the expired row; read "as of time 0", every row
    // left shows.
    let (out, _) = w.run(0, Command::AdminSessions);
    assert!(matches!(out, Ok(Outcome::AdminSessions(s)) if s.len() == 2));
    w.ok(T0 + 2 * MIN, Command::Maintain);
    let (out, _) = w.run(0, Command::AdminSessions);
    assert!(
        matches!(out, Ok(Outcome::AdminSessions(s)) if s.len() == 1 && s[0].token_digest == live)
    );
}
