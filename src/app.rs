//! The application: invitees, admins and sessions, independent of sockets.
//!
//! Every change goes to SQLite first and to the in-memory copy only once the write succeeded,
//! then comes back to the reactor as `Effect`s (frames to broadcast, streams to close, session
//! timers to arm or disarm). The frames are encoded here, once per event, whatever the number
//! of recipients.

use crate::auth::{self, Digest32};
use crate::config::ServeConfig;
use crate::db::{Db, DbError, NewUser};
use crate::metrics::CloseReason;
use crate::model::{User, UserView};
use crate::ws;
use serde::Serialize;
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::time::{SystemTime, UNIX_EPOCH};

/// Wall-clock Unix milliseconds (for stored timestamps and what users see).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Who receives a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    Admins,
    Session(i64),
    Agents,
}

/// What the reactor must do after an application change.
#[derive(Debug)]
pub enum Effect {
    Broadcast(Audience, Rc<[u8]>),
    /// Close every stream of this session (close frame `code`, `reason`).
    CloseSession {
        user_id: i64,
        code: u16,
        reason: &'static str,
        why: CloseReason,
    },
    /// Close the admin streams opened with this session token (logout).
    CloseAdminSession(Digest32),
    /// Arm the expiry timer of a session ending at wall time `expires_at`.
    ArmExpiry {
        user_id: i64,
        expires_at: i64,
    },
    /// Disarm it (the user was deleted or got a new invite).
    DisarmExpiry(i64),
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

/// A change to a user's editable fields (PATCH); `None` = leave as is.
#[derive(Debug, Default)]
pub struct UserPatch {
    pub first_name: Option<String>,
    pub last_name: Option<String>,
    pub email: Option<String>,
    pub questions_total: Option<i64>,
    pub questions_answered: Option<i64>,
    /// `Some(None)` clears the link.
    pub transcript_url: Option<Option<String>>,
    pub summary_url: Option<Option<String>>,
}

/// The answer to session activation.
pub struct Activation {
    pub session_id: i64,
    pub expires_at: i64,
    pub remaining_seconds: i64,
}

/// `{"type": ..., "data": ...}`, serialised in that order.
#[derive(Serialize)]
struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    kind: &'a str,
    data: T,
}

struct Snapshot {
    frame: Rc<[u8]>,
    built_at: i64,
    /// It shows a running session clock, which goes stale: rebuild after a second.
    has_clock: bool,
}

pub struct App {
    db: Db,
    key: [u8; 32],
    pub public_url: String,
    session_ms: i64,
    invite_ttl_ms: i64,
    users: BTreeMap<i64, User>,
    by_token: HashMap<Digest32, i64>,
    snapshot: Option<Snapshot>,
    /// One-time code for creating the first admin; `None` once an admin exists.
    setup_code: Option<String>,
    /// Admin sessions seen valid: digest → (admin id, expiry). Saves a SQLite read per
    /// handshake in a reconnect wave. Sessions end only by expiry or by logout in this process,
    /// which removes the entry; unknown digests are always looked up (the CLI mints tokens).
    admin_sessions: HashMap<Digest32, (i64, i64)>,
}

/// Cached admin sessions kept at most (a flood of distinct valid tokens clears the cache).
const ADMIN_SESSION_CACHE: usize = 100_000;

impl App {
    pub fn open(cfg: &ServeConfig, public_url: String) -> Result<App, String> {
        let db = Db::open(&cfg.db).map_err(|e| e.to_string())?;
        let (key, new_key) = crate::db::load_or_create_key(&cfg.db).map_err(|e| e.to_string())?;
        let mut app = App {
            db,
            key,
            public_url,
            session_ms: cfg.session_length.as_millis() as i64,
            invite_ttl_ms: cfg.invite_ttl.as_millis() as i64,
            users: BTreeMap::new(),
            by_token: HashMap::new(),
            snapshot: None,
            setup_code: None,
            admin_sessions: HashMap::new(),
        };
        let users = app.db.load_users(&app.key).map_err(|e| e.to_string())?;
        if new_key && !users.is_empty() {
            log::warn!(
                "the server key file {} was missing: a new one was made, and the invite links of all {} users changed",
                crate::db::key_path(&cfg.db).display(),
                users.len()
            );
            app.db.rehash_invites(&users).map_err(|e| e.to_string())?;
        }
        for u in users {
            app.by_token.insert(auth::digest(&u.invite_token), u.id);
            app.users.insert(u.id, u);
        }
        if app.db.admin_count().map_err(|e| e.to_string())? == 0 {
            let code = auth::new_token().map_err(|e| e.to_string())?;
            log::warn!(
                "no admin account yet: create the first one at {}/setup?code={code}",
                app.public_url
            );
            app.setup_code = Some(code);
        }
        let pruned = app.db.prune_admin_sessions(wall_ms()).unwrap_or(0);
        if pruned > 0 {
            log::info!("removed {pruned} expired admin sessions");
        }
        Ok(app)
    }

    pub fn db(&self) -> &Db {
        &self.db
    }

    pub fn user(&self, id: i64) -> Option<&User> {
        self.users.get(&id)
    }

    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    // ---------------------------------------------------------------- frames

    fn frame(value: &impl serde::Serialize) -> Rc<[u8]> {
        // Serialising our own types cannot fail; an empty object keeps the stream valid if it did.
        let payload = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
        Rc::from(ws::text_frame(&payload))
    }

    fn user_event(&self, kind: &str, u: &User, now: i64) -> Rc<[u8]> {
        Self::frame(&Envelope {
            kind,
            data: u.view(&self.public_url, now),
        })
    }

    /// `{"type":"initial",...}`: built once per change of the list and shared by every admin
    /// that connects until the next change (a reconnect wave costs one encoding, not N).
    pub fn initial_frame(&mut self, now: i64) -> Rc<[u8]> {
        if let Some(s) = &self.snapshot {
            if !s.has_clock || now - s.built_at < 1000 {
                return Rc::clone(&s.frame);
            }
        }
        let views: Vec<_> = self
            .users
            .values()
            .rev()
            .map(|u| u.view(&self.public_url, now))
            .collect();
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

    pub fn time_update_frame(&self, user_id: i64, now: i64) -> Option<Rc<[u8]>> {
        let u = self.users.get(&user_id)?;
        Some(Self::frame(&json!({
            "type": "time_update",
            "remaining_seconds": u.remaining_seconds(now),
        })))
    }

    fn progress_effects(&self, u: &User, effects: &mut Vec<Effect>) {
        effects.push(Effect::Broadcast(
            Audience::Session(u.id),
            Self::frame(&json!({
                "type": "progress",
                "questions_answered": u.questions_answered,
                "questions_total": u.questions_total,
            })),
        ));
    }

    fn agent_progress_effect(&self, u: &User, effects: &mut Vec<Effect>) {
        effects.push(Effect::Broadcast(
            Audience::Agents,
            Self::frame(&json!({
                "type": "progress",
                "user_id": u.id,
                "questions_answered": u.questions_answered,
                "questions_total": u.questions_total,
            })),
        ));
    }

    // ---------------------------------------------------------------- changes

    /// Write `u` to SQLite, then to memory.
    fn store(&mut self, u: User) -> AppResult<()> {
        if !self.db.update_user(&u)? {
            return Err(AppError::NotFound);
        }
        self.snapshot = None;
        let id = u.id;
        if let Some(old) = self.users.insert(id, u) {
            self.by_token.remove(&auth::digest(&old.invite_token));
        }
        if let Some(stored) = self.users.get(&id) {
            self.by_token.insert(auth::digest(&stored.invite_token), id);
        }
        Ok(())
    }

    fn get(&self, id: i64) -> AppResult<&User> {
        self.users.get(&id).ok_or(AppError::NotFound)
    }

    fn fresh_nonce() -> AppResult<Vec<u8>> {
        auth::random_bytes::<16>().map(|b| b.to_vec()).map_err(|e| {
            log::error!("OS randomness failed: {e}");
            AppError::Storage
        })
    }

    pub fn create_user(
        &mut self,
        first_name: String,
        last_name: String,
        email: String,
        questions_total: i64,
        effects: &mut Vec<Effect>,
    ) -> AppResult<Vec<u8>> {
        let now = wall_ms();
        let nonce = Self::fresh_nonce()?;
        let id = self.db.insert_user(
            &NewUser {
                first_name: &first_name,
                last_name: &last_name,
                email: &email,
                questions_total,
                invite_nonce: &nonce,
                invite_expires_at: now + self.invite_ttl_ms,
                created_at: now,
            },
            &self.key,
        )?;
        let u = User {
            id,
            first_name,
            last_name,
            email,
            invite_token: auth::invite_token(&self.key, id, &nonce),
            invite_nonce: nonce,
            invite_expires_at: now + self.invite_ttl_ms,
            token_activated: false,
            session_started_at: None,
            session_expires_at: None,
            session_expired: false,
            questions_answered: 0,
            questions_total,
            transcript_url: None,
            summary_url: None,
            created_at: now,
        };
        self.snapshot = None;
        self.by_token.insert(auth::digest(&u.invite_token), id);
        effects.push(Effect::Broadcast(
            Audience::Admins,
            self.user_event("user_added", &u, now),
        ));
        let body = self.user_json(&u, now);
        self.users.insert(id, u);
        Ok(body)
    }

    pub fn update_user(
        &mut self,
        id: i64,
        p: UserPatch,
        effects: &mut Vec<Effect>,
    ) -> AppResult<Vec<u8>> {
        let now = wall_ms();
        let mut u = self.users.get(&id).ok_or(AppError::NotFound)?.clone();
        let progress_before = (u.questions_answered, u.questions_total);
        if let Some(v) = p.first_name {
            u.first_name = v;
        }
        if let Some(v) = p.last_name {
            u.last_name = v;
        }
        if let Some(v) = p.email {
            u.email = v;
        }
        if let Some(v) = p.questions_total {
            u.questions_total = v;
        }
        if let Some(v) = p.questions_answered {
            u.questions_answered = v;
        }
        if u.questions_answered > u.questions_total {
            return Err(AppError::Invalid(
                "questions_answered must not exceed questions_total".into(),
            ));
        }
        if let Some(v) = p.transcript_url {
            u.transcript_url = v;
        }
        if let Some(v) = p.summary_url {
            u.summary_url = v;
        }
        self.store(u)?;
        let u = self.get(id)?;
        let progressed = progress_before != (u.questions_answered, u.questions_total);
        let body = self.user_json(u, now);
        let event = self.user_event("user_update", u, now);
        if progressed {
            self.progress_effects(u, effects);
            self.agent_progress_effect(u, effects);
        }
        effects.push(Effect::Broadcast(Audience::Admins, event));
        Ok(body)
    }

    pub fn delete_user(&mut self, id: i64, effects: &mut Vec<Effect>) -> AppResult<()> {
        if !self.users.contains_key(&id) {
            return Err(AppError::NotFound);
        }
        if !self.db.delete_user(id)? {
            return Err(AppError::NotFound);
        }
        self.snapshot = None;
        if let Some(u) = self.users.remove(&id) {
            self.by_token.remove(&auth::digest(&u.invite_token));
        }
        effects.push(Effect::DisarmExpiry(id));
        effects.push(Effect::CloseSession {
            user_id: id,
            code: ws::code::POLICY,
            reason: "Invalid or expired session",
            why: CloseReason::Expired,
        });
        effects.push(Effect::Broadcast(
            Audience::Admins,
            Self::frame(&json!({ "type": "user_deleted", "data": { "id": id } })),
        ));
        Ok(())
    }

    /// A new invite link: new nonce (the old token is dead at once), fresh TTL, session reset.
    pub fn regenerate_invite(&mut self, id: i64, effects: &mut Vec<Effect>) -> AppResult<Vec<u8>> {
        let now = wall_ms();
        let mut u = self.users.get(&id).ok_or(AppError::NotFound)?.clone();
        u.invite_nonce = Self::fresh_nonce()?;
        u.invite_token = auth::invite_token(&self.key, id, &u.invite_nonce);
        u.invite_expires_at = now + self.invite_ttl_ms;
        u.token_activated = false;
        u.session_started_at = None;
        u.session_expires_at = None;
        u.session_expired = false;
        self.store(u)?;
        let u = self.get(id)?;
        let body = self.user_json(u, now);
        effects.push(Effect::DisarmExpiry(id));
        effects.push(Effect::CloseSession {
            user_id: id,
            code: ws::code::POLICY,
            reason: "Invalid or expired session",
            why: CloseReason::Expired,
        });
        effects.push(Effect::Broadcast(
            Audience::Admins,
            self.user_event("user_update", u, now),
        ));
        Ok(body)
    }

    /// The user whose invite/session token this is (constant-time confirmation of the digest).
    pub fn user_by_token(&self, token: &str) -> Option<&User> {
        let d = auth::digest(token);
        let id = self.by_token.get(&d)?;
        let u = self.users.get(id)?;
        auth::ct_eq(&auth::digest(&u.invite_token), &d).then_some(u)
    }

    /// Whether `token` opens the live session of user `id`.
    pub fn session_token_ok(&self, id: i64, token: &str, now: i64) -> bool {
        self.user_by_token(token)
            .is_some_and(|u| u.id == id && u.session_is_live(now))
    }

    pub fn activate(&mut self, token: &str, effects: &mut Vec<Effect>) -> AppResult<Activation> {
        let now = wall_ms();
        let u = self.user_by_token(token).ok_or(AppError::Unauthorized)?;
        if u.token_activated {
            if u.session_is_over(now) {
                return Err(AppError::Gone("this session has ended"));
            }
            return Ok(Activation {
                session_id: u.id,
                expires_at: u.session_expires_at.unwrap_or(now),
                remaining_seconds: u.remaining_seconds(now),
            });
        }
        if u.invite_expires_at <= now {
            return Err(AppError::Gone("this invite link has expired"));
        }
        let mut u = u.clone();
        u.token_activated = true;
        u.session_started_at = Some(now);
        u.session_expires_at = Some(now + self.session_ms);
        let id = u.id;
        self.store(u)?;
        let u = self.get(id)?;
        let activation = Activation {
            session_id: u.id,
            expires_at: now + self.session_ms,
            remaining_seconds: u.remaining_seconds(now),
        };
        effects.push(Effect::ArmExpiry {
            user_id: u.id,
            expires_at: activation.expires_at,
        });
        effects.push(Effect::Broadcast(
            Audience::Admins,
            self.user_event("user_update", u, now),
        ));
        effects.push(Effect::Broadcast(
            Audience::Agents,
            self.user_event("session_started", u, now),
        ));
        Ok(activation)
    }

    /// The placeholder agent's "next question": one more answer on a live session.
    pub fn answer(&mut self, token: &str, effects: &mut Vec<Effect>) -> AppResult<(i64, i64)> {
        let now = wall_ms();
        let u = self.user_by_token(token).ok_or(AppError::Unauthorized)?;
        if !u.token_activated {
            return Err(AppError::Unauthorized);
        }
        if u.session_is_over(now) {
            return Err(AppError::Gone("this session has ended"));
        }
        let mut u = u.clone();
        u.questions_answered = (u.questions_answered + 1).min(u.questions_total);
        let id = u.id;
        self.store(u)?;
        let u = self.get(id)?;
        self.progress_effects(u, effects);
        self.agent_progress_effect(u, effects);
        effects.push(Effect::Broadcast(
            Audience::Admins,
            self.user_event("user_update", u, now),
        ));
        Ok((u.questions_answered, u.questions_total))
    }

    /// Sessions whose clock runs: (user id, wall expiry). For arming timers at start.
    pub fn running_sessions(&self) -> Vec<(i64, i64)> {
        self.users
            .values()
            .filter(|u| u.token_activated && !u.session_expired)
            .filter_map(|u| Some((u.id, u.session_expires_at?)))
            .collect()
    }

    /// The session clock of `id` ran out: record it and tell everyone.
    pub fn expire_session(&mut self, id: i64, effects: &mut Vec<Effect>) -> AppResult<()> {
        let now = wall_ms();
        let Some(u) = self.users.get(&id) else {
            return Ok(());
        };
        if u.session_expired || !u.token_activated {
            return Ok(());
        }
        if u.session_expires_at.is_some_and(|e| e > now) {
            // Fired early by clock adjustment: re-arm for the real expiry.
            effects.push(Effect::ArmExpiry {
                user_id: id,
                expires_at: u.session_expires_at.unwrap_or(now),
            });
            return Ok(());
        }
        let mut u = u.clone();
        u.session_expired = true;
        self.store(u)?;
        let u = self.get(id)?;
        effects.push(Effect::Broadcast(
            Audience::Session(id),
            Self::frame(&json!({ "type": "session_expired" })),
        ));
        effects.push(Effect::CloseSession {
            user_id: id,
            code: ws::code::NORMAL,
            reason: "Session expired",
            why: CloseReason::Expired,
        });
        effects.push(Effect::Broadcast(
            Audience::Admins,
            self.user_event("user_update", u, now),
        ));
        effects.push(Effect::Broadcast(
            Audience::Agents,
            Self::frame(&json!({ "type": "session_expired", "data": { "id": id } })),
        ));
        Ok(())
    }

    // ---------------------------------------------------------------- admins

    pub fn setup_code_ok(&self, code: &str) -> bool {
        self.setup_code
            .as_deref()
            .is_some_and(|c| auth::ct_eq(c.as_bytes(), code.as_bytes()))
    }

    /// Create the first admin (the password was hashed off-thread) and a session for it.
    pub fn finish_setup(&mut self, email: &str, password_hash: &str) -> AppResult<String> {
        let now = wall_ms();
        let Some(id) = self.db.create_first_admin(email, password_hash, now)? else {
            self.setup_code = None;
            return Err(AppError::Conflict("an admin already exists"));
        };
        self.setup_code = None;
        log::info!("first admin created: {email}");
        self.new_admin_session(id)
    }

    /// Record a new admin session; returns its token (the cookie value).
    pub fn new_admin_session(&mut self, admin_id: i64) -> AppResult<String> {
        let now = wall_ms();
        let token = auth::new_token().map_err(|_| AppError::Storage)?;
        self.db.create_admin_session(
            admin_id,
            &auth::digest(&token),
            now + ADMIN_SESSION_MS,
            now,
        )?;
        Ok(token)
    }

    /// The admin behind a session cookie, if it is valid now.
    pub fn admin_for_cookie(&mut self, token: &str) -> Option<i64> {
        let d = auth::digest(token);
        let now = wall_ms();
        if let Some(&(id, expires_at)) = self.admin_sessions.get(&d) {
            if expires_at > now {
                return Some(id);
            }
            self.admin_sessions.remove(&d);
        }
        let found = self.db.admin_session(&d, now).unwrap_or_else(|e| {
            log::error!("admin session lookup failed: {e}");
            None
        })?;
        if self.admin_sessions.len() >= ADMIN_SESSION_CACHE {
            self.admin_sessions.clear();
        }
        self.admin_sessions.insert(d, found);
        Some(found.0)
    }

    pub fn logout(&mut self, token: &str, effects: &mut Vec<Effect>) -> AppResult<()> {
        let d = auth::digest(token);
        self.db.delete_admin_session(&d)?;
        self.admin_sessions.remove(&d);
        effects.push(Effect::CloseAdminSession(d));
        Ok(())
    }

    pub fn has_admin(&self) -> bool {
        self.setup_code.is_none()
    }
}

/// How long an admin login lasts.
pub const ADMIN_SESSION_MS: i64 = 7 * 24 * 3600 * 1000;

/// `2026-11-26T00:16:18Z` from Unix milliseconds (proleptic Gregorian, UTC).
pub fn rfc3339(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_795_652_178_999), "2026-11-26T00:16:18Z");
    }
}
