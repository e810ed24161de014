//! Who may call what: the admin cookie on `/api/*` and `/admin/stream`, the invitee's token on
//! `/session/{id}/stream`, the agent key on `/agent/stream`. One place decides, for requests
//! and stream handshakes alike.

use super::Ctx;
use crate::auth::{self, Digest32};
use crate::http::{Request, Response};
use crate::hub::Stream;
use crate::store::Tx;

/// The admin signed in with session token `token`, if the session is valid now. Sessions this
/// process has seen are answered from memory; others (minted by the CLI, or by another process)
/// are looked up in storage once and then remembered.
pub fn admin_for_token(ctx: &mut Ctx, token: &str) -> Option<i64> {
    let digest = auth::digest(token);
    if let Some(id) = ctx.app.cached_admin_session(&digest, ctx.now) {
        return Some(id);
    }
    let now = ctx.now;
    match ctx.store.read(|tx| tx.admin_session(&digest, now)) {
        Ok(Some((id, expires_at))) => {
            ctx.app.remember_admin_session(digest, id, expires_at);
            Some(id)
        }
        Ok(None) => None,
        Err(e) => {
            log::error!("admin session lookup failed: {e}");
            None
        }
    }
}

/// The signed-in admin of a request, or the 401 answer.
pub fn require_admin(ctx: &mut Ctx, req: &Request) -> Result<i64, Response> {
    req.cookie("admin_session")
        .and_then(|t| admin_for_token(ctx, t))
        .ok_or_else(|| Response::error(401, "authentication required"))
}

/// Whether a stream handshake may open `stream`. `Ok` carries the digest of the credential it
/// presented (for admins, the admin session: logout closes exactly those streams; for the
/// reconnect metric, any). `Err` is the close reason of the contract: the handshake completes
/// and the stream closes at once with 1008 and that reason.
pub fn authorize_stream(
    ctx: &mut Ctx,
    stream: Stream,
    req: &Request,
    agent_key: Option<&str>,
) -> Result<Digest32, &'static str> {
    match stream {
        Stream::Admin => req
            .cookie("admin_session")
            .filter(|t| admin_for_token(ctx, t).is_some())
            .map(auth::digest)
            .ok_or("Unauthorized"),
        Stream::Session(id) => {
            let token = req
                .query_param("token")
                .or_else(|| req.cookie("session_token").map(String::from));
            match token {
                Some(t) if ctx.app.session_token_ok(id, &t, ctx.now) => Ok(auth::digest(&t)),
                _ => Err("Invalid or expired session"),
            }
        }
        Stream::Agent => match (agent_key, req.bearer()) {
            (None, _) => Err("Agent stream disabled"),
            (Some(k), Some(given)) if auth::ct_eq(k.as_bytes(), given.as_bytes()) => {
                Ok(auth::digest(k))
            }
            _ => Err("Unauthorized"),
        },
        Stream::Echo => Ok([0; 32]),
    }
}
