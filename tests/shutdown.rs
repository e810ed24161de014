//! SIGTERM / SIGINT: every stream gets close 1001, then the process exits 0.

mod common;

use std::time::Duration;

use common::*;

fn shutdown_with(sig: i32) {
    let mut srv = Server::start(&["--agent-key", AGENT_KEY]);
    let c = srv.admin_cookie();
    let (admin1, _) = srv.admin_ws(&c);
    let (admin2, _) = srv.admin_ws(&srv.second_admin_cookie());
    let s = srv.started_session(3);
    let mut sess = srv.session_ws(&s.session_id, &s.token).unwrap();
    session_opening(&mut sess);
    let agent = srv.agent(AGENT_KEY).0;

    srv.signal(sig);
    for (name, mut ws) in [
        ("admin 1", admin1),
        ("admin 2", admin2),
        ("session", sess),
        ("agent", agent),
    ] {
        // Events from the setup above (user_added, user_update, session_started,
        // time_update) may still be queued ahead of the close.
        let ((code, _reason), _events) = close_after(&mut ws, WAIT);
        assert_eq!(code, 1001, "{name}: close code on shutdown");
    }
    let st = srv.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "exit status after signal {sig}: {st}");
}

#[test]
fn sigterm_closes_streams_1001_and_exits_0() {
    shutdown_with(libc::SIGTERM);
}

#[test]
fn sigint_closes_streams_1001_and_exits_0() {
    shutdown_with(libc::SIGINT);
}

#[test]
fn sigterm_with_idle_and_half_sent_http_connections_exits_0() {
    let mut srv = Server::start(&[]);
    let _idle = srv.connect();
    let mut half = srv.http();
    half.write_raw(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    srv.signal(libc::SIGTERM);
    let st = srv.wait_exit(Duration::from_secs(10));
    assert_eq!(st.code(), Some(0), "exit status: {st}");
    // The listener is gone.
    assert!(
        std::net::TcpStream::connect_timeout(&srv.addr, Duration::from_secs(1)).is_err(),
        "still accepting after exit"
    );
}
