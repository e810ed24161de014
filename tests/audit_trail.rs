//! The audit trail: at log level info, every sign-in (ok, failed, limited), setup, sign-out,
//! session revocation, invite regeneration and user deletion is logged with the client address
//! and the account — and no log line ever carries a password, a session token, an invite
//! token or a device cookie.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;

fn login_from(srv: &Server, ip: &str, password: &str, cookie: Option<&str>) -> Resp {
    let body = json!({"email": "first@example.com", "password": password}).to_string();
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(c) = cookie {
        h.push(("Cookie", c));
    }
    srv.http_from(ip)
        .send("POST", "/api/admin/login", &h, Some(body.as_bytes()))
        .unwrap()
}

#[test]
fn security_events_are_logged_with_address_and_account_and_no_secret() {
    let srv = Server::start(&["--login-failures-per-minute", "1"]);
    let (_, code) = srv.setup_code();
    let body = json!({"code": code, "email": "first@example.com", "password": ADMIN_PASSWORD});
    let setup = srv.json("POST", "/api/admin/setup", None, Some(&body));
    assert_eq!(setup.status, 204);
    let ok = login_from(&srv, "127.0.0.2", ADMIN_PASSWORD, None);
    assert_eq!(ok.status, 204);
    login_from(&srv, "127.0.0.3", "wrong password 1", None).assert_error(401, "failed");
    login_from(&srv, "127.0.0.3", "wrong password 2", None).assert_error(429, "limited");
    let cookie = format!(
        "admin_session={}",
        ok.cookie_value("admin_session").unwrap()
    );
    let user = srv.json(
        "POST",
        "/api/users",
        Some(&cookie),
        Some(&json!({"first_name":"Ada","last_name":"Lovelace","email":"ada@example.com"})),
    );
    let user = user.json();
    let id = id_of(&user);
    let regenerated = srv.http_from("127.0.0.2").send(
        "POST",
        &format!("/api/users/{id}/invite"),
        &[("Cookie", &cookie)],
        None,
    );
    let regenerated = regenerated.unwrap().json();
    let s = srv.activate(&invite_token(&regenerated));
    let deleted = srv
        .http_from("127.0.0.2")
        .send(
            "DELETE",
            &format!("/api/users/{id}"),
            &[("Cookie", &cookie)],
            None,
        )
        .unwrap();
    assert_eq!(deleted.status, 204);
    let other = format!(
        "admin_session={}",
        setup.cookie_value("admin_session").unwrap()
    );
    let (mut ws, _) = srv.admin_ws(&other);
    let out = run_cli(
        &[
            "admin",
            "revoke",
            "--email",
            "first@example.com",
            "--db",
            &srv.db_arg(),
        ],
        &[],
        None,
    );
    assert!(out.status.success());
    let _ = close_after(&mut ws, Duration::from_secs(11));
    let logout = srv
        .http_from("127.0.0.4")
        .send("POST", "/api/admin/logout", &[("Cookie", &cookie)], None)
        .unwrap();
    assert_eq!(logout.status, 401, "revoked already");
    // The account is limited now; the admin's own browser (its device cookie) still gets in.
    let device = format!("device={}", ok.cookie_value("device").unwrap());
    let fresh = login_from(&srv, "127.0.0.4", ADMIN_PASSWORD, Some(&device));
    let fresh_cookie = format!(
        "admin_session={}",
        fresh.cookie_value("admin_session").unwrap()
    );
    let logout = srv
        .http_from("127.0.0.4")
        .send(
            "POST",
            "/api/admin/logout",
            &[("Cookie", &fresh_cookie)],
            None,
        )
        .unwrap();
    assert_eq!(logout.status, 204);

    let logs = srv.logs.joined();
    for line in [
        "setup: first admin first@example.com created from 127.0.0.1",
        "sign-in ok: first@example.com from 127.0.0.2 (password)",
        "sign-in failed: first@example.com from 127.0.0.3",
        "sign-in limited: first@example.com from 127.0.0.3",
        &format!("invite regenerated: user {id} by first@example.com from 127.0.0.2"),
        &format!("user deleted: {id} by first@example.com from 127.0.0.2"),
        "admin session of first@example.com ended elsewhere (revoked or signed out)",
        "sign-out: first@example.com from 127.0.0.4",
    ] {
        assert!(
            srv.logs
                .wait_line(Duration::from_secs(2), |l| l.contains(" INFO ")
                    && l.contains(line))
                .is_some(),
            "no info line with {line:?} in:\n{logs}"
        );
    }
    let mut secrets = vec![
        ADMIN_PASSWORD.to_string(),
        "wrong password 1".to_string(),
        invite_token(&user),
        invite_token(&regenerated),
    ];
    for r in [&setup, &ok, &fresh, &s] {
        for name in ["admin_session", "device", "session_token"] {
            if let Some(v) = r.cookie_value(name).filter(|v| !v.is_empty()) {
                secrets.push(v);
            }
        }
    }
    assert!(secrets.len() >= 10, "{secrets:?}");
    let logs = srv.logs.joined();
    for secret in &secrets {
        assert!(
            !logs.contains(secret.as_str()),
            "a secret in the logs: {secret}"
        );
    }
}
