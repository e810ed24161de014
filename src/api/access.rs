//! Who may call what: the admin cookie on `/api/*` and `/admin/stream`, the invitee's token on
//! `/session/{id}/stream`, the agent key on `/agent/stream`. One place decides, for requests
//! and stream handshakes alike.
//!
//! Admin sessions are answered from the view's cache (warmed with every valid session at
//! start, and filled by every sign-in here). A session the cache does not know (a token the
//! `admin token` CLI minted, or one from another node) is looked up in storage first: the
//! caller gets [`Denied::LookUp`], runs the look-up as a job, remembers the answer and asks
//! again. While storage cannot answer, such a credential gets 503, never 401 (API.md).

use super::{app_error, Ctx, Job, Pending, Reply};
use crate::app::{AppError, Command, Outcome};
use crate::auth::{self, Digest32};
use crate::http::{Request, Response};
use crate::hub::Stream;

/// Why a credential did not open the door.
pub enum Denied {
    /// Refused, with this answer (HTTP) or close reason (stream).
    No(Response, &'static str),
    /// Not known here: look this admin session digest up in storage, then ask again.
    LookUp(Digest32),
}

/// The signed-in admin of a request: its admin id, or why not.
pub fn admin(ctx: &mut Ctx, req: &Request) -> Result<i64, Denied> {
    let Some(token) = req.cookie("admin_session") else {
        return Err(unauthorized());
    };
    let digest = auth::digest(token);
    match ctx.app.cached_admin_session(&digest, ctx.now) {
        Some(s) => Ok(s.admin_id),
        None if ctx.looked_up => Err(unauthorized()),
        None => Err(Denied::LookUp(digest)),
    }
}

fn unauthorized() -> Denied {
    Denied::No(
        Response::error(401, "authentication required"),
        "Unauthorized",
    )
}

/// The admin of a request, or the reply that ends it (401, or a storage look-up after which
/// the request is handled again). (The reply is large and goes straight back to the reactor;
/// boxing it would only add an allocation.)
#[allow(clippy::result_large_err)]
pub fn require_admin(ctx: &mut Ctx, req: &Request) -> Result<i64, Reply> {
    admin(ctx, req).map_err(|denied| match denied {
        Denied::No(resp, _) => Reply::Now(resp),
        Denied::LookUp(token) => Reply::Later(
            Job::Store(Command::LookupAdminSession { token }),
            Pending::Authenticate(Box::new(req.clone())),
        ),
    })
}

/// The look-up a request waited for is done: remember a valid session and handle the request
/// again, or answer it.
pub fn looked_up(ctx: &mut Ctx, req: &Request, result: Result<Outcome, AppError>) -> Reply {
    match result {
        Ok(Outcome::AdminSession(Some(session))) => {
            ctx.app.remember_admin_session(session);
            ctx.looked_up = true;
            super::handle(ctx, req)
        }
        Ok(_) => Reply::Now(Response::error(401, "authentication required")),
        Err(e) => Reply::Now(app_error(e)),
    }
}

/// What a stream handshake presented.
#[derive(Debug)]
pub struct Credential {
    /// Digest of the admin session, invite token or agent key: logout closes the admin streams
    /// of one session; the reconnect metric counts by it.
    pub digest: Digest32,
    /// The admin's email (admin streams: who is watching, for presence).
    pub admin_email: Option<String>,
}

/// Whether a stream handshake may open `stream`. `Err(Denied::No(_, reason))`: the handshake
/// completes and the stream closes at once with 1008 and that reason (API.md).
pub fn authorize_stream(
    ctx: &mut Ctx,
    stream: Stream,
    req: &Request,
    agent_key: Option<&str>,
) -> Result<Credential, Denied> {
    let credential = |digest| Credential {
        digest,
        admin_email: None,
    };
    match stream {
        Stream::Admin => {
            admin(ctx, req)?;
            let digest = auth::digest(req.cookie("admin_session").unwrap_or_default());
            let admin_email = ctx
                .app
                .cached_admin_session(&digest, ctx.now)
                .map(|s| s.email.clone());
            Ok(Credential {
                digest,
                admin_email,
            })
        }
        Stream::Session(id) => {
            let token = req
                .query_param("token")
                .or_else(|| req.cookie("session_token").map(String::from));
            match token {
                Some(t) if ctx.app.session_token_ok(id, &t, ctx.now) => {
                    Ok(credential(auth::digest(&t)))
                }
                _ => Err(Denied::No(
                    Response::error(401, "invalid or expired session"),
                    "Invalid or expired session",
                )),
            }
        }
        Stream::Agent => match (agent_key, req.bearer()) {
            (None, _) => Err(Denied::No(
                Response::error(401, "agent stream disabled"),
                "Agent stream disabled",
            )),
            (Some(k), Some(given)) if auth::ct_eq(k.as_bytes(), given.as_bytes()) => {
                Ok(credential(auth::digest(k)))
            }
            _ => Err(unauthorized()),
        },
        Stream::Echo => Ok(credential([0; 32])),
    }
}
