//! HTTP API of the contract: routes, statuses, JSON error shape, cookies, framing rules.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::{json, Value};

#[test]
fn healthz_metrics_and_pages() {
    let srv = Server::start(&[]);
    let r = srv.get("/healthz", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.text(), "ok");

    let r = srv.get("/metrics", None);
    assert_eq!(r.status, 200);
    let ct = r.header("Content-Type").unwrap_or("");
    assert!(ct.starts_with("text/plain"), "metrics Content-Type {ct:?}");
    let text = r.text();
    for name in [
        "catalytic_ws_connections",
        "catalytic_ws_accepted_total",
        "catalytic_ws_closed_total",
        "catalytic_http_requests_total",
    ] {
        assert!(text.contains(name), "/metrics lacks {name}:\n{text}");
    }
    // The /healthz above was a 200.
    assert!(
        metric_value(&text, "catalytic_http_requests_total", &[("code", "200")]).unwrap_or(0.0)
            >= 1.0,
        "http_requests_total{{code=\"200\"}}:\n{text}"
    );

    for path in [
        "/",
        "/session?token=abc",
        "/session/expired",
        "/setup?code=abc",
    ] {
        let r = srv.get(path, None);
        assert_eq!(r.status, 200, "GET {path}");
        let ct = r.header("Content-Type").unwrap_or("");
        assert!(
            ct.starts_with("text/html"),
            "GET {path}: Content-Type {ct:?}"
        );
        assert!(!r.body.is_empty(), "GET {path}: empty body");
    }
}

#[test]
fn unknown_api_route_is_json_404() {
    let srv = Server::start(&[]);
    srv.get("/api/nope", Some(&srv.admin_cookie()))
        .assert_error(404, "GET /api/nope");
}

#[test]
fn admin_routes_require_a_valid_cookie() {
    let srv = Server::start(&[]);
    let bad = "admin_session=not-a-real-token";
    let body = json!({"first_name":"A","last_name":"B","email":"a@example.com"});
    for cookie in [None, Some(bad)] {
        let what = |m: &str| format!("{m} with cookie {cookie:?}");
        srv.json("GET", "/api/users", cookie, None)
            .assert_error(401, &what("GET /api/users"));
        srv.json("POST", "/api/users", cookie, Some(&body))
            .assert_error(401, &what("POST /api/users"));
        srv.json(
            "PATCH",
            "/api/users/1",
            cookie,
            Some(&json!({"first_name":"X"})),
        )
        .assert_error(401, &what("PATCH /api/users/1"));
        srv.json("DELETE", "/api/users/1", cookie, None)
            .assert_error(401, &what("DELETE /api/users/1"));
        srv.json("POST", "/api/users/1/invite", cookie, None)
            .assert_error(401, &what("POST invite"));
        srv.json("POST", "/api/admin/logout", cookie, None)
            .assert_error(401, &what("POST logout"));
    }
}

#[test]
fn user_crud_and_shape() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();

    let r = srv.get("/api/users", Some(&c));
    assert_eq!(r.status, 200);
    assert!(r
        .header("Content-Type")
        .unwrap_or("")
        .starts_with("application/json"));
    assert_eq!(r.json(), json!([]));

    let body = json!({"first_name":"Ada","last_name":"Lovelace","email":"ada@example.com","questions_total":10});
    let r = srv.json("POST", "/api/users", Some(&c), Some(&body));
    assert_eq!(r.status, 201, "{}", r.text());
    let u = r.json();
    assert_user_shape(&u);
    assert_eq!(u["first_name"], "Ada");
    assert_eq!(u["last_name"], "Lovelace");
    assert_eq!(u["email"], "ada@example.com");
    assert_eq!(u["status"], "invited");
    assert_eq!(u["progress"], "0/10");
    assert_eq!(u["token_valid"], true);
    assert_eq!(u["session_timer"], Value::Null);
    assert_eq!(u["transcript"], Value::Null);
    assert_eq!(u["summary"], Value::Null);
    let token = invite_token(&u);
    assert!(
        token.len() >= 16,
        "invite token too short to be unguessable: {token:?}"
    );
    let id = id_of(&u);

    // Second user, then the list is newest first.
    let u2 = srv.create_user("Grace", "Hopper", None);
    assert_user_shape(&u2);
    assert!(id_of(&u2) != id);
    let list = srv.users();
    assert_eq!(list.len(), 2);
    assert_eq!(id_of(&list[0]), id_of(&u2), "newest first");
    assert_eq!(list[1], u);

    // PATCH every patchable field.
    let p = json!({
        "first_name": "Augusta", "last_name": "King", "email": "augusta@example.com",
        "questions_total": 12, "questions_answered": 3,
        "transcript_url": "https://files.example.com/t/1", "summary_url": "https://files.example.com/s/1"
    });
    let r = srv.patch_user(id, &p);
    assert_eq!(r.status, 200, "{}", r.text());
    let pu = r.json();
    assert_user_shape(&pu);
    assert_eq!(pu["id"], json!(id));
    assert_eq!(pu["first_name"], "Augusta");
    assert_eq!(pu["last_name"], "King");
    assert_eq!(pu["email"], "augusta@example.com");
    assert_eq!(pu["progress"], "3/12");
    assert_eq!(pu["transcript"], "https://files.example.com/t/1");
    assert_eq!(pu["summary"], "https://files.example.com/s/1");
    assert_eq!(srv.user(id), pu, "GET reflects the PATCH");

    // Partial PATCH leaves other fields alone.
    let r = srv.patch_user(id, &json!({"last_name": "Byron"}));
    assert_eq!(r.status, 200);
    let pu2 = r.json();
    assert_eq!(pu2["last_name"], "Byron");
    assert_eq!(pu2["first_name"], "Augusta");
    assert_eq!(pu2["progress"], "3/12");

    // 404s.
    srv.patch_user(999_999, &json!({"first_name":"X"}))
        .assert_error(404, "PATCH unknown id");
    srv.json("DELETE", "/api/users/999999", Some(&c), None)
        .assert_error(404, "DELETE unknown id");

    // DELETE.
    let r = srv.json("DELETE", &format!("/api/users/{id}"), Some(&c), None);
    assert_eq!(r.status, 204);
    assert!(r.body.is_empty());
    srv.json("DELETE", &format!("/api/users/{id}"), Some(&c), None)
        .assert_error(404, "DELETE twice");
    let list = srv.users();
    assert_eq!(list.len(), 1);
    assert_eq!(id_of(&list[0]), id_of(&u2));
    // The deleted user's invite is dead.
    srv.activate(&token)
        .assert_error(401, "activate deleted user's token");
}

#[test]
fn body_validation_statuses() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let ok = json!({"first_name":"Ada","last_name":"Lovelace","email":"ada@example.com"});
    let raw = |ct: Option<&str>, body: &[u8]| {
        let mut h = vec![("Cookie", c.as_str())];
        if let Some(ct) = ct {
            h.push(("Content-Type", ct));
        }
        srv.request("POST", "/api/users", &h, Some(body))
    };
    let okb = serde_json::to_vec(&ok).unwrap();

    raw(None, &okb).assert_error(415, "JSON body without Content-Type");
    raw(Some("text/plain"), &okb).assert_error(415, "text/plain body");
    raw(Some("application/x-www-form-urlencoded"), b"first_name=a").assert_error(415, "form body");
    raw(Some("application/json"), b"{\"first_name\": ").assert_error(400, "malformed JSON");
    raw(Some("application/json"), b"not json").assert_error(400, "malformed JSON 2");

    let bad_bodies = [
        json!({"last_name":"L","email":"a1@example.com"}),
        json!({"first_name":"F","email":"a2@example.com"}),
        json!({"first_name":"F","last_name":"L"}),
        json!({"first_name":"","last_name":"L","email":"a3@example.com"}),
        json!({"first_name":"F","last_name":"","email":"a4@example.com"}),
        json!({"first_name":"x".repeat(201),"last_name":"L","email":"a5@example.com"}),
        json!({"first_name":"F","last_name":"é".repeat(201),"email":"a6@example.com"}),
        json!({"first_name":"F","last_name":"L","email":"not-an-email"}),
        json!({"first_name":"F","last_name":"L","email":""}),
        json!({"first_name":5,"last_name":"L","email":"a7@example.com"}),
        json!({"first_name":"F","last_name":"L","email":"a8@example.com","questions_total":"ten"}),
        json!([1, 2, 3]),
    ];
    for b in &bad_bodies {
        srv.json("POST", "/api/users", Some(&c), Some(b))
            .assert_error(422, &format!("POST /api/users {b}"));
    }
    assert!(srv.users().is_empty(), "nothing stored by invalid requests");

    // Names are 1–200 characters (not bytes) and stored exactly as sent.
    let long = "é".repeat(200);
    let exact = " Ada  \"quoted\" <b>&amp;</b> ";
    let body = json!({"first_name": long, "last_name": exact, "email":"ok@example.com"});
    let r = srv.json("POST", "/api/users", Some(&c), Some(&body));
    assert_eq!(r.status, 201, "200-character name: {}", r.text());
    let u = r.json();
    assert_eq!(u["first_name"], json!(long));
    assert_eq!(u["last_name"], json!(exact));
    assert_eq!(srv.user(id_of(&u))["last_name"], json!(exact));

    // application/json with a charset parameter is JSON.
    let b2 =
        serde_json::to_vec(&json!({"first_name":"A","last_name":"B","email":"cs@example.com"}))
            .unwrap();
    let r = raw(Some("application/json; charset=utf-8"), &b2);
    assert_eq!(r.status, 201, "charset parameter: {}", r.text());

    // Duplicate email.
    srv.json(
        "POST",
        "/api/users",
        Some(&c),
        Some(&json!({"first_name":"X","last_name":"Y","email":"ok@example.com"})),
    )
    .assert_error(409, "duplicate email");
    // PATCH: invalid fields 422, duplicate email 409, unchanged afterwards.
    let id = id_of(&u);
    srv.patch_user(id, &json!({"first_name": ""}))
        .assert_error(422, "PATCH empty first_name");
    srv.patch_user(id, &json!({"email": "nope"}))
        .assert_error(422, "PATCH bad email");
    srv.patch_user(id, &json!({"email": "cs@example.com"}))
        .assert_error(409, "PATCH duplicate email");
    let r = srv.request(
        "PATCH",
        &format!("/api/users/{id}"),
        &[("Cookie", &c), ("Content-Type", "text/plain")],
        Some(b"{\"first_name\":\"Z\"}"),
    );
    r.assert_error(415, "PATCH text/plain");
    assert_eq!(srv.user(id), u, "user unchanged by failed PATCHes");
}

#[test]
fn oversized_body_is_413() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let big = format!(
        "{{\"first_name\":\"A\",\"last_name\":\"B\",\"email\":\"big@example.com\",\"pad\":\"{}\"}}",
        "x".repeat(70 * 1024)
    );
    // The server may answer before reading the whole body; write errors are ignored.
    let r = srv
        .post_user_bytes(&c, big.as_bytes())
        .expect("a response to an oversized body");
    r.assert_error(413, "70 KiB body");
    assert!(srv.users().is_empty());
}

#[test]
fn empty_body_needs_no_content_type() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let u = srv.create_user("Ada", "Lovelace", None);
    let r = srv.request(
        "POST",
        &format!("/api/users/{}/invite", id_of(&u)),
        &[("Cookie", &c)],
        None,
    );
    assert_eq!(r.status, 200, "invite with no body: {}", r.text());
    let r = srv.request(
        "POST",
        &format!("/api/users/{}/invite", id_of(&u)),
        &[("Cookie", &c), ("Content-Length", "0")],
        None,
    );
    assert_eq!(r.status, 200, "invite with Content-Length: 0: {}", r.text());
}

#[test]
fn invite_regeneration_kills_old_token() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let u = srv.create_user("Ada", "Lovelace", Some(3));
    let old = invite_token(&u);
    let nu = srv.regenerate_invite(id_of(&u), &c);
    assert_user_shape(&nu);
    let new = invite_token(&nu);
    assert_ne!(old, new, "a new invite token");
    assert_eq!(nu["token_valid"], true);
    srv.activate(&old)
        .assert_error(401, "activate with the old token");
    let r = srv.activate(&new);
    assert_eq!(r.status, 200, "activate with the new token: {}", r.text());
}

#[test]
fn activation_and_answer() {
    let srv = Server::start(&[]);
    let u = srv.create_user("Ada", "Lovelace", Some(4));
    let token = invite_token(&u);

    srv.activate("definitely-not-a-token")
        .assert_error(401, "unknown token");
    srv.json("POST", "/api/session/activate", None, Some(&json!({})))
        .assert_error(422, "activate without token");

    let r = srv.activate(&token);
    assert_eq!(r.status, 200, "{}", r.text());
    let b = r.json();
    let keys: Vec<&str> = b.as_object().unwrap().keys().map(String::as_str).collect();
    for k in ["session_id", "expires_at", "remaining_seconds"] {
        assert!(keys.contains(&k), "activate body lacks {k}: {b}");
    }
    assert!(!b["expires_at"].is_null(), "expires_at: {b}");
    let rem = b["remaining_seconds"]
        .as_f64()
        .expect("remaining_seconds number");
    assert!(
        (1790.0..=1800.0).contains(&rem),
        "remaining_seconds {rem} for 30 min"
    );
    let sc = r.set_cookie("session_token").expect("session_token cookie");
    for attr in ["HttpOnly", "SameSite=Strict", "Path=/"] {
        assert!(
            cookie_has_attr(&sc, attr),
            "session cookie lacks {attr}: {sc}"
        );
    }
    assert!(
        !cookie_has_attr(&sc, "Secure"),
        "Secure on a plain-http server: {sc}"
    );
    let cookie_val = r.cookie_value("session_token").unwrap();
    assert!(!cookie_val.is_empty());

    let uu = srv.user(id_of(&u));
    assert_eq!(uu["status"], "in_progress");
    assert!(uu["session_timer"].is_string(), "timer once started: {uu}");

    // Activating again does not restart the clock.
    std::thread::sleep(Duration::from_millis(1100));
    let r2 = srv.activate(&token);
    assert_eq!(r2.status, 200);
    let b2 = r2.json();
    assert_eq!(b2["session_id"], b["session_id"]);
    assert_eq!(b2["expires_at"], b["expires_at"], "clock not restarted");
    assert!(b2["remaining_seconds"].as_f64().unwrap() < rem);

    // Answer with the body token and with the cookie.
    let r = srv.json(
        "POST",
        "/api/session/answer",
        None,
        Some(&json!({"token": token})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"questions_answered": 1, "questions_total": 4})
    );
    let ck = format!("session_token={cookie_val}");
    let r = srv.request("POST", "/api/session/answer", &[("Cookie", &ck)], None);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json(),
        json!({"questions_answered": 2, "questions_total": 4})
    );
    assert_eq!(srv.user(id_of(&u))["progress"], "2/4");

    srv.request("POST", "/api/session/answer", &[], None)
        .assert_error(401, "answer without token");
    srv.json(
        "POST",
        "/api/session/answer",
        None,
        Some(&json!({"token":"bogus"})),
    )
    .assert_error(401, "answer with a bogus token");
    assert_eq!(srv.user(id_of(&u))["progress"], "2/4");
}

#[test]
fn answer_before_activation_is_refused() {
    let srv = Server::start(&[]);
    let u = srv.create_user("Ada", "Lovelace", Some(4));
    let r = srv.json(
        "POST",
        "/api/session/answer",
        None,
        Some(&json!({"token": invite_token(&u)})),
    );
    assert!(
        r.status == 401 || r.status == 403 || r.status == 409,
        "answer before activation: {} {}",
        r.status,
        r.text()
    );
    r.assert_error(r.status, "answer before activation");
    assert_eq!(srv.user(id_of(&u))["progress"], "0/4");
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

#[test]
fn login_validation_and_rate_limit() {
    let srv = Server::start(&["--login-failures-per-minute", "3"]);
    srv.admin_cookie();
    let r = srv.request(
        "POST",
        "/api/admin/login",
        &[("Content-Type", "text/plain")],
        Some(b"{}"),
    );
    r.assert_error(415, "login text/plain");
    let r = srv.request(
        "POST",
        "/api/admin/login",
        &[("Content-Type", "application/json")],
        Some(b"{"),
    );
    r.assert_error(400, "login malformed JSON");

    let bad = json!({"email": ADMIN_EMAIL, "password": "wrong"});
    for i in 1..=3 {
        srv.json("POST", "/api/admin/login", None, Some(&bad))
            .assert_error(401, &format!("failure {i}"));
    }
    let r = srv.json("POST", "/api/admin/login", None, Some(&bad));
    r.assert_error(429, "4th failure within a minute");
    let ra = r.header("Retry-After").expect("Retry-After on 429");
    assert!(
        ra.trim()
            .parse::<u64>()
            .is_ok_and(|s| (1..=60).contains(&s)),
        "Retry-After {ra:?}"
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
    let line = srv
        .logs
        .wait_line(Duration::from_secs(3), |l| l.contains("/setup?code="))
        .expect("setup URL logged when no admin exists");
    let code: String = line[line.find("/setup?code=").unwrap() + "/setup?code=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
    assert!(code.len() >= 8, "setup code {code:?} in {line:?}");
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
    let line = srv
        .logs
        .wait_line(Duration::from_secs(3), |l| l.contains("/setup?code="))
        .expect("setup URL logged");
    let code: String = line[line.find("/setup?code=").unwrap() + "/setup?code=".len()..]
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || *c == '-' || *c == '_')
        .collect();
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

// ---- HTTP/1.1 framing ---------------------------------------------------------------------

#[test]
fn keep_alive_and_pipelining_answer_in_order() {
    let srv = Server::start(&[]);
    let host = srv.addr.to_string();
    let mut conn = srv.http();
    // Sequential requests on one connection.
    for _ in 0..3 {
        let r = conn.send("GET", "/healthz", &[], None).unwrap();
        assert_eq!((r.status, r.text().as_str()), (200, "ok"));
    }
    // Three pipelined requests in one write.
    let mut batch = build_request(&host, "GET", "/healthz", &[], None);
    batch.extend(build_request(&host, "GET", "/api/users", &[], None));
    batch.extend(build_request(&host, "GET", "/metrics", &[], None));
    batch.extend(build_request(&host, "GET", "/healthz", &[], None));
    conn.write_raw(&batch).unwrap();
    let r1 = conn.read_response().unwrap();
    let r2 = conn.read_response().unwrap();
    let r3 = conn.read_response().unwrap();
    let r4 = conn.read_response().unwrap();
    assert_eq!((r1.status, r1.text().as_str()), (200, "ok"));
    r2.assert_error(401, "pipelined GET /api/users");
    assert_eq!(r3.status, 200);
    assert!(r3.text().contains("catalytic_"), "third answer is /metrics");
    assert_eq!((r4.status, r4.text().as_str()), (200, "ok"));
}

#[test]
fn malformed_request_line_is_400_and_server_keeps_serving() {
    let srv = Server::start(&[]);
    let mut conn = srv.http();
    conn.write_raw(b"THIS IS NOT HTTP\r\n\r\n").unwrap();
    let r = conn.read_response().expect("a response to garbage");
    assert_eq!(r.status, 400);
    let mut conn = srv.http();
    conn.write_raw(b"\x00\x01\x02garbage\r\n\r\n").unwrap();
    let _ = conn.read_response();
    assert_eq!(srv.get("/healthz", None).status, 200);
}

#[test]
fn oversized_head_is_431_and_closed() {
    let srv = Server::start(&[]);
    let mut conn = srv.http();
    let filler = "a".repeat(17 * 1024);
    let req = format!(
        "GET /healthz HTTP/1.1\r\nHost: {}\r\nX-Filler: {filler}\r\n\r\n",
        srv.addr
    );
    let _ = conn.write_raw(req.as_bytes());
    let r = conn.read_response().expect("a response to a 17 KiB head");
    assert_eq!(r.status, 431);
    assert!(
        conn.closed_within(Duration::from_secs(3)),
        "connection closed after 431"
    );
    assert_eq!(srv.get("/healthz", None).status, 200);
}

#[test]
fn chunked_body_is_refused_and_closed() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let mut conn = srv.http();
    let req = format!(
        "POST /api/users HTTP/1.1\r\nHost: {}\r\nCookie: {c}\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n{{\"a\":\r\n0\r\n\r\n",
        srv.addr
    );
    conn.write_raw(req.as_bytes()).unwrap();
    let r = conn.read_response().expect("a response to a chunked body");
    assert!(r.status == 400 || r.status == 411, "chunked: {}", r.status);
    assert!(
        conn.closed_within(Duration::from_secs(3)),
        "connection closed after chunked"
    );
    assert!(srv.users().is_empty());
}

#[test]
fn content_length_with_transfer_encoding_is_refused_and_closed() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let body = r#"{"first_name":"A","last_name":"B","email":"smuggle@example.com"}"#;
    let mut conn = srv.http();
    let req = format!(
        "POST /api/users HTTP/1.1\r\nHost: {}\r\nCookie: {c}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{body}",
        srv.addr,
        body.len()
    );
    conn.write_raw(req.as_bytes()).unwrap();
    let r = conn.read_response().expect("a response to CL+TE");
    assert!(r.status == 400 || r.status == 411, "CL+TE: {}", r.status);
    assert!(
        conn.closed_within(Duration::from_secs(3)),
        "connection closed after CL+TE"
    );
    assert!(srv.users().is_empty(), "smuggled request not executed");
}

#[test]
fn incomplete_request_times_out_with_408() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    // One connection stalls in the head, another in the body; both run at once.
    let mut head = srv.http();
    let mut body = srv.http();
    let start = Instant::now();
    head.write_raw(format!("GET /healthz HTTP/1.1\r\nHost: {}\r\n", srv.addr).as_bytes())
        .unwrap();
    body.write_raw(
        format!(
            "POST /api/users HTTP/1.1\r\nHost: {}\r\nCookie: {c}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"first_na",
            srv.addr
        )
        .as_bytes(),
    )
    .unwrap();
    for (what, conn) in [("stalled head", &mut head), ("stalled body", &mut body)] {
        conn.stream()
            .set_read_timeout(Some(Duration::from_secs(15)))
            .unwrap();
        let r = conn
            .read_response()
            .unwrap_or_else(|e| panic!("{what}: 408 expected after 10 s, got {e}"));
        let took = start.elapsed();
        assert_eq!(r.status, 408, "{what}");
        assert!(
            took >= Duration::from_secs(8) && took <= Duration::from_secs(14),
            "{what}: 408 after {took:?}, expected ~10 s"
        );
        assert!(
            conn.closed_within(Duration::from_secs(3)),
            "{what}: closed after 408"
        );
    }
}

#[test]
fn body_limit_boundary_is_64_kib() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let json_body = |email: &str, total: usize| {
        let core = format!(r#"{{"first_name":"A","last_name":"B","email":"{email}"}}"#);
        let mut b = core.into_bytes();
        // JSON allows trailing whitespace: pad to the exact size.
        b.resize(total, b' ');
        b
    };
    let post = |b: &[u8]| srv.post_user_bytes(&c, b).expect("response");
    let r = post(&json_body("exact@example.com", 65536));
    assert_eq!(
        r.status,
        201,
        "a 65536-byte body is within the limit: {}",
        r.text()
    );
    post(&json_body("over@example.com", 65537)).assert_error(413, "65537-byte body");
}

#[test]
fn per_ip_connection_cap_gives_429() {
    let srv = Server::start(&["--max-connections-per-ip", "3"]);
    let held: Vec<_> = (0..3).map(|_| srv.connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut conn = srv.http();
    let r = conn
        .send("GET", "/healthz", &[], None)
        .expect("an answer when over the per-IP cap");
    assert_eq!(r.status, 429, "4th connection from one IP");
    drop(conn);
    drop(held);
    // Below the cap again: served.
    let deadline = Instant::now() + WAIT;
    loop {
        let r = srv.http().send("GET", "/healthz", &[], None);
        if matches!(&r, Ok(r) if r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after closing: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn max_connections_gives_503() {
    let srv = Server::start(&["--max-connections", "3"]);
    let held: Vec<_> = (0..3).map(|_| srv.connect()).collect();
    std::thread::sleep(Duration::from_millis(200));
    let mut conn = srv.http();
    conn.stream()
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let r = conn
        .send("GET", "/healthz", &[], None)
        .expect("an answer when over --max-connections");
    assert_eq!(r.status, 503, "connection over --max-connections");
    drop(conn);
    drop(held);
    let deadline = Instant::now() + WAIT;
    loop {
        let r = srv.http().send("GET", "/healthz", &[], None);
        if matches!(&r, Ok(r) if r.status == 200) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still refused after closing: {r:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn expired_invite_is_410_until_regenerated() {
    // 0.0005 h = 1.8 s.
    let srv = Server::start(&["--invite-ttl-hours", "0.0005"]);
    let c = srv.admin_cookie();
    let u = srv.create_user("Ada", "Lovelace", Some(2));
    assert_eq!(u["token_valid"], true);
    std::thread::sleep(Duration::from_millis(2300));
    let now = srv.user(id_of(&u));
    assert_eq!(now["token_valid"], false, "invite past its TTL: {now}");
    srv.activate(&invite_token(&u))
        .assert_error(410, "activate an expired invite");
    let nu = srv.regenerate_invite(id_of(&u), &c);
    assert_eq!(
        nu["token_valid"], true,
        "a regenerated invite is valid: {nu}"
    );
    let r = srv.activate(&invite_token(&nu));
    assert_eq!(
        r.status,
        200,
        "activate the regenerated invite: {}",
        r.text()
    );
}
