//! The admin-account routes of contract v2: `GET /api/admin/me`, `GET/POST /api/admins`,
//! `DELETE /api/admins/{email}`, `POST /api/admin/password` — and the sessions they end.

mod common;

use common::*;
use serde_json::{json, Value};

const OTHER: &str = "second@example.com";
const OTHER_PASSWORD: &str = "purple elephant juggles 97 lanterns";

/// `POST /api/admin/login`; returns the `admin_session=…` cookie pair.
fn login(srv: &Server, email: &str, password: &str) -> String {
    let r = srv.json(
        "POST",
        "/api/admin/login",
        None,
        Some(&json!({"email": email, "password": password})),
    );
    assert_eq!(r.status, 204, "login {email}: {}", r.text());
    let c = r.set_cookie("admin_session").expect("admin_session cookie");
    c.split(';').next().unwrap().to_string()
}

fn add_admin(srv: &Server, cookie: &str, email: &str, password: &str) -> Resp {
    srv.json(
        "POST",
        "/api/admins",
        Some(cookie),
        Some(&json!({"email": email, "password": password})),
    )
}

fn emails(list: &Value) -> Vec<String> {
    list.as_array()
        .expect("array")
        .iter()
        .map(|a| a["email"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn me_names_the_signed_in_admin_and_the_session_expiry() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let r = srv.json("GET", "/api/admin/me", Some(&c), None);
    assert_eq!(r.status, 200, "{}", r.text());
    let me = r.json();
    assert_eq!(me["email"], ADMIN_EMAIL);
    assert!(me["session_expires_at"].as_str().unwrap().ends_with('Z'));
    assert_eq!(srv.json("GET", "/api/admin/me", None, None).status, 401);
    assert_eq!(
        srv.json("POST", "/api/admin/me", Some(&c), None).status,
        405
    );
}

#[test]
fn list_and_add_admins_then_the_new_one_signs_in() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    assert_eq!(srv.json("GET", "/api/admins", None, None).status, 401);
    let list = srv.json("GET", "/api/admins", Some(&c), None).json();
    assert_eq!(emails(&list), vec![ADMIN_EMAIL]);
    assert!(list[0]["created_at"].is_string());
    assert!(
        list[0]["last_sign_in_at"].is_null(),
        "a CLI token is no sign-in"
    );
    assert!(list[0].get("password_hash").is_none() && list[0].get("id").is_none());

    let r = add_admin(&srv, &c, OTHER, OTHER_PASSWORD);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["email"], OTHER);
    let r = add_admin(&srv, &c, "SECOND@example.com", OTHER_PASSWORD);
    assert_eq!(r.status, 409, "emails compare case-insensitively");
    let r = add_admin(&srv, &c, "third@example.com", "short");
    assert_eq!(r.status, 422);
    assert!(r.json()["error"].as_str().unwrap().contains("password"));
    let r = add_admin(&srv, &c, "not-an-email", OTHER_PASSWORD);
    assert_eq!(r.status, 422);

    login(&srv, OTHER, OTHER_PASSWORD);
    let list = srv.json("GET", "/api/admins", Some(&c), None).json();
    assert_eq!(emails(&list), vec![ADMIN_EMAIL, OTHER]);
    assert!(list[1]["last_sign_in_at"].is_string(), "{list}");
}

#[test]
fn removing_an_admin_ends_its_sessions_and_never_the_last_one() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    assert_eq!(add_admin(&srv, &c, OTHER, OTHER_PASSWORD).status, 201);
    let theirs = login(&srv, OTHER, OTHER_PASSWORD);
    let (mut their_ws, _) = srv.admin_ws(&theirs);
    let (mut my_ws, _) = srv.admin_ws(&c);

    let r = srv.json("DELETE", "/api/admins/nobody%40example.com", Some(&c), None);
    assert_eq!(r.status, 404);
    let r = srv.json("DELETE", "/api/admins/second%40example.com", Some(&c), None);
    assert_eq!(r.status, 204, "{}", r.text());
    let (code, _) = expect_close(&mut their_ws, WAIT);
    assert_eq!(code, 1008, "the removed admin's stream closes 1008");
    assert_eq!(
        srv.json("GET", "/api/admin/me", Some(&theirs), None).status,
        401
    );
    assert_silent(&mut my_ws, QUIET, "the remaining admin's stream");

    // Only one admin left: it cannot remove itself.
    let r = srv.json(
        "DELETE",
        &format!("/api/admins/{}", ADMIN_EMAIL.replace('@', "%40")),
        Some(&c),
        None,
    );
    assert_eq!(r.status, 409, "{}", r.text());
    assert_eq!(srv.json("GET", "/api/admin/me", Some(&c), None).status, 200);
    let list = srv.json("GET", "/api/admins", Some(&c), None).json();
    assert_eq!(emails(&list), vec![ADMIN_EMAIL]);
}

#[test]
fn changing_the_password_ends_the_other_sessions_only() {
    let srv = Server::start(&[]);
    srv.admin_cookie(); // creates the account
    let mine = login(&srv, ADMIN_EMAIL, ADMIN_PASSWORD);
    let other = login(&srv, ADMIN_EMAIL, ADMIN_PASSWORD);
    let (mut other_ws, _) = srv.admin_ws(&other);
    let (mut my_ws, _) = srv.admin_ws(&mine);
    let change = |current: &str, new: &str| {
        srv.json(
            "POST",
            "/api/admin/password",
            Some(&mine),
            Some(&json!({"current_password": current, "new_password": new})),
        )
    };
    let new_password = "seven orange kites above 31 rivers";

    assert_eq!(change("wrong wrong wrong", new_password).status, 403);
    let weak = change(ADMIN_PASSWORD, "abc");
    assert_eq!(weak.status, 422);
    assert!(weak.json()["error"].is_string());
    assert_silent(&mut other_ws, QUIET, "refused changes end nothing");

    let r = change(ADMIN_PASSWORD, new_password);
    assert_eq!(r.status, 204, "{}", r.text());
    let (code, _) = expect_close(&mut other_ws, WAIT);
    assert_eq!(code, 1008);
    assert_eq!(
        srv.json("GET", "/api/admin/me", Some(&other), None).status,
        401
    );
    assert_eq!(
        srv.json("GET", "/api/admin/me", Some(&mine), None).status,
        200
    );
    assert_silent(&mut my_ws, QUIET, "the session that changed it stays open");

    let old = srv.json(
        "POST",
        "/api/admin/login",
        None,
        Some(&json!({"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD})),
    );
    assert_eq!(old.status, 401);
    login(&srv, ADMIN_EMAIL, new_password);
}
