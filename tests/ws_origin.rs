//! The server's own origin, and the Origin check on WebSocket handshakes (cross-site WebSocket
//! hijacking): a browser page from another origin must not open a stream with the user's
//! cookie. The own origin is the `--public-url`'s, normalised (scheme and host in lower case,
//! the default port dropped), or `http://<Host>` without one, and it is compared exactly: an
//! https deployment takes no http origin and the other way round. No Origin (non-browser
//! clients) is allowed; anything else is refused before any data is sent. An https deployment
//! sends HSTS on every answer. The same origin rule for writes: `cross_origin_writes.rs`.

mod common;

use common::*;

#[test]
fn cross_site_websocket_hijacking_is_refused() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let cookie = srv.admin_cookie();
    let origins = [
        "https://evil.example".to_string(),
        "http://evil.example".to_string(),
        "null".to_string(),
        format!("http://{}.evil.example", srv.addr.ip()),
        format!("http://{}@evil.example", srv.addr),
        format!("{}.evil.example", srv.origin()),
        "http://evil.example.com".to_string(),
        "http://127.0.0.1:1".to_string(),
        "https://127.0.0.1".to_string(),
    ];
    for origin in origins.iter().map(String::as_str) {
        let how = assert_refused(
            srv.ws_connect("/admin/stream", Some(&cookie), Some(origin)),
            &format!("Origin {origin}"),
        );
        eprintln!("Origin {origin}: {how}");
        // Raw: whatever the server answers, no `initial` frame may follow.
        let (mut ws, resp) = srv.raw_ws(
            "/admin/stream",
            &[("Cookie", &cookie), ("Origin", origin)],
            &[],
        );
        if resp.status == 101 {
            let f = ws.read_frame(WAIT).expect("a frame after 101");
            assert_eq!(
                f.opcode, 8,
                "Origin {origin}: first frame must be a close: {f:?}"
            );
        } else {
            assert!(
                (400..500).contains(&resp.status),
                "Origin {origin}: {}",
                resp.status
            );
        }
    }
    // Same origin and no Origin are fine.
    let own = srv.origin();
    let mut ws = srv
        .ws_connect("/admin/stream", Some(&cookie), Some(&own))
        .expect("same-origin handshake");
    assert_eq!(recv_json(&mut ws, WAIT)["type"], "initial");
    let mut ws = srv
        .ws_connect("/admin/stream", Some(&cookie), None)
        .expect("no-Origin handshake");
    assert_eq!(recv_json(&mut ws, WAIT)["type"], "initial");
    assert_serving(&srv, &live, "CSWSH");
}

#[test]
fn cross_origin_session_stream_is_refused() {
    let srv = Server::start(&[]);
    let s = srv.started_session(3);
    let cookie = format!("session_token={}", s.cookie);
    assert_refused(
        srv.ws_connect(
            &format!("/session/{}/stream", s.session_id),
            Some(&cookie),
            Some("http://evil.example.com"),
        ),
        "cross-origin session stream",
    );
    let mut ws = srv
        .ws_connect(
            &format!("/session/{}/stream", s.session_id),
            Some(&cookie),
            Some(&srv.origin()),
        )
        .unwrap();
    assert_eq!(recv_json(&mut ws, WAIT)["type"], "time_update");
}

#[test]
fn public_url_is_the_allowed_origin() {
    let srv = Server::start(&["--public-url", "https://interviews.example.com"]);
    let c = srv.admin_cookie();
    let mut ws = srv
        .ws_connect(
            "/admin/stream",
            Some(&c),
            Some("https://interviews.example.com"),
        )
        .expect("public-url origin handshake");
    assert_eq!(recv_json(&mut ws, WAIT)["type"], "initial");
    assert_refused(
        srv.ws_connect("/admin/stream", Some(&c), Some("https://evil.example.com")),
        "foreign origin with --public-url",
    );
}

/// Issue 12, item 7: `--public-url https://interviews.example.com:443` refused the browser's
/// `Origin: https://interviews.example.com`; the plain-http origin of the same host was
/// accepted on `/admin/stream` (the whole invitee list, to a page injected over plain HTTP).
#[test]
fn the_public_origin_is_normalised_and_compared_exactly() {
    let srv = Server::start(&["--public-url", "HTTPS://Interviews.Example.com:443/"]);
    let c = srv.admin_cookie();
    for origin in [
        "https://interviews.example.com",
        "https://interviews.example.com:443",
    ] {
        let mut ws = srv
            .ws_connect("/admin/stream", Some(&c), Some(origin))
            .unwrap_or_else(|e| panic!("{origin}: {e}"));
        assert_eq!(recv_json(&mut ws, WAIT)["type"], "initial", "{origin}");
    }
    for origin in [
        "http://interviews.example.com",
        "http://interviews.example.com:443",
        "https://interviews.example.com:8443",
        "https://evil.interviews.example.com",
        &srv.origin(),
    ] {
        assert_refused(
            srv.ws_connect("/admin/stream", Some(&c), Some(origin)),
            &format!("Origin {origin} on an https deployment"),
        );
    }
    let user = srv.create_user("Ada", "Lovelace", None);
    let link = user["invite_url"].as_str().unwrap();
    assert!(
        link.starts_with("https://interviews.example.com/session?token="),
        "invite links use the normalised origin: {link}"
    );
}

#[test]
fn an_http_deployment_refuses_https_origins() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let https_twin = format!("https://{}", srv.addr);
    assert_refused(
        srv.ws_connect("/admin/stream", Some(&c), Some(&https_twin)),
        "the https twin of an http deployment",
    );
    let srv = Server::start(&["--public-url", "http://interviews.example.com"]);
    let c = srv.admin_cookie();
    assert_refused(
        srv.ws_connect(
            "/admin/stream",
            Some(&c),
            Some("https://interviews.example.com"),
        ),
        "https origin with an http public URL",
    );
    assert_refused(
        srv.ws_connect("/admin/stream", Some(&c), Some(&srv.origin())),
        "the listen address is not the public origin",
    );
    let mut ws = srv
        .ws_connect(
            "/admin/stream",
            Some(&c),
            Some("http://interviews.example.com:80"),
        )
        .expect("the public origin, default port spelled out");
    assert_eq!(recv_json(&mut ws, WAIT)["type"], "initial");
}

#[test]
fn https_deployments_send_hsts_on_every_answer() {
    let srv = Server::start(&["--public-url", "https://interviews.example.com"]);
    let c = srv.admin_cookie();
    let answers = [
        srv.get("/healthz", None),
        srv.get("/", None),
        srv.get("/api/users", None),
        srv.get("/api/users", Some(&c)),
        srv.get("/no-such-page", None),
        srv.json("POST", "/api/users", Some(&c), Some(&serde_json::json!({}))),
    ];
    for r in &answers {
        assert_eq!(
            r.header("Strict-Transport-Security"),
            Some("max-age=31536000"),
            "status {} lacks HSTS",
            r.status
        );
    }
    let (_ws, head) = srv.raw_ws("/admin/stream", &[("Cookie", &c)], &[]);
    assert_eq!(head.status, 101);
    assert_eq!(
        head.header("Strict-Transport-Security"),
        Some("max-age=31536000"),
        "the 101 too"
    );
    let plain = Server::start(&[]);
    assert_eq!(
        plain
            .get("/healthz", None)
            .header("Strict-Transport-Security"),
        None,
        "no HSTS over plain http"
    );
}

/// Two `Origin` headers, a foreign one first: only the last was checked, so the handshake was
/// accepted. A request with two is refused (RFC 6454 §7.3: a user agent sends one).
#[test]
fn a_second_origin_header_cannot_hide_a_foreign_one() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let own = srv.origin();
    for (first, second) in [
        ("http://evil.example", own.as_str()),
        (own.as_str(), "http://evil.example"),
    ] {
        let req = format!(
            "GET /admin/stream HTTP/1.1\r\nHost: {}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nCookie: {c}\r\nOrigin: {first}\r\nOrigin: {second}\r\n\r\n",
            srv.addr
        );
        let (_, r) = raw_exchange(&srv, req.as_bytes());
        assert_eq!(r.status, 400, "Origin {first}, then {second}: {}", r.text());
    }
}
