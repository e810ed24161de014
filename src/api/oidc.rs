//! Sign-in through the organisation's identity provider (OpenID Connect), and what the sign-in
//! form offers.
//!
//! * `GET /api/admin/auth` — `{"password": bool, "oidc": null | {"name": LABEL}}`.
//! * `GET /api/admin/oidc/login` — start a login attempt (its cookie) and redirect the browser
//!   to the provider; 503 while the provider's discovery has not succeeded.
//! * `GET /api/admin/oidc/callback?code&state` — the provider sends the browser back. Four
//!   steps, none of which blocks the reactor: (1) here, the attempt cookie must open and its
//!   `state` match; (2) storage: was the attempt used? (3) the OIDC thread redeems the code and
//!   validates the ID token; (4) storage, one transaction: spend the attempt, find or create
//!   the admin, create the session. Any failure redirects to `/?signin_error=<reason>` with no
//!   session; success redirects to `/` with the `admin_session` cookie.
//!
//! Every outcome of a callback is counted in `catalytic_logins_total{method="oidc"}`. Logs name
//! the email and the reason, never the code, the tokens or the attempt's secrets.
//!
//! Why each check (OpenID Connect Core 1.0 §3.1, RFC 9700 "OAuth 2.0 Security Best Current
//! Practice"):
//! * `state` bound to the attempt cookie — login CSRF: a callback started in another browser
//!   (an attacker's code in a victim's browser) is refused;
//! * the attempt used once (storage, step 4 in one transaction) — a replayed callback URL
//!   cannot sign in twice; the `nonce` in the ID token ties the token to this attempt;
//! * PKCE (S256) — a code intercepted on its way back is useless without the verifier, which
//!   only this server can derive from the attempt;
//! * `iss` in the redirect (RFC 9207) — the mix-up attack, where another provider's answer is
//!   delivered to us;
//! * 10 minutes per attempt — an old cookie or URL found later is worthless.
//!
//! A failure is a redirect to the sign-in page with a short reason, never an error page: the
//! browser is mid-navigation, and a JSON error would strand the admin there.

use super::{cookie, Ctx, Done, Job, Pending, Reply};
use crate::app::{AppError, Command, Outcome};
use crate::auth;
use crate::http::{Request, Response};
use crate::metrics::{LoginMethod, LoginResult};
use crate::oidc;
use crate::oidc::flow::{self, Attempt, CookieError};
use serde_json::json;

/// Longest `code` and `state` we take from the provider's redirect (bytes): a code is opaque
/// but never near this long, and our `state` values are short; anything longer is not ours.
const CODE_MAX: usize = 4096;
const STATE_MAX: usize = 256;

/// The sign-in page's messages for failures found before the provider is asked.
const OTHER_BROWSER: &str =
    "this sign-in was started in another browser (or cookies are blocked); start again";
const TOO_SLOW: &str = "the sign-in took longer than 10 minutes; start again";
const CANCELLED: &str = "the sign-in was cancelled at the identity provider";
const PROVIDER_ERROR: &str = "the identity provider reported an error; start again";
const WRONG_ISSUER: &str = "the sign-in came back from another identity provider";
const NO_CODE: &str = "the identity provider sent no authorization code";

/// A callback in progress. Its `Debug` hides the code.
pub struct Callback {
    attempt: Attempt,
    code: String,
}

impl std::fmt::Debug for Callback {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Callback { .. }")
    }
}

/// Where a callback stands, between its jobs.
#[derive(Debug)]
pub enum Step {
    /// Storage answered whether the attempt was used; next, redeem the code.
    Checked(Box<Callback>),
    /// The OIDC thread answered; next, sign in (or refuse).
    Exchanged(Attempt),
    /// Storage signed the admin in (or refused).
    Stored,
}

/// `GET /api/admin/auth`: what the sign-in form should offer. No authentication: the sign-in
/// page needs it before anyone is signed in, and it tells nothing secret.
pub fn auth(ctx: &Ctx) -> Response {
    let oidc = ctx.oidc.map(|o| json!({ "name": o.settings.name }));
    Response::new(200).json(&json!({ "password": ctx.password_login, "oidc": oidc }))
}

fn not_configured() -> Response {
    Response::error(404, "sign-in with an identity provider is not configured")
}

/// `GET /api/admin/oidc/login`: a new attempt, its cookie, and the redirect to the provider.
/// The attempt itself is not stored: its id and start time are in the signed cookie, and
/// `state`, `nonce` and the PKCE verifier are derived from them with the server key, so any
/// node can finish the sign-in.
pub fn login(ctx: &mut Ctx) -> Response {
    let Some(o) = ctx.oidc else {
        return not_configured();
    };
    // Discovery has not succeeded yet (the provider is unreachable): there is nowhere to send
    // the browser.
    let Some(endpoint) = o.authorization_endpoint() else {
        return Response::error(
            503,
            "the identity provider is unreachable; try again shortly",
        )
        .header("Retry-After", "5");
    };
    let id = match auth::random_bytes::<16>() {
        Ok(id) => id,
        Err(e) => {
            log::error!("OS randomness failed: {e}");
            return Response::error(500, "sign-in could not start");
        }
    };
    let a = Attempt {
        id,
        started_at: ctx.now,
    };
    let url = flow::authorization_url(
        endpoint,
        &o.settings.client_id,
        &o.settings.redirect_uri,
        &o.keys.state(&a),
        &o.keys.nonce(&a),
        &o.keys.verifier(&a),
    );
    let cookie = attempt_cookie(&o.keys.cookie_value(&a), flow::ATTEMPT_MS / 1000, ctx);
    Response::new(302)
        .header("Location", &url)
        .header("Set-Cookie", &cookie)
}

/// The attempt cookie: `SameSite=Lax`, because the provider's redirect back is a cross-site
/// navigation, on which a `Strict` cookie would not be sent.
fn attempt_cookie(value: &str, max_age_s: i64, ctx: &Ctx) -> String {
    let secure = if ctx.secure_cookies { "; Secure" } else { "" };
    format!(
        "{}={value}; HttpOnly; SameSite=Lax; Path={}; Max-Age={max_age_s}{secure}",
        flow::COOKIE,
        flow::COOKIE_PATH
    )
}

/// `GET /api/admin/oidc/callback`: check the attempt, then ask storage whether it was used.
/// The checks that need no job run first, so a forged or stale callback costs no storage read
/// and no call to the provider.
pub fn callback(ctx: &mut Ctx, req: &Request) -> Reply {
    let Some(o) = ctx.oidc else {
        return Reply::Now(not_configured());
    };
    let state = req.query_param("state").unwrap_or_default();
    // Every `oidc_attempt` value the browser sent is tried (the contract's rule for repeated
    // cookie names); the one whose state matches is this browser's attempt.
    let mut found = Err(CookieError::Missing);
    for value in req.cookies(flow::COOKIE) {
        match o.keys.open_cookie(value, ctx.now) {
            Ok(a) if state.len() <= STATE_MAX && o.keys.state_matches(&a, &state) => {
                found = Ok(a);
                break;
            }
            Ok(_) => {}
            Err(CookieError::Expired) => found = Err(CookieError::Expired),
            Err(CookieError::Missing) => {}
        }
    }
    let attempt = match found {
        Ok(a) => a,
        Err(CookieError::Expired) => return Reply::Now(refuse(ctx, TOO_SLOW)),
        Err(CookieError::Missing) => return Reply::Now(refuse(ctx, OTHER_BROWSER)),
    };
    if let Some(error) = req.query_param("error") {
        // The provider's error code is not ours to echo; two cases are worth telling apart.
        let msg = if error == "access_denied" {
            CANCELLED
        } else {
            PROVIDER_ERROR
        };
        return Reply::Now(refuse(ctx, msg));
    }
    // RFC 9207: a provider that names itself in the redirect must be ours (mix-up defence).
    if req
        .query_param("iss")
        .is_some_and(|iss| iss.trim_end_matches('/') != o.settings.issuer.trim_end_matches('/'))
    {
        return Reply::Now(refuse(ctx, WRONG_ISSUER));
    }
    let code = match req.query_param("code") {
        Some(c) if !c.is_empty() && c.len() <= CODE_MAX => c,
        _ => return Reply::Now(refuse(ctx, NO_CODE)),
    };
    Reply::Later(
        Job::Store(Command::OidcAttemptUsed {
            attempt: attempt.id,
        }),
        Pending::Oidc(Step::Checked(Box::new(Callback { attempt, code }))),
    )
}

/// The next step of a callback, with what its last job gave back.
pub fn finish(ctx: &mut Ctx, step: Step, done: Done) -> Reply {
    let Some(o) = ctx.oidc else {
        return Reply::Now(not_configured());
    };
    match (step, done) {
        (Step::Checked(cb), Done::Stored(r)) => match r {
            Ok(Outcome::AttemptUsed(false)) => Reply::Later(
                Job::Oidc(oidc::Job::Exchange {
                    verifier: o.keys.verifier(&cb.attempt),
                    nonce: o.keys.nonce(&cb.attempt),
                    code: cb.code,
                }),
                Pending::Oidc(Step::Exchanged(cb.attempt)),
            ),
            Ok(Outcome::AttemptUsed(true)) => {
                Reply::Now(refuse(ctx, crate::app::command::OIDC_ATTEMPT_USED))
            }
            other => Reply::Now(storage_failed(ctx, other)),
        },
        // The provider vouched for a verified email; whether it may sign in (an existing admin)
        // or create an account (its domain is allowed) is decided in one transaction.
        (Step::Exchanged(attempt), Done::Oidc(Ok(identity))) => {
            log::debug!(
                "OpenID provider vouched for {} (sub {})",
                identity.email,
                identity.subject
            );
            let may_create = o.settings.domain_allowed(&identity.email);
            Reply::Later(
                Job::Store(Command::OidcSignIn {
                    attempt: attempt.id,
                    attempt_expires_at: attempt.started_at + flow::ATTEMPT_MS,
                    email: identity.email,
                    may_create,
                }),
                Pending::Oidc(Step::Stored),
            )
        }
        (Step::Exchanged(_), Done::Oidc(Err(f))) => Reply::Now(refuse(ctx, f.message())),
        (Step::Stored, Done::Stored(r)) => Reply::Now(match r {
            Ok(Outcome::SignedIn { session, token }) => {
                let email = session.email.clone();
                // Known at once: the admin's streams need no storage look-up.
                ctx.app.remember_admin_session(session);
                signed_in(ctx, &email, &token)
            }
            Ok(Outcome::Refused(msg)) => refuse(ctx, msg),
            other => storage_failed(ctx, other),
        }),
        (step, done) => {
            log::error!("OIDC sign-in step {step:?} got {done:?}");
            Reply::Now(refuse(ctx, "internal mix-up; start again"))
        }
    }
}

/// Redirect to the sign-in page with a short reason, no session, the attempt cookie gone.
fn refuse(ctx: &mut Ctx, reason: &str) -> Response {
    ctx.metrics.login(LoginMethod::Oidc, LoginResult::Failed);
    log::info!(
        "sign-in failed from {} (OpenID Connect): {reason}",
        ctx.client_ip
    );
    Response::new(302)
        .header(
            "Location",
            &format!("/?signin_error={}", flow::percent_encode(reason)),
        )
        .header("Set-Cookie", &attempt_cookie("", 0, ctx))
}

/// Storage could not answer: the sign-in fails (the admin starts again); the attempt may be
/// unspent, but its cookie is cleared with the redirect.
fn storage_failed(ctx: &mut Ctx, r: Result<Outcome, AppError>) -> Response {
    log::error!("OIDC sign-in storage step failed: {r:?}");
    refuse(ctx, "the sign-in could not be stored; try again")
}

/// Signed in: the session cookie, the attempt cookie gone, back to the dashboard.
fn signed_in(ctx: &mut Ctx, email: &str, token: &str) -> Response {
    // An admin exists now, whoever it is: the one-time setup code is spent.
    ctx.app.close_setup();
    ctx.metrics.login(LoginMethod::Oidc, LoginResult::Ok);
    log::info!(
        "sign-in ok: {email} from {} (signed in through OpenID Connect)",
        ctx.client_ip
    );
    let resp = Response::new(302)
        .header("Location", "/")
        .header(
            "Set-Cookie",
            &cookie("admin_session", token, ctx.secure_cookies),
        )
        .header("Set-Cookie", &attempt_cookie("", 0, ctx));
    super::admin::with_device_cookie(ctx, email, resp)
}
