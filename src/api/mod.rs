//! The `/api/*` routes: authenticate, validate the input, ask the application, answer.
//!
//! A handler never waits. It answers at once ([`Reply::Now`]) or returns the [`Job`] it needs
//! done — a storage command, or a password hash for the hashing thread — with a [`Pending`]
//! note of how to finish ([`Reply::Later`]). The reactor runs the job, applies any stored
//! event (so the broadcast goes out before the answer), then calls [`finish`] with what it got
//! back; `finish` may ask for another job (sign-in reads the account, checks the password,
//! then stores a session).
//!
//! Every outcome maps to exactly one status ([`app_error`] for the failures). Modules:
//! `input` (body and field rules), `access` (who may call what, streams included), `users`
//! (invitees and sessions), `admin` (sign-in, setup, sign-out, the failure limiter), `admins`
//! (the accounts of admins: list, add, remove, change password).

use crate::app::{App, AppError, Command, Outcome};
use crate::http::{Method, Request, Response};
use crate::metrics::Metrics;
use crate::store::Sqlite;
use crate::worker;
use std::net::IpAddr;

pub mod access;
pub mod admin;
pub mod admins;
pub mod input;
pub mod users;

pub use admin::LoginLimiter;

/// Work a request needs done off the handler.
#[derive(Debug)]
pub enum Job {
    /// A storage transaction.
    Store(Command),
    /// A password hash or check, on the hashing thread.
    Hash(worker::Job),
}

/// What a job gave back.
#[derive(Debug)]
pub enum Done {
    Stored(Result<Outcome, AppError>),
    Hashed(worker::Outcome),
}

/// A request answered now, or after a job. (A short-lived value, moved once or twice per
/// request; boxing its large variant would only add an allocation.)
#[allow(clippy::large_enum_variant)]
pub enum Reply {
    Now(Response),
    Later(Job, Pending),
}

/// How to finish a request once its job is done.
#[derive(Debug)]
pub enum Pending {
    /// `POST /api/users` → 201 and the user.
    UserCreated,
    /// `PATCH /api/users/{id}`, `POST /api/users/{id}/invite` → 200 and the user.
    UserChanged,
    /// `DELETE /api/users/{id}` → 204.
    UserDeleted,
    /// `POST /api/session/activate` → the session, and the token as its cookie.
    Activated { token: String },
    /// `POST /api/session/answer` → the counts.
    Answered,
    /// Sign-in, step 1: the account was looked up; next, check the password.
    LoginFound(admin::Attempt),
    /// Sign-in, step 2: the password was checked; next, store a session (or refuse).
    LoginChecked(admin::Attempt),
    /// Setup, step 1: the password was hashed; next, create the first admin with this email.
    SetupHashed { email: String },
    /// Sign-in or setup, last step: the session was stored; set its cookie.
    SignedIn { first_admin: bool },
    /// `POST /api/admin/logout` → 204 and the cookie cleared.
    SignedOut,
    /// The admin-account routes, at this step of their chain.
    Admins(admins::Step),
}

/// Per-request facts and state the handlers use.
pub struct Ctx<'a> {
    pub app: &'a mut App,
    /// For admin sessions the view has not seen yet (the CLI mints tokens).
    pub store: &'a mut Sqlite,
    /// Wall-clock Unix ms of this request.
    pub now: i64,
    pub client_ip: IpAddr,
    /// Cookies get `Secure` when the public URL is `https://`.
    pub secure_cookies: bool,
    pub limiter: &'a mut LoginLimiter,
    pub metrics: &'a mut Metrics,
}

/// Route one `/api/*` request.
pub fn handle(ctx: &mut Ctx, req: &Request) -> Reply {
    if let Some(reply) = admins::handle(ctx, req) {
        return reply;
    }
    let path = req.path.as_str();
    let m = req.method();
    match path {
        "/api/admin/setup" if m == Method::Post => admin::setup(ctx, req),
        "/api/admin/login" if m == Method::Post => admin::login(ctx, req),
        "/api/admin/logout" if m == Method::Post => admin::logout(ctx, req),
        "/api/users" => match m {
            Method::Get => Reply::Now(users::list(ctx, req)),
            Method::Post => users::create(ctx, req),
            _ => Reply::Now(not_allowed("GET, POST")),
        },
        "/api/session/activate" if m == Method::Post => users::activate(req),
        "/api/session/answer" if m == Method::Post => users::answer(req),
        "/api/admin/setup"
        | "/api/admin/login"
        | "/api/admin/logout"
        | "/api/session/activate"
        | "/api/session/answer" => Reply::Now(not_allowed("POST")),
        _ => match users::route(path) {
            Some((id, false)) => match m {
                Method::Patch => users::patch(ctx, req, id),
                Method::Delete => users::delete(ctx, req, id),
                _ => Reply::Now(not_allowed("PATCH, DELETE")),
            },
            Some((id, true)) if m == Method::Post => users::regenerate_invite(ctx, req, id),
            Some((_, true)) => Reply::Now(not_allowed("POST")),
            None => Reply::Now(Response::error(404, "no such API route")),
        },
    }
}

/// Finish a request whose job is done.
pub fn finish(ctx: &mut Ctx, pending: Pending, done: Done) -> Reply {
    match (pending, done) {
        (Pending::LoginFound(a), Done::Stored(r)) => admin::check_password(a, r),
        (Pending::LoginChecked(a), Done::Hashed(o)) => admin::password_checked(ctx, a, o),
        (Pending::SetupHashed { email }, Done::Hashed(o)) => admin::setup_hashed(email, o),
        (Pending::SignedIn { first_admin }, Done::Stored(r)) => {
            Reply::Now(admin::signed_in(ctx, first_admin, r))
        }
        (Pending::SignedOut, Done::Stored(r)) => Reply::Now(admin::signed_out(ctx, r)),
        (Pending::Admins(step), done) => admins::finish(ctx, step, done),
        (p, Done::Stored(r)) => Reply::Now(users::finish(ctx, p, r)),
        (p, Done::Hashed(o)) => {
            log::error!("a hashing answer for {p:?} ({o:?})");
            Reply::Now(Response::error(500, "internal mix-up of worker answers"))
        }
    }
}

pub(crate) fn not_allowed(allow: &str) -> Response {
    Response::error(405, "method not allowed").header("Allow", allow)
}

/// The one status of each application failure.
pub fn app_error(e: AppError) -> Response {
    match e {
        AppError::NotFound => Response::error(404, "no such user"),
        AppError::Conflict(msg) => Response::error(409, msg),
        AppError::Invalid(msg) => Response::error(422, &msg),
        AppError::Unauthorized => Response::error(401, "unknown or replaced link"),
        AppError::Gone(msg) => Response::error(410, msg),
        AppError::Storage => {
            Response::error(500, "the change could not be stored; nothing changed")
        }
    }
}

/// Cookie `name=value` with the attributes every cookie of ours carries.
pub fn cookie(name: &str, value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/{secure}")
}

/// The `Set-Cookie` value that deletes cookie `name`.
pub fn clear_cookie(name: &str, secure: bool) -> String {
    format!("{}; Max-Age=0", cookie(name, "", secure))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies() {
        assert_eq!(
            cookie("admin_session", "t", false),
            "admin_session=t; HttpOnly; SameSite=Strict; Path=/"
        );
        assert!(cookie("a", "t", true).ends_with("; Secure"));
        assert!(clear_cookie("a", false).ends_with("Max-Age=0"));
    }
}
