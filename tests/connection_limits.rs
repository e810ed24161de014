//! Connection limits: `--max-connections` (503 on HTTP, close 1013 on a stream) and
//! `--max-connections-per-ip` (429 / 1013 for that address only). Idle connections count as
//! much as busy ones and WebSocket streams count too; freeing connections lets new ones in, and
//! every refusal is counted in `catalytic_refused_total`. Loopback source addresses 127.0.0.x
//! stand in for different clients.

mod common;

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn max_connections_refuses_then_recovers() {
    let srv = Server::start(&["--max-connections", "50"]);
    let live = LiveAdmin::start(&srv); // connection 1
                                       // Ten idle connections that never send a byte count as much as busy ones.
    let idle: Vec<TcpStream> = (0..10).map(|_| srv.connect()).collect();
    let mut held: Vec<HttpConn> = Vec::new();
    for i in 10..49 {
        let mut c = srv.http();
        let r = c.send("GET", "/healthz", &[], None).unwrap();
        assert_eq!(r.status, 200, "connection {} of 50", i + 2);
        held.push(c);
    }
    // The 51st and beyond.
    for i in 0..5 {
        let mut c = srv.http();
        let r = c.send("GET", "/healthz", &[], None).unwrap();
        r.assert_error(503, &format!("HTTP connection {}", 51 + i));
        assert!(c.closed_within(Duration::from_secs(3)), "503 must close");
    }
    let cookie = srv.admin_cookie();
    let mut ws = srv
        .ws_connect("/admin/stream", Some(&cookie), None)
        .expect("stream handshake beyond the limit completes");
    let (code, reason) = expect_close(&mut ws, WAIT);
    assert_eq!(code, 1013, "stream beyond the limit ({reason:?})");
    drop(ws);
    // Free the ten idle ones; new ones are served again.
    drop(idle);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = srv.http();
        let r = c.send("GET", "/healthz", &[], None).unwrap();
        if r.status == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still {} after freeing 10",
            r.status
        );
        thread::sleep(Duration::from_millis(50));
    }
    let (mut ws, _) = srv.admin_ws(&cookie);
    close_normal(&mut ws);
    drop(ws);
    held.clear();
    let refused = srv.wait_metric(
        "catalytic_refused_total",
        &[("limit", "max_connections")],
        WAIT,
        |v| v >= 6.0,
    );
    eprintln!("refused max_connections: {refused}");
    assert_serving(&srv, &live, "max connections");
}

#[test]
fn max_connections_per_ip_refuses_that_ip_only() {
    let srv = Server::start(&["--max-connections-per-ip", "5"]);
    let live = LiveAdmin::start(&srv); // from 127.0.0.1
    let attacker = "127.0.0.2";
    // Two idle connections that never send a byte, three that made a request.
    let idle: Vec<TcpStream> = (0..2).map(|_| srv.connect_from(attacker)).collect();
    let mut held = Vec::new();
    for i in 2..5 {
        let mut c = srv.http_from(attacker);
        let r = c.send("GET", "/healthz", &[], None).unwrap();
        assert_eq!(r.status, 200, "attacker connection {}", i + 1);
        held.push(c);
    }
    let mut c = srv.http_from(attacker);
    let r = c.send("GET", "/healthz", &[], None).unwrap();
    r.assert_error(429, "6th connection from one IP");
    eprintln!("per-IP 429 Retry-After: {:?}", r.header("Retry-After"));
    let cookie = srv.admin_cookie();
    let s = srv.connect_from(attacker);
    let mut ws = ws_handshake(s, &srv.ws_url("/admin/stream"), &[("Cookie", &cookie)])
        .expect("stream handshake from the busy IP completes");
    let (code, reason) = expect_close(&mut ws, WAIT);
    assert_eq!(code, 1013, "6th stream from one IP ({reason:?})");
    drop(ws);
    // Other addresses are unaffected meanwhile.
    assert!(timed_healthz(&srv) < Duration::from_secs(1));
    let mut other = srv.http_from("127.0.0.3");
    assert_eq!(
        other.send("GET", "/healthz", &[], None).unwrap().status,
        200
    );
    // Free the two idle ones: the attacker's address is served again.
    drop(idle);
    let deadline = Instant::now() + WAIT;
    loop {
        let mut c = srv.http_from(attacker);
        let st = c.send("GET", "/healthz", &[], None).unwrap().status;
        if st == 200 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "attacker IP still refused ({st})"
        );
        thread::sleep(Duration::from_millis(50));
    }
    held.clear();
    assert!(srv.metric("catalytic_refused_total", &[("limit", "per_ip")]) >= 2.0);
    assert_serving(&srv, &live, "per-IP limit");
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
