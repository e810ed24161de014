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

use super::event::{Cause, Event, UserChange};
use super::{AppError, AppResult};
use crate::auth::{self, Digest32};
use crate::model::User;
use crate::store::{AdminAccount, NewUser, Tx};

/// Fixed rules of this deployment.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
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
/// rows are found by digest, so a plain token never reaches storage.
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
        by_agent: bool,
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
    /// Create the first admin (password already hashed) and sign it in, if there is no admin.
    SetupFirstAdmin {
        email: String,
        password_hash: String,
    },
    /// Sign an admin in: a new admin session with a token of its own.
    CreateAdminSession {
        admin_id: i64,
    },
    /// Sign out: the admin session with this token digest ends.
    EndAdminSession {
        token: Digest32,
    },
    /// Read: the account signing in with this email.
    FindAdmin {
        email: String,
    },
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

/// What a command did.
#[derive(Debug)]
pub enum Outcome {
    /// It stored a change: apply the event.
    Changed(Event),
    /// Nothing had to change; this is the user as stored (a repeated activation).
    Unchanged(Box<User>),
    /// Nothing to do (an expiry for a session that is already over, reset or gone).
    Nothing,
    /// The session's stored end is still ahead (the timer fired early): try again then.
    NotYet { expires_at: i64 },
    /// An admin signed in: the new session's token (the cookie value).
    SignedIn { admin_id: i64, token: String },
    /// `FindAdmin`'s answer.
    Admin(Option<AdminAccount>),
    /// `OidcAttemptUsed`'s answer.
    AttemptUsed(bool),
    /// Sign-in refused with this reason; the transaction commits (the attempt is spent).
    Refused(&'static str),
}

/// Why an OpenID Connect sign-in was refused after the provider vouched for the email.
pub const OIDC_ATTEMPT_USED: &str = "this sign-in was already used; start again";
pub const OIDC_NOT_ALLOWED: &str =
    "there is no admin account for this email, and its domain may not create one";

/// Run `cmd` at wall time `now` (Unix ms) against an open transaction.
pub fn execute(tx: &mut dyn Tx, rules: &Rules, now: i64, cmd: Command) -> AppResult<Outcome> {
    let changed = |u: User, cause| {
        Ok(Outcome::Changed(Event::User(UserChange::Updated(
            Box::new(u),
            cause,
        ))))
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
            Ok(Outcome::Changed(Event::User(UserChange::Added(Box::new(
                u,
            )))))
        }
        Command::UpdateUser {
            id,
            patch,
            by_agent,
        } => {
            let mut u = tx.user(id)?.ok_or(AppError::NotFound)?;
            let before = (u.questions_answered, u.questions_total);
            apply_patch(&mut u, patch)?;
            store(tx, &u)?;
            let progressed = before != (u.questions_answered, u.questions_total);
            changed(
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
            Ok(Outcome::Changed(Event::User(UserChange::Deleted(id))))
        }
        Command::RegenerateInvite { id } => {
            let mut u = tx.user(id)?.ok_or(AppError::NotFound)?;
            u.invite_nonce = fresh_nonce()?.to_vec();
            u.invite_token = tx_invite_token(tx, &u)?;
            u.invite_expires_at = now + rules.invite_ttl_ms;
            u.token_activated = false;
            u.session_started_at = None;
            u.session_expires_at = None;
            u.session_expired = false;
            store(tx, &u)?;
            changed(u, Cause::InviteRegenerated)
        }
        Command::Activate { token } => {
            let mut u = tx.user_by_token(&token)?.ok_or(AppError::Unauthorized)?;
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
            store(tx, &u)?;
            changed(u, Cause::Activated)
        }
        Command::Answer { token } => {
            let mut u = tx.user_by_token(&token)?.ok_or(AppError::Unauthorized)?;
            if !u.token_activated {
                return Err(AppError::Unauthorized);
            }
            if u.session_is_over(now) {
                return Err(AppError::Gone("this session has ended"));
            }
            u.questions_answered = (u.questions_answered + 1).min(u.questions_total);
            store(tx, &u)?;
            changed(u, Cause::Answered)
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
            store(tx, &u)?;
            changed(u, Cause::SessionExpired)
        }
        Command::SetupFirstAdmin {
            email,
            password_hash,
        } => {
            let id = tx
                .create_first_admin(&email, &password_hash, now)?
                .ok_or(AppError::Conflict("an admin already exists"))?;
            log::info!("first admin created: {email}");
            sign_in(tx, rules, now, id)
        }
        Command::CreateAdminSession { admin_id } => sign_in(tx, rules, now, admin_id),
        Command::EndAdminSession { token } => {
            tx.delete_admin_session(&token)?;
            Ok(Outcome::Changed(Event::AdminSessionEnded(token)))
        }
        Command::FindAdmin { email } => Ok(Outcome::Admin(tx.find_admin(&email)?)),
        Command::OidcAttemptUsed { attempt } => {
            Ok(Outcome::AttemptUsed(tx.oidc_attempt_used(&attempt)?))
        }
        Command::OidcSignIn {
            attempt,
            attempt_expires_at,
            email,
            may_create,
        } => {
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
            sign_in(tx, rules, now, id)
        }
    }
}

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

/// The token for `u`'s current nonce: the store derives it when it reads the row back.
fn tx_invite_token(tx: &mut dyn Tx, u: &User) -> AppResult<String> {
    tx.invite_token(u.id, &u.invite_nonce)
        .map_err(AppError::from)
}

fn sign_in(tx: &mut dyn Tx, rules: &Rules, now: i64, admin_id: i64) -> AppResult<Outcome> {
    let token = auth::new_token().map_err(|e| {
        log::error!("OS randomness failed: {e}");
        AppError::Storage
    })?;
    tx.create_admin_session(
        admin_id,
        &auth::digest(&token),
        now + rules.admin_session_ms,
        now,
    )?;
    Ok(Outcome::SignedIn { admin_id, token })
}

fn fresh_nonce() -> AppResult<[u8; 16]> {
    auth::random_bytes::<16>().map_err(|e| {
        log::error!("OS randomness failed: {e}");
        AppError::Storage
    })
}
