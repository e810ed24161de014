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
use crate::store::{AdminAccount, AdminInfo, DbError, NewUser, Tx};

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
    /// Read: the account with this id (its password hash for a password change).
    FindAdminById {
        id: i64,
    },
    /// Read: who is signed in with the admin session of this token digest, until when.
    AdminMe {
        token: Digest32,
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
    /// `FindAdmin`'s and `FindAdminById`'s answer.
    Admin(Option<AdminAccount>),
    /// `AdminMe`'s answer.
    Me {
        email: String,
        session_expires_at: i64,
    },
    /// `ListAdmins`' answer.
    Admins(Vec<AdminInfo>),
    /// `CreateAdmin`'s answer.
    AdminCreated(AdminInfo),
}

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
        Command::FindAdminById { id } => Ok(Outcome::Admin(tx.admin_by_id(id)?.map(
            |(a, password_hash)| AdminAccount {
                id: a.id,
                password_hash,
            },
        ))),
        Command::AdminMe { token } => {
            let (id, session_expires_at) = tx
                .admin_session(&token, now)?
                .ok_or(AppError::Unauthorized)?;
            let (a, _) = tx.admin_by_id(id)?.ok_or(AppError::Unauthorized)?;
            Ok(Outcome::Me {
                email: a.email,
                session_expires_at,
            })
        }
        Command::ListAdmins => Ok(Outcome::Admins(tx.admins()?)),
        Command::CreateAdmin {
            email,
            password_hash,
        } => match tx.insert_admin(&email, &password_hash, now) {
            Ok(a) => Ok(Outcome::AdminCreated(a)),
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
    tx.note_admin_sign_in(admin_id, now)?;
    Ok(Outcome::SignedIn { admin_id, token })
}

fn fresh_nonce() -> AppResult<[u8; 16]> {
    auth::random_bytes::<16>().map_err(|e| {
        log::error!("OS randomness failed: {e}");
        AppError::Storage
    })
}
