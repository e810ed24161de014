//! The application: invitees, admins and sessions, independent of sockets and of the clock.
//!
//! It is split the way an event log wants it:
//! * [`command`] — the write rules. `execute(tx, rules, now, command)` validates against the
//!   stored rows, writes in one transaction and returns the stored change as an [`Event`].
//! * [`App::apply`] — the read side. It takes an event that has been stored, updates the
//!   in-memory view (every user, token look-ups, the shared `initial` snapshot) and returns
//!   [`Effect`]s: frames to broadcast, each encoded once however many receive it; streams to
//!   close; session clocks to start or stop. The reactor carries them out.
//!
//! Invariants:
//! * The view changes only in `apply`, and only with events whose transaction committed, so
//!   memory never shows what storage does not hold.
//! * Nothing here reads the clock: every function that needs the time takes `now` (wall-clock
//!   Unix ms). Commands and apply can be tested with any time at all.
//! * The view is small (thousands of users, not millions), so `initial`, token look-ups and
//!   status derivation never read storage.

use crate::auth::{self, Digest32};
use crate::hub::Stream;
use crate::metrics::CloseReason;
use crate::model::{User, UserView};
use crate::store::DbError;
use crate::ws;
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

pub mod command;
pub mod event;
#[cfg(test)]
mod tests;

pub use command::{Command, Outcome, Rules, UserPatch};
pub use event::{Cause, Event, UserChange};

/// What the reactor must do after an event was applied.
#[derive(Debug)]
pub enum Effect {
    /// Send this frame to every stream of that kind (a session: that session's streams).
    Broadcast(Stream, Rc<[u8]>),
    /// Close every stream of this session (close frame `code`, `reason`).
    CloseSession {
        user_id: i64,
        code: u16,
        reason: &'static str,
        why: CloseReason,
    },
    /// Close the admin streams opened with this session token digest (logout).
    CloseAdminSession(Digest32),
    /// The session of this user runs until wall time `expires_at`: start its clock.
    StartClock { user_id: i64, expires_at: i64 },
    /// The session of this user is over, reset or gone: stop its clock.
    StopClock(i64),
}

/// A failed application operation, mapped to an HTTP status by the API layer.
#[derive(Debug, PartialEq, Eq)]
pub enum AppError {
    NotFound,
    Conflict(&'static str),
    /// Invalid input: 422 with this message.
    Invalid(String),
    /// Unknown token.
    Unauthorized,
    /// The invite or session ran out.
    Gone(&'static str),
    /// Storage failed; nothing changed.
    Storage,
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict => AppError::Conflict("a user with this email already exists"),
            other => {
                log::error!("storage error: {other}");
                AppError::Storage
            }
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// `{"type": ..., "data": ...}`, serialised in that order.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: T,
}

/// The encoded `initial` frame, shared by every admin that connects until the list changes.
struct Snapshot {
    frame: Rc<[u8]>,
    built_at: i64,
    /// It shows a running session clock, which goes stale: rebuild after a second.
    has_clock: bool,
}

/// Admin sessions cached at most (a flood of distinct valid tokens clears the cache).
const ADMIN_SESSION_CACHE: usize = 100_000;

/// The in-memory view of the invitee list and of signed-in admins.
pub struct App {
    /// Origin of the invite links (`<public_url>/session?token=…`).
    public_url: String,
    /// Every user, by id (ids grow, so iteration in reverse is "newest first").
    users: BTreeMap<i64, User>,
    /// Digest of each user's current invite token → user id.
    by_token: HashMap<Digest32, i64>,
    /// `None` whenever the list changed since it was built.
    snapshot: Option<Snapshot>,
    /// One-time code for creating the first admin; `None` once an admin exists.
    setup_code: Option<String>,
    /// Admin sessions seen valid: token digest → (admin id, expiry, wall ms). Saves a storage
    /// read per handshake in a reconnect wave. An entry goes when the session expires or is
    /// ended through this process; digests not cached are always looked up in storage (the CLI
    /// mints tokens).
    admin_sessions: HashMap<Digest32, (i64, i64)>,
}

impl App {
    /// The view of `users` (as loaded from storage). `setup_code` is the one-time code for the
    /// first admin while there is none.
    pub fn new(users: Vec<User>, public_url: String, setup_code: Option<String>) -> App {
        let mut app = App {
            public_url,
            users: BTreeMap::new(),
            by_token: HashMap::new(),
            snapshot: None,
            setup_code,
            admin_sessions: HashMap::new(),
        };
        for u in users {
            app.by_token.insert(auth::digest(&u.invite_token), u.id);
            app.users.insert(u.id, u);
        }
        app
    }

    pub fn public_url(&self) -> &str {
        &self.public_url
    }

    pub fn user(&self, id: i64) -> Option<&User> {
        self.users.get(&id)
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The user whose current invite (= session) token this is, confirmed in constant time.
    pub fn user_by_token(&self, token: &str) -> Option<&User> {
        let d = auth::digest(token);
        let id = self.by_token.get(&d)?;
        let u = self.users.get(id)?;
        auth::ct_eq(&auth::digest(&u.invite_token), &d).then_some(u)
    }

    /// Whether `token` opens the live session of user `id` at `now`.
    pub fn session_token_ok(&self, id: i64, token: &str, now: i64) -> bool {
        self.user_by_token(token)
            .is_some_and(|u| u.id == id && u.session_is_live(now))
    }

    /// Sessions whose clock runs: (user id, wall expiry). For starting clocks at start-up.
    pub fn running_sessions(&self) -> Vec<(i64, i64)> {
        self.users
            .values()
            .filter(|u| u.token_activated && !u.session_expired)
            .filter_map(|u| Some((u.id, u.session_expires_at?)))
            .collect()
    }

    /// All users, newest first, as the API returns them.
    pub fn list(&self, now: i64) -> Vec<UserView<'_>> {
        self.users
            .values()
            .rev()
            .map(|u| u.view(&self.public_url, now))
            .collect()
    }

    /// The user object as JSON bytes, fields in the contract's order.
    pub fn user_json(&self, u: &User, now: i64) -> Vec<u8> {
        serde_json::to_vec(&u.view(&self.public_url, now)).unwrap_or_default()
    }

    // ---------------------------------------------------------------- frames

    /// A text frame of `value`, encoded once.
    fn frame(value: &impl Serialize) -> Rc<[u8]> {
        // Serialising our own types cannot fail; an empty object keeps the stream valid if it did.
        let payload = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Rc::from(ws::text_frame(&payload))
    }

    fn user_frame(&self, kind: &str, u: &User, now: i64) -> Rc<[u8]> {
        Self::frame(&Envelope {
            kind,
            data: u.view(&self.public_url, now),
        })
    }

    /// `{"type":"initial",...}`: built once per change of the list and shared by every admin
    /// that connects until the next change (a reconnect wave costs one encoding, not N). While
    /// a session clock runs it shows `session_timer`, so it is rebuilt at most once a second.
    pub fn initial_frame(&mut self, now: i64) -> Rc<[u8]> {
        if let Some(s) = &self.snapshot {
            if !s.has_clock || now - s.built_at < 1000 {
                return Rc::clone(&s.frame);
            }
        }
        let views = self.list(now);
        let has_clock = views.iter().any(|v| v.session_timer.is_some());
        let frame = Self::frame(&Envelope {
            kind: "initial",
            data: views,
        });
        self.snapshot = Some(Snapshot {
            frame: Rc::clone(&frame),
            built_at: now,
            has_clock,
        });
        frame
    }

    /// `{"type":"time_update"}` for the session of `user_id`, if it exists.
    pub fn time_update_frame(&self, user_id: i64, now: i64) -> Option<Rc<[u8]>> {
        let u = self.users.get(&user_id)?;
        Some(Self::frame(&json!({
            "type": "time_update",
            "remaining_seconds": u.remaining_seconds(now),
        })))
    }

    // ---------------------------------------------------------------- admins

    pub fn setup_code_ok(&self, code: &str) -> bool {
        self.setup_code
            .as_deref()
            .is_some_and(|c| auth::ct_eq(c.as_bytes(), code.as_bytes()))
    }

    pub fn has_admin(&self) -> bool {
        self.setup_code.is_none()
    }

    /// An admin exists now: the setup code is spent.
    pub fn close_setup(&mut self) {
        self.setup_code = None;
    }

    /// The admin behind a session token digest if this process has seen the session valid and
    /// it has not expired at `now`. `None` means "ask storage" (see [`Self::remember_admin_session`]).
    pub fn cached_admin_session(&mut self, digest: &Digest32, now: i64) -> Option<i64> {
        let &(id, expires_at) = self.admin_sessions.get(digest)?;
        if expires_at > now {
            return Some(id);
        }
        self.admin_sessions.remove(digest);
        None
    }

    /// Storage said this admin session is valid until `expires_at`.
    pub fn remember_admin_session(&mut self, digest: Digest32, admin_id: i64, expires_at: i64) {
        if self.admin_sessions.len() >= ADMIN_SESSION_CACHE {
            self.admin_sessions.clear();
        }
        self.admin_sessions.insert(digest, (admin_id, expires_at));
    }

    // ---------------------------------------------------------------- apply

    /// Apply a stored event at `now`: update the view and push what must happen into `effects`.
    pub fn apply(&mut self, event: &Event, now: i64, effects: &mut Vec<Effect>) {
        match event {
            Event::User(change) => {
                self.snapshot = None;
                self.apply_user(change, now, effects);
            }
            Event::AdminSessionEnded(digest) => {
                self.admin_sessions.remove(digest);
                effects.push(Effect::CloseAdminSession(*digest));
            }
            Event::AdminSessionsEnded(digests) => {
                for digest in digests {
                    self.admin_sessions.remove(digest);
                    effects.push(Effect::CloseAdminSession(*digest));
                }
            }
        }
    }

    fn apply_user(&mut self, change: &UserChange, now: i64, effects: &mut Vec<Effect>) {
        match change {
            UserChange::Added(u) => {
                self.put((**u).clone());
                effects.push(Effect::Broadcast(
                    Stream::Admin,
                    self.user_frame("user_added", u, now),
                ));
            }
            UserChange::Updated(u, cause) => {
                self.put((**u).clone());
                self.updated(u, *cause, now, effects);
            }
            UserChange::Deleted(id) => {
                if let Some(u) = self.users.remove(id) {
                    self.by_token.remove(&auth::digest(&u.invite_token));
                }
                effects.push(Effect::StopClock(*id));
                effects.push(close_session_link(*id));
                effects.push(Effect::Broadcast(
                    Stream::Admin,
                    Self::frame(&json!({ "type": "user_deleted", "data": { "id": id } })),
                ));
            }
        }
    }

    /// Who hears of an updated user beyond the admins, by why it changed. Session and agent
    /// frames go first: they are the ones a person is waiting on.
    fn updated(&self, u: &User, cause: Cause, now: i64, effects: &mut Vec<Effect>) {
        let admin_update = Effect::Broadcast(Stream::Admin, self.user_frame("user_update", u, now));
        match cause {
            Cause::Edited {
                progressed,
                by_agent,
            } => {
                if progressed {
                    effects.push(progress_to_session(u));
                    if !by_agent {
                        // The agent said it itself; echoing it back would only confuse it.
                        effects.push(progress_to_agents(u));
                    }
                }
                effects.push(admin_update);
            }
            Cause::Answered => {
                effects.push(progress_to_session(u));
                effects.push(progress_to_agents(u));
                effects.push(admin_update);
            }
            Cause::Activated => {
                if let Some(expires_at) = u.session_expires_at {
                    effects.push(Effect::StartClock {
                        user_id: u.id,
                        expires_at,
                    });
                }
                effects.push(admin_update);
                effects.push(Effect::Broadcast(
                    Stream::Agent,
                    self.user_frame("session_started", u, now),
                ));
            }
            Cause::InviteRegenerated => {
                effects.push(Effect::StopClock(u.id));
                effects.push(close_session_link(u.id));
                effects.push(admin_update);
            }
            Cause::SessionExpired => {
                effects.push(Effect::StopClock(u.id));
                effects.push(Effect::Broadcast(
                    Stream::Session(u.id),
                    Self::frame(&json!({ "type": "session_expired" })),
                ));
                effects.push(Effect::CloseSession {
                    user_id: u.id,
                    code: ws::code::NORMAL,
                    reason: "Session expired",
                    why: CloseReason::Expired,
                });
                effects.push(admin_update);
                effects.push(Effect::Broadcast(
                    Stream::Agent,
                    Self::frame(&json!({ "type": "session_expired", "data": { "id": u.id } })),
                ));
            }
        }
    }

    /// Insert or replace a user, keeping the token index in step.
    fn put(&mut self, u: User) {
        let (id, digest) = (u.id, auth::digest(&u.invite_token));
        if let Some(old) = self.users.insert(id, u) {
            self.by_token.remove(&auth::digest(&old.invite_token));
        }
        self.by_token.insert(digest, id);
    }
}

/// Close the session streams of a user whose link stopped working (deleted, new link): the
/// page must not reconnect, so 1008.
fn close_session_link(user_id: i64) -> Effect {
    Effect::CloseSession {
        user_id,
        code: ws::code::POLICY,
        reason: "Invalid or expired session",
        why: CloseReason::Expired,
    }
}

fn progress_to_session(u: &User) -> Effect {
    Effect::Broadcast(
        Stream::Session(u.id),
        App::frame(&json!({
            "type": "progress",
            "questions_answered": u.questions_answered,
            "questions_total": u.questions_total,
        })),
    )
}

fn progress_to_agents(u: &User) -> Effect {
    Effect::Broadcast(
        Stream::Agent,
        App::frame(&json!({
            "type": "progress",
            "user_id": u.id,
            "questions_answered": u.questions_answered,
            "questions_total": u.questions_total,
        })),
    )
}
