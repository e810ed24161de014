//! Shapes the contract fixes (docs/API.md), checked the same way by every test.

use serde_json::Value;

pub const USER_KEYS: [&str; 15] = [
    "id",
    "first_name",
    "last_name",
    "email",
    "status",
    "progress",
    "invite_url",
    "token_valid",
    "session_timer",
    "transcript",
    "summary",
    "invited_at",
    "invite_expires_at",
    "session_started_at",
    "session_ended_at",
];

/// An RFC 3339 UTC time as the server writes it: `2026-11-30T12:34:56Z`.
pub fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && [0..4, 5..7, 8..10, 11..13, 14..16, 17..19]
            .into_iter()
            .all(|r| b[r].iter().all(u8::is_ascii_digit))
}

/// Asserts a value has exactly the contract's user-object keys and value types.
pub fn assert_user_shape(u: &Value) {
    let obj = u
        .as_object()
        .unwrap_or_else(|| panic!("user is not an object: {u}"));
    let mut keys: Vec<&str> = obj.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut want = USER_KEYS.to_vec();
    want.sort_unstable();
    assert_eq!(keys, want, "user object keys: {u}");
    assert!(u["id"].is_i64() || u["id"].is_u64(), "id: {u}");
    for k in ["first_name", "last_name", "email", "progress", "invite_url"] {
        assert!(u[k].is_string(), "{k} must be a string: {u}");
    }
    let st = u["status"].as_str().unwrap_or("");
    assert!(
        ["invited", "in_progress", "completed", "expired"].contains(&st),
        "status {st:?}: {u}"
    );
    let p = u["progress"].as_str().unwrap();
    let (a, t) = p
        .split_once('/')
        .unwrap_or_else(|| panic!("progress {p:?} is not A/T"));
    assert!(
        a.parse::<u64>().is_ok() && t.parse::<u64>().is_ok(),
        "progress {p:?}"
    );
    assert!(u["token_valid"].is_boolean(), "token_valid: {u}");
    match &u["session_timer"] {
        Value::Null => {}
        Value::String(s) => assert!(is_mm_ss(s), "session_timer {s:?}"),
        other => panic!("session_timer {other}"),
    }
    for k in ["transcript", "summary"] {
        assert!(u[k].is_null() || u[k].is_string(), "{k}: {u}");
    }
    assert!(
        u["invited_at"].as_str().is_some_and(is_rfc3339),
        "invited_at: {u}"
    );
    for k in [
        "invite_expires_at",
        "session_started_at",
        "session_ended_at",
    ] {
        assert!(
            u[k].is_null() || u[k].as_str().is_some_and(is_rfc3339),
            "{k}: {u}"
        );
    }
}

/// "MM:SS" (minutes may have more than two digits).
pub fn is_mm_ss(s: &str) -> bool {
    match s.split_once(':') {
        Some((m, sec)) => {
            !m.is_empty()
                && m.chars().all(|c| c.is_ascii_digit())
                && sec.len() == 2
                && sec.chars().all(|c| c.is_ascii_digit())
                && sec.parse::<u32>().unwrap() < 60
        }
        None => false,
    }
}
