//! Per-IP rules: failed-login limits per IP and per account, the per-IP connection cap, and
//! the client IP taken from X-Forwarded-For only behind a --trusted-proxy. Loopback source
//! addresses 127.0.0.x stand in for different clients.

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

#[test]
fn connection_cap_is_per_source_ip() {
    let srv = Server::start(&["--max-connections-per-ip", "2"]);
    let _a = srv.connect_from("127.0.0.1");
    let _b = srv.connect_from("127.0.0.1");
    std::thread::sleep(std::time::Duration::from_millis(200));
    let r = srv
        .http_from("127.0.0.2")
        .send("GET", "/healthz", &[], None)
        .expect("other IP served");
    assert_eq!(r.status, 200, "another source IP is under its own cap");
    let r = srv
        .http_from("127.0.0.1")
        .send("GET", "/healthz", &[], None)
        .expect("an answer over the cap");
    assert_eq!(r.status, 429, "3rd connection from 127.0.0.1");
}

#[test]
fn websocket_over_the_per_ip_cap_is_refused() {
    let srv = Server::start(&["--max-connections-per-ip", "2"]);
    let c = srv.admin_cookie();
    let (_w1, _) = srv.admin_ws(&c);
    let (_w2, _) = srv.admin_ws(&c);
    match srv.ws_connect("/admin/stream", Some(&c), None) {
        Err(tungstenite::Error::Http(resp)) => {
            assert_eq!(
                resp.status().as_u16(),
                429,
                "HTTP refusal over the per-IP cap"
            )
        }
        Err(e) => panic!("unexpected handshake error {e}"),
        Ok(mut ws) => {
            let (code, _) = expect_close(&mut ws, WAIT);
            assert_eq!(code, 1013, "close code over the per-IP cap");
        }
    }
}
