//! The failed-login limit (`--login-failures-per-minute`): counted per client IP and per
//! account, answered 429 with Retry-After, and the client IP it counts: X-Forwarded-For is used
//! only behind a `--trusted-proxy`. Loopback source addresses 127.0.0.x stand in for different
//! clients.

mod common;

use common::*;
use serde_json::json;

fn login_from(srv: &Server, ip: &str, email: &str, xff: Option<&str>) -> Resp {
    let body = serde_json::to_vec(&json!({"email": email, "password": "wrong password"})).unwrap();
    let mut h = vec![("Content-Type", "application/json")];
    if let Some(x) = xff {
        h.push(("X-Forwarded-For", x));
    }
    srv.http_from(ip)
        .send("POST", "/api/admin/login", &h, Some(&body))
        .expect("login request")
}

#[test]
fn failed_logins_are_rate_limited_per_ip_and_per_account() {
    let srv = Server::start(&["--login-failures-per-minute", "3"]);
    let live = LiveAdmin::start(&srv);
    const OTHER: &str = "second@example.com";
    srv.create_admin(OTHER, ADMIN_PASSWORD);
    let login = |ip: &str, email: &str, password: &str| -> Resp {
        let mut c = srv.http_from(ip);
        let body = json!({"email": email, "password": password}).to_string();
        c.send(
            "POST",
            "/api/admin/login",
            &[("Content-Type", "application/json")],
            Some(body.as_bytes()),
        )
        .expect("login request")
    };
    let ip = "127.0.0.2";
    for i in 0..3 {
        login(ip, ADMIN_EMAIL, "wrong password 123")
            .assert_error(401, &format!("failure {}", i + 1));
    }
    let check_429 = |r: &Resp, what: &str| {
        r.assert_error(429, what);
        let ra = r
            .header("Retry-After")
            .unwrap_or_else(|| panic!("{what}: 429 without Retry-After"));
        let secs: u64 = ra
            .parse()
            .unwrap_or_else(|_| panic!("{what}: Retry-After {ra:?}"));
        assert!((1..=60).contains(&secs), "{what}: Retry-After {secs}");
    };
    check_429(&login(ip, ADMIN_EMAIL, "wrong password 123"), "4th failure");
    check_429(
        &login(ip, ADMIN_EMAIL, ADMIN_PASSWORD),
        "right password from the limited IP",
    );
    check_429(
        &login(ip, OTHER, ADMIN_PASSWORD),
        "another account from the limited IP",
    );
    check_429(
        &login("127.0.0.3", ADMIN_EMAIL, ADMIN_PASSWORD),
        "the limited account from another IP",
    );
    let r = login("127.0.0.3", OTHER, ADMIN_PASSWORD);
    assert_eq!(
        r.status,
        204,
        "another account from another IP: {}",
        r.text()
    );
    assert!(r.cookie_value("admin_session").is_some());
    let n = srv.metric("catalytic_refused_total", &[("limit", "login_rate")]);
    assert!(n >= 4.0, "refused login_rate = {n}");
    assert_serving(&srv, &live, "login rate limit");
}

#[test]
fn failed_logins_are_limited_per_account() {
    let srv = Server::start(&["--login-failures-per-minute", "2"]);
    srv.admin_cookie();
    login_from(&srv, "127.0.0.2", ADMIN_EMAIL, None).assert_error(401, "1st from .2");
    login_from(&srv, "127.0.0.3", ADMIN_EMAIL, None).assert_error(401, "2nd from .3");
    let r = login_from(&srv, "127.0.0.4", ADMIN_EMAIL, None);
    r.assert_error(429, "3rd failure on the account, from a fresh IP");
    assert!(r.header("Retry-After").is_some(), "Retry-After");
    // Another account from yet another IP is not affected.
    login_from(&srv, "127.0.0.5", "other@example.com", None).assert_error(401, "other account");
}

#[test]
fn failed_logins_are_limited_per_ip() {
    let srv = Server::start(&["--login-failures-per-minute", "2"]);
    login_from(&srv, "127.0.0.2", "a@example.com", None).assert_error(401, "1st");
    login_from(&srv, "127.0.0.2", "b@example.com", None).assert_error(401, "2nd");
    let r = login_from(&srv, "127.0.0.2", "c@example.com", None);
    r.assert_error(429, "3rd failure from one IP (different accounts)");
    assert!(r.header("Retry-After").is_some(), "Retry-After");
    login_from(&srv, "127.0.0.3", "d@example.com", None).assert_error(401, "another IP");
}

#[test]
fn x_forwarded_for_ignored_without_trusted_proxy() {
    let srv = Server::start(&["--login-failures-per-minute", "2"]);
    login_from(&srv, "127.0.0.1", "a@example.com", Some("10.0.0.1")).assert_error(401, "1st");
    login_from(&srv, "127.0.0.1", "b@example.com", Some("10.0.0.2")).assert_error(401, "2nd");
    login_from(&srv, "127.0.0.1", "c@example.com", Some("10.0.0.3")).assert_error(
        429,
        "spoofed X-Forwarded-For must not reset the per-IP count",
    );
}

#[test]
fn x_forwarded_for_last_hop_behind_trusted_proxy() {
    let srv = Server::start(&[
        "--login-failures-per-minute",
        "2",
        "--trusted-proxy",
        "127.0.0.1",
    ]);
    login_from(&srv, "127.0.0.1", "a@example.com", Some("10.1.1.1")).assert_error(401, "1st");
    login_from(
        &srv,
        "127.0.0.1",
        "b@example.com",
        Some("9.9.9.9, 10.1.1.1"),
    )
    .assert_error(401, "2nd (last hop 10.1.1.1)");
    login_from(&srv, "127.0.0.1", "c@example.com", Some("10.1.1.1"))
        .assert_error(429, "3rd from 10.1.1.1");
    // A different client behind the same proxy.
    login_from(
        &srv,
        "127.0.0.1",
        "d@example.com",
        Some("10.1.1.1, 10.1.1.2"),
    )
    .assert_error(401, "last hop 10.1.1.2 is a different client");
    // An untrusted peer's header is ignored: 127.0.0.2 is counted as itself.
    login_from(&srv, "127.0.0.2", "e@example.com", Some("10.7.7.7")).assert_error(401, ".2 #1");
    login_from(&srv, "127.0.0.2", "f@example.com", Some("10.7.7.8")).assert_error(401, ".2 #2");
    login_from(&srv, "127.0.0.2", "g@example.com", Some("10.7.7.9"))
        .assert_error(429, "untrusted peer's X-Forwarded-For ignored");
}
