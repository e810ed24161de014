//! The cross-origin write rule (CSRF): a `POST`, `PATCH` or `DELETE` whose `Origin` header is
//! present and not the server's own origin, or whose `Sec-Fetch-Site` is present and neither
//! `same-origin` nor `none`, gets 403 `{"error": "cross-origin request refused"}` and changes
//! nothing — whatever its body or content type. Reads are not affected. What the own origin
//! is: `ws_origin.rs`.

mod common;

use common::*;
use serde_json::{json, Value};

const REFUSED: &str = "cross-origin request refused";

fn assert_refused_write(r: &Resp, what: &str) {
    r.assert_error(403, what);
    assert_eq!(r.json()["error"], REFUSED, "{what}");
}

/// Issue 12, item 8: an empty `text/plain` form post from another origin of the same site
/// (another port on the same host) regenerated an invitee's link — resetting a live
/// interview — and logged the admin out, in Chromium.
#[test]
fn cross_origin_writes_are_refused_and_change_nothing() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let cookie = srv.admin_cookie();
    let s = srv.started_session(3);
    live.wait_for("the activation", WAIT, |v| {
        v["type"] == "user_update" && v["data"]["status"] == "in_progress"
    });
    let before = srv.user(s.user_id);
    let other_port = format!("http://{}:1", srv.addr.ip());
    let form = |path: &str, headers: &[(&str, &str)]| {
        let mut h = vec![("Cookie", cookie.as_str()), ("Content-Type", "text/plain")];
        h.extend_from_slice(headers);
        srv.request("POST", path, &h, Some(b""))
    };
    let invite = format!("/api/users/{}/invite", s.user_id);
    assert_refused_write(
        &form(&invite, &[("Origin", &other_port)]),
        "invite regeneration from another port",
    );
    assert_refused_write(
        &form("/api/admin/logout", &[("Sec-Fetch-Site", "same-site")]),
        "logout from a sibling subdomain (no Origin)",
    );
    assert_refused_write(
        &form(&invite, &[("Origin", "null")]),
        "an opaque origin (sandboxed frame, file:)",
    );
    assert_refused_write(
        &form(&invite, &[("Sec-Fetch-Site", "cross-site")]),
        "cross-site",
    );
    let patch = srv.request(
        "PATCH",
        &format!("/api/users/{}", s.user_id),
        &[
            ("Cookie", &cookie),
            ("Content-Type", "application/json"),
            ("Origin", "https://evil.example"),
        ],
        Some(br#"{"first_name":"Mallory"}"#),
    );
    assert_refused_write(&patch, "PATCH with a foreign Origin");
    let delete = srv.request(
        "DELETE",
        &format!("/api/users/{}", s.user_id),
        &[("Cookie", &cookie), ("Sec-Fetch-Site", "cross-site")],
        None,
    );
    assert_refused_write(&delete, "DELETE cross-site");
    let body = json!({"token": s.token}).to_string();
    let activate = srv.request(
        "POST",
        "/api/session/activate",
        &[
            ("Content-Type", "application/json"),
            ("Origin", &other_port),
        ],
        Some(body.as_bytes()),
    );
    assert_refused_write(&activate, "activation from another origin");
    let body = json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).to_string();
    let login = srv.request(
        "POST",
        "/api/admin/login",
        &[
            ("Content-Type", "application/json"),
            ("Origin", &other_port),
        ],
        Some(body.as_bytes()),
    );
    assert_refused_write(&login, "login from another origin (login CSRF)");

    // Nothing changed: the same link and name, the admin still signed in, no broadcast.
    let after = srv.user(s.user_id);
    assert_eq!(
        after["invite_url"], before["invite_url"],
        "invite link unchanged"
    );
    assert_eq!(after["first_name"], "Ada");
    assert_eq!(
        srv.get("/api/users", Some(&cookie)).status,
        200,
        "still signed in"
    );
    while let Ok((_, Ok(v))) = live.rx.try_recv() {
        assert_ne!(
            v["type"], "user_update",
            "a refused write was broadcast: {v}"
        );
    }

    // Reads are not writes; same-origin writes and the browser's own navigations work.
    let own = srv.origin();
    let read = srv.request(
        "GET",
        "/api/users",
        &[
            ("Cookie", &cookie),
            ("Origin", "https://evil.example"),
            ("Sec-Fetch-Site", "cross-site"),
        ],
        None,
    );
    assert_eq!(
        read.status, 200,
        "a cross-origin read (the browser keeps the answer from the page)"
    );
    for (origin, site) in [
        (Some(own.as_str()), "same-origin"),
        (None, "none"),
        (Some(own.as_str()), ""),
    ] {
        let mut h = vec![("Cookie", cookie.as_str())];
        if let Some(o) = origin {
            h.push(("Origin", o));
        }
        if !site.is_empty() {
            h.push(("Sec-Fetch-Site", site));
        }
        let r = srv.request("POST", &invite, &h, None);
        assert_eq!(
            r.status,
            200,
            "same-origin write ({origin:?}, {site:?}): {}",
            r.text()
        );
    }
    assert_serving(&srv, &live, "cross-origin writes");
}

#[test]
fn an_https_deployment_refuses_writes_from_its_http_twin() {
    let srv = Server::start(&["--public-url", "https://interviews.example.com"]);
    let cookie = srv.admin_cookie();
    let post = |origin: &str| {
        srv.request(
            "POST",
            "/api/users",
            &[
                ("Cookie", &cookie),
                ("Content-Type", "application/json"),
                ("Origin", origin),
            ],
            Some(br#"{"first_name":"A","last_name":"B","email":"a@example.com"}"#),
        )
    };
    assert_refused_write(&post("http://interviews.example.com"), "the http twin");
    assert_refused_write(&post(&srv.origin()), "the listen address");
    let r = post("https://interviews.example.com:443");
    assert_eq!(r.status, 201, "the public origin: {}", r.text());
    let users: Vec<Value> = srv.users();
    assert_eq!(users.len(), 1, "only the same-origin write created a user");
}
