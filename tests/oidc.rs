//! Admin sign-in through a real OpenID provider: `oidc-provider` (the certified Node
//! implementation, `tests/oidc/provider.mjs`) on 127.0.0.2, catalytic on 127.0.0.1 — two sites,
//! as in production. A small browser (cookie jar, redirects, the provider's login and consent
//! forms) drives the whole authorization code flow over loopback HTTP.
//!
//! Needs `node` and `(cd tests/oidc && npm install)` (`.ci/run` does it).
//!
//! Accounts of the test provider: `ada` (verified, allowed domain `allowed.test`), `bob`
//! (verified, `other.test`), `eve` (unverified, `allowed.test`), `root` (verified,
//! `admin@example.com`, which has an admin account here).

mod common;

use common::{Logs, Proc, Server, ADMIN_EMAIL, ADMIN_PASSWORD, WAIT};
use serde_json::{json, Value};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

const PROVIDER_HOST: &str = "127.0.0.2";
const CLIENT_ID: &str = "catalytic-test";
const CLIENT_SECRET: &str = "test-client-secret-0123456789";
const IDP_NAME: &str = "Test IdP";

// ------------------------------------------------------------------------------ the provider

/// A running test provider; killed when dropped.
struct Provider {
    _proc: Proc,
    port: u16,
    logs: Logs,
}

impl Provider {
    fn start(port: u16, redirect_uri: &str, extra: &[&str]) -> Provider {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/oidc");
        assert!(
            dir.join("node_modules/oidc-provider").is_dir(),
            "the test provider is not installed: run `(cd tests/oidc && npm install)`"
        );
        let mut cmd = Command::new("node");
        cmd.current_dir(&dir)
            .arg("provider.mjs")
            .args(["--host", PROVIDER_HOST, "--port", &port.to_string()])
            .args(["--redirect-uri", redirect_uri])
            .args(["--client-id", CLIENT_ID, "--client-secret", CLIENT_SECRET])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut proc = Proc(cmd.spawn().expect("spawn node (is Node.js installed?)"));
        let logs = Logs::default();
        common::drain(proc.stdout.take().unwrap(), logs.clone(), "provider");
        common::drain(proc.stderr.take().unwrap(), logs.clone(), "provider");
        let ready = logs.wait_line(Duration::from_secs(20), |l| {
            l.contains("provider listening on")
        });
        assert!(
            ready.is_some(),
            "provider did not start:\n{}",
            logs.joined()
        );
        Provider {
            _proc: proc,
            port,
            logs,
        }
    }

    fn issuer(&self) -> String {
        format!("http://{PROVIDER_HOST}:{}", self.port)
    }

    /// Make the provider's following token answers carry a broken ID token (test control).
    fn set_mode(&self, mode: &str) {
        let r = agent()
            .post(&format!("{}/__test/mode", self.issuer()))
            .send(mode)
            .expect("provider control");
        assert_eq!(r.status(), 200, "{}", self.logs.joined());
    }
}

/// A port nobody listens on right now, on `host`.
fn free_port(host: &str) -> u16 {
    TcpListener::bind((host, 0))
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// catalytic and the directory holding its client-secret file.
struct Cat {
    server: Server,
    _secret_dir: tempfile::TempDir,
}

impl std::ops::Deref for Cat {
    type Target = Server;
    fn deref(&self) -> &Server {
        &self.server
    }
}

impl std::ops::DerefMut for Cat {
    fn deref_mut(&mut self) -> &mut Server {
        &mut self.server
    }
}

impl Cat {
    fn base(&self) -> String {
        self.server.origin()
    }
}

/// catalytic on `port` (the provider must know the redirect URI before either starts), signing
/// in with the provider at `provider_port`; the client secret in a file. Not started yet.
fn catalytic(port: u16, provider_port: u16, extra: &[&str]) -> Cat {
    let listen = format!("127.0.0.1:{port}");
    let issuer = format!("http://{PROVIDER_HOST}:{provider_port}");
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("client-secret");
    std::fs::write(&secret, format!("{CLIENT_SECRET}\n")).unwrap();
    let secret = secret.to_string_lossy().into_owned();
    let mut args: Vec<&str> = vec![
        "--listen",
        &listen,
        "--oidc-issuer",
        &issuer,
        "--oidc-client-id",
        CLIENT_ID,
        "--oidc-client-secret-file",
        &secret,
        "--oidc-allowed-domains",
        "allowed.test",
        "--oidc-name",
        IDP_NAME,
        "--log-level",
        "debug",
    ];
    args.extend_from_slice(extra);
    Cat {
        server: Server::new(&args),
        _secret_dir: dir,
    }
}

/// Provider first, then catalytic (with a default admin `admin@example.com`), as a deployment
/// starts; returns once catalytic has read the provider's discovery document.
fn pair(provider_extra: &[&str]) -> (Provider, Cat) {
    let pport = free_port(PROVIDER_HOST);
    let sport = free_port("127.0.0.1");
    let provider = Provider::start(pport, &callback_uri(sport), provider_extra);
    let mut cat = catalytic(sport, pport, &[]);
    cat.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD);
    cat.spawn();
    wait_ready(&cat);
    (provider, cat)
}

fn callback_uri(server_port: u16) -> String {
    format!("http://127.0.0.1:{server_port}/api/admin/oidc/callback")
}

/// Until the server has discovered the provider (the login route stops answering 503).
fn wait_ready(cat: &Cat) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = cat.get("/api/admin/oidc/login", None);
        if r.status == 302 {
            return;
        }
        assert_eq!(r.status, 503, "login route before discovery: {}", r.text());
        assert!(
            Instant::now() < deadline,
            "provider not discovered in time:\n{}",
            cat.logs.joined()
        );
        thread::sleep(Duration::from_millis(100));
    }
}

// ------------------------------------------------------------------------------ the browser

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .max_redirects(0)
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into()
}

#[derive(Debug, Clone)]
struct Cookie {
    host: String,
    name: String,
    value: String,
    path: String,
}

/// What one request gave back.
#[derive(Debug)]
struct Page {
    url: String,
    status: u16,
    location: Option<String>,
    body: String,
}

/// A browser as far as these tests need one: host-only cookies with paths, redirects, and the
/// provider's login and consent forms.
struct Browser {
    agent: ureq::Agent,
    jar: Vec<Cookie>,
}

impl Browser {
    fn new() -> Browser {
        Browser {
            agent: agent(),
            jar: Vec::new(),
        }
    }

    fn cookie(&self, host: &str, name: &str) -> Option<String> {
        self.jar
            .iter()
            .find(|c| c.host == host && c.name == name)
            .map(|c| c.value.clone())
    }

    fn set_cookie(&mut self, host: &str, name: &str, value: &str, path: &str) {
        self.jar.retain(|c| !(c.host == host && c.name == name));
        self.jar.push(Cookie {
            host: host.into(),
            name: name.into(),
            value: value.into(),
            path: path.into(),
        });
    }

    fn cookie_header(&self, url: &str) -> String {
        let (host, path) = split_url(url);
        self.jar
            .iter()
            .filter(|c| c.host == host && path.starts_with(&c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn request(&mut self, method: &str, url: &str, form: Option<&[(&str, &str)]>) -> Page {
        let cookies = self.cookie_header(url);
        let result = if method == "POST" {
            let mut req = self.agent.post(url);
            if !cookies.is_empty() {
                req = req.header("Cookie", &cookies);
            }
            req.send_form(form.unwrap_or(&[]).iter().copied())
        } else {
            let mut req = self.agent.get(url);
            if !cookies.is_empty() {
                req = req.header("Cookie", &cookies);
            }
            req.call()
        };
        let mut resp = result.unwrap_or_else(|e| panic!("{method} {url}: {e}"));
        let (host, _) = split_url(url);
        for sc in resp.headers().get_all("set-cookie") {
            self.store(&host, sc.to_str().unwrap_or(""));
        }
        let location = resp
            .headers()
            .get("location")
            .and_then(|v| v.to_str().ok())
            .map(|l| resolve(url, l));
        let status = resp.status().as_u16();
        let body = resp.body_mut().read_to_string().unwrap_or_default();
        Page {
            url: url.to_string(),
            status,
            location,
            body,
        }
    }

    fn store(&mut self, host: &str, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|nv| nv.split_once('=')) else {
            return;
        };
        let mut path = "/".to_string();
        let mut delete = false;
        for attr in parts {
            let (k, v) = attr.split_once('=').unwrap_or((attr, ""));
            match k.trim().to_ascii_lowercase().as_str() {
                "path" => path = v.trim().to_string(),
                "max-age" => delete = v.trim().parse::<i64>().is_ok_and(|n| n <= 0),
                "expires" => delete |= v.contains("1970"),
                _ => {}
            }
        }
        let (name, value) = (name.trim(), value.trim());
        self.jar.retain(|c| !(c.host == host && c.name == name));
        if !delete {
            self.set_cookie(host, name, value, &path);
        }
    }

    /// Follow redirects and fill in the provider's pages (signing in as `account`), until a
    /// page that is neither; with `stop_at_callback`, stop before opening our callback and
    /// return the redirect that points at it.
    fn run(&mut self, url: &str, account: &str, stop_at_callback: bool) -> Page {
        let mut page = self.request("GET", url, None);
        for _ in 0..20 {
            if let Some(next) = page.location.clone() {
                if stop_at_callback && next.contains("/api/admin/oidc/callback") {
                    return page;
                }
                page = self.request("GET", &next, None);
                continue;
            }
            if page.status == 200 && page.body.contains("/interaction/") {
                let action = resolve(&page.url, &form_action(&page.body));
                page = if page.body.contains(r#"name="prompt" value="login""#) {
                    let fields = [("prompt", "login"), ("login", account), ("password", "any")];
                    self.request("POST", &action, Some(&fields))
                } else {
                    self.request("POST", &action, Some(&[("prompt", "consent")]))
                };
                continue;
            }
            return page;
        }
        panic!("too many steps; last page {page:?}");
    }

    /// The whole sign-in from our login route; the final page (the dashboard or the sign-in
    /// page with `signin_error`).
    fn sign_in(&mut self, cat: &Cat, account: &str) -> Page {
        self.run(
            &format!("{}/api/admin/oidc/login", cat.base()),
            account,
            false,
        )
    }
}

/// `(host:port, path?query)` of an absolute http URL.
fn split_url(url: &str) -> (String, String) {
    let rest = url.strip_prefix("http://").expect("http URL");
    match rest.find('/') {
        Some(i) => (rest[..i].to_string(), rest[i..].to_string()),
        None => (rest.to_string(), "/".to_string()),
    }
}

fn resolve(base: &str, location: &str) -> String {
    if location.starts_with("http://") || location.starts_with("https://") {
        return location.to_string();
    }
    let (host, _) = split_url(base);
    format!("http://{host}{location}")
}

fn form_action(html: &str) -> String {
    let i = html.find("action=\"").expect("a form") + "action=\"".len();
    html[i..].split('"').next().unwrap().replace("&amp;", "&")
}

/// The `signin_error` of a final page, decoded; `None` when the sign-in went through.
fn signin_error(page: &Page) -> Option<String> {
    let q = page.url.split_once("signin_error=")?.1;
    let bytes = q.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() && bytes[i] != b'&' {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            out.push(u8::from_str_radix(&q[i + 1..i + 3], 16).unwrap());
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    Some(String::from_utf8(out).unwrap())
}

fn server_host(cat: &Cat) -> String {
    cat.addr.to_string()
}

/// The sign-in went through: we are on the dashboard with a session that works.
fn assert_signed_in(b: &Browser, cat: &Cat, page: &Page) -> String {
    assert_eq!(signin_error(page), None, "{page:?}\n{}", cat.logs.joined());
    assert_eq!(
        page.url,
        format!("{}/", cat.base()),
        "landed on the dashboard"
    );
    assert_eq!(page.status, 200);
    let token = b
        .cookie(&server_host(cat), "admin_session")
        .expect("admin_session cookie");
    assert!(
        b.cookie(&server_host(cat), "oidc_attempt").is_none(),
        "the attempt cookie is cleared"
    );
    assert!(
        b.cookie(&server_host(cat), "device").is_some(),
        "OIDC sign-in sets the device cookie too"
    );
    let cookie = format!("admin_session={token}");
    assert_eq!(cat.get("/api/users", Some(&cookie)).status, 200);
    cookie
}

/// The sign-in was refused with a message containing `needle`, and gave no session.
fn assert_refused(b: &Browser, cat: &Cat, page: &Page, needle: &str) {
    let msg = signin_error(page).unwrap_or_else(|| panic!("not refused: {page:?}"));
    assert!(msg.contains(needle), "message {msg:?} lacks {needle:?}");
    assert!(page
        .url
        .starts_with(&format!("{}/?signin_error=", cat.base())));
    assert!(
        b.cookie(&server_host(cat), "admin_session").is_none(),
        "no session"
    );
}

fn oidc_logins(cat: &Cat, result: &str) -> f64 {
    cat.metric(
        "catalytic_logins_total",
        &[("method", "oidc"), ("result", result)],
    )
}

// ------------------------------------------------------------------------------ the tests

#[test]
fn sign_in_creates_an_admin_on_an_allowed_domain_and_signs_existing_admins_in() {
    let (_p, cat) = pair(&[]);
    let auth = cat.get("/api/admin/auth", None).json();
    assert_eq!(auth, json!({"password": true, "oidc": {"name": IDP_NAME}}));

    // The login route: a redirect with the whole flow, and the attempt cookie.
    let r = cat.get("/api/admin/oidc/login", None);
    assert_eq!(r.status, 302);
    let loc = r.header("Location").unwrap();
    assert!(
        loc.starts_with(&format!("http://{PROVIDER_HOST}:")),
        "{loc}"
    );
    for part in [
        "response_type=code",
        "code_challenge_method=S256",
        "scope=openid%20email%20profile",
        "state=",
        "nonce=",
        &format!("redirect_uri={}", "http%3A%2F%2F127.0.0.1%3A"),
    ] {
        assert!(loc.contains(part), "{part} in {loc}");
    }
    let sc = r.set_cookie("oidc_attempt").unwrap();
    for attr in [
        "HttpOnly",
        "SameSite=Lax",
        "Path=/api/admin/oidc",
        "Max-Age=600",
    ] {
        assert!(common::cookie_has_attr(&sc, attr), "{attr} in {sc}");
    }

    // A new admin from the allowed domain.
    let mut b = Browser::new();
    let page = b.sign_in(&cat, "ada");
    let cookie = assert_signed_in(&b, &cat, &page);
    let (_ws, _) = cat.admin_ws(&cookie);
    // Signing in again finds the same account (no duplicate, no error).
    let mut b2 = Browser::new();
    let page = b2.sign_in(&cat, "ada");
    assert_signed_in(&b2, &cat, &page);

    // An existing admin whose domain is not allowed.
    let mut b3 = Browser::new();
    let page = b3.sign_in(&cat, "root");
    assert_signed_in(&b3, &cat, &page);
    assert_eq!(oidc_logins(&cat, "ok"), 3.0);

    // Logs carry no client secret, code or token.
    let logs = cat.logs.joined();
    assert!(logs.contains("created on first sign-in"), "{logs}");
    assert!(!logs.contains(CLIENT_SECRET));
    assert!(!logs.contains("code="), "{logs}");
    let token = cookie.trim_start_matches("admin_session=");
    assert!(!logs.contains(token));
}

#[test]
fn unverified_emails_and_other_domains_are_refused() {
    let (_p, cat) = pair(&[]);
    let mut b = Browser::new();
    let page = b.sign_in(&cat, "bob");
    assert_refused(&b, &cat, &page, "no admin account for this email");
    let mut b = Browser::new();
    let page = b.sign_in(&cat, "eve");
    assert_refused(&b, &cat, &page, "not verified");
    assert_eq!(oidc_logins(&cat, "failed"), 2.0);
    assert_eq!(oidc_logins(&cat, "ok"), 0.0);
}

#[test]
fn cancelling_at_the_provider_comes_back_as_a_clear_refusal() {
    let (_p, cat) = pair(&[]);
    let mut b = Browser::new();
    // Up to the provider's login page, then its "[ Cancel ]" link instead of signing in.
    let mut page = b.request("GET", &format!("{}/api/admin/oidc/login", cat.base()), None);
    while let Some(next) = page.location.clone() {
        page = b.request("GET", &next, None);
    }
    let i = page
        .body
        .find("[ Cancel ]")
        .expect("the provider's cancel link");
    let href_at = page.body[..i].rfind("href=\"").unwrap() + "href=\"".len();
    let href = page.body[href_at..]
        .split('"')
        .next()
        .unwrap()
        .replace("&amp;", "&");
    let abort = resolve(&page.url, &href);
    let page = b.run(&abort, "", false);
    assert_refused(&b, &cat, &page, "cancelled at the identity provider");
}

#[test]
fn state_is_bound_to_its_browser_and_used_once() {
    let (_p, cat) = pair(&[]);
    let host = server_host(&cat);
    let mut a = Browser::new();
    let to_callback = a.run(&format!("{}/api/admin/oidc/login", cat.base()), "ada", true);
    let callback = to_callback
        .location
        .clone()
        .expect("redirect to the callback");
    assert!(callback.contains("state="), "{callback}");

    // Another browser, with an attempt of its own, opens A's callback: refused.
    let mut other = Browser::new();
    let r = other.request("GET", &format!("{}/api/admin/oidc/login", cat.base()), None);
    assert_eq!(r.status, 302);
    let page = other.run(&callback, "", false);
    assert_refused(&other, &cat, &page, "another browser");
    // And one with no attempt at all.
    let mut none = Browser::new();
    let page = none.run(&callback, "", false);
    assert_refused(&none, &cat, &page, "another browser");

    // A itself: the refusals spent nothing.
    let attempt = a.cookie(&host, "oidc_attempt").expect("attempt cookie");
    let page = a.run(&callback, "", false);
    assert_signed_in(&a, &cat, &page);

    // Replayed with the attempt cookie put back (a captured request): used once only.
    let mut replay = Browser::new();
    replay.set_cookie(&host, "oidc_attempt", &attempt, "/api/admin/oidc");
    let page = replay.run(&callback, "", false);
    assert_refused(&replay, &cat, &page, "already used");
}

#[test]
fn tampered_expired_and_misaddressed_id_tokens_are_refused() {
    let (p, cat) = pair(&[]);
    for (mode, needle) in [
        ("tamper", "signature does not verify"),
        ("expired", "has expired"),
        ("wrong-aud", "another application"),
    ] {
        p.set_mode(mode);
        let mut b = Browser::new();
        let page = b.sign_in(&cat, "ada");
        assert_refused(&b, &cat, &page, needle);
    }
    // A key the provider does not publish: the keys are fetched again once (the `kid` might be
    // a rotation), and not again within the minute however many such tokens arrive.
    p.set_mode("rogue-key");
    for _ in 0..2 {
        let mut b = Browser::new();
        let page = b.sign_in(&cat, "ada");
        assert_refused(&b, &cat, &page, "key the provider does not publish");
    }
    let refetches = |cat: &Cat| {
        cat.logs
            .lines()
            .iter()
            .filter(|l| l.contains("fetched again"))
            .count()
    };
    assert_eq!(refetches(&cat), 1, "{}", cat.logs.joined());
    assert_eq!(oidc_logins(&cat, "failed"), 5.0);

    p.set_mode("none");
    let mut b = Browser::new();
    let page = b.sign_in(&cat, "ada");
    assert_signed_in(&b, &cat, &page);
}

#[test]
fn a_provider_that_rotates_its_signing_key_keeps_working() {
    let pport = free_port(PROVIDER_HOST);
    let sport = free_port("127.0.0.1");
    let provider = Provider::start(pport, &callback_uri(sport), &["--kid", "rsa-2024"]);
    let mut cat = catalytic(sport, pport, &[]);
    cat.spawn();
    wait_ready(&cat);
    let mut b = Browser::new();
    let page = b.sign_in(&cat, "ada");
    assert_signed_in(&b, &cat, &page);

    // The provider restarts with a new key, of another kind too (ES256): catalytic has never
    // seen its `kid` and fetches the keys again.
    drop(provider);
    let _provider = Provider::start(
        pport,
        &callback_uri(sport),
        &["--kid", "ec-2025", "--alg", "ES256"],
    );
    let mut b = Browser::new();
    let page = b.sign_in(&cat, "ada");
    assert_signed_in(&b, &cat, &page);
    assert!(cat
        .logs
        .wait_line(WAIT, |l| l.contains("fetched again"))
        .is_some());
}

#[test]
fn a_provider_down_at_start_leaves_the_rest_working_and_is_used_once_up() {
    let pport = free_port(PROVIDER_HOST);
    let sport = free_port("127.0.0.1");
    let mut cat = catalytic(sport, pport, &[]);
    cat.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD);
    cat.spawn();

    // OIDC sign-in: 503 while the provider is down; the form still names it.
    let r = cat.get("/api/admin/oidc/login", None);
    r.assert_error(503, "login while the provider is down");
    assert!(r.header("Retry-After").is_some());
    assert_eq!(
        cat.get("/api/admin/auth", None).json(),
        json!({"password": true, "oidc": {"name": IDP_NAME}})
    );
    // Password sign-in and the streams carry on.
    let login = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
    let r = cat.json("POST", "/api/admin/login", None, Some(&login));
    assert_eq!(r.status, 204, "{}", r.text());
    let cookie = format!("admin_session={}", r.cookie_value("admin_session").unwrap());
    let (mut ws, _) = cat.admin_ws(&cookie);
    let created = cat.json(
        "POST",
        "/api/users",
        Some(&cookie),
        Some(&json!({"first_name": "A", "last_name": "B", "email": "a@b.io"})),
    );
    assert_eq!(created.status, 201);
    let msg: Value = common::recv_json(&mut ws, WAIT);
    assert_eq!(msg["type"], "user_added");

    // The provider comes up: sign-in works within the retry backoff (tries ≤ 5 s apart).
    let _provider = Provider::start(pport, &callback_uri(sport), &[]);
    let up = Instant::now();
    wait_ready(&cat);
    assert!(up.elapsed() < Duration::from_secs(7), "{:?}", up.elapsed());
    let mut b = Browser::new();
    let page = b.sign_in(&cat, "ada");
    assert_signed_in(&b, &cat, &page);
}

#[test]
fn password_sign_in_can_be_turned_off_and_oidc_routes_need_configuration() {
    let pport = free_port(PROVIDER_HOST);
    let mut cat = catalytic(free_port("127.0.0.1"), pport, &["--password-login", "off"]);
    cat.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD);
    cat.spawn();
    assert_eq!(
        cat.get("/api/admin/auth", None).json(),
        json!({"password": false, "oidc": {"name": IDP_NAME}})
    );
    let login = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
    cat.json("POST", "/api/admin/login", None, Some(&login))
        .assert_error(403, "password login off");

    let plain = Server::start(&[]);
    assert_eq!(
        plain.get("/api/admin/auth", None).json(),
        json!({"password": true, "oidc": null})
    );
    plain
        .get("/api/admin/oidc/login", None)
        .assert_error(404, "no OIDC configured");
    plain
        .get("/api/admin/oidc/callback?code=x&state=y", None)
        .assert_error(404, "no OIDC configured");
}
