//! Invitees (`/api/users…`, admins only) and their sessions (`/api/session/…`, by token).
//!
//! | route | who | job | answer (API.md "HTTP") |
//! |---|---|---|---|
//! | `GET /api/users` | admin | none: the view | 200, every user, newest first |
//! | `POST /api/users` | admin | `CreateUser` | 201 user; 409 email exists (any case); 422 |
//! | `PATCH /api/users/{id}` | admin | `UpdateUser` | 200 user; 404; 422 (empty patch, answered > total) |
//! | `DELETE /api/users/{id}` | admin | `DeleteUser` | 204; 404 |
//! | `POST /api/users/{id}/invite` | admin | `RegenerateInvite` | 200 user with a new `invite_url` |
//! | `POST /api/session/activate` | invite token | `Activate` | 200 session + `session_token` cookie; 401; 410 |
//! | `POST /api/session/answer` | session token | `Answer` | 200 counts; 401; 410 |
//!
//! Rules kept here, before any job:
//! * admin routes check the session first (401), then the input (415/400/422): an anonymous
//!   caller learns nothing about which bodies would be valid;
//! * an unknown or malformed id is 404 whatever the body says (a PATCH is checked against the
//!   view first), the same answer an unknown user gets: ids are not probed by their errors. In
//!   a cluster a PATCH with a valid body for an id the view does not know goes to storage,
//!   which answers 404 itself: the user may have been added on another node a moment ago;
//! * tokens go to storage as digests only (`auth::digest`), never as sent;
//! * an invitee's token comes in the body or the `session_token` cookie; of several cookie
//!   values, the one of a known link is taken (a stale cookie from an old link must not hide
//!   the current one).
//!
//! Everything a change causes — the broadcasts, closing the page of a deleted user or a dead
//! link, starting or stopping the session clock — comes from the stored event, applied before
//! the answer is sent (`reactor/jobs.rs`); the handlers only build commands and answers.
//! Deleting a user and making a new link are audited: an info line names the admin and the
//! client address.
//!
//! Threads: every function here runs on the reactor thread and returns at once; storage work
//! is only described (`Reply::Later(Job::Store(…))`) and runs on a storage thread. All six
//! writes are broadcast writes (`Command::is_broadcast_write`), so past the broadcast backlog
//! bound the reactor answers them 503 before they reach storage (API.md "Limits").

use super::access::require_admin;
use super::access::COOKIE_VALUES_TRIED;
use super::input::{
    email_field, int_field, json_object, name_field, parse_patch, required_string, string_field,
    try_resp,
};
use super::{app_error, cookie, Audit, Ctx, Job, Pending, Reply};
use crate::app::{AppError, Command, Event, Outcome};
use crate::auth;
use crate::clock::rfc3339;
use crate::http::{Request, Response};
use crate::model::User;
use serde_json::json;

/// Questions in an interview when the admin does not say.
const DEFAULT_QUESTIONS: i64 = 10;

/// `/api/users/{id}` → (id, false); `/api/users/{id}/invite` → (id, true). An id that is not a
/// positive integer names no user: the caller answers 404 (as for any unknown id).
pub fn route(path: &str) -> Option<(i64, bool)> {
    let rest = path.strip_prefix("/api/users/")?;
    let (id, invite) = match rest.split_once('/') {
        Some((id, "invite")) => (id, true),
        Some(_) => return None,
        None => (rest, false),
    };
    // At most 18 digits always fit an i64 (19 may not), so the parse below cannot fail on a
    // digit string; 0 and anything else that is not a real id fall through to 404 later
    // (ids start at 1).
    if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Some((0, invite));
    }
    Some((id.parse().ok()?, invite))
}

/// A storage job for an admin-only route: 401 before anything else, then the command `cmd`
/// builds from the request (or its 4xx answer).
fn as_admin(
    ctx: &mut Ctx,
    req: &Request,
    cmd: impl FnOnce() -> Result<Command, Response>,
    then: Pending,
) -> Reply {
    // `cmd` runs only after the admin check, so its 4xx answers (which tell what a valid body
    // looks like) are never given to an anonymous caller.
    if let Err(reply) = require_admin(ctx, req) {
        return reply;
    }
    match cmd() {
        Ok(cmd) => Reply::Later(Job::Store(cmd), then),
        Err(resp) => Reply::Now(resp),
    }
}

/// `GET /api/users`: straight from this node's view, no storage round trip; in a cluster it
/// may lag a write on another node by the bus delay (cluster-design.md §2b).
pub fn list(ctx: &mut Ctx, req: &Request) -> Reply {
    try_resp!(require_admin(ctx, req));
    Reply::Now(Response::new(200).json(&ctx.app.list(ctx.now)))
}

/// `POST /api/users`. `questions_total` defaults to `DEFAULT_QUESTIONS`; the email's
/// uniqueness (any case) is storage's to check, as a 409, since another request or node may
/// add the same address concurrently.
pub fn create(ctx: &mut Ctx, req: &Request) -> Reply {
    as_admin(
        ctx,
        req,
        || {
            let body = json_object(req)?;
            Ok(Command::CreateUser {
                first_name: required_string(&body, "first_name")
                    .and_then(|v| name_field(v, "first_name"))?,
                last_name: required_string(&body, "last_name")
                    .and_then(|v| name_field(v, "last_name"))?,
                email: required_string(&body, "email").and_then(email_field)?,
                questions_total: int_field(&body, "questions_total", 1)?
                    .unwrap_or(DEFAULT_QUESTIONS),
            })
        },
        Pending::UserCreated,
    )
}

pub fn patch(ctx: &mut Ctx, req: &Request, id: i64) -> Reply {
    if let Err(reply) = require_admin(ctx, req) {
        return reply;
    }
    // An id unknown here is 404 whatever the body says — except, in a cluster, with a valid
    // body: the user may have been added on another node a moment ago and this node's view
    // has not applied that event yet, so storage decides (404 if there is no such user).
    let known = ctx.app.user(id).is_some();
    if !known && !ctx.cluster {
        return Reply::Now(app_error(AppError::NotFound));
    }
    let patch = match json_object(req).and_then(|b| parse_patch(&b)) {
        Ok(patch) if !patch.is_empty() => patch,
        _ if !known => return Reply::Now(app_error(AppError::NotFound)),
        Err(resp) => return Reply::Now(resp),
        Ok(_) => {
            return Reply::Now(Response::error(
                422,
                "give at least one of first_name, last_name, email, questions_total, questions_answered, transcript_url, summary_url",
            ))
        }
    };
    Reply::Later(
        Job::Store(Command::UpdateUser {
            id,
            patch,
            agent_request: None,
        }),
        Pending::UserChanged,
    )
}

/// `DELETE /api/users/{id}`: an unknown id is storage's 404 (no body to check first).
pub fn delete(ctx: &mut Ctx, req: &Request, id: i64) -> Reply {
    let audit = try_resp!(audit(ctx, req, id));
    Reply::Later(
        Job::Store(Command::DeleteUser { id }),
        Pending::UserDeleted(audit),
    )
}

pub fn regenerate_invite(ctx: &mut Ctx, req: &Request, id: i64) -> Reply {
    let audit = try_resp!(audit(ctx, req, id));
    Reply::Later(
        Job::Store(Command::RegenerateInvite { id }),
        Pending::InviteRegenerated(audit),
    )
}

/// The admin of an audited change to user `id`, or the reply that ends the request.
#[allow(clippy::result_large_err)]
fn audit(ctx: &mut Ctx, req: &Request, user_id: i64) -> Result<Audit, Reply> {
    let auth = require_admin(ctx, req)?;
    Ok(Audit {
        admin: auth.email,
        ip: ctx.client_ip,
        user_id,
    })
}

/// `POST /api/session/activate`, no admin needed: the invite token is the credential.
/// Storage gets its digest; the token itself travels only in `Pending`, to be set as the
/// `session_token` cookie once storage says it activated (401 unknown, 410 expired or ended).
pub fn activate(req: &Request) -> Reply {
    let body = try_resp!(json_object(req).map_err(Reply::Now));
    let token = try_resp!(required_string(&body, "token").map_err(Reply::Now));
    Reply::Later(
        Job::Store(Command::Activate {
            token: auth::digest(&token),
        }),
        Pending::Activated { token },
    )
}

/// The token comes in the body or, once the page has activated, in the `session_token` cookie
/// (of several values sent under that name, the one of a known link).
pub fn answer(ctx: &Ctx, req: &Request) -> Reply {
    let body = try_resp!(json_object(req).map_err(Reply::Now));
    let token = match try_resp!(string_field(&body, "token").map_err(Reply::Now)) {
        Some(t) => t,
        None => {
            // No value known to the view: the first one goes to storage anyway (in a cluster
            // the view may not know a link another node just made; storage answers 401).
            let mut values = req.cookies("session_token").take(COOKIE_VALUES_TRIED);
            let first = values.next();
            let known = first
                .into_iter()
                .chain(values)
                .find(|t| ctx.app.user_by_token(t).is_some());
            match known.or(first) {
                Some(t) => t.to_string(),
                None => return Reply::Now(Response::error(401, "session token required")),
            }
        }
    };
    Reply::Later(
        Job::Store(Command::Answer {
            token: auth::digest(&token),
        }),
        Pending::Answered,
    )
}

/// The answer to a stored user command. Runs on the reactor after the command's event (if
/// any) was applied to the view, so the user in the answer is never newer than what the
/// streams were sent. Errors map through `app_error` (401, 404, 409, 410, 422, 503 busy,
/// 500).
pub fn finish(ctx: &mut Ctx, pending: Pending, result: Result<Outcome, AppError>) -> Response {
    let outcome = match result {
        Ok(o) => o,
        Err(e) => return app_error(e),
    };
    let user = match &outcome {
        Outcome::Changed(Event::User(logged)) => logged.change.user(),
        Outcome::Unchanged(u) => Some(&**u),
        _ => None,
    };
    match (pending, user) {
        (Pending::UserCreated, Some(u)) => user_answer(ctx, 201, u),
        (Pending::UserChanged, Some(u)) => user_answer(ctx, 200, u),
        (Pending::InviteRegenerated(a), Some(u)) => {
            log::info!(
                "invite regenerated: user {} by {} from {}",
                a.user_id,
                a.admin,
                a.ip
            );
            user_answer(ctx, 200, u)
        }
        (Pending::UserDeleted(a), None) => {
            log::info!("user deleted: {} by {} from {}", a.user_id, a.admin, a.ip);
            Response::new(204)
        }
        (Pending::Activated { token }, Some(u)) => Response::new(200)
            .header(
                "Set-Cookie",
                &cookie("session_token", &token, ctx.secure_cookies),
            )
            .json(&json!({
                "session_id": u.id,
                "expires_at": rfc3339(u.session_expires_at.unwrap_or(ctx.now)),
                "remaining_seconds": u.remaining_seconds(ctx.now),
            })),
        (Pending::Answered, Some(u)) => Response::new(200).json(&json!({
            "questions_answered": u.questions_answered,
            "questions_total": u.questions_total,
        })),
        (p, _) => {
            log::error!("a storage answer that does not fit {p:?}: {outcome:?}");
            Response::error(500, "internal mix-up of storage answers")
        }
    }
}

fn user_answer(ctx: &Ctx, status: u16, u: &User) -> Response {
    Response::new(status).body("application/json", ctx.app.user_json(u, ctx.now))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_routes() {
        assert_eq!(route("/api/users/12"), Some((12, false)));
        assert_eq!(route("/api/users/12/invite"), Some((12, true)));
        assert_eq!(route("/api/users/abc"), Some((0, false)));
        assert_eq!(route("/api/users/1/other"), None);
    }
}
