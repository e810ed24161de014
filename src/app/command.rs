//! Commands: the application's write rules, `command(now, input) → Result<Outcome>`.
//!
//! Each command runs inside one storage transaction ([`Tx`]): it reads the rows it needs,
//! checks the rules, writes, and returns what it stored as an [`Event`] (or what it found, when
//! nothing had to change). It never reads the clock (`now` is passed in) and never touches the
//! in-memory view or any socket: the caller applies the event (`App::apply`) once the
//! transaction has committed. A command that fails returns an [`AppError`] and, the transaction
//! being rolled back, has changed nothing.
//!
//! Input validation (JSON shape, field lengths) is the API layer's; the rules here are those
//! that depend on stored state: a user exists, a link is current, a session is live, answers do
//! not exceed the total.
//!
//! Why the rules live inside the transaction: with several storage threads (PostgreSQL) or
//! several processes (the CLI next to a server), a rule checked against the view and then
//! written could be broken by a write in between. Checked and written in one transaction, two
//! racing commands cannot both pass a rule that only one may (the last admin, the first admin,
//! an OIDC attempt used once, an agent `request_id` applied once).
//!
//! Numbering: a change of the invitee list takes the next event number (`next_seq`) in the
//! same transaction that writes the row, and stores its messages with it (`log`). So the
//! number, the row and the message commit together or not at all, and a replay after a restart
//! sends the very bytes the live broadcast sent.
//!
//! Time rules, with `now` the wall clock when the command runs (Unix ms):
//! * an invite link is usable while `now < invite_expires_at`; activation starts a session of
//!   `Rules::session_ms`, stored as its expiry;
//! * a session is over at its stored expiry (`User::session_is_over`); answers after that are
//!   410, and the expiry command records it once;
//! * an expiry or invite timer that fires before the stored time (the wall clock moved)
//!   answers `NotYet` with the stored time, and nothing changes.

use super::event::{Cause, Event, Logged, UserChange};
use super::{messages, AppError, AppResult};
use crate::auth::{self, Digest32};
use crate::model::User;
use crate::store::{
    AdminAccount, AdminInfo, AdminSession, DbError, NewUser, StoredEvent, Tx, RETENTION,
};

/// How long a repeated agent `request_id` is recognised (ms; API.md: 10 minutes).
pub const AGENT_REQUEST_MEMORY_MS: i64 = 10 * 60 * 1000;

/// Fixed rules of this deployment.
#[derive(Debug, Clone)]
pub struct Rules {
    /// Origin of the invite links in logged messages.
    pub public_url: String,
    /// Length of an interview session (ms).
    pub session_ms: i64,
    /// How long an unused invite link stays valid (ms).
    pub invite_ttl_ms: i64,
    /// How long an admin sign-in lasts (ms).
    pub admin_session_ms: i64,
}

/// A change to a user's editable fields (PATCH); `None` = leave as is.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
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

impl UserPatch {
    pub fn is_empty(&self) -> bool {
        *self == UserPatch::default()
    }
}

/// What a client asks the application to do. Tokens arrive as their SHA-256 digests: stored
/// rows are found by digest, so a plain token never reaches storage. Variants marked "Read"
/// change nothing and run in a read transaction (`Command::is_read`).
#[derive(Debug)]
pub enum Command {
    CreateUser {
        first_name: String,
        last_name: String,
        email: String,
        questions_total: i64,
    },
    UpdateUser {
        id: i64,
        patch: UserPatch,
        /// `Some` for an agent message: its `request_id` (JSON text, if it sent one). The agent
        /// is not told what it said itself, and a repeated id is applied only once.
        agent_request: Option<Option<String>>,
    },
    DeleteUser {
        id: i64,
    },
    /// A new invite link: new nonce (the old token dies), fresh TTL, session reset.
    RegenerateInvite {
        id: i64,
    },
    /// Open the session of the invite token with this digest (the first call starts the clock).
    Activate {
        token: Digest32,
    },
    /// One more answer on the live session of the token with this digest.
    Answer {
        token: Digest32,
    },
    /// The session clock of this user should have run out: record it.
    ExpireSession {
        id: i64,
    },
    /// The unused invite link of this user should have run out: announce it.
    ExpireInvite {
        id: i64,
    },
    /// Create the first admin (password already hashed) and sign it in, if there is no admin.
    SetupFirstAdmin {
        email: String,
        password_hash: String,
    },
    /// Sign an admin in: a new admin session with a token of its own.
    CreateAdminSession {
        admin_id: i64,
        email: String,
    },
    /// Sign out: the admin session with this token digest ends.
    EndAdminSession {
        token: Digest32,
    },
    /// Read: the account signing in with this email.
    FindAdmin {
        email: String,
    },
    /// Read: the account with this id (its password hash for a password change).
    FindAdminById {
        id: i64,
    },
    /// Read: every admin account.
    ListAdmins,
    /// Another admin account (password already hashed).
    CreateAdmin {
        email: String,
        password_hash: String,
    },
    /// Remove an admin account and end its sessions; never the last one.
    DeleteAdmin {
        email: String,
    },
    /// A new password (already hashed) for admin `id`; every other session of it ends.
    ChangeAdminPassword {
        id: i64,
        password_hash: String,
        keep: Digest32,
    },
    /// Read: the first of these admin session token digests that is valid, if any (a
    /// request may carry several `admin_session` values; each is tried).
    LookupAdminSession {
        tokens: Vec<Digest32>,
    },
    /// Read: which of these admin session token digests are no longer valid (expired, ended
    /// by logout or `admin revoke` — possibly by another process). The periodic re-check of
    /// cached sessions and open admin streams: it reads the sessions only when another
    /// connection changed the database since the last re-check (`Tx::changed_by_others`), or
    /// `always` (a session may also simply have run out).
    AdminSessionsGone {
        tokens: Vec<Digest32>,
        always: bool,
    },
    /// Read: every valid admin session.
    AdminSessions,
    /// Read: the logged events numbered `from..=to` (a resume from beyond the memory tail).
    ReadEvents {
        from: u64,
        to: u64,
    },
    /// Housekeeping: trim the event log and the agent request ids to what must be kept, prune
    /// expired admin sessions.
    Maintain,
    /// Read: whether this OpenID Connect login attempt was used already.
    OidcAttemptUsed {
        attempt: [u8; 16],
    },
    /// Sign in through OpenID Connect, in one transaction: record the attempt as used (once
    /// only), find the admin with this (provider-verified) email or, when `may_create`,
    /// create one, and create a session.
    OidcSignIn {
        attempt: [u8; 16],
        /// When the attempt stops being usable (Unix ms).
        attempt_expires_at: i64,
        email: String,
        may_create: bool,
    },
}

impl Command {
    /// Whether it is a write a client asked for that changes the invitee list, so is broadcast
    /// to every admin stream: these are what admission control refuses past the backlog bound
    /// (API.md limits). Sign-in, setup, sign-out and the admin accounts are never refused (they
    /// broadcast nothing), nor are the server's own expiries.
    pub fn is_broadcast_write(&self) -> bool {
        matches!(
            self,
            Command::CreateUser { .. }
                | Command::UpdateUser { .. }
                | Command::DeleteUser { .. }
                | Command::RegenerateInvite { .. }
                | Command::Activate { .. }
                | Command::Answer { .. }
        )
    }

    /// Whether it only reads (runs in a read transaction, which never waits for writers). A
    /// command missing here still works, only as a write (queued behind the writers).
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            Command::FindAdmin { .. }
                | Command::LookupAdminSession { .. }
                | Command::AdminSessionsGone { .. }
                | Command::AdminSessions
                | Command::ReadEvents { .. }
                | Command::OidcAttemptUsed { .. }
                | Command::FindAdminById { .. }
                | Command::ListAdmins
        )
    }
}

/// What a command did.
#[derive(Debug)]
pub enum Outcome {
    /// It stored a change: apply the event.
    Changed(Event),
    /// Nothing had to change; this is the user as stored (a repeated activation).
    Unchanged(Box<User>),
    /// Nothing to do (an expiry for a session that is already over, reset or gone).
    Nothing,
    /// An agent message with a `request_id` already applied: acknowledge, change nothing.
    Duplicate,
    /// The stored end is still ahead (the timer fired early): try again then (wall ms).
    NotYet { expires_at: i64 },
    /// An admin signed in: the new session and its token (the cookie value).
    SignedIn {
        session: AdminSession,
        token: String,
    },
    /// `FindAdmin`'s and `FindAdminById`'s answer.
    Admin(Option<AdminAccount>),
    /// `ListAdmins`' answer.
    Admins(Vec<AdminInfo>),
    /// `CreateAdmin`'s answer.
    AdminCreated(AdminInfo),
    /// `LookupAdminSession`'s answer.
    AdminSession(Option<AdminSession>),
    /// `AdminSessions`' answer.
    AdminSessions(Vec<AdminSession>),
    /// `AdminSessionsGone`'s answer: the digests asked about that are no longer valid.
    SessionsGone(Vec<Digest32>),
    /// `ReadEvents`' answer.
    Events(Vec<StoredEvent>),
    /// `Maintain` trimmed the log: storage now holds events from this number on.
    Trimmed { stored_from: u64 },
    /// `ClusterCommand::Snapshot`'s answer.
    Snapshot(Box<crate::store::Snapshot>),
    /// `ClusterCommand::Janitor`'s answer: what is overdue (nothing unless this node holds the
    /// lease).
    Overdue {
        sessions: Vec<i64>,
        invites: Vec<i64>,
    },
    /// `ClusterCommand::SharePresence`'s answer: every node's presence, merged.
    Presence(crate::hub::Presence),
    /// `ClusterCommand::CountedFindAdmin`'s answer when the attempt was counted (at `at`, the
    /// database's clock): the account, if any.
    LoginCounted {
        admin: Option<AdminAccount>,
        at: i64,
    },
    /// `ClusterCommand::CountedFindAdmin`'s answer over a limit: refused, not counted.
    LoginLimited { retry_after_s: i64 },
    /// `ClusterCommand::LookupSession`'s answer: whether the session is live, and the log's
    /// head when it was read.
    SessionAt { live: bool, head: u64 },
    /// Not a storage answer: a stream handshake held on this node until its view reaches a
    /// number (a resume from an event another node already sent; `reactor/cluster.rs`).
    AwaitView,
    /// `OidcAttemptUsed`'s answer.
    AttemptUsed(bool),
    /// Sign-in refused with this reason; the transaction commits (the attempt is spent).
    Refused(&'static str),
}

/// Why an OpenID Connect sign-in was refused after the provider vouched for the email. Shown to
/// the admin on the sign-in page (`?signin_error=`), so written for a person.
pub const OIDC_ATTEMPT_USED: &str = "this sign-in was already used; start again";
pub const OIDC_NOT_ALLOWED: &str =
    "there is no admin account for this email, and its domain may not create one";

/// Run `cmd` at wall time `now` (Unix ms) against an open transaction. On `Err` the caller rolls
/// the transaction back, so a failed command has changed nothing, whatever it wrote before
/// failing.
pub fn execute(tx: &mut dyn Tx, rules: &Rules, now: i64, cmd: Command) -> AppResult<Outcome> {
    let updated = |tx: &mut dyn Tx, u: User, cause| {
        store(tx, &u)?;
        log(tx, rules, now, UserChange::Updated(Box::new(u), cause))
    };
    match cmd {
        Command::CreateUser {
            first_name,
            last_name,
            email,
            questions_total,
        } => {
            let nonce = fresh_nonce()?;
            let u = tx.insert_user(&NewUser {
                first_name: &first_name,
                last_name: &last_name,
                email: &email,
                questions_total,
                invite_nonce: &nonce,
                invite_expires_at: now + rules.invite_ttl_ms,
                created_at: now,
            })?;
            log(tx, rules, now, UserChange::Added(Box::new(u)))
        }
        Command::UpdateUser {
            id,
            patch,
            agent_request,
        } => {
            let request_id = agent_request.clone().flatten();
            // API.md: a `request_id` seen in the last 10 minutes is acked again and applied
            // once, so an agent may resend after a reconnect without double effects.
            if let Some(rid) = &request_id {
                if tx.agent_request_seen(rid, now - AGENT_REQUEST_MEMORY_MS)? {
                    return Ok(Outcome::Duplicate);
                }
            }
            let mut u = tx.user(id)?.ok_or(AppError::NotFound)?;
            let before = (u.questions_answered, u.questions_total);
            apply_patch(&mut u, patch)?;
            note_completion(&mut u, now);
            if let Some(rid) = &request_id {
                tx.record_agent_request(rid, now)?;
            }
            // Only a change of the counts concerns the session page and the agent.
            let progressed = before != (u.questions_answered, u.questions_total);
            let by_agent = agent_request.is_some();
            updated(
                tx,
                u,
                Cause::Edited {
                    progressed,
                    by_agent,
                },
            )
        }
        Command::DeleteUser { id } => {
            if !tx.delete_user(id)? {
                return Err(AppError::NotFound);
            }
            log(tx, rules, now, UserChange::Deleted(id))
        }
        // A new link starts the invitation over: the old token stops working at once (its
        // digest no longer matches), and any session it opened is reset.
        Command::RegenerateInvite { id } => {
            let mut u = tx.user(id)?.ok_or(AppError::NotFound)?;
            u.invite_nonce = fresh_nonce()?.to_vec();
            u.invite_token = tx.invite_token(u.id, &u.invite_nonce)?;
            u.invite_expires_at = now + rules.invite_ttl_ms;
            u.invite_expired = false;
            u.token_activated = false;
            u.session_started_at = None;
            u.session_expires_at = None;
            u.session_expired = false;
            u.session_ended_at = None;
            updated(tx, u, Cause::InviteRegenerated)
        }
        Command::Activate { token } => {
            let mut u = tx.user_by_token(&token)?.ok_or(AppError::Unauthorized)?;
            // Activating again (a reload of the session page) is harmless while the session
            // runs: the same session, no new event, the clock keeps its stored end.
            if u.token_activated {
                if u.session_is_over(now) {
                    return Err(AppError::Gone("this session has ended"));
                }
                return Ok(Outcome::Unchanged(Box::new(u)));
            }
            if u.invite_expires_at <= now {
                return Err(AppError::Gone("this invite link has expired"));
            }
            u.token_activated = true;
            u.session_started_at = Some(now);
            u.session_expires_at = Some(now + rules.session_ms);
            updated(tx, u, Cause::Activated)
        }
        Command::Answer { token } => {
            let mut u = tx.user_by_token(&token)?.ok_or(AppError::Unauthorized)?;
            if !u.token_activated {
                return Err(AppError::Unauthorized);
            }
            if u.session_is_over(now) {
                return Err(AppError::Gone("this session has ended"));
            }
            // Capped at the total: a double click on the last answer is not an error.
            u.questions_answered = (u.questions_answered + 1).min(u.questions_total);
            note_completion(&mut u, now);
            updated(tx, u, Cause::Answered)
        }
        Command::ExpireSession { id } => {
            let Some(mut u) = tx.user(id)? else {
                return Ok(Outcome::Nothing);
            };
            if u.session_expired || !u.token_activated {
                return Ok(Outcome::Nothing);
            }
            if let Some(expires_at) = u.session_expires_at.filter(|e| *e > now) {
                return Ok(Outcome::NotYet { expires_at });
            }
            u.session_expired = true;
            // A session completed by answers keeps the time it ended; one that ran out ended
            // at its stored expiry, not whenever this command ran.
            if u.session_ended_at.is_none() {
                u.session_ended_at = u.session_expires_at.or(Some(now));
            }
            updated(tx, u, Cause::SessionExpired)
        }
        Command::ExpireInvite { id } => {
            let Some(mut u) = tx.user(id)? else {
                return Ok(Outcome::Nothing);
            };
            if u.token_activated || u.invite_expired {
                return Ok(Outcome::Nothing);
            }
            if u.invite_expires_at > now {
                return Ok(Outcome::NotYet {
                    expires_at: u.invite_expires_at,
                });
            }
            u.invite_expired = true;
            updated(tx, u, Cause::InviteExpired)
        }
        Command::SetupFirstAdmin {
            email,
            password_hash,
        } => {
            let id = tx
                .create_first_admin(&email, &password_hash, now)?
                .ok_or(AppError::Conflict("an admin already exists"))?;
            log::info!("first admin created: {email}");
            sign_in(tx, rules, now, id, email)
        }
        Command::CreateAdminSession { admin_id, email } => sign_in(tx, rules, now, admin_id, email),
        // Ending a session that is already gone is still an event: its streams (if any, on any
        // node) must close all the same.
        Command::EndAdminSession { token } => {
            tx.delete_admin_session(&token)?;
            Ok(Outcome::Changed(Event::AdminSessionEnded(token)))
        }
        Command::FindAdmin { email } => Ok(Outcome::Admin(tx.find_admin(&email)?)),
        Command::FindAdminById { id } => Ok(Outcome::Admin(tx.admin_by_id(id)?.map(
            |(a, password_hash)| AdminAccount {
                id: a.id,
                email: a.email,
                password_hash,
            },
        ))),
        Command::ListAdmins => Ok(Outcome::Admins(tx.admins()?)),
        Command::CreateAdmin {
            email,
            password_hash,
        } => match tx.insert_admin(&email, &password_hash, now) {
            Ok(id) => Ok(Outcome::AdminCreated(AdminInfo {
                id,
                email,
                created_at: now,
                last_sign_in_at: None,
            })),
            Err(DbError::Conflict) => Err(AppError::Conflict(
                "an admin with this email already exists",
            )),
            Err(e) => Err(e.into()),
        },
        Command::DeleteAdmin { email } => {
            let id = tx.find_admin(&email)?.ok_or(AppError::NotFound)?.id;
            // Checked in the deleting transaction (writes are serialised), so two admins
            // removing each other at once cannot leave none.
            if tx.admins()?.len() <= 1 {
                return Err(AppError::Conflict("the last admin cannot be removed"));
            }
            let ended = tx.end_admin_sessions(id, None)?;
            tx.delete_admin(id)?;
            Ok(Outcome::Changed(Event::AdminSessionsEnded(ended)))
        }
        Command::ChangeAdminPassword {
            id,
            password_hash,
            keep,
        } => {
            if !tx.set_admin_password(id, &password_hash)? {
                return Err(AppError::NotFound);
            }
            let ended = tx.end_admin_sessions(id, Some(&keep))?;
            Ok(Outcome::Changed(Event::AdminSessionsEnded(ended)))
        }
        Command::LookupAdminSession { tokens } => {
            for token in tokens {
                if let Some(s) = tx.admin_session(&token, now)? {
                    return Ok(Outcome::AdminSession(Some(s)));
                }
            }
            Ok(Outcome::AdminSession(None))
        }
        Command::AdminSessionsGone { tokens, always } => {
            if !tx.changed_by_others()? && !always {
                return Ok(Outcome::SessionsGone(Vec::new()));
            }
            // One read of every valid session, not one per digest: the list may be long.
            let valid: std::collections::HashSet<Digest32> = tx
                .admin_sessions(now)?
                .into_iter()
                .map(|s| s.token_digest)
                .collect();
            Ok(Outcome::SessionsGone(
                tokens.into_iter().filter(|t| !valid.contains(t)).collect(),
            ))
        }
        Command::AdminSessions => Ok(Outcome::AdminSessions(tx.admin_sessions(now)?)),
        Command::ReadEvents { from, to } => Ok(Outcome::Events(tx.events_between(from, to)?)),
        Command::Maintain => {
            let events = tx.trim_events(RETENTION, now)?;
            let requests = tx.trim_agent_requests(now - AGENT_REQUEST_MEMORY_MS)?;
            let sessions = tx.prune_admin_sessions(now)?;
            if events + requests + sessions > 0 {
                log::debug!(
                    "housekeeping: {events} old events, {requests} agent request ids, {sessions} expired admin sessions removed"
                );
            }
            let head = tx.log_head()?.head;
            let stored_from = tx.oldest_event()?.unwrap_or(head + 1);
            Ok(Outcome::Trimmed { stored_from })
        }
        Command::OidcAttemptUsed { attempt } => {
            Ok(Outcome::AttemptUsed(tx.oidc_attempt_used(&attempt)?))
        }
        Command::OidcSignIn {
            attempt,
            attempt_expires_at,
            email,
            may_create,
        } => {
            // Spent first: a callback replayed while this one runs finds it used.
            if !tx.use_oidc_attempt(&attempt, attempt_expires_at, now)? {
                return Ok(Outcome::Refused(OIDC_ATTEMPT_USED));
            }
            let id = match tx.find_admin(&email)? {
                Some(admin) => admin.id,
                // No password: only the provider signs this account in (the dummy hash
                // matches no password, at the cost of a real check).
                None if may_create => {
                    let id = tx.insert_admin(&email, auth::DUMMY_PASSWORD_HASH, now)?;
                    log::info!("admin {email} created on first sign-in through OpenID Connect");
                    id
                }
                None => return Ok(Outcome::Refused(OIDC_NOT_ALLOWED)),
            };
            sign_in(tx, rules, now, id, email)
        }
    }
}

/// Number `change`, build its messages at `now`, and store it in the log, all in the
/// transaction that stored the change itself. The messages are built here, once, and kept
/// verbatim: every stream, replay and node sends these bytes. The row is stored with the event
/// (`store::row::encode`) so another node can apply it without reading the users table.
fn log(tx: &mut dyn Tx, rules: &Rules, now: i64, change: UserChange) -> AppResult<Outcome> {
    let seq = tx.next_seq()?;
    let admin_message = messages::admin(&change, seq, &rules.public_url, now);
    let agent_message = messages::agent(&change, seq, &rules.public_url, now);
    let cause = match &change {
        UserChange::Updated(_, c) => Some(c.label()),
        _ => None,
    };
    tx.append_event(&StoredEvent {
        seq,
        at_ms: now,
        user_id: change.user_id(),
        kind: change.kind(),
        cause,
        admin_message: admin_message.clone(),
        agent_message: agent_message.clone(),
        user_row: change.user().map(crate::store::row::encode),
    })?;
    Ok(Outcome::Changed(Event::User(Box::new(Logged {
        seq,
        at_ms: now,
        change,
        admin_message,
        agent_message,
    }))))
}

/// Record when the interview ended by answers: set when the last question is answered, cleared
/// if an admin raises the total again (a recorded expiry keeps its time).
fn note_completion(u: &mut User, now: i64) {
    if u.is_complete() {
        u.session_ended_at.get_or_insert(now);
    } else if !u.session_expired {
        u.session_ended_at = None;
    }
}

/// Apply a PATCH to the row read in this transaction; 422 when the answered count would pass
/// the total (checked after both fields are applied, so a PATCH may raise both at once).
fn apply_patch(u: &mut User, p: UserPatch) -> AppResult<()> {
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
    Ok(())
}

/// Write a changed row that was read in this transaction (so it exists).
fn store(tx: &mut dyn Tx, u: &User) -> AppResult<()> {
    if tx.write_user(u)? {
        Ok(())
    } else {
        Err(AppError::NotFound)
    }
}

/// A new admin session for `admin_id`: a fresh random token (the cookie value, returned once and
/// stored only as its digest), valid for `Rules::admin_session_ms`.
fn sign_in(
    tx: &mut dyn Tx,
    rules: &Rules,
    now: i64,
    admin_id: i64,
    email: String,
) -> AppResult<Outcome> {
    let token = auth::new_token().map_err(|e| {
        log::error!("OS randomness failed: {e}");
        AppError::Storage
    })?;
    let session = AdminSession {
        token_digest: auth::digest(&token),
        admin_id,
        email,
        expires_at: now + rules.admin_session_ms,
    };
    tx.create_admin_session(admin_id, &session.token_digest, session.expires_at, now)?;
    tx.note_admin_sign_in(admin_id, now)?;
    Ok(Outcome::SignedIn { session, token })
}

/// The random part of a new invite token (the token is derived from it with the server key).
/// No randomness from the OS means no link can be made safely: 500, nothing stored.
fn fresh_nonce() -> AppResult<[u8; 16]> {
    auth::random_bytes::<16>().map_err(|e| {
        log::error!("OS randomness failed: {e}");
        AppError::Storage
    })
}
