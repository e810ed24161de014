//! The Origin check on WebSocket handshakes (cross-site WebSocket hijacking): a browser page
//! from another origin must not open a stream with the user's cookie. Same origin, no Origin
//! (non-browser clients) and the `--public-url` origin are allowed; anything else is refused
//! before any data is sent.

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
