//! Who may call what: the admin cookie on `/api/*` and `/admin/stream`, the invitee's token on
//! `/session/{id}/stream`, the agent key on `/agent/stream`. One place decides, for requests
//! and stream handshakes alike.
//!
//! Admin sessions are answered from the view's cache (warmed with every valid session at
//! start, and filled by every sign-in here). A session the cache does not know (a token the
//! `admin token` CLI minted, or one from another node) is looked up in storage first: the
//! caller gets [`Denied::LookUp`], runs the look-up as a job, remembers the answer and asks
//! again. While storage cannot answer, such a credential gets 503, never 401 (API.md).
//!
//! Invariants: everything here runs on the reactor thread and never blocks — a decision that
//! needs storage becomes a `Denied::LookUp*` or a job, never a query from here. A request is
//! looked up at most once (`Ctx::looked_up`): the second pass answers from the cache alone,
//! so a token nobody knows costs one storage read, not a loop. Storage only ever sees digests
//! of credentials (`auth::digest`), never the values sent.

use super::limiter::Key;
use super::{app_error, Ctx, Job, Pending, Reply};
use crate::app::{AppError, Command, Outcome};
use crate::auth::{self, Digest32};
use crate::http::{Request, Response};
use crate::hub::Stream;
use crate::metrics::Refusal;

/// Why a credential did not open the door.
pub enum Denied {
    /// Refused, with this answer (HTTP) or close reason (stream).
    No(Response, &'static str),
    /// Not known here: look these admin session digests up in storage, then ask again.
    LookUp(Vec<Digest32>),
    /// Cluster mode: the session of user `id` is not live in this node's view, which may lag
    /// an activation another node just committed: ask storage (and wait for the log to catch
    /// up), then ask again.
    LookUpSession(i64, Vec<Digest32>),
    /// Over the failure limit of its address: this answer (429) instead of a handshake.
    Limited(Response),
}

/// The signed-in admin of a request.
#[derive(Debug, Clone)]
pub struct AdminAuth {
    pub admin_id: i64,
    pub email: String,
    /// Digest of the `admin_session` value that is valid (logout ends that session).
    pub digest: Digest32,
}

/// Values of one cookie name tried at most (a stale copy from a sibling subdomain or an old
/// path comes before the valid one; a flood of copies is not worth a storage read each).
pub const COOKIE_VALUES_TRIED: usize = 4;

/// The signed-in admin of a request, or why not. Every `admin_session` value sent is tried.
pub fn admin(ctx: &mut Ctx, req: &Request) -> Result<AdminAuth, Denied> {
    let digests: Vec<Digest32> = req
        .cookies("admin_session")
        .filter(|t| !t.is_empty())
        .take(COOKIE_VALUES_TRIED)
        .map(auth::digest)
        .collect();
    if digests.is_empty() {
        return Err(unauthorized());
    }
    // Any value that names a live session wins; an expired cached session is dropped by
    // `cached_admin_session` itself (its `expires_at` is wall ms, compared with `ctx.now`).
    for digest in &digests {
        if let Some(s) = ctx.app.cached_admin_session(digest, ctx.now) {
            return Ok(AdminAuth {
                admin_id: s.admin_id,
                email: s.email.clone(),
                digest: *digest,
            });
        }
    }
    if ctx.looked_up {
        Err(unauthorized())
    } else {
        Err(Denied::LookUp(digests))
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
pub fn require_admin(ctx: &mut Ctx, req: &Request) -> Result<AdminAuth, Reply> {
    admin(ctx, req).map_err(|denied| match denied {
        Denied::No(resp, _) | Denied::Limited(resp) => Reply::Now(resp),
        // Only stream handshakes ask for it.
        Denied::LookUpSession(..) => Reply::Now(Response::error(401, "authentication required")),
        Denied::LookUp(tokens) => Reply::Later(
            Job::Store(Command::LookupAdminSession { tokens }),
            Pending::Authenticate(Box::new(req.clone())),
        ),
    })
}

/// The look-up a request waited for is done: remember a valid session and handle the request
/// again, or answer it. Errors: a storage failure is answered as such (`app_error`: 503 with
/// `Retry-After` when busy, 500 otherwise), never as 401 — the credential was not checked.
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
    /// When the admin session ends (wall ms): the stream is closed then.
    pub expires_at: Option<i64>,
}

/// Whether a stream handshake may open `stream`. `Err(Denied::No(_, reason))`: the handshake
/// completes and the stream closes at once with 1008 and that reason (API.md).
/// `Err(Denied::Limited(resp))`: the address is over its failure limit; answer `resp` (429).
pub fn authorize_stream(
    ctx: &mut Ctx,
    stream: Stream,
    req: &Request,
    agent_key: Option<&str>,
) -> Result<Credential, Denied> {
    let credential = |digest| Credential {
        digest,
        admin_email: None,
        expires_at: None,
    };
    match stream {
        Stream::Admin => {
            let auth = admin(ctx, req)?;
            let expires_at = ctx
                .app
                .cached_admin_session(&auth.digest, ctx.now)
                .map(|s| s.expires_at);
            Ok(Credential {
                digest: auth.digest,
                admin_email: Some(auth.email),
                expires_at,
            })
        }
        Stream::Session(id) => {
            // `?token=` first (the page before activation), then every `session_token` value.
            // Checked against the view (`session_token_ok`: token, user id and a live session);
            // a token valid for another user's page is refused like a wrong one.
            let query = req.query_param("token");
            let cookies = req.cookies("session_token").take(COOKIE_VALUES_TRIED);
            let ok = query
                .iter()
                .map(String::as_str)
                .chain(cookies)
                .find(|t| ctx.app.session_token_ok(id, t, ctx.now));
            match ok {
                Some(t) => Ok(credential(auth::digest(t))),
                // Cluster: another node may have committed the activation a moment ago and this
                // view not applied it yet (API.md "Cluster mode": a node that does not know a
                // token asks PostgreSQL before refusing it). A single server's view is the
                // store, so a miss there is final.
                None if ctx.cluster && !ctx.looked_up => {
                    let cookies = req.cookies("session_token").take(COOKIE_VALUES_TRIED);
                    let tokens = query
                        .iter()
                        .map(String::as_str)
                        .chain(cookies)
                        .filter(|t| !t.is_empty())
                        .map(auth::digest)
                        .collect::<Vec<_>>();
                    if tokens.is_empty() {
                        return Err(Denied::No(
                            Response::error(401, "invalid or expired session"),
                            "Invalid or expired session",
                        ));
                    }
                    Err(Denied::LookUpSession(id, tokens))
                }
                None => Err(Denied::No(
                    Response::error(401, "invalid or expired session"),
                    "Invalid or expired session",
                )),
            }
        }
        Stream::Agent => agent(ctx, req, agent_key).map(credential),
        // The conformance echo endpoint is unauthenticated by design (API.md `--echo-path`).
        Stream::Echo => Ok(credential([0; 32])),
    }
}

/// The agent key of an agent handshake. A wrong key counts against the failure limit of its
/// address, like a failed sign-in; beyond the limit the handshake gets 429 before anything is
/// compared, so the key cannot be found by trying.
fn agent(ctx: &mut Ctx, req: &Request, agent_key: Option<&str>) -> Result<Digest32, Denied> {
    let Some(key) = agent_key else {
        return Err(Denied::No(
            Response::error(401, "agent stream disabled"),
            "Agent stream disabled",
        ));
    };
    // Counted in this node's limiter, by address (IPv6 by /64, `addr::limit_key`): agent
    // handshakes are limited per node even in a cluster, unlike password sign-ins.
    let ip = crate::addr::limit_key(ctx.client_ip);
    let counted = match ctx.limiter.begin(vec![Key::Ip(ip)], ctx.now) {
        Ok(c) => c,
        Err(secs) => {
            ctx.metrics.refused(Refusal::LoginRate);
            log::info!(
                "agent handshake limited from {} (retry in {secs} s)",
                ctx.client_ip
            );
            return Err(Denied::Limited(
                Response::error(429, "too many failed agent handshakes; try again later")
                    .header("Retry-After", &secs.to_string()),
            ));
        }
    };
    match req.bearer() {
        // Constant-time comparison: the time to refuse does not reveal where a guess differs
        // from the key (only whether its length matches). A right key takes its attempt back
        // (API.md "Sign-in abuse": successful sign-ins do not count).
        Some(given) if auth::ct_eq(key.as_bytes(), given.as_bytes()) => {
            ctx.limiter.take_back(counted);
            Ok(auth::digest(key))
        }
        _ => {
            log::info!(
                "agent handshake refused from {}: wrong or missing key",
                ctx.client_ip
            );
            Err(unauthorized())
        }
    }
}
