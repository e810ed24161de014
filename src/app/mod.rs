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
//! * Events are applied in number order and each exactly once (`EventLog::push` refuses any
//!   other), so every stream of every node sees the same changes in the same order.
//! * Frames are encoded here, once per change, and shared (`Rc<[u8]>`) by every recipient;
//!   the reactor never serialises anything on the broadcast path.
//!
//! The admin-session cache (`admin_sessions`) is the one piece of the view that is not fed by
//! events alone: sign-ins and storage look-ups fill it, events and the reactor's periodic
//! re-check empty it. It may only ever hold sessions storage said were valid, and it forgets a
//! session at its expiry, so a stale entry cannot outlive the re-check interval.

use crate::auth::{self, Digest32};
use crate::hub::Stream;
use crate::metrics::CloseReason;
use crate::model::{User, UserView};
use crate::store::{AdminSession, DbError, LogHead, StoredEvent};
use crate::ws;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;

pub mod cluster;
pub mod command;
pub mod event;
pub mod event_log;
pub mod messages;
#[cfg(test)]
mod tests;

pub use cluster::ClusterCommand;
pub use command::{Command, Outcome, Rules, UserPatch};
pub use event::{Cause, Event, Logged, UserChange};
pub use event_log::{Replay, ResumePoint};

/// What the reactor must do after an event was applied.
#[derive(Debug)]
pub enum Effect {
    /// Send this frame to every stream of that kind (a session: that session's streams).
    Broadcast(Stream, Rc<[u8]>),
    /// Close every stream of this session (close frame `code`, `reason`; `why` is the metric's
    /// close reason).
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
    /// The unused invite link of this user runs out at wall time `expires_at` (`None`: it no
    /// longer can — used, expired, or the user is gone).
    InviteClock {
        user_id: i64,
        expires_at: Option<i64>,
    },
}

/// A failed application operation, mapped to exactly one HTTP status by the API layer
/// (`api::app_error`) and to an `error` message on the agent stream. Every variant means
/// "nothing changed": commands fail before they commit.
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
    /// Storage is locked by another process or unreachable: nothing changed; try again (503).
    Busy,
    /// Storage failed; nothing changed.
    Storage,
}

// Storage errors are logged once, here, where their detail is known; the client gets only the
// status (500 or 503), never the database's message.
impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        match e {
            DbError::Conflict => AppError::Conflict("a user with this email already exists"),
            DbError::Busy => AppError::Busy,
            other => {
                log::error!("storage error: {other}");
                AppError::Storage
            }
        }
    }
}

pub type AppResult<T> = Result<T, AppError>;

/// An encoded `initial` frame, shared by every stream that opens until the view changes.
struct Snapshot {
    frame: Rc<[u8]>,
    built_at: i64,
    /// It shows a running session clock, which goes stale: rebuild after a second.
    has_clock: bool,
}

impl Snapshot {
    fn fresh(&self, now: i64) -> bool {
        !self.has_clock || now - self.built_at < 1000
    }
}

/// Admin sessions cached at most (a flood of distinct valid tokens clears the cache). Clearing
/// costs one storage read per session on its next request; it cannot let anyone in.
const ADMIN_SESSION_CACHE: usize = 100_000;

/// What a stream gets first: `initial`, or `resumed` and the missed events.
pub enum Opening {
    /// Send these frames (`initial`; or `resumed` and the replay from memory).
    Frames {
        frames: Vec<Rc<[u8]>>,
        resumed: bool,
    },
    /// The replay starts beyond the memory tail: read events `from..=to` from storage, then
    /// [`App::resumed_from_storage`] (and what was broadcast meanwhile).
    ReadStorage { from: u64, to: u64 },
}

/// The in-memory view of the invitee list and of signed-in admins.
pub struct App {
    /// Origin of the invite links (`<public_url>/session?token=…`).
    public_url: String,
    /// Every user, by id (ids grow, so iteration in reverse is "newest first").
    users: BTreeMap<i64, User>,
    /// Digest of each user's current invite token → user id.
    by_token: HashMap<Digest32, i64>,
    /// The tail of the event log, at the same position as `users`.
    log: event_log::EventLog,
    /// The admins' `initial`; `None` whenever the list changed since it was built.
    admin_snapshot: Option<Snapshot>,
    /// The agents' `initial` (the running sessions); `None` likewise.
    agent_snapshot: Option<Snapshot>,
    /// One-time code for creating the first admin; `None` once an admin exists.
    setup_code: Option<String>,
    /// Admin sessions seen valid, by token digest. Saves a storage read per handshake in a
    /// reconnect wave. An entry goes when the session expires or is ended through this process;
    /// digests not cached are looked up in storage (the CLI mints tokens).
    admin_sessions: HashMap<Digest32, AdminSession>,
}

impl App {
    /// The view of `users` with the log at `head` holding `events` (as loaded from storage).
    /// `setup_code` is the one-time code for the first admin while there is none.
    pub fn new(
        users: Vec<User>,
        head: LogHead,
        events: &[StoredEvent],
        stored_from: u64,
        public_url: String,
        setup_code: Option<String>,
    ) -> App {
        let mut app = App {
            public_url,
            users: BTreeMap::new(),
            by_token: HashMap::new(),
            log: event_log::EventLog::new(head.epoch, head.head, events, stored_from),
            admin_snapshot: None,
            agent_snapshot: None,
            setup_code,
            admin_sessions: HashMap::new(),
        };
        for u in users {
            app.by_token.insert(auth::digest(&u.invite_token), u.id);
            app.users.insert(u.id, u);
        }
        app
    }

    /// Replace the view with a snapshot (a cluster node that had to resynchronise). Signed-in
    /// admins and the setup code stay: they are not part of the event log, and the periodic
    /// re-check drops any session that ended meanwhile.
    pub fn reset(&mut self, s: crate::store::Snapshot) {
        let fresh = App::new(
            s.users,
            s.head,
            &s.events,
            s.stored_from,
            std::mem::take(&mut self.public_url),
            self.setup_code.take(),
        );
        let sessions = std::mem::take(&mut self.admin_sessions);
        *self = fresh;
        self.admin_sessions = sessions;
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

    /// Number of the last change applied.
    pub fn head(&self) -> u64 {
        self.log.head()
    }

    /// The name of the event log's history (API.md `epoch`).
    pub fn epoch(&self) -> &str {
        self.log.epoch()
    }

    /// The user whose current invite (= session) token this is, confirmed in constant time.
    pub fn user_by_token(&self, token: &str) -> Option<&User> {
        // Found by digest in a hash map (fast, but the look-up time depends on the input), then
        // confirmed with a constant-time comparison, so timing tells nothing about a token.
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

    /// Unused invite links not yet announced as run out: (user id, wall expiry).
    pub fn pending_invites(&self) -> Vec<(i64, i64)> {
        self.users
            .values()
            .filter(|u| !u.token_activated && !u.invite_expired)
            .map(|u| (u.id, u.invite_expires_at))
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
    /// (Serialising a `UserView` cannot fail; an empty body would be the sign it did.)
    pub fn user_json(&self, u: &User, now: i64) -> Vec<u8> {
        serde_json::to_vec(&u.view(&self.public_url, now)).unwrap_or_default()
    }

    // ---------------------------------------------------------------- frames

    /// What a new admin or agent stream gets first at `now`: a replay from `resume` when the
    /// log still holds everything after it, else a fresh `initial`. Both come from the same
    /// position as the broadcasts that follow (see `event_log.rs`).
    pub fn open(&mut self, stream: Stream, resume: Option<&ResumePoint>, now: i64) -> Opening {
        let agent = stream == Stream::Agent;
        if let Some(point) = resume {
            match self.log.since(point) {
                Replay::Memory(tail) => {
                    let mut frames = vec![self.resumed_frame(point.since)];
                    frames.extend(tail.filter_map(|e| e.for_stream(agent)));
                    return Opening::Frames {
                        frames,
                        resumed: true,
                    };
                }
                Replay::Storage { from, to } => return Opening::ReadStorage { from, to },
                Replay::Impossible => {}
            }
        }
        Opening::Frames {
            frames: vec![self.initial_frame(agent, now)],
            resumed: false,
        }
    }

    /// The opening of a stream whose replay was read from storage: `resumed` at `since`, then
    /// the stored events, framed for the stream.
    pub fn resumed_from_storage(
        &self,
        stream: Stream,
        since: u64,
        events: &[StoredEvent],
    ) -> Vec<Rc<[u8]>> {
        let agent = stream == Stream::Agent;
        let mut frames = vec![self.resumed_frame(since)];
        frames.extend(
            events
                .iter()
                .filter_map(|e| event_log::Entry::from_stored(e).for_stream(agent)),
        );
        frames
    }

    /// A fresh `initial` for `stream` at `now` (a replay that could not be read).
    pub fn initial(&mut self, stream: Stream, now: i64) -> Rc<[u8]> {
        self.initial_frame(stream == Stream::Agent, now)
    }

    fn resumed_frame(&self, since: u64) -> Rc<[u8]> {
        Rc::from(ws::text_frame(&messages::resumed(self.log.epoch(), since)))
    }

    /// Storage trimmed its log: it now holds events from `seq` on.
    pub fn stored_from(&mut self, seq: u64) {
        self.log.set_stored_from(seq);
    }

    /// `{"type":"initial",...}`: built once per change of the list and shared by every stream
    /// that opens until the next change (a reconnect wave costs one encoding, not N). While a
    /// session clock runs it shows `session_timer`, so it is rebuilt at most once a second.
    fn initial_frame(&mut self, agent: bool, now: i64) -> Rc<[u8]> {
        let cached = if agent {
            &self.agent_snapshot
        } else {
            &self.admin_snapshot
        };
        if let Some(s) = cached.as_ref().filter(|s| s.fresh(now)) {
            return Rc::clone(&s.frame);
        }
        let views: Vec<UserView<'_>> = self
            .users
            .values()
            .rev()
            .filter(|u| !agent || u.session_in_progress())
            .map(|u| u.view(&self.public_url, now))
            .collect();
        let has_clock = views.iter().any(|v| v.session_timer.is_some());
        let frame: Rc<[u8]> = Rc::from(ws::text_frame(&messages::initial(
            self.log.epoch(),
            self.log.head(),
            &views,
        )));
        let snapshot = Some(Snapshot {
            frame: Rc::clone(&frame),
            built_at: now,
            has_clock,
        });
        if agent {
            self.agent_snapshot = snapshot;
        } else {
            self.admin_snapshot = snapshot;
        }
        frame
    }

    /// `{"type":"time_update"}` for the session of `user_id`, if it exists.
    pub fn time_update_frame(&self, user_id: i64, now: i64) -> Option<Rc<[u8]>> {
        let u = self.users.get(&user_id)?;
        Some(frame(messages::time_update(u.remaining_seconds(now))))
    }

    /// `{"type":"progress"}` for the session of `user_id`, if it exists.
    pub fn progress_frame(&self, user_id: i64) -> Option<Rc<[u8]>> {
        Some(frame(messages::session_progress(self.users.get(&user_id)?)))
    }

    // ---------------------------------------------------------------- admins

    /// Whether `code` is the one-time setup code (compared in constant time). Always `false`
    /// once an admin exists.
    pub fn setup_code_ok(&self, code: &str) -> bool {
        self.setup_code
            .as_deref()
            .is_some_and(|c| auth::ct_eq(c.as_bytes(), code.as_bytes()))
    }

    /// Whether an admin exists, as far as this process knows (the setup command re-checks in
    /// storage, so a stale `false` cannot create a second first admin).
    pub fn has_admin(&self) -> bool {
        self.setup_code.is_none()
    }

    /// An admin exists now: the setup code is spent.
    pub fn close_setup(&mut self) {
        self.setup_code = None;
    }

    /// The admin session with this token digest, if this process has seen it valid and it has
    /// not expired at `now`. `None` means "ask storage" (then [`Self::remember_admin_session`]).
    pub fn cached_admin_session(&mut self, digest: &Digest32, now: i64) -> Option<&AdminSession> {
        if self
            .admin_sessions
            .get(digest)
            .is_some_and(|s| s.expires_at <= now)
        {
            self.admin_sessions.remove(digest);
        }
        self.admin_sessions.get(digest)
    }

    /// Forget an admin session storage no longer holds (ended elsewhere, or expired); returns
    /// what was cached.
    pub fn forget_admin_session(&mut self, digest: &Digest32) -> Option<AdminSession> {
        self.admin_sessions.remove(digest)
    }

    /// The digests of every cached admin session (for the periodic re-check).
    pub fn cached_admin_sessions(&self) -> impl Iterator<Item = &Digest32> + '_ {
        self.admin_sessions.keys()
    }

    /// Storage said this admin session is valid.
    pub fn remember_admin_session(&mut self, session: AdminSession) {
        if self.admin_sessions.len() >= ADMIN_SESSION_CACHE {
            self.admin_sessions.clear();
        }
        self.admin_sessions.insert(session.token_digest, session);
    }

    // ---------------------------------------------------------------- apply

    /// Apply a stored event: update the view and push what must happen into `effects`. Returns
    /// `false` when a logged change is not the next number (the caller must reload the view
    /// from storage); nothing changed then.
    #[must_use]
    pub fn apply(&mut self, event: &Event, effects: &mut Vec<Effect>) -> bool {
        match event {
            Event::User(logged) => {
                let entry = event_log::Entry {
                    seq: logged.seq,
                    at_ms: logged.at_ms,
                    admin: frame(logged.admin_message.as_bytes().to_vec()),
                    agent: logged
                        .agent_message
                        .as_ref()
                        .map(|m| frame(m.as_bytes().to_vec())),
                };
                if !self.log.push(entry.clone()) {
                    return false;
                }
                // The list changed: the shared `initial` frames are stale.
                self.admin_snapshot = None;
                self.agent_snapshot = None;
                self.apply_user(&logged.change, effects);
                effects.push(Effect::Broadcast(Stream::Admin, entry.admin));
                if let Some(agent) = entry.agent {
                    effects.push(Effect::Broadcast(Stream::Agent, agent));
                }
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
        true
    }

    /// The view and the session-side effects of a change. Session frames go first: a person is
    /// waiting on them; the admin and agent frames follow (pushed by `apply`).
    fn apply_user(&mut self, change: &UserChange, effects: &mut Vec<Effect>) {
        match change {
            UserChange::Added(u) => {
                self.put((**u).clone());
                effects.push(Effect::InviteClock {
                    user_id: u.id,
                    expires_at: Some(u.invite_expires_at),
                });
            }
            UserChange::Updated(u, cause) => {
                self.put((**u).clone());
                session_effects(u, *cause, effects);
            }
            UserChange::Deleted(id) => {
                if let Some(u) = self.users.remove(id) {
                    self.by_token.remove(&auth::digest(&u.invite_token));
                }
                effects.push(Effect::StopClock(*id));
                effects.push(Effect::InviteClock {
                    user_id: *id,
                    expires_at: None,
                });
                effects.push(close_session_link(*id));
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

/// What an updated user means for its session streams and clocks, by why it changed.
fn session_effects(u: &User, cause: Cause, effects: &mut Vec<Effect>) {
    match cause {
        Cause::Edited { progressed, .. } => {
            if progressed {
                effects.push(progress_to_session(u));
            }
        }
        Cause::Answered => effects.push(progress_to_session(u)),
        Cause::Activated => {
            effects.push(Effect::InviteClock {
                user_id: u.id,
                expires_at: None,
            });
            if let Some(expires_at) = u.session_expires_at {
                effects.push(Effect::StartClock {
                    user_id: u.id,
                    expires_at,
                });
            }
        }
        Cause::InviteRegenerated => {
            effects.push(Effect::StopClock(u.id));
            effects.push(Effect::InviteClock {
                user_id: u.id,
                expires_at: Some(u.invite_expires_at),
            });
            effects.push(close_session_link(u.id));
        }
        Cause::InviteExpired => effects.push(Effect::InviteClock {
            user_id: u.id,
            expires_at: None,
        }),
        Cause::SessionExpired => {
            effects.push(Effect::StopClock(u.id));
            effects.push(Effect::Broadcast(
                Stream::Session(u.id),
                frame(messages::session_expired()),
            ));
            effects.push(Effect::CloseSession {
                user_id: u.id,
                code: ws::code::NORMAL,
                reason: "Session expired",
                why: CloseReason::Expired,
            });
        }
    }
}

/// A text frame of a message, encoded once.
fn frame(payload: Vec<u8>) -> Rc<[u8]> {
    Rc::from(ws::text_frame(&payload))
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
    Effect::Broadcast(Stream::Session(u.id), frame(messages::session_progress(u)))
}
