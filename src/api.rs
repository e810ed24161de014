//! The `/api/*` routes: authenticate, validate the JSON, call the application, answer.
//!
//! Each handler maps to exactly one status per outcome (see `app_error`). Password work is not
//! done here: login and setup return `Reply::Later` with a job for the worker thread and the
//! state needed to finish when it answers (`finish`).

use crate::app::{self, Activation, App, AppError, Effect, UserPatch};
use crate::http::{Method, Request, Response};
use crate::metrics::{Metrics, Refusal};
use crate::worker::{Job, Outcome};
use serde_json::{json, Map, Value};
use std::collections::HashMap;
use std::net::IpAddr;

const NAME_MAX_CHARS: usize = 200;
const EMAIL_MAX: usize = 254;
const URL_MAX: usize = 2048;
const QUESTIONS_MAX: i64 = 10_000;

/// A request answered now, or after the worker thread has done its part.
pub enum Reply {
    Now(Response),
    Later(Job, Pending),
}

/// What to do with the worker's answer.
#[derive(Debug)]
pub enum Pending {
    Login {
        admin_id: Option<i64>,
        account: String,
        ip: IpAddr,
    },
    Setup {
        email: String,
    },
}

/// Per-request facts the reactor knows.
pub struct Ctx<'a> {
    pub client_ip: IpAddr,
    pub secure_cookies: bool,
    pub limiter: &'a mut LoginLimiter,
    pub metrics: &'a mut Metrics,
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

    /// Seconds until `keys` may try again, if any of them is over the limit.
    fn retry_after(&self, keys: &[String], now: i64) -> Option<i64> {
        keys.iter()
            .filter_map(|k| self.windows.get(k))
            .filter(|(start, n)| now - start < WINDOW_MS && *n >= self.per_minute)
            .map(|(start, _)| (start + WINDOW_MS - now + 999) / 1000)
            .max()
    }

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

pub fn handle(app: &mut App, req: &Request, ctx: &mut Ctx, effects: &mut Vec<Effect>) -> Reply {
    let path = req.path.as_str();
    let m = req.method();
    let now = Reply::Now;
    match path {
        "/api/admin/setup" if m == Method::Post => setup(app, req),
        "/api/admin/login" if m == Method::Post => login(app, req, ctx),
        "/api/admin/logout" if m == Method::Post => now(with_admin(app, req, |app, _| {
            let token = req.cookie("admin_session").unwrap_or_default();
            match app.logout(token, effects) {
                Ok(()) => Response::new(204).header(
                    "Set-Cookie",
                    &clear_cookie("admin_session", ctx.secure_cookies),
                ),
                Err(e) => app_error(e),
            }
        })),
        "/api/users" => match m {
            Method::Get => now(with_admin(app, req, |app, _| {
                Response::new(200).json(200, &app.list(app::wall_ms()))
            })),
            Method::Post => now(with_admin(app, req, |app, _| {
                create_user(app, req, effects)
            })),
            _ => now(not_allowed("GET, POST")),
        },
        "/api/session/activate" if m == Method::Post => now(activate(app, req, ctx, effects)),
        "/api/session/answer" if m == Method::Post => now(answer(app, req, effects)),
        "/api/admin/setup"
        | "/api/admin/login"
        | "/api/admin/logout"
        | "/api/session/activate"
        | "/api/session/answer" => now(not_allowed("POST")),
        _ => match user_route(path) {
            Some((id, false)) => match m {
                Method::Patch => now(with_admin(app, req, |app, _| {
                    patch_user(app, id, req, effects)
                })),
                Method::Delete => now(with_admin(app, req, |app, _| {
                    match app.delete_user(id, effects) {
                        Ok(()) => Response::new(204),
                        Err(e) => app_error(e),
                    }
                })),
                _ => now(not_allowed("PATCH, DELETE")),
            },
            Some((id, true)) if m == Method::Post => now(with_admin(app, req, |app, _| match app
                .regenerate_invite(id, effects)
            {
                Ok(user) => Response::new(200).body("application/json", user),
                Err(e) => app_error(e),
            })),
            Some((_, true)) => now(not_allowed("POST")),
            None => now(Response::error(404, "no such API route")),
        },
    }
}

/// `/api/users/{id}` → (id, false); `/api/users/{id}/invite` → (id, true). An id that is not a
/// positive integer names no user: the caller answers 404.
fn user_route(path: &str) -> Option<(i64, bool)> {
    let rest = path.strip_prefix("/api/users/")?;
    let (id, invite) = match rest.split_once('/') {
        Some((id, "invite")) => (id, true),
        Some(_) => return None,
        None => (rest, false),
    };
    if id.is_empty() || id.len() > 18 || !id.bytes().all(|b| b.is_ascii_digit()) {
        return Some((0, invite));
    }
    Some((id.parse().ok()?, invite))
}

fn not_allowed(allow: &str) -> Response {
    Response::error(405, "method not allowed").header("Allow", allow)
}

fn with_admin(app: &mut App, req: &Request, f: impl FnOnce(&mut App, i64) -> Response) -> Response {
    match req
        .cookie("admin_session")
        .and_then(|t| app.admin_for_cookie(t))
    {
        Some(admin_id) => f(app, admin_id),
        None => Response::error(401, "authentication required"),
    }
}

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

/// The JSON object of a request body. An empty body counts as `{}` and needs no Content-Type.
fn json_object(req: &Request) -> Result<Map<String, Value>, Response> {
    if req.body.is_empty() {
        return Ok(Map::new());
    }
    if !req.is_json() {
        return Err(Response::error(415, "send the body as application/json"));
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        Ok(_) => Err(Response::error(422, "the body must be a JSON object")),
        Err(_) => Err(Response::error(400, "the body is not valid JSON")),
    }
}

fn string_field(body: &Map<String, Value>, name: &str) -> Result<Option<String>, Response> {
    match body.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Response::error(422, &format!("{name} must be a string"))),
    }
}

fn required_string(body: &Map<String, Value>, name: &str) -> Result<String, Response> {
    string_field(body, name)?.ok_or_else(|| Response::error(422, &format!("{name} is required")))
}

fn name_field(value: String, name: &str) -> Result<String, Response> {
    let n = value.chars().count();
    if n == 0 || n > NAME_MAX_CHARS {
        return Err(Response::error(
            422,
            &format!("{name} must be 1 to {NAME_MAX_CHARS} characters"),
        ));
    }
    Ok(value)
}

/// An address by its shape: `local@domain`, one `@`, no spaces or control characters, no empty
/// domain labels. Deliverability is the mail system's business, not ours.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !domain.is_empty()
        && email.len() <= EMAIL_MAX
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains(['[', ']', '(', ')', ',', ';', ':', '<', '>', '\\', '"'])
}

fn email_field(value: String) -> Result<String, Response> {
    if valid_email(&value) {
        Ok(value)
    } else {
        Err(Response::error(
            422,
            "email must be an address like name@example.com",
        ))
    }
}

fn int_field(body: &Map<String, Value>, name: &str, min: i64) -> Result<Option<i64>, Response> {
    match body.get(name) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (min..=QUESTIONS_MAX).contains(&n) => Ok(Some(n)),
            _ => Err(Response::error(
                422,
                &format!("{name} must be a whole number from {min} to {QUESTIONS_MAX}"),
            )),
        },
    }
}

/// `null` clears; a string must be an http(s) URL.
fn url_field(body: &Map<String, Value>, name: &str) -> Result<Option<Option<String>>, Response> {
    match body.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if valid_url(s) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(Response::error(
            422,
            &format!("{name} must be an http(s) URL or null"),
        )),
    }
}

pub fn valid_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://"))
        && s.len() <= URL_MAX
        && s.len() > "http://".len() + 1
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

macro_rules! try_resp {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(resp) => return resp,
        }
    };
}

fn create_user(app: &mut App, req: &Request, effects: &mut Vec<Effect>) -> Response {
    let body = try_resp!(json_object(req));
    let first =
        try_resp!(required_string(&body, "first_name").and_then(|v| name_field(v, "first_name")));
    let last =
        try_resp!(required_string(&body, "last_name").and_then(|v| name_field(v, "last_name")));
    let email = try_resp!(required_string(&body, "email").and_then(email_field));
    let total = try_resp!(int_field(&body, "questions_total", 1)).unwrap_or(10);
    match app.create_user(first, last, email, total, effects) {
        Ok(user) => Response::new(201).body("application/json", user),
        Err(e) => app_error(e),
    }
}

fn patch_user(app: &mut App, id: i64, req: &Request, effects: &mut Vec<Effect>) -> Response {
    if app.user(id).is_none() {
        return app_error(AppError::NotFound);
    }
    let body = try_resp!(json_object(req));
    let patch = try_resp!(parse_patch(&body));
    if patch.is_empty() {
        return Response::error(
            422,
            "give at least one of first_name, last_name, email, questions_total, questions_answered, transcript_url, summary_url",
        );
    }
    match app.update_user(id, patch, effects) {
        Ok(user) => Response::new(200).body("application/json", user),
        Err(e) => app_error(e),
    }
}

fn parse_patch(body: &Map<String, Value>) -> Result<UserPatch, Response> {
    Ok(UserPatch {
        first_name: string_field(body, "first_name")?
            .map(|v| name_field(v, "first_name"))
            .transpose()?,
        last_name: string_field(body, "last_name")?
            .map(|v| name_field(v, "last_name"))
            .transpose()?,
        email: string_field(body, "email")?.map(email_field).transpose()?,
        questions_total: int_field(body, "questions_total", 1)?,
        questions_answered: int_field(body, "questions_answered", 0)?,
        transcript_url: url_field(body, "transcript_url")?,
        summary_url: url_field(body, "summary_url")?,
    })
}

impl UserPatch {
    fn is_empty(&self) -> bool {
        self.first_name.is_none()
            && self.last_name.is_none()
            && self.email.is_none()
            && self.questions_total.is_none()
            && self.questions_answered.is_none()
            && self.transcript_url.is_none()
            && self.summary_url.is_none()
    }
}

fn session_cookie(token: &str, secure: bool) -> String {
    cookie("session_token", token, secure)
}

fn cookie(name: &str, value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!("{name}={value}; HttpOnly; SameSite=Strict; Path=/{secure}")
}

fn clear_cookie(name: &str, secure: bool) -> String {
    format!("{}; Max-Age=0", cookie(name, "", secure))
}

fn activate(app: &mut App, req: &Request, ctx: &Ctx, effects: &mut Vec<Effect>) -> Response {
    let body = try_resp!(json_object(req));
    let token = try_resp!(required_string(&body, "token"));
    match app.activate(&token, effects) {
        Ok(Activation {
            session_id,
            expires_at,
            remaining_seconds,
        }) => Response::new(200)
            .header("Set-Cookie", &session_cookie(&token, ctx.secure_cookies))
            .json(
                200,
                &json!({
                    "session_id": session_id,
                    "expires_at": app::rfc3339(expires_at),
                    "remaining_seconds": remaining_seconds,
                }),
            ),
        Err(e) => app_error(e),
    }
}

fn answer(app: &mut App, req: &Request, effects: &mut Vec<Effect>) -> Response {
    let body = try_resp!(json_object(req));
    let token = match try_resp!(string_field(&body, "token")) {
        Some(t) => t,
        None => match req.cookie("session_token") {
            Some(t) => t.to_string(),
            None => return Response::error(401, "session token required"),
        },
    };
    match app.answer(&token, effects) {
        Ok((answered, total)) => Response::new(200).json(
            200,
            &json!({ "questions_answered": answered, "questions_total": total }),
        ),
        Err(e) => app_error(e),
    }
}

fn credentials(req: &Request) -> Result<(String, String), Response> {
    let body = json_object(req)?;
    let email = required_string(&body, "email")?;
    let password = required_string(&body, "password")?;
    if email.len() > EMAIL_MAX || password.len() > 4096 {
        return Err(Response::error(422, "email or password too long"));
    }
    Ok((email, password))
}

fn login(app: &mut App, req: &Request, ctx: &mut Ctx) -> Reply {
    let (email, password) = match credentials(req) {
        Ok(c) => c,
        Err(r) => return Reply::Now(r),
    };
    let account = email.to_lowercase();
    let now = app::wall_ms();
    if let Some(secs) = ctx
        .limiter
        .retry_after(&limiter_keys(ctx.client_ip, &account), now)
    {
        ctx.metrics.refused(Refusal::LoginRate);
        return Reply::Now(
            Response::error(429, "too many failed sign-ins; try again later")
                .header("Retry-After", &secs.to_string()),
        );
    }
    let found = app.db().find_admin(&email).unwrap_or_else(|e| {
        log::error!("admin look-up failed: {e}");
        None
    });
    let (admin_id, stored) = match found {
        Some((id, hash)) => (Some(id), hash),
        None => (None, crate::auth::DUMMY_PASSWORD_HASH.to_string()),
    };
    Reply::Later(
        Job::Verify { password, stored },
        Pending::Login {
            admin_id,
            account,
            ip: ctx.client_ip,
        },
    )
}

fn setup(app: &mut App, req: &Request) -> Reply {
    let body = match json_object(req) {
        Ok(b) => b,
        Err(r) => return Reply::Now(r),
    };
    let code = string_field(&body, "code")
        .ok()
        .flatten()
        .unwrap_or_default();
    if app.has_admin() || !app.setup_code_ok(&code) {
        return Reply::Now(Response::error(403, "setup is closed or the code is wrong"));
    }
    let fields = required_string(&body, "email")
        .and_then(email_field)
        .and_then(|email| Ok((email, required_string(&body, "password")?)));
    let (email, password) = match fields {
        Ok(f) => f,
        Err(r) => return Reply::Now(r),
    };
    if let Err(msg) = crate::auth::check_password_rules(&password) {
        return Reply::Now(Response::error(422, msg));
    }
    Reply::Later(Job::Hash { password }, Pending::Setup { email })
}

/// Finish a login or setup with the worker's answer.
pub fn finish(app: &mut App, pending: Pending, outcome: Outcome, ctx: &mut Ctx) -> Response {
    match (pending, outcome) {
        (
            Pending::Login {
                admin_id,
                account,
                ip,
            },
            Outcome::Verified(ok),
        ) => match admin_id.filter(|_| ok) {
            Some(id) => match app.new_admin_session(id) {
                Ok(token) => Response::new(204).header(
                    "Set-Cookie",
                    &cookie("admin_session", &token, ctx.secure_cookies),
                ),
                Err(e) => app_error(e),
            },
            None => {
                ctx.limiter
                    .fail(&limiter_keys(ip, &account), app::wall_ms());
                Response::error(401, "wrong email or password")
            }
        },
        (Pending::Setup { email }, Outcome::Hashed(Ok(hash))) => match app
            .finish_setup(&email, &hash)
        {
            Ok(token) => Response::new(204).header(
                "Set-Cookie",
                &cookie("admin_session", &token, ctx.secure_cookies),
            ),
            Err(AppError::Conflict(_)) => Response::error(403, "setup is closed: an admin exists"),
            Err(e) => app_error(e),
        },
        (_, Outcome::Hashed(Err(e))) => {
            log::error!("password hashing failed: {e}");
            Response::error(500, "password could not be hashed")
        }
        _ => Response::error(500, "internal mix-up of worker answers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in [
            "a@b.c",
            "ada.lovelace+x@example.com",
            "名前@例え.jp",
            "o'brien@x.io",
        ] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "@b.c", "a@", "a b@c.d", "a@b..c", "a@.b", "a@b.", "a@b@c", "a@b\n.c",
        ] {
            assert!(!valid_email(bad), "{bad:?}");
        }
    }

    #[test]
    fn user_routes() {
        assert_eq!(user_route("/api/users/12"), Some((12, false)));
        assert_eq!(user_route("/api/users/12/invite"), Some((12, true)));
        assert_eq!(user_route("/api/users/abc"), Some((0, false)));
        assert_eq!(user_route("/api/users/1/other"), None);
    }

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
