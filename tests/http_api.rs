//! The routes of the contract: pages (and their ETags), /healthz, /metrics, unknown routes,
//! user CRUD and the user object, invites (regeneration, expiry), the invitee's
//! activate/answer, and the headers every `/api/*` answer carries. Request bodies are in
//! `request_bodies.rs`, admin authentication in `admin_auth.rs`, HTTP/1.1 framing in
//! `http_framing.rs`.

mod common;

use std::time::Duration;

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

/// Issue 12, item 14: `If-None-Match: W/"<etag>"` (what nginx sends after gzip) got 200 and
/// the whole page instead of 304.
#[test]
fn pages_revalidate_under_the_weak_comparison() {
    let srv = Server::start(&[]);
    for path in ["/", "/session", "/style.css"] {
        let first = srv.get(path, None);
        assert_eq!(first.status, 200, "{path}");
        let etag = first.header("ETag").expect("ETag").to_string();
        for given in [
            etag.clone(),
            format!("W/{etag}"),
            format!("\"nope\", W/{etag}"),
            "*".to_string(),
        ] {
            let r = srv.request("GET", path, &[("If-None-Match", &given)], None);
            assert_eq!(r.status, 304, "{path} If-None-Match: {given}");
            assert!(r.body.is_empty());
        }
        let r = srv.request("GET", path, &[("If-None-Match", "W/\"nope\"")], None);
        assert_eq!(r.status, 200, "{path}: another ETag");
    }
}

/// Issue 12, item 17: `/api/*` answers (some carry invite links) lacked `Cache-Control:
/// no-store` and `nosniff`. Every one carries both: success, error, refusal, each method.
#[test]
fn every_api_answer_is_no_store_and_nosniff() {
    let srv = Server::start(&["--login-failures-per-minute", "1"]);
    let c = srv.admin_cookie();
    let user = srv.create_user("Ada", "Lovelace", None);
    let id = id_of(&user);
    let login = json!({"email": "nobody@example.com", "password": "wrong password"});
    let answers = vec![
        ("GET /api/users", srv.get("/api/users", Some(&c))),
        ("GET /api/users 401", srv.get("/api/users", None)),
        ("GET /api/nope", srv.get("/api/nope", Some(&c))),
        (
            "POST /api/users 201",
            srv.json(
                "POST",
                "/api/users",
                Some(&c),
                Some(&json!({"first_name":"A","last_name":"B","email":"ab@example.com"})),
            ),
        ),
        (
            "POST /api/users 422",
            srv.json("POST", "/api/users", Some(&c), Some(&json!({}))),
        ),
        (
            "POST invite",
            srv.json("POST", &format!("/api/users/{id}/invite"), Some(&c), None),
        ),
        ("PATCH", srv.patch_user(id, &json!({"first_name":"Ada"}))),
        (
            "PUT 405",
            srv.request("PUT", "/api/users", &[("Cookie", &c)], None),
        ),
        (
            "login 401",
            srv.json("POST", "/api/admin/login", None, Some(&login)),
        ),
        (
            "login 429",
            srv.json("POST", "/api/admin/login", None, Some(&login)),
        ),
        (
            "activate 401",
            srv.json(
                "POST",
                "/api/session/activate",
                None,
                Some(&json!({"token":"x"})),
            ),
        ),
        ("GET /api/admin/auth", srv.get("/api/admin/auth", None)),
        (
            "cross-origin 403",
            srv.request(
                "POST",
                "/api/admin/logout",
                &[("Origin", "https://evil.example")],
                None,
            ),
        ),
        (
            "DELETE 204",
            srv.request(
                "DELETE",
                &format!("/api/users/{id}"),
                &[("Cookie", &c)],
                None,
            ),
        ),
    ];
    for (what, r) in &answers {
        assert_eq!(
            r.header("Cache-Control"),
            Some("no-store"),
            "{what} ({})",
            r.status
        );
        assert_eq!(
            r.header("X-Content-Type-Options"),
            Some("nosniff"),
            "{what}"
        );
    }
    assert_eq!(
        answers[9].1.status, 429,
        "the limited login was answered 429"
    );
    // Pages keep their own caching (revalidated, not stored-never).
    assert_eq!(srv.get("/", None).header("Cache-Control"), Some("no-cache"));
}

#[test]
fn unknown_api_route_is_json_404() {
    let srv = Server::start(&[]);
    srv.get("/api/nope", Some(&srv.admin_cookie()))
        .assert_error(404, "GET /api/nope");
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
