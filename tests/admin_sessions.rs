//! How long an admin session lasts, and that it ends everywhere when it ends: an admin stream
//! is closed 1008 `Session expired` within 1 s of its session's expiry; `catalytic admin
//! revoke --email` ends every session of that admin, and open streams of a session that is
//! gone from storage (revoked, or deleted by another process) close 1008 within 10 s while
//! HTTP requests with it get 401; a CLI token lasts a web session (7 days) unless told
//! otherwise. Logout: `admin_auth.rs`.

mod common;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

fn unix_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// `expires_at` (Unix ms) of the admin session with this token, read from the database.
fn stored_expiry(srv: &Server, token: &str) -> i64 {
    use sha2::{Digest, Sha256};
    let db = rusqlite::Connection::open(&srv.db).unwrap();
    let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
    db.query_row(
        "SELECT expires_at FROM admin_sessions WHERE token_hash = ?1",
        [&digest[..]],
        |r| r.get(0),
    )
    .unwrap()
}

/// Issue 12, item 9: a stream opened with a short-lived token kept receiving every invitee
/// (with invite links) after the token expired.
#[test]
fn an_admin_stream_closes_when_its_session_expires() {
    let srv = Server::start(&[]);
    srv.admin_cookie();
    // 0.001 h = 3.6 s.
    let token = srv.admin_token_with_ttl(ADMIN_EMAIL, "0.001");
    let expires_at = stored_expiry(&srv, &token);
    let cookie = format!("admin_session={token}");
    let (mut ws, _) = srv.admin_ws(&cookie);
    let ((code, reason), _) = close_after(&mut ws, Duration::from_secs(10));
    let late_ms = unix_ms() - expires_at;
    eprintln!("closed {late_ms} ms after the session's expiry");
    assert_eq!((code, reason.as_str()), (1008, "Session expired"));
    assert!(late_ms >= 0, "closed {} ms before the expiry", -late_ms);
    assert!(
        late_ms < 1000,
        "closed {late_ms} ms after the expiry (bound: 1 s)"
    );
    assert_eq!(
        srv.get("/api/users", Some(&cookie)).status,
        401,
        "HTTP after expiry"
    );
    assert_closed_1008(
        srv.ws_connect("/admin/stream", Some(&cookie), None),
        "Unauthorized",
        "a new stream after expiry",
    );
}

/// Session ends are watched per session, the earliest first: two streams of one short
/// session close together at its end, a stream of a session ending later closes at that later
/// end (opened first, so the watch moved to the earlier one and back), and a stream of a
/// long session stays open and keeps receiving.
#[test]
fn streams_close_at_their_own_sessions_end_earliest_first() {
    let srv = Server::start(&[]);
    let long = srv.admin_cookie();
    // 0.0015 h = 5.4 s, 0.001 h = 3.6 s.
    let later = srv.admin_token_with_ttl(ADMIN_EMAIL, "0.0015");
    let sooner = srv.admin_token_with_ttl(ADMIN_EMAIL, "0.001");
    let (later_at, sooner_at) = (stored_expiry(&srv, &later), stored_expiry(&srv, &sooner));
    assert!(later_at > sooner_at + 1000);
    let (mut b, _) = srv.admin_ws(&format!("admin_session={later}"));
    let (mut a1, _) = srv.admin_ws(&format!("admin_session={sooner}"));
    let (mut a2, _) = srv.admin_ws(&format!("admin_session={sooner}"));
    let (mut c, _) = srv.admin_ws(&long);

    for (ws, end, what) in [
        (&mut a1, sooner_at, "first stream of the sooner session"),
        (&mut a2, sooner_at, "second stream of the sooner session"),
        (&mut b, later_at, "stream of the later session"),
    ] {
        let ((code, reason), _) = close_after(ws, Duration::from_secs(10));
        let late_ms = unix_ms() - end;
        assert_eq!((code, reason.as_str()), (1008, "Session expired"), "{what}");
        assert!(
            late_ms >= 0,
            "{what}: closed {} ms before its end",
            -late_ms
        );
        assert!(late_ms < 1000, "{what}: closed {late_ms} ms after its end");
    }

    srv.create_user("still", "watching", None);
    let (ev, _) = recv_type(&mut c, "user_added", Duration::from_secs(5));
    assert_eq!(ev["data"]["first_name"], "still", "{ev}");
}

/// Issue 12, item 9: a session deleted from the database kept working until restart, and
/// there was no revoke.
#[test]
fn revoke_ends_every_session_of_an_admin_within_10_s() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    const OTHER: &str = "other@example.com";
    srv.create_admin(OTHER, ADMIN_PASSWORD);
    let a1 = format!("admin_session={}", srv.admin_token(ADMIN_EMAIL));
    let a2 = format!("admin_session={}", srv.admin_token(ADMIN_EMAIL));
    let b = format!("admin_session={}", srv.admin_token(OTHER));
    let (mut ws1, _) = srv.admin_ws(&a1);
    let (mut ws2, _) = srv.admin_ws(&a2);
    let (mut wsb, _) = srv.admin_ws(&b);
    assert_eq!(srv.get("/api/users", Some(&a2)).status, 200);

    let db = srv.db_arg();
    let revoked_at = Instant::now();
    let out = run_cli(
        &["admin", "revoke", "--email", ADMIN_EMAIL, "--db", &db],
        &[],
        None,
    );
    assert!(out.status.success(), "admin revoke: {}", out.stderr);
    // The default admin had three sessions: LiveAdmin's, a1, a2.
    assert!(out.stderr.contains("revoked 3 session"), "{}", out.stderr);
    for (ws, what) in [(&mut ws1, "first session"), (&mut ws2, "second session")] {
        let ((code, reason), _) = close_after(ws, Duration::from_secs(11));
        assert_eq!(code, 1008, "{what}: {reason}");
    }
    let took = revoked_at.elapsed();
    eprintln!("streams of the revoked admin closed {took:?} after the revoke");
    // API.md allows 10 s; the re-check runs every second (it was every 5 s, and meanwhile the
    // revoked cookie could still write).
    assert!(took < Duration::from_secs(4), "{took:?}");
    assert_eq!(
        srv.get("/api/users", Some(&a1)).status,
        401,
        "HTTP with a revoked session"
    );
    assert_eq!(srv.get("/api/users", Some(&a2)).status, 401);

    // The other admin is untouched: its stream still gets broadcasts, its cookie works.
    assert_eq!(srv.get("/api/users", Some(&b)).status, 200);
    let r = srv.json(
        "POST",
        "/api/users",
        Some(&b),
        Some(&serde_json::json!({"first_name":"A","last_name":"B","email":"ab@example.com"})),
    );
    assert_eq!(r.status, 201);
    let (added, _) = recv_type(&mut wsb, "user_added", WAIT);
    assert_eq!(added["data"]["email"], "ab@example.com");
    drop(live);

    // An unknown admin: a clear error, exit status 1.
    let out = run_cli(
        &[
            "admin",
            "revoke",
            "--email",
            "nobody@example.com",
            "--db",
            &db,
        ],
        &[],
        None,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stderr.contains("no admin"), "{}", out.stderr);
}

#[test]
fn a_cli_token_lasts_a_web_session_by_default() {
    let srv = Server::start(&[]);
    srv.admin_cookie();
    let before = unix_ms();
    let token = srv.admin_token(ADMIN_EMAIL);
    let week = 7 * 24 * 3600 * 1000;
    let left = stored_expiry(&srv, &token) - before;
    assert!(
        (week - 60_000..=week + 60_000).contains(&left),
        "a CLI token lasts {} h, not 168",
        left / 3_600_000
    );
    let token = srv.admin_token_with_ttl(ADMIN_EMAIL, "0.5");
    let left = stored_expiry(&srv, &token) - unix_ms();
    assert!(
        (1_700_000..=1_800_000).contains(&left),
        "--ttl-hours 0.5: {left} ms"
    );
}
