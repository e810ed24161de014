//! Admin accounts (contract v2): who am I, the list of admins, adding and removing one, and
//! changing one's own password. All of them need a signed-in admin.
//!
//! Like sign-in, the routes that touch passwords are chains of jobs that never block the
//! reactor:
//! * `POST /api/admins`: hash the new password (hashing thread) → store the account.
//! * `POST /api/admin/password`: read the account (storage) → check the current password
//!   (hashing thread) → hash the new one → store it and end the admin's other sessions.
//!
//! Ending sessions (removing an admin, changing a password) is a stored event,
//! [`Event::AdminSessionsEnded`](crate::app::Event), so their streams close (1008) when it is
//! applied, exactly like a logout. Removing the last admin is refused (409) inside the deleting
//! transaction, so two admins removing each other at once cannot leave none.
//!
//! Statuses (API.md "HTTP", v2): `GET /api/admin/me` 200; `GET /api/admins` 200; `POST
//! /api/admins` 201, 409 when the email exists, 422 for a weak password; `DELETE
//! /api/admins/{email}` 204, 404, 409 for the last admin; `POST /api/admin/password` 204, 403
//! for a wrong current password, 422 for a weak new one. Every route: 401 without a valid
//! session, 503 when storage or the pool cannot take the work now.
//!
//! An account on the wire is its email and times only: never its id or password hash. The
//! audit lines name the acting admin by id and the client address.

use super::access::require_admin;
use super::input::{
    email_field, json_object, required_string, try_resp, EMAIL_MAX, PASSWORD_MAX_BYTES,
};
use super::{app_error, Ctx, Done, Job, Reply};
use crate::app::{AppError, Command, Outcome};
use crate::auth::{self, Digest32};
use crate::clock::rfc3339;
use crate::http::{percent_decode, Method, Request, Response};
use crate::store::AdminInfo;
use crate::worker;
use serde_json::{json, Value};

/// Where an admin-account request is in its chain of jobs. Each step carries what the next one
/// needs, so nothing about the request is kept anywhere else while a job runs.
#[derive(Debug)]
pub enum Step {
    /// `GET /api/admins`: the accounts were read.
    Listed,
    /// `POST /api/admins`: the password was hashed; next, store the account.
    Hashed { email: String, by: i64 },
    /// `POST /api/admins`: stored (or refused).
    Created { by: i64 },
    /// `DELETE /api/admins/{email}`: deleted (or refused).
    Deleted { email: String, by: i64 },
    /// Password change, step 1: the account was read; next, check the current password.
    PasswordFound(Change),
    /// Step 2: the current password was checked; next, hash the new one.
    PasswordChecked(Change),
    /// Step 3: the new password was hashed; next, store it.
    PasswordHashed(Change),
    /// Step 4: stored; the other sessions ended.
    PasswordStored { id: i64 },
}

/// A password change in progress. Its `Debug` leaves both passwords out: the catch-all arm of
/// `finish` logs a step with `{:?}`, and logs never carry a secret.
pub struct Change {
    /// The admin changing its own password (from its session, never from the body).
    id: i64,
    /// Taken out (emptied) once it has been sent to be checked.
    current: String,
    /// Taken out once it has been sent to be hashed.
    new: String,
    /// The session making the change stays signed in.
    keep: Digest32,
}

impl std::fmt::Debug for Change {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Change")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

/// Route the admin-account requests; `None` for any other path (the caller routes on). A known
/// path with another method gets 405 with `Allow` (RFC 9110 §15.5.6).
pub fn handle(ctx: &mut Ctx, req: &Request) -> Option<Reply> {
    let m = req.method();
    let reply = match req.path.as_str() {
        "/api/admin/me" if m == Method::Get => me(ctx, req),
        "/api/admin/me" => Reply::Now(super::not_allowed("GET")),
        "/api/admins" => match m {
            Method::Get => list(ctx, req),
            Method::Post => create(ctx, req),
            _ => Reply::Now(super::not_allowed("GET, POST")),
        },
        "/api/admin/password" if m == Method::Post => change_password(ctx, req),
        "/api/admin/password" => Reply::Now(super::not_allowed("POST")),
        path => {
            let email = path.strip_prefix("/api/admins/")?;
            if m != Method::Delete {
                return Some(Reply::Now(super::not_allowed("DELETE")));
            }
            delete(ctx, req, email)
        }
    };
    Some(reply)
}

/// `GET /api/admin/me`: answered from the view's session cache, which `require_admin` has just
/// filled (no storage read). `None` here means the session expired between the two calls.
fn me(ctx: &mut Ctx, req: &Request) -> Reply {
    let me = try_resp!(require_admin(ctx, req));
    match ctx.app.cached_admin_session(&me.digest, ctx.now) {
        Some(s) => Reply::Now(Response::new(200).json(&json!({
            "email": s.email,
            "session_expires_at": rfc3339(s.expires_at),
        }))),
        None => Reply::Now(Response::error(401, "authentication required")),
    }
}

/// `GET /api/admins`: every account, read from storage (accounts are not in the view).
fn list(ctx: &mut Ctx, req: &Request) -> Reply {
    try_resp!(require_admin(ctx, req));
    Reply::Later(Job::Store(Command::ListAdmins), step(Step::Listed))
}

/// `POST /api/admins`: check the input and the password rules, then hash (pool) and store.
/// `by` is the acting admin, for the audit line.
fn create(ctx: &mut Ctx, req: &Request) -> Reply {
    let by = try_resp!(require_admin(ctx, req)).admin_id;
    let fields = json_object(req).and_then(|body| {
        let email = required_string(&body, "email").and_then(email_field)?;
        let password = required_string(&body, "password")?;
        password_rules(&password, &email)?;
        Ok((email, password))
    });
    let (email, password) = try_resp!(fields.map_err(Reply::Now));
    Reply::Later(
        Job::Hash(worker::Job::Hash { password }),
        step(Step::Hashed { email, by }),
    )
}

/// `DELETE /api/admins/{email}`: the email is percent-decoded from the path. One that cannot
/// be decoded, or is too long to be an address, names no admin (404).
fn delete(ctx: &mut Ctx, req: &Request, raw: &str) -> Reply {
    let by = try_resp!(require_admin(ctx, req)).admin_id;
    // A path keeps `+` as is (only a query turns it into a space).
    let email = percent_decode(&raw.replace('+', "%2B")).filter(|e| e.len() <= EMAIL_MAX);
    let Some(email) = email else {
        return Reply::Now(Response::error(404, "no such admin"));
    };
    Reply::Later(
        Job::Store(Command::DeleteAdmin {
            email: email.clone(),
        }),
        step(Step::Deleted { email, by }),
    )
}

/// `POST /api/admin/password`: the current password must be right (checked on the pool, like
/// a sign-in); the new one must pass the rules. The session making the change is kept; every
/// other session of the admin ends (a stolen cookie stops working).
fn change_password(ctx: &mut Ctx, req: &Request) -> Reply {
    let me = try_resp!(require_admin(ctx, req));
    let (id, keep) = (me.admin_id, me.digest);
    let fields = json_object(req).and_then(|body| {
        let current = required_string(&body, "current_password")?;
        let new = required_string(&body, "new_password")?;
        // No stored password is that long, so it is wrong; saying so costs no hash.
        if current.len() > PASSWORD_MAX_BYTES {
            return Err(Response::error(403, "the current password is wrong"));
        }
        password_rules(&new, &me.email)?;
        Ok((current, new))
    });
    let (current, new) = try_resp!(fields.map_err(Reply::Now));
    Reply::Later(
        Job::Store(Command::FindAdminById { id }),
        step(Step::PasswordFound(Change {
            id,
            current,
            new,
            keep,
        })),
    )
}

/// The contract's password rule (422 with the reason), shared with setup and the CLI.
fn password_rules(password: &str, email: &str) -> Result<(), Response> {
    if password.len() > PASSWORD_MAX_BYTES {
        return Err(Response::error(422, "the password is too long"));
    }
    auth::check_password_rules(password, &[email])
        .map_err(|why| Response::error(422, &format!("password refused: {why}")))
}

/// The pending note of a step of these routes.
fn step(s: Step) -> super::Pending {
    super::Pending::Admins(s)
}

/// Finish or continue a request once its job is done. A (step, answer) pair that does not
/// belong together is a bug in the chain, answered 500 and logged, never guessed at.
pub fn finish(ctx: &mut Ctx, s: Step, done: Done) -> Reply {
    match (s, done) {
        (Step::Listed, Done::Stored(r)) => Reply::Now(match r {
            Ok(Outcome::Admins(list)) => {
                Response::new(200).json(&list.iter().map(admin_json).collect::<Vec<_>>())
            }
            other => mix_up("list", other),
        }),
        (Step::Hashed { email, by }, Done::Hashed(o)) => match hashed(o) {
            Ok(password_hash) => Reply::Later(
                Job::Store(Command::CreateAdmin {
                    email,
                    password_hash,
                }),
                step(Step::Created { by }),
            ),
            Err(resp) => Reply::Now(resp),
        },
        (Step::Created { by }, Done::Stored(r)) => Reply::Now(match r {
            Ok(Outcome::AdminCreated(a)) => {
                log::info!(
                    "admin {} created by admin #{by} from {}",
                    a.email,
                    ctx.client_ip
                );
                Response::new(201).json(&admin_json(&a))
            }
            Err(e) => app_error(e),
            other => mix_up("create", other),
        }),
        (Step::Deleted { email, by }, Done::Stored(r)) => Reply::Now(match r {
            Ok(Outcome::Changed(_)) => {
                log::info!(
                    "admin {email} removed by admin #{by} from {}",
                    ctx.client_ip
                );
                Response::new(204)
            }
            Err(AppError::NotFound) => Response::error(404, "no such admin"),
            Err(e) => app_error(e),
            other => mix_up("delete", other),
        }),
        (Step::PasswordFound(mut c), Done::Stored(r)) => match r {
            Ok(Outcome::Admin(Some(account))) => {
                let password = std::mem::take(&mut c.current);
                Reply::Later(
                    Job::Hash(worker::Job::Verify {
                        password,
                        stored: account.password_hash,
                    }),
                    step(Step::PasswordChecked(c)),
                )
            }
            // The account went away while its session was still in use: the session is as good
            // as ended, so 401 (sign in again), not 404.
            Ok(Outcome::Admin(None)) => Reply::Now(Response::error(401, "authentication required")),
            other => Reply::Now(mix_up("password look-up", other)),
        },
        // Wrong current password: 403, not 401 — the session is fine, the proof is not. It is
        // not counted by the sign-in limiter: the caller is already signed in.
        (Step::PasswordChecked(mut c), Done::Hashed(o)) => {
            if !matches!(o, worker::Outcome::Verified(true)) {
                log::info!(
                    "password change refused for admin #{} from {}: wrong current password",
                    c.id,
                    ctx.client_ip
                );
                return Reply::Now(Response::error(403, "the current password is wrong"));
            }
            let password = std::mem::take(&mut c.new);
            Reply::Later(
                Job::Hash(worker::Job::Hash { password }),
                step(Step::PasswordHashed(c)),
            )
        }
        (Step::PasswordHashed(c), Done::Hashed(o)) => match hashed(o) {
            Ok(password_hash) => Reply::Later(
                Job::Store(Command::ChangeAdminPassword {
                    id: c.id,
                    password_hash,
                    keep: c.keep,
                }),
                step(Step::PasswordStored { id: c.id }),
            ),
            Err(resp) => Reply::Now(resp),
        },
        (Step::PasswordStored { id }, Done::Stored(r)) => Reply::Now(match r {
            Ok(Outcome::Changed(_)) => {
                log::info!("admin #{id} changed its password from {}", ctx.client_ip);
                Response::new(204)
            }
            Err(AppError::NotFound) => Response::error(401, "authentication required"),
            Err(e) => app_error(e),
            other => mix_up("password change", other),
        }),
        (s, d) => {
            log::error!("admin accounts: {s:?} got {d:?}");
            Reply::Now(Response::error(500, "internal mix-up of job answers"))
        }
    }
}

/// The new hash, or the 500 answer.
fn hashed(o: worker::Outcome) -> Result<String, Response> {
    match o {
        worker::Outcome::Hashed(Ok(h)) => Ok(h),
        other => {
            log::error!("password hashing failed: {other:?}");
            Err(Response::error(500, "password could not be hashed"))
        }
    }
}

/// A storage failure's one status (`app_error`), or a 500 for an answer of the wrong kind.
fn mix_up(what: &str, got: Result<Outcome, AppError>) -> Response {
    match got {
        Err(e) => app_error(e),
        Ok(o) => {
            log::error!("admin accounts ({what}): unexpected storage answer {o:?}");
            Response::error(500, "internal mix-up of storage answers")
        }
    }
}

/// An account on the wire: never its id or password hash.
fn admin_json(a: &AdminInfo) -> Value {
    json!({
        "email": a.email,
        "created_at": rfc3339(a.created_at),
        "last_sign_in_at": a.last_sign_in_at.map(rfc3339),
    })
}

#[cfg(test)]
mod tests {
    use super::Change;

    /// Logs never carry a secret: a step logged with `{:?}` shows no password.
    #[test]
    fn a_password_change_never_prints_its_passwords() {
        let change = Change {
            id: 7,
            current: "current-secret-1".into(),
            new: "new-secret-2".into(),
            keep: [0; 32],
        };
        let shown = format!("{change:?}");
        assert!(shown.contains("7"), "{shown}");
        assert!(!shown.contains("secret"), "{shown}");
    }
}
