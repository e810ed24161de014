//! The application's rules with a fake clock and no sockets: commands against a real SQLite
//! file in a temp directory, events applied to a real view, effects inspected as values.

use super::*;
use crate::store::Sqlite;
use serde_json::Value;

const MIN: i64 = 60_000;
const T0: i64 = 1_800_000_000_000;

const RULES: Rules = Rules {
    session_ms: 30 * MIN,
    invite_ttl_ms: 168 * 60 * MIN,
    admin_session_ms: 7 * 24 * 60 * MIN,
};

struct World {
    _dir: tempfile::TempDir,
    store: Sqlite,
    app: App,
}

impl World {
    fn new() -> World {
        let dir = tempfile::tempdir().unwrap();
        let store = Sqlite::open(&dir.path().join("app.db"), Some([7; 32])).unwrap();
        World {
            _dir: dir,
            store,
            app: App::new(Vec::new(), "http://h".into(), None),
        }
    }

    /// Run `cmd` at `now`; apply its event; return the outcome and the effects.
    fn run(&mut self, now: i64, cmd: Command) -> (AppResult<Outcome>, Vec<Effect>) {
        let out = self
            .store
            .write(|tx| command::execute(tx, &RULES, now, cmd));
        let mut effects = Vec::new();
        if let Ok(Outcome::Changed(e)) = &out {
            self.app.apply(e, now, &mut effects);
        }
        (out, effects)
    }

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
            Ok(Outcome::Changed(Event::User(UserChange::Added(u)))) => *u,
            other => panic!("{other:?}"),
        }
    }

    fn token(&self, id: i64) -> Digest32 {
        auth::digest(&self.app.user(id).unwrap().invite_token)
    }
}

/// The JSON of a server text frame (header of 2 or 4 bytes).
fn payload(frame: &[u8]) -> Value {
    let start = if frame[1] == 126 { 4 } else { 2 };
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

fn updated(out: AppResult<Outcome>) -> (User, Cause) {
    match out {
        Ok(Outcome::Changed(Event::User(UserChange::Updated(u, c)))) => (*u, c),
        other => panic!("{other:?}"),
    }
}

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
    assert_eq!(stored.invite_expires_at, T0 + RULES.invite_ttl_ms);
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

#[test]
fn an_expired_or_unknown_invite_does_not_activate() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 10);
    let token = w.token(u.id);
    let (out, effects) = w.run(T0 + RULES.invite_ttl_ms, Command::Activate { token });
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
    w.run(T0, Command::Activate { token });
    let (out, effects) = w.run(T0 + 1_000, Command::Answer { token });
    let (user, _) = updated(out);
    assert_eq!(user.questions_answered, 1);
    assert_eq!(
        broadcasts(&effects),
        [
            (Stream::Session(u.id), "progress".into()),
            (Stream::Agent, "progress".into()),
            (Stream::Admin, "user_update".into())
        ]
    );
    w.run(T0 + 2_000, Command::Answer { token });
    let (out, _) = w.run(T0 + 3_000, Command::Answer { token });
    let (user, _) = updated(out);
    assert_eq!(user.questions_answered, 2, "capped at the total");
    assert_eq!(user.status(T0 + 3_000), crate::model::Status::Completed);
    let (late, _) = w.run(T0 + 30 * MIN, Command::Answer { token });
    assert_eq!(late.unwrap_err(), AppError::Gone("this session has ended"));
}

#[test]
fn expiry_waits_for_the_stored_end_and_happens_once() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 10);
    let (out, _) = w.run(T0, Command::ExpireSession { id: u.id });
    assert!(matches!(out, Ok(Outcome::Nothing)), "never activated");
    let token = w.token(u.id);
    w.run(T0, Command::Activate { token });
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

#[test]
fn a_new_invite_link_kills_the_old_one_and_resets_the_session() {
    let mut w = World::new();
    let u = w.add(T0, "a@x.io", 10);
    let old = w.token(u.id);
    w.run(T0, Command::Activate { token: old });
    let (out, effects) = w.run(T0 + MIN, Command::RegenerateInvite { id: u.id });
    let (user, cause) = updated(out);
    assert_eq!(cause, Cause::InviteRegenerated);
    assert!(!user.token_activated && user.session_expires_at.is_none());
    assert_eq!(user.invite_expires_at, T0 + MIN + RULES.invite_ttl_ms);
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
            by_agent: false,
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
            by_agent: false,
        },
    );
    assert_eq!(
        broadcasts(&by_admin),
        [
            (Stream::Session(u.id), "progress".into()),
            (Stream::Agent, "progress".into()),
            (Stream::Admin, "user_update".into())
        ]
    );
    let (_, by_agent) = w.run(
        T0,
        Command::UpdateUser {
            id: u.id,
            patch: patch(3),
            by_agent: true,
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
            by_agent: false,
        },
    );
    assert_eq!(broadcasts(&rename), [(Stream::Admin, "user_update".into())]);
    assert_eq!(w.app.user(u.id).unwrap().first_name, "Augusta");
}

#[test]
fn the_initial_snapshot_is_shared_until_the_list_changes() {
    let mut w = World::new();
    w.add(T0, "a@x.io", 10);
    let first = w.app.initial_frame(T0);
    assert!(Rc::ptr_eq(&first, &w.app.initial_frame(T0 + 5_000)));
    w.add(T0, "b@x.io", 10);
    let second = w.app.initial_frame(T0);
    assert!(!Rc::ptr_eq(&first, &second));
    assert_eq!(payload(&second)["data"].as_array().unwrap().len(), 2);
}
