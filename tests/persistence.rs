//! Data in the SQLite file survives a restart.

mod common;

use common::*;
use serde_json::json;

#[test]
fn users_sessions_and_tokens_survive_restart() {
    let mut srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let a = srv.create_user("Ada", "Lovelace", Some(5));
    let b = srv.create_user("Grace", "Hopper", Some(3));
    let r = srv.patch_user(
        id_of(&b),
        &json!({"questions_answered": 2, "transcript_url": "https://files.example.com/t/b"}),
    );
    assert_eq!(r.status, 200);
    let gone = srv.create_user("Gone", "Soon", None);
    assert_eq!(
        srv.json(
            "DELETE",
            &format!("/api/users/{}", id_of(&gone)),
            Some(&c),
            None
        )
        .status,
        204
    );
    let s = srv.started_session(4);
    let r = srv.json(
        "POST",
        "/api/session/answer",
        None,
        Some(&json!({"token": s.token})),
    );
    assert_eq!(r.status, 200);
    let before = srv.users();
    let remaining_before = srv.activate(&s.token).json()["remaining_seconds"]
        .as_f64()
        .unwrap();

    srv.restart();

    // Admin session row persisted: the same cookie still works.
    let r = srv.get("/api/users", Some(&c));
    assert_eq!(r.status, 200, "admin cookie after restart");
    let after = r.json();
    let after = after.as_array().unwrap();
    assert_eq!(after.len(), before.len());
    for (x, y) in before.iter().zip(after.iter()) {
        // Invite URLs embed the public URL, which moves with the port here; compare the rest.
        let strip = |v: &serde_json::Value| {
            let mut v = v.clone();
            v["invite_url"] = json!(invite_token(&v));
            v["session_timer"] = json!(null);
            v
        };
        assert_eq!(strip(x), strip(y), "user survives restart");
    }
    assert!(
        after.iter().all(|u| id_of(u) != id_of(&gone)),
        "deleted stays deleted"
    );

    // Invite token still valid; the un-activated user can start now.
    let r = srv.activate(&invite_token(&a));
    assert_eq!(r.status, 200, "old invite after restart: {}", r.text());

    // The running session kept its clock (not restarted by the restart).
    let r = srv.activate(&s.token);
    assert_eq!(r.status, 200);
    let rem = r.json()["remaining_seconds"].as_f64().unwrap();
    assert!(
        rem <= remaining_before,
        "clock restarted: {remaining_before} -> {rem}"
    );
    let mut ws = srv
        .session_ws(&s.session_id, &s.token)
        .expect("session stream after restart");
    assert_eq!(recv_json(&mut ws, WAIT)["type"], "time_update");
    let r = srv.json(
        "POST",
        "/api/session/answer",
        None,
        Some(&json!({"token": s.token})),
    );
    assert_eq!(
        r.json(),
        json!({"questions_answered": 2, "questions_total": 4})
    );

    // New ids keep increasing (no reuse of the deleted id).
    let n = srv.create_user("New", "Comer", None);
    let max_before = before.iter().map(id_of).max().unwrap().max(id_of(&gone));
    assert!(
        id_of(&n) > max_before,
        "new id {} after max {max_before}",
        id_of(&n)
    );
}

#[test]
fn admin_login_works_after_restart() {
    let mut srv = Server::start(&[]);
    srv.admin_cookie();
    srv.restart();
    let r = srv.json(
        "POST",
        "/api/admin/login",
        None,
        Some(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
    );
    assert_eq!(r.status, 204);
    assert!(
        !srv.logs.joined().contains("setup?code="),
        "no setup URL once an admin exists"
    );
}
