//! Admin sign-in, first-admin setup and sign-out, and the limiter of failed sign-ins.
//!
//! Sign-in takes three jobs and never blocks the reactor: read the account (storage), check the
//! password (the hashing thread: Argon2id takes tens of milliseconds), store a new session
//! (storage). An unknown account is checked against a dummy hash, so both cost the same time
//! and the answer does not tell which emails have accounts.

use super::access::require_admin;
use super::input::{email_field, json_object, required_string, string_field, EMAIL_MAX};
use super::{app_error, clear_cookie, cookie, Ctx, Job, Pending, Reply};
use crate::app::{AppError, Command, Outcome};
use crate::auth;
use crate::http::{Request, Response};
use crate::metrics::{LoginMethod, LoginResult, Refusal};
use crate::worker;
use std::collections::HashMap;
use std::net::IpAddr;

/// Longest password we accept for checking (Argon2 takes any length; this bounds the work).
const PASSWORD_MAX_BYTES: usize = 4096;

/// A sign-in in progress.
#[derive(Debug)]
pub struct Attempt {
    password: String,
    /// The email, lower-cased: the limiter's account key.
    account: String,
    ip: IpAddr,
    /// The account's id and email, once found.
    admin: Option<(i64, String)>,
}

/// Failed logins per minute, per client IP and per account, in fixed one-minute windows.
pub struct LoginLimiter {
    per_minute: u32,
    windows: HashMap<String, (i64, u32)>,
}

const WINDOW_MS: i64 = 60_000;
/// Past this many tracked keys, expired windows are swept (memory stays bounded by the rate).
const LIMITER_SWEEP_AT: usize = 10_000;

impl LoginLimiter {
    pub fn new(per_minute: u32) -> Self {
        LoginLimiter {
            per_minute,
            windows: HashMap::new(),
        }
    }

    /// Seconds until `keys` may try again, if any of them is over the limit at `now` (ms).
    fn retry_after(&self, keys: &[String], now: i64) -> Option<i64> {
        keys.iter()
            .filter_map(|k| self.windows.get(k))
            .filter(|(start, n)| now - start < WINDOW_MS && *n >= self.per_minute)
            .map(|(start, _)| (start + WINDOW_MS - now + 999) / 1000)
            .max()
    }

    /// Count a failure against every key at `now` (ms).
    fn fail(&mut self, keys: &[String], now: i64) {
        if self.windows.len() >= LIMITER_SWEEP_AT {
            self.windows
                .retain(|_, (start, _)| now - *start < WINDOW_MS);
        }
        for k in keys {
            let w = self.windows.entry(k.clone()).or_insert((now, 0));
            if now - w.0 >= WINDOW_MS {
                *w = (now, 0);
            }
            w.1 += 1;
        }
    }
}

fn limiter_keys(ip: IpAddr, account: &str) -> [String; 2] {
    [format!("ip:{ip}"), format!("account:{account}")]
}

/// `POST /api/admin/login`: refuse over the limit, else look the account up.
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
    let account = email.to_lowercase();
    if let Some(secs) = ctx
        .limiter
        .retry_after(&limiter_keys(ctx.client_ip, &account), ctx.now)
    {
        ctx.metrics.refused(Refusal::LoginRate);
        ctx.metrics
            .login(LoginMethod::Password, LoginResult::Limited);
        return Reply::Now(
            Response::error(429, "too many failed sign-ins; try again later")
                .header("Retry-After", &secs.to_string()),
        );
    }
    Reply::Later(
        Job::Store(Command::FindAdmin { email }),
        Pending::LoginFound(Attempt {
            password,
            account,
            ip: ctx.client_ip,
            admin: None,
        }),
    )
}

/// Sign-in step 2: check the password against the account's hash (or the dummy one).
pub fn check_password(mut a: Attempt, found: Result<Outcome, AppError>) -> Reply {
    let stored = match found {
        Ok(Outcome::Admin(Some(account))) => {
            a.admin = Some((account.id, account.email));
            account.password_hash
        }
        Ok(_) => auth::DUMMY_PASSWORD_HASH.to_string(),
        Err(e) => {
            log::error!("admin look-up failed: {e:?}");
            auth::DUMMY_PASSWORD_HASH.to_string()
        }
    };
    let password = std::mem::take(&mut a.password);
    Reply::Later(
        Job::Hash(worker::Job::Verify { password, stored }),
        Pending::LoginChecked(a),
    )
}

/// Sign-in step 3: a right password stores a session; a wrong one counts as a failure.
pub fn password_checked(ctx: &mut Ctx, a: Attempt, outcome: worker::Outcome) -> Reply {
    let ok = matches!(outcome, worker::Outcome::Verified(true));
    let result = if a.admin.is_some() && ok {
        LoginResult::Ok
    } else {
        LoginResult::Failed
    };
    ctx.metrics.login(LoginMethod::Password, result);
    match a.admin.filter(|_| ok) {
        Some((admin_id, email)) => Reply::Later(
            Job::Store(Command::CreateAdminSession { admin_id, email }),
            Pending::SignedIn { first_admin: false },
        ),
        None => {
            ctx.limiter.fail(&limiter_keys(a.ip, &a.account), ctx.now);
            Reply::Now(Response::error(401, "wrong email or password"))
        }
    }
}

/// `POST /api/admin/setup`: while no admin exists and with the one-time code, hash the new
/// admin's password.
pub fn setup(ctx: &mut Ctx, req: &Request) -> Reply {
    let body = match json_object(req) {
        Ok(b) => b,
        Err(r) => return Reply::Now(r),
    };
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
    if let Err(msg) = auth::check_password_rules(&password) {
        return Reply::Now(Response::error(422, msg));
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

/// The session is stored: its token becomes the `admin_session` cookie.
pub fn signed_in(ctx: &mut Ctx, first_admin: bool, result: Result<Outcome, AppError>) -> Response {
    if first_admin {
        // Created or refused, an admin exists now: the setup code is spent either way.
        ctx.app.close_setup();
    }
    match result {
        Ok(Outcome::SignedIn { session, token }) => {
            // Known at once: the streams this admin opens next need no storage look-up.
            ctx.app.remember_admin_session(session);
            Response::new(204).header(
                "Set-Cookie",
                &cookie("admin_session", &token, ctx.secure_cookies),
            )
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

/// The hook where every sign-in sets the `device` cookie (contract v2: setup, password and
/// OIDC sign-in all do). The signed device cookie is issue 12's; until it lands this passes
/// the answer through unchanged.
pub fn with_device_cookie(_ctx: &mut Ctx, _admin_id: i64, resp: Response) -> Response {
    resp
}

/// `POST /api/admin/logout`: end this session (its streams close when the event applies).
pub fn logout(ctx: &mut Ctx, req: &Request) -> Reply {
    if let Err(reply) = require_admin(ctx, req) {
        return reply;
    }
    let token = req.cookie("admin_session").unwrap_or_default();
    Reply::Later(
        Job::Store(Command::EndAdminSession {
            token: auth::digest(token),
        }),
        Pending::SignedOut,
    )
}

pub fn signed_out(ctx: &mut Ctx, result: Result<Outcome, AppError>) -> Response {
    match result {
        Ok(_) => Response::new(204).header(
            "Set-Cookie",
            &clear_cookie("admin_session", ctx.secure_cookies),
        ),
        Err(e) => app_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limiter_windows() {
        let mut l = LoginLimiter::new(2);
        let keys = limiter_keys("127.0.0.1".parse().unwrap(), "a@b.c");
        assert_eq!(l.retry_after(&keys, 0), None);
        l.fail(&keys, 0);
        l.fail(&keys, 1000);
        assert_eq!(l.retry_after(&keys, 1000), Some(59));
        assert_eq!(l.retry_after(&keys, 60_000), None, "window over");
        l.fail(&keys, 60_000);
        assert_eq!(
            l.retry_after(&keys, 60_001),
            None,
            "new window, one failure"
        );
    }
}
