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
//! (invitees and sessions), `admin` (sign-in, setup, sign-out), `admins` (the accounts of
//! admins: list, add, remove, change password), `limiter` (failed sign-ins and agent
//! handshakes, counted on arrival), `device` (the signed device cookie), `oidc`.
//!
//! The rules every `/api/*` answer follows whatever the route — no caching, no sniffing, the
//! cross-origin write rule — are applied by the reactor around `handle`/`finish`
//! (`reactor/requests.rs`), so no route can forget them.

use crate::app::{messages, App, AppError, Command, Outcome};
use crate::http::{Method, Request, Response};
use crate::hub::Hub;
use crate::metrics::Metrics;
use crate::worker;
use std::net::IpAddr;

pub mod access;
pub mod admin;
pub mod admins;
pub mod device;
pub mod input;
pub mod limiter;
pub mod oidc;
pub mod users;

pub use limiter::LoginLimiter;

/// Work a request needs done off the handler.
#[derive(Debug)]
pub enum Job {
    /// A storage transaction.
    Store(Command),
    /// A password hash or check, on the hashing thread.
    Hash(worker::Job),
    /// A call to the identity provider, on the OIDC thread.
    Oidc(crate::oidc::Job),
    /// A storage transaction only a cluster's store runs.
    Cluster(crate::app::ClusterCommand),
}

/// What a job gave back.
#[derive(Debug)]
pub enum Done {
    Stored(Result<Outcome, AppError>),
    Hashed(worker::Outcome),
    Oidc(crate::oidc::Outcome),
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
    /// The request's admin session was looked up in storage; then it is handled again.
    Authenticate(Box<Request>),
    /// A stream handshake's admin session was looked up; the reactor completes the upgrade.
    Handshake(Box<Request>),
    /// `POST /api/users` → 201 and the user.
    UserCreated,
    /// `PATCH /api/users/{id}` → 200 and the user.
    UserChanged,
    /// `POST /api/users/{id}/invite` → 200 and the user with the new link.
    InviteRegenerated(Audit),
    /// `DELETE /api/users/{id}` → 204.
    UserDeleted(Audit),
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
    /// A sign-in through the identity provider, between its steps.
    Oidc(oidc::Step),
}

/// Who did an audited change, for the log line written when it is stored.
#[derive(Debug, Clone)]
pub struct Audit {
    pub admin: String,
    pub ip: IpAddr,
    pub user_id: i64,
}

/// Per-request facts and state the handlers use.
pub struct Ctx<'a> {
    pub app: &'a mut App,
    /// Who listens to what (for presence).
    pub hub: &'a Hub,
    /// In a cluster: the other nodes' presence, merged (this node's hub knows only its own).
    pub others_presence: Option<&'a crate::hub::Presence>,
    /// Wall-clock Unix ms of this request.
    pub now: i64,
    /// The request's admin session was just looked up in storage: a cache miss now means no.
    pub looked_up: bool,
    /// The client's canonical address (behind a trusted proxy, the forwarded one).
    pub client_ip: IpAddr,
    /// Cookies get `Secure` when the public URL is `https://`.
    pub secure_cookies: bool,
    pub limiter: &'a mut LoginLimiter,
    /// Signs and opens device cookies.
    pub device: &'a device::DeviceKeys,
    pub metrics: &'a mut Metrics,
    /// Sign-in through the identity provider, when configured.
    pub oidc: Option<&'a crate::oidc::Oidc>,
    /// `--password-login` (on unless turned off).
    pub password_login: bool,
    /// Cluster mode: this node's view may lag a write another node just committed.
    pub cluster: bool,
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
        "/api/admin/auth" if m == Method::Get => Reply::Now(oidc::auth(ctx)),
        "/api/admin/oidc/login" if m == Method::Get => Reply::Now(oidc::login(ctx)),
        "/api/admin/oidc/callback" if m == Method::Get => oidc::callback(ctx, req),
        "/api/admin/auth" | "/api/admin/oidc/login" | "/api/admin/oidc/callback" => {
            Reply::Now(not_allowed("GET"))
        }
        "/api/users" => match m {
            Method::Get => users::list(ctx, req),
            Method::Post => users::create(ctx, req),
            _ => Reply::Now(not_allowed("GET, POST")),
        },
        "/api/presence" if m == Method::Get => presence(ctx, req),
        "/api/session/activate" if m == Method::Post => users::activate(req),
        "/api/session/answer" if m == Method::Post => users::answer(ctx, req),
        "/api/admin/setup"
        | "/api/admin/login"
        | "/api/admin/logout"
        | "/api/session/activate"
        | "/api/session/answer" => Reply::Now(not_allowed("POST")),
        "/api/presence" => Reply::Now(not_allowed("GET")),
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
        (Pending::Authenticate(req), Done::Stored(r)) => access::looked_up(ctx, &req, r),
        (Pending::LoginFound(a), Done::Stored(r)) => admin::check_password(ctx, a, r),
        (Pending::LoginChecked(a), Done::Hashed(o)) => admin::password_checked(ctx, a, o),
        (Pending::SetupHashed { email }, Done::Hashed(o)) => admin::setup_hashed(email, o),
        (Pending::SignedIn { first_admin }, Done::Stored(r)) => {
            Reply::Now(admin::signed_in(ctx, first_admin, r))
        }
        (Pending::SignedOut, Done::Stored(r)) => Reply::Now(admin::signed_out(ctx, r)),
        (Pending::Admins(step), done) => admins::finish(ctx, step, done),
        (Pending::Oidc(step), done) => oidc::finish(ctx, step, done),
        (p, Done::Stored(r)) => Reply::Now(users::finish(ctx, p, r)),
        (p, done) => {
            log::error!("a job answer for {p:?} ({done:?})");
            Reply::Now(Response::error(500, "internal mix-up of worker answers"))
        }
    }
}

/// `GET /api/presence`: who is here, as in the `presence` frame.
fn presence(ctx: &mut Ctx, req: &Request) -> Reply {
    if let Err(reply) = access::require_admin(ctx, req) {
        return reply;
    }
    let body = messages::presence(&ctx.hub.presence_with(ctx.others_presence), false);
    Reply::Now(Response::new(200).body("application/json", body))
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
        AppError::Busy => Response::error(
            503,
            "storage is busy; nothing changed, try again in a moment",
        )
        .header("Retry-After", "1"),
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
