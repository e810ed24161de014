//! Admin sign-in, first-admin setup and sign-out.
//!
//! Sign-in takes three jobs and never blocks the reactor: read the account (storage), check the
//! password (the password pool: Argon2id takes tens of milliseconds), store a new session
//! (storage). Before any of them the attempt is counted against the limits of its address and
//! its account (or its device cookie) — on arrival, so a burst cannot outrun the limit
//! (`limiter.rs`). An unknown account is checked against a dummy hash, so both cost the same
//! time and the answer does not tell which emails have accounts.
//!
//! Every sign-in (password, setup, OIDC) sets the signed `device` cookie (`device.rs`). The
//! audit trail — sign-in ok, failed and limited, setup, sign-out — is logged at info with the
//! client address and the account, never a password or a token.
//!
//! Statuses (API.md "HTTP"): 204 and the `admin_session` cookie on success; 401 for a wrong
//! email or password (one message for both, so the answer does not tell which); 429 with
//! `Retry-After` over a limit; 403 when password sign-in is turned off, or for setup once an
//! admin exists or with a wrong code; 503 when the pool or storage cannot take the work now —
//! never 401 for a credential that could not be checked.
//!
//! Setup is guarded twice: the view's `has_admin` refuses at once, and the storing command
//! refuses inside its transaction (`SetupFirstAdmin`), so two setups racing cannot both win.

use super::access::require_admin;
use super::device::{self, Device};
use super::input::{
    email_field, json_object, required_string, string_field, EMAIL_MAX, PASSWORD_MAX_BYTES,
};
use super::limiter::{Counted, Key};
use super::{app_error, clear_cookie, cookie, Ctx, Job, Pending, Reply};
use crate::addr;
use crate::app::{AppError, Command, Outcome};
use crate::auth;
use crate::http::{Request, Response};
use crate::metrics::{LoginMethod, LoginResult, Refusal};
use crate::worker;
use std::net::IpAddr;

/// A sign-in in progress, carried from job to job in `Pending`. Its `Debug` leaves the password
/// out (pending notes are logged when something goes wrong).
pub struct Attempt {
    password: String,
    /// The email, lower-cased: the limiter's account key and the device cookie's account.
    account: String,
    ip: IpAddr,
    /// The account's id and email, once found.
    admin: Option<(i64, String)>,
    /// The attempt as the limiter counted it; taken back if it succeeds or is never checked.
    counted: Option<Counted>,
}

impl std::fmt::Debug for Attempt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Attempt")
            .field("account", &self.account)
            .field("ip", &self.ip)
            .finish_non_exhaustive()
    }
}

impl Attempt {
    /// Uncount the attempt: it succeeded, or it ends without a password check. Taking `counted`
    /// out makes a second call a no-op, so no path can uncount twice.
    fn take_back(&mut self, ctx: &mut Ctx) {
        if let Some(c) = self.counted.take() {
            ctx.limiter.take_back(c);
        }
    }
}

/// A request that waited for a helper thread could not be queued (the pool is full): 503, and
/// a sign-in attempt that never got its password check does not count against any limit.
pub fn not_queued(ctx: &mut Ctx, pending: Pending) -> Response {
    if let Pending::LoginChecked(mut a) = pending {
        a.take_back(ctx);
        log::info!(
            "sign-in for {} from {}: the password pool is full (503)",
            a.account,
            a.ip
        );
    }
    Response::error(503, "sign-in is busy; try again in a moment").header("Retry-After", "1")
}

/// The device cookie this browser holds for `account`, if any (each value sent is tried: the
/// contract's rule for repeated cookie names; at most 8, since each costs an HMAC).
fn device_for(ctx: &Ctx, req: &Request, account: &str) -> Option<Device> {
    req.cookies(device::COOKIE)
        .take(8)
        .filter_map(|v| ctx.device.open(v, ctx.now))
        .find(|d| d.account == account)
}

/// `POST /api/admin/login`: count the attempt (or refuse it over a limit), then look the
/// account up.
pub fn login(ctx: &mut Ctx, req: &Request) -> Reply {
    if !ctx.password_login {
        return Reply::Now(Response::error(
            403,
            "password sign-in is turned off; sign in with your identity provider",
        ));
    }
    let fields = json_object(req).and_then(|body| {
        let email = required_string(&body, "email")?;
        let password = required_string(&body, "password")?;
        if email.len() > EMAIL_MAX || password.len() > PASSWORD_MAX_BYTES {
            return Err(Response::error(422, "email or password too long"));
        }
        Ok((email, password))
    });
    let (email, password) = match fields {
        Ok(f) => f,
        Err(r) => return Reply::Now(r),
    };
    // Emails compare case-insensitively (API.md), so the limiter's key must too: otherwise
    // `Ada@` and `ada@` would be two budgets for one account.
    let account = email.to_lowercase();
    // A browser that signed in as this account before draws on its own failures, not the
    // account's: failures sent by others cannot lock it out.
    let second = match device_for(ctx, req, &account) {
        Some(d) => Key::Device(d.id),
        None => Key::Account(account.clone()),
    };
    let keys = vec![Key::Ip(addr::limit_key(ctx.client_ip)), second];
    // Counted now, before the account is read: a burst cannot outrun the limit while its
    // checks are queued (API.md "Sign-in abuse").
    let counted = match ctx.limiter.begin(keys, ctx.now) {
        Ok(c) => c,
        Err(secs) => {
            ctx.metrics.refused(Refusal::LoginRate);
            ctx.metrics
                .login(LoginMethod::Password, LoginResult::Limited);
            log::info!(
                "sign-in limited: {account} from {} (retry in {secs} s)",
                ctx.client_ip
            );
            return Reply::Now(
                Response::error(429, "too many failed sign-ins; try again later")
                    .header("Retry-After", &secs.to_string()),
            );
        }
    };
    Reply::Later(
        Job::Store(Command::FindAdmin { email }),
        Pending::LoginFound(Attempt {
            password,
            account,
            ip: ctx.client_ip,
            admin: None,
            counted: Some(counted),
        }),
    )
}

/// Sign-in step 2: check the password against the account's hash (or the dummy one).
pub fn check_password(ctx: &mut Ctx, mut a: Attempt, found: Result<Outcome, AppError>) -> Reply {
    let stored = match found {
        Ok(Outcome::Admin(Some(account))) => {
            a.admin = Some((account.id, account.email));
            account.password_hash
        }
        // No such account: verify against a dummy hash anyway, so the answer takes as long as
        // for a real account and does not reveal which emails exist.
        Ok(_) => auth::DUMMY_PASSWORD_HASH.to_string(),
        Err(e) => {
            // The account could not be read: the attempt was not checked, so it does not
            // count, and a credential that cannot be checked is never refused as wrong.
            log::warn!("sign-in for {}: account look-up failed ({e:?})", a.account);
            a.take_back(ctx);
            return Reply::Now(app_error(e));
        }
    };
    // The password leaves the attempt here: it is not kept for later steps.
    let password = std::mem::take(&mut a.password);
    Reply::Later(
        Job::Hash(worker::Job::Verify { password, stored }),
        Pending::LoginChecked(a),
    )
}

/// Sign-in step 3: a right password stores a session (and uncounts the attempt); a wrong one
/// stays counted.
pub fn password_checked(ctx: &mut Ctx, mut a: Attempt, outcome: worker::Outcome) -> Reply {
    let ok = matches!(outcome, worker::Outcome::Verified(true));
    match a.admin.take().filter(|_| ok) {
        Some((admin_id, email)) => {
            a.take_back(ctx);
            Reply::Later(
                Job::Store(Command::CreateAdminSession { admin_id, email }),
                Pending::SignedIn { first_admin: false },
            )
        }
        None => {
            ctx.metrics
                .login(LoginMethod::Password, LoginResult::Failed);
            log::info!("sign-in failed: {} from {}", a.account, a.ip);
            Reply::Now(Response::error(401, "wrong email or password"))
        }
    }
}

/// `POST /api/admin/setup`: while no admin exists and with the one-time code, hash the new
/// admin's password (if it is strong enough).
pub fn setup(ctx: &mut Ctx, req: &Request) -> Reply {
    let body = match json_object(req) {
        Ok(b) => b,
        Err(r) => return Reply::Now(r),
    };
    // A missing or malformed code is simply wrong (403), not a 422 that would confirm setup is
    // open.
    let code = string_field(&body, "code")
        .ok()
        .flatten()
        .unwrap_or_default();
    if ctx.app.has_admin() || !ctx.app.setup_code_ok(&code) {
        return Reply::Now(Response::error(403, "setup is closed or the code is wrong"));
    }
    let fields = required_string(&body, "email")
        .and_then(email_field)
        .and_then(|email| Ok((email, required_string(&body, "password")?)));
    let (email, password) = match fields {
        Ok(f) => f,
        Err(r) => return Reply::Now(r),
    };
    // Checked before hashing, so a weak password costs no Argon2 run.
    if let Err(why) = auth::check_password_rules(&password, &[&email]) {
        return Reply::Now(Response::error(422, &format!("password refused: {why}")));
    }
    Reply::Later(
        Job::Hash(worker::Job::Hash { password }),
        Pending::SetupHashed { email },
    )
}

/// Setup step 2: create the first admin with the hash (if still none) and sign it in.
pub fn setup_hashed(email: String, outcome: worker::Outcome) -> Reply {
    match outcome {
        worker::Outcome::Hashed(Ok(password_hash)) => Reply::Later(
            Job::Store(Command::SetupFirstAdmin {
                email,
                password_hash,
            }),
            Pending::SignedIn { first_admin: true },
        ),
        worker::Outcome::Hashed(Err(e)) => {
            log::error!("password hashing failed: {e}");
            Reply::Now(Response::error(500, "password could not be hashed"))
        }
        other => {
            log::error!("setup got a password check back: {other:?}");
            Reply::Now(Response::error(500, "internal mix-up of worker answers"))
        }
    }
}

/// The session is stored: its token becomes the `admin_session` cookie, and the browser gets a
/// device cookie for the account.
pub fn signed_in(ctx: &mut Ctx, first_admin: bool, result: Result<Outcome, AppError>) -> Response {
    if first_admin {
        // Created or refused, an admin exists now: the setup code is spent either way.
        ctx.app.close_setup();
    }
    match result {
        Ok(Outcome::SignedIn { session, token }) => {
            let email = session.email.clone();
            if first_admin {
                log::info!("setup: first admin {email} created from {}", ctx.client_ip);
            } else {
                ctx.metrics.login(LoginMethod::Password, LoginResult::Ok);
                log::info!("sign-in ok: {email} from {} (password)", ctx.client_ip);
            }
            // Known at once: the streams this admin opens next need no storage look-up.
            ctx.app.remember_admin_session(session);
            let resp = Response::new(204).header(
                "Set-Cookie",
                &cookie("admin_session", &token, ctx.secure_cookies),
            );
            with_device_cookie(ctx, &email, resp)
        }
        Err(AppError::Conflict(_)) if first_admin => {
            Response::error(403, "setup is closed: an admin exists")
        }
        Err(e) => app_error(e),
        Ok(other) => {
            log::error!("sign-in got {other:?} from storage");
            Response::error(500, "internal mix-up of storage answers")
        }
    }
}

/// Add the `device` cookie for `account` to a sign-in's answer (setup, password and OIDC
/// sign-in all do). Without OS randomness the answer goes without one: the sign-in itself
/// succeeded, and the cookie only softens lockouts.
pub fn with_device_cookie(ctx: &mut Ctx, account: &str, resp: Response) -> Response {
    match ctx.device.issue(account, ctx.now) {
        Ok(value) => resp.header(
            "Set-Cookie",
            &device::set_cookie(&value, ctx.secure_cookies),
        ),
        Err(e) => {
            log::error!("OS randomness failed; no device cookie: {e}");
            resp
        }
    }
}

/// `POST /api/admin/logout`: end this session (its streams close when the event applies).
pub fn logout(ctx: &mut Ctx, req: &Request) -> Reply {
    let auth = match require_admin(ctx, req) {
        Ok(a) => a,
        Err(reply) => return reply,
    };
    log::info!("sign-out: {} from {}", auth.email, ctx.client_ip);
    Reply::Later(
        Job::Store(Command::EndAdminSession { token: auth.digest }),
        Pending::SignedOut,
    )
}

/// Sign-out stored: 204 and the cookie cleared. The session's streams were closed when the
/// event was applied, just before this answer.
pub fn signed_out(ctx: &mut Ctx, result: Result<Outcome, AppError>) -> Response {
    match result {
        Ok(_) => Response::new(204).header(
            "Set-Cookie",
            &clear_cookie("admin_session", ctx.secure_cookies),
        ),
        Err(e) => app_error(e),
    }
}
