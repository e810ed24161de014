//! Admin authentication: the `admin_session` cookie on every admin route and on the admin
//! stream (missing, expired, logged-out and forged cookies are refused and change nothing),
//! login and logout, cookie attributes, every value of a repeated cookie name tried, and the
//! one-time setup code. The failed-login limit and device cookies are in `login_limit.rs`;
//! session expiry and revocation in `admin_sessions.rs`; password strength in
//! `password_strength.rs`.

mod common;

use std::thread;
use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[test]
fn admin_routes_and_stream_refuse_missing_expired_and_forged_cookies() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let invitee = srv.started_session(2);
    let valid = srv.admin_cookie();
    let token = valid.trim_start_matches("admin_session=").to_string();
    // A token that expires ~1 s from now.
    let short = format!(
        "admin_session={}",
        srv.admin_token_with_ttl(ADMIN_EMAIL, "0.0003")
    );
    let minted = Instant::now();
    // A logged-out token.
    let gone = srv.second_admin_cookie();
    let r = srv.request("POST", "/api/admin/logout", &[("Cookie", &gone)], None);
    assert_eq!(r.status, 204, "logout");
    let mut flipped = token.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'a' { b'b' } else { b'a' };
    let flipped = format!("admin_session={}", String::from_utf8(flipped).unwrap());
    let mut rng = Rng(7);
    let random: String = rng.bytes(32).iter().map(|b| format!("{b:02x}")).collect();
    let user = srv.create_user("Target", "User", None);
    let id = id_of(&user);
    while minted.elapsed() < Duration::from_millis(1_600) {
        thread::sleep(Duration::from_millis(50));
    }
    let cookies: Vec<(String, Option<String>)> = vec![
        ("missing".into(), None),
        ("empty".into(), Some("admin_session=".into())),
        ("expired".into(), Some(short)),
        ("logged out".into(), Some(gone)),
        ("last character flipped".into(), Some(flipped)),
        ("token plus a byte".into(), Some(format!("{valid}x"))),
        (
            "prefix of the token".into(),
            Some(format!("admin_session={}", &token[..token.len() / 2])),
        ),
        (
            "random 64 hex".into(),
            Some(format!("admin_session={random}")),
        ),
        (
            "SQL injection".into(),
            Some("admin_session=' OR '1'='1".into()),
        ),
        (
            "other cookie name".into(),
            Some(format!("session_token={token}")),
        ),
        (
            "token as another name's value".into(),
            Some(format!("xadmin_session={token}")),
        ),
        (
            "8 KiB of junk".into(),
            Some(format!("admin_session={}", "z".repeat(8192))),
        ),
        (
            "bogus".into(),
            Some("admin_session=not-a-real-token".into()),
        ),
        (
            "invitee's session cookie".into(),
            Some(format!("session_token={}", invitee.cookie)),
        ),
    ];
    let routes: Vec<(&str, String, Option<Value>)> = vec![
        ("GET", "/api/users".into(), None),
        (
            "POST",
            "/api/users".into(),
            Some(json!({"first_name":"Forged","last_name":"Cookie","email":"forged@example.com"})),
        ),
        (
            "PATCH",
            format!("/api/users/{id}"),
            Some(json!({"last_name": "pwned"})),
        ),
        ("DELETE", format!("/api/users/{id}"), None),
        ("POST", format!("/api/users/{id}/invite"), None),
        ("POST", "/api/admin/logout".into(), None),
        // Unknown ids: 401 before 404.
        (
            "PATCH",
            "/api/users/999999".into(),
            Some(json!({"first_name":"X"})),
        ),
        ("DELETE", "/api/users/999999".into(), None),
        ("POST", "/api/users/999999/invite".into(), None),
    ];
    for (what, cookie) in &cookies {
        for (m, path, body) in &routes {
            let r = srv.json(m, path, cookie.as_deref(), body.as_ref());
            r.assert_error(401, &format!("{m} {path} with {what} cookie"));
        }
        let res = srv.ws_connect("/admin/stream", cookie.as_deref(), None);
        assert_closed_1008(
            res,
            "Unauthorized",
            &format!("/admin/stream with {what} cookie"),
        );
    }
    // Nothing changed.
    let after = srv.user(id);
    assert_eq!(after["last_name"], "User", "a forged cookie changed a user");
    assert!(
        !srv.users()
            .iter()
            .any(|u| u["email"] == "forged@example.com"),
        "a forged cookie created a user"
    );
    srv.wait_metric(
        "catalytic_ws_closed_total",
        &[("reason", "unauthorized")],
        WAIT,
        |v| v >= 3.0,
    );
    // Only the live admin's stream is open.
    srv.wait_metric(
        "catalytic_ws_connections",
        &[("stream", "admin")],
        WAIT,
        |v| v == 1.0,
    );
    assert_serving(&srv, &live, "forged cookies");
}

#[test]
fn login_logout_and_cookie_attributes() {
    let srv = Server::start(&[]);
    srv.admin_cookie(); // creates the admin

    let bad = json!({"email": ADMIN_EMAIL, "password": "wrong"});
    srv.json("POST", "/api/admin/login", None, Some(&bad))
        .assert_error(401, "wrong password");
    let unknown = json!({"email": "nobody@example.com", "password": ADMIN_PASSWORD});
    srv.json("POST", "/api/admin/login", None, Some(&unknown))
        .assert_error(401, "unknown email");

    let good = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
    let r = srv.json("POST", "/api/admin/login", None, Some(&good));
    assert_eq!(r.status, 204, "login: {}", r.text());
    let sc = r.set_cookie("admin_session").expect("admin_session cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie_has_attr(&sc, attr),
            "admin cookie lacks {attr}: {sc}"
        );
    }
    assert!(
        !cookie_has_attr(&sc, "Secure"),
        "Secure on a plain-http server: {sc}"
    );
    let cookie = format!("admin_session={}", r.cookie_value("admin_session").unwrap());
    assert_eq!(srv.get("/api/users", Some(&cookie)).status, 200);

    // An independent session (the CLI one) survives this session's logout.
    let other = srv.admin_cookie();
    let (mut ws_mine, _) = srv.admin_ws(&cookie);
    let (mut ws_other, _) = srv.admin_ws(&other);

    let r = srv.request("POST", "/api/admin/logout", &[("Cookie", &cookie)], None);
    assert_eq!(r.status, 204, "logout: {}", r.text());
    let cleared = r
        .set_cookie("admin_session")
        .expect("logout clears the cookie");
    let val = r.cookie_value("admin_session").unwrap();
    let lower = cleared.to_ascii_lowercase();
    assert!(
        val.is_empty() || lower.contains("max-age=0") || lower.contains("expires=thu, 01 jan 1970"),
        "logout cookie does not clear: {cleared}"
    );
    assert!(
        lower.contains("max-age=0") || lower.contains("expires="),
        "cleared cookie must expire: {cleared}"
    );

    let (code, _) = expect_close(&mut ws_mine, WAIT);
    assert_eq!(code, 1008, "logged-out admin's stream closed 1008");
    srv.get("/api/users", Some(&cookie))
        .assert_error(401, "cookie after logout");
    assert_eq!(srv.get("/api/users", Some(&other)).status, 200);

    // The other admin's stream is alive and receives events.
    let u = srv.create_user("Still", "Here", None);
    let ev = recv_json(&mut ws_other, WAIT);
    assert_eq!(ev["type"], "user_added");
    assert_eq!(ev["data"], u);
}

/// Issue 12, item 12: `admin_session=<stale>; admin_session=<valid>` (what a sibling
/// subdomain or a stale path cookie produces) got 401. Every value is tried — for the admin
/// cookie (cached or looked up in storage), the session cookie, on HTTP and on streams.
#[test]
fn every_value_of_a_repeated_cookie_is_tried() {
    let srv = Server::start(&[]);
    let valid = srv.admin_cookie();
    let stale = "admin_session=0000000000000000000000000000000000000000000000000000000000000000";
    let both = format!("{stale}; {valid}");
    assert_eq!(
        srv.get("/api/users", Some(&both)).status,
        200,
        "stale first, cached valid"
    );
    // A CLI token this process has never seen sits behind a stale one: looked up with it.
    let fresh = format!("admin_session={}", srv.admin_token(ADMIN_EMAIL));
    let r = srv.request(
        "GET",
        "/api/users",
        &[("Cookie", stale), ("Cookie", &fresh)],
        None,
    );
    assert_eq!(
        r.status,
        200,
        "two Cookie headers, the valid one uncached: {}",
        r.text()
    );
    let fresh2 = format!("admin_session={}", srv.admin_token(ADMIN_EMAIL));
    let (mut ws, _) = srv.admin_ws(&format!("{stale}; {fresh2}"));
    // Logout ends the session that was valid, not the stale one.
    let r = srv.request(
        "POST",
        "/api/admin/logout",
        &[("Cookie", &format!("{stale}; {fresh2}"))],
        None,
    );
    assert_eq!(r.status, 204);
    assert_eq!(
        expect_close(&mut ws, WAIT).0,
        1008,
        "the valid session's stream closed"
    );
    assert_eq!(srv.get("/api/users", Some(&fresh2)).status, 401);
    assert_eq!(
        srv.get("/api/users", Some(&valid)).status,
        200,
        "other sessions unaffected"
    );
    assert_eq!(
        srv.get("/api/users", Some(stale)).status,
        401,
        "stale alone is still stale"
    );

    let s = srv.started_session(3);
    let session = format!("session_token=deadbeef; session_token={}", s.cookie);
    let mut ws = srv
        .ws_connect(
            &format!("/session/{}/stream", s.session_id),
            Some(&session),
            None,
        )
        .expect("session stream");
    session_opening(&mut ws);
    let r = srv.request("POST", "/api/session/answer", &[("Cookie", &session)], None);
    assert_eq!(
        r.status,
        200,
        "answer with a stale session cookie first: {}",
        r.text()
    );
}

#[test]
fn secure_cookies_and_urls_with_https_public_url() {
    let srv = Server::start(&["--public-url", "https://interviews.example.com"]);
    srv.admin_cookie();
    let good = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD});
    let r = srv.json("POST", "/api/admin/login", None, Some(&good));
    assert_eq!(r.status, 204);
    let sc = r.set_cookie("admin_session").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(
            cookie_has_attr(&sc, attr),
            "admin cookie lacks {attr}: {sc}"
        );
    }
    let dc = r.set_cookie("device").expect("device cookie");
    assert!(
        cookie_has_attr(&dc, "Secure"),
        "device cookie lacks Secure: {dc}"
    );
    let u = srv.create_user("Ada", "Lovelace", None);
    let url = u["invite_url"].as_str().unwrap();
    assert!(
        url.starts_with("https://interviews.example.com/session?token="),
        "invite_url {url}"
    );
    let r = srv.activate(&invite_token(&u));
    assert_eq!(r.status, 200);
    let sc = r.set_cookie("session_token").unwrap();
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/", "Secure"] {
        assert!(
            cookie_has_attr(&sc, attr),
            "session cookie lacks {attr}: {sc}"
        );
    }
}

#[test]
fn setup_code_flow() {
    let srv = Server::start(&[]);
    let (line, code) = srv.setup_code();
    let prefix = format!("http://{}/setup?code=", srv.addr);
    assert!(
        line.contains(&prefix),
        "setup URL uses the server's URL: {line}"
    );

    let body = |code: &str| json!({"code": code, "email": "first@example.com", "password": ADMIN_PASSWORD});
    srv.json("POST", "/api/admin/setup", None, Some(&body("wrong-code")))
        .assert_error(403, "setup with a wrong code");
    let r = srv.json("POST", "/api/admin/setup", None, Some(&body(&code)));
    assert_eq!(r.status, 204, "setup with the right code: {}", r.text());
    let sc = r
        .set_cookie("admin_session")
        .expect("setup sets admin_session");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie_has_attr(&sc, attr),
            "setup cookie lacks {attr}: {sc}"
        );
    }
    assert!(
        r.set_cookie("device").is_some(),
        "setup sets the device cookie too"
    );
    let cookie = format!("admin_session={}", r.cookie_value("admin_session").unwrap());
    let r = srv.get("/api/users", Some(&cookie));
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), json!([]));

    // Once an admin exists the code is dead.
    let again = json!({"code": code, "email": "second@example.com", "password": ADMIN_PASSWORD});
    srv.json("POST", "/api/admin/setup", None, Some(&again))
        .assert_error(403, "setup a second time");
    // The first admin can log in with the chosen password.
    let r = srv.json(
        "POST",
        "/api/admin/login",
        None,
        Some(&json!({"email":"first@example.com","password":ADMIN_PASSWORD})),
    );
    assert_eq!(r.status, 204);
    let r = srv.json(
        "POST",
        "/api/admin/login",
        None,
        Some(&json!({"email":"second@example.com","password":ADMIN_PASSWORD})),
    );
    assert_eq!(r.status, 401, "the refused setup created no admin");
}

#[test]
fn setup_code_dies_when_admin_created_by_cli() {
    let srv = Server::start(&[]);
    let (_, code) = srv.setup_code();
    srv.admin_cookie();
    let b = json!({"code": code, "email": "late@example.com", "password": ADMIN_PASSWORD});
    srv.json("POST", "/api/admin/setup", None, Some(&b))
        .assert_error(403, "setup after the CLI created an admin");
}

#[test]
fn no_setup_line_when_an_admin_exists() {
    let mut srv = Server::new(&[]);
    srv.create_admin(ADMIN_EMAIL, ADMIN_PASSWORD);
    srv.spawn();
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        !srv.logs.joined().contains("setup?code="),
        "setup URL logged although an admin exists:\n{}",
        srv.logs.joined()
    );
    let b = json!({"code": "anything", "email": "x@example.com", "password": ADMIN_PASSWORD});
    srv.json("POST", "/api/admin/setup", None, Some(&b))
        .assert_error(403, "setup when an admin exists");
}
