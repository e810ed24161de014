//! Test data made through the API: users, invites, activated sessions, and the ids and tokens
//! read back out of the answers.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use serde_json::{json, Value};

use super::{build_request, Resp, Server};

impl Server {
    pub fn unique_email(&self) -> String {
        let n = self.seq.fetch_add(1, Ordering::SeqCst);
        format!("user{n}.{}@example.com", self.port())
    }

    /// POST /api/users with a unique email; asserts 201 and returns the user object.
    pub fn create_user(&self, first: &str, last: &str, questions_total: Option<u64>) -> Value {
        let mut body =
            json!({"first_name": first, "last_name": last, "email": self.unique_email()});
        if let Some(t) = questions_total {
            body["questions_total"] = json!(t);
        }
        let r = self.json(
            "POST",
            "/api/users",
            Some(&self.admin_cookie()),
            Some(&body),
        );
        assert_eq!(r.status, 201, "POST /api/users {body}: {}", r.text());
        r.json()
    }

    pub fn users(&self) -> Vec<Value> {
        let r = self.get("/api/users", Some(&self.admin_cookie()));
        assert_eq!(r.status, 200, "GET /api/users: {}", r.text());
        r.json().as_array().expect("array").clone()
    }

    pub fn user(&self, id: i64) -> Value {
        self.users()
            .into_iter()
            .find(|u| u["id"].as_i64() == Some(id))
            .unwrap_or_else(|| panic!("user {id} not in GET /api/users"))
    }

    pub fn patch_user(&self, id: i64, body: &Value) -> Resp {
        self.json(
            "PATCH",
            &format!("/api/users/{id}"),
            Some(&self.admin_cookie()),
            Some(body),
        )
    }

    /// POST /api/users with raw JSON bytes on a fresh connection. A failed write is ignored:
    /// the server may answer (and stop reading) before the whole body is in, e.g. with a 413.
    pub fn post_user_bytes(&self, cookie: &str, body: &[u8]) -> std::io::Result<Resp> {
        let mut conn = self.http();
        let headers = [("Cookie", cookie), ("Content-Type", "application/json")];
        let req = build_request(&conn.host, "POST", "/api/users", &headers, Some(body));
        let _ = conn.write_raw(&req);
        conn.read_response()
    }

    /// POST /api/users/{id}/invite (must be 200); the user with the new invite.
    pub fn regenerate_invite(&self, id: i64, cookie: &str) -> Value {
        let r = self.json(
            "POST",
            &format!("/api/users/{id}/invite"),
            Some(cookie),
            None,
        );
        assert_eq!(r.status, 200, "regenerate invite: {}", r.text());
        r.json()
    }

    /// POST /api/session/activate {"token"}.
    pub fn activate(&self, token: &str) -> Resp {
        self.json(
            "POST",
            "/api/session/activate",
            None,
            Some(&json!({ "token": token })),
        )
    }

    /// POST /api/session/answer {"token"} (the invite token).
    pub fn answer(&self, token: &str) -> Resp {
        self.json(
            "POST",
            "/api/session/answer",
            None,
            Some(&json!({ "token": token })),
        )
    }

    /// Creates a user and activates its invite; returns (user, invite token, session id,
    /// session_token cookie value).
    pub fn started_session(&self, questions_total: u64) -> Session {
        let user = self.create_user("Ada", "Lovelace", Some(questions_total));
        let token = invite_token(&user);
        let r = self.activate(&token);
        assert_eq!(r.status, 200, "activate: {}", r.text());
        let body = r.json();
        let session_id = session_id_of(&body);
        let cookie = r
            .cookie_value("session_token")
            .expect("session_token cookie on activate");
        Session {
            user_id: user["id"].as_i64().unwrap(),
            user,
            token,
            session_id,
            cookie,
        }
    }
}

pub struct Session {
    pub user_id: i64,
    pub user: Value,
    /// The invite token (from invite_url).
    pub token: String,
    pub session_id: String,
    /// Value of the `session_token` cookie set by activate.
    pub cookie: String,
}

/// The `token` query parameter of a user's invite_url.
pub fn invite_token(user: &Value) -> String {
    let url = user["invite_url"]
        .as_str()
        .unwrap_or_else(|| panic!("invite_url in {user}"));
    let i = url
        .find("/session?token=")
        .unwrap_or_else(|| panic!("invite_url {url:?} lacks /session?token="));
    let t = &url[i + "/session?token=".len()..];
    let t = t.split('&').next().unwrap();
    assert!(!t.is_empty(), "empty token in {url}");
    t.to_string()
}

/// `session_id` of an activate answer, as it goes into `/session/{id}/stream`.
pub fn session_id_of(body: &Value) -> String {
    match &body["session_id"] {
        Value::Number(n) => n.to_string(),
        Value::String(s) if !s.is_empty() => s.clone(),
        _ => panic!("session_id in {body}"),
    }
}

pub fn id_of(v: &Value) -> i64 {
    v["id"].as_i64().unwrap_or_else(|| panic!("id in {v}"))
}

/// A tempdir-relative path that is guaranteed unusable as a database: its parent is a file.
pub fn unusable_db_path(dir: &Path) -> PathBuf {
    let f = dir.join("not-a-dir");
    std::fs::write(&f, b"x").unwrap();
    f.join("sub").join("db.sqlite")
}
