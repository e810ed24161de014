//! Request bodies: the JSON rules of the contract and the field validators shared by the HTTP
//! API and the agent stream. Each failure is an answer with the status the contract names:
//! 415 (not JSON), 400 (malformed JSON), 422 (a field missing or invalid).
//!
//! Rules (API.md "HTTP"):
//! * a body is JSON only (`Content-Type: application/json`); an empty body needs no type and
//!   reads as `{}`; the size cap (64 KiB → 413) is `http.rs`'s, before any of this runs;
//! * fields of the wrong JSON type are 422 with the field's name, never silently converted;
//! * names are stored exactly as sent (no trimming, no normalisation): what the admin typed is
//!   what the invitee's page shows. The refusals are only those that would make the text lie
//!   about itself on screen (white space only, control and direction-override characters);
//! * an email is checked by its shape only; whether it can receive mail is not ours to know.
//!
//! Validation here never needs stored state; rules that do (a user exists, answers do not
//! pass the total) are the commands' (`app/command.rs`).

use crate::app::UserPatch;
use crate::http::{Request, Response};
use serde_json::{Map, Value};

/// Names are 1 to this many characters (Unicode scalar values), stored exactly as sent.
pub const NAME_MAX_CHARS: usize = 200;
/// RFC 5321 §4.5.3.1.3: a path (and so an address) is at most 254 octets in practice.
pub const EMAIL_MAX: usize = 254;
/// Transcript and summary links, in bytes: the de-facto URL limit of browsers and proxies.
pub const URL_MAX: usize = 2048;
/// Questions per interview, at most (keeps `progress` and the counts in sane integers).
pub const QUESTIONS_MAX: i64 = 10_000;
/// Longest password we hash or check, in bytes. Argon2 takes any length; this bounds the work
/// one request can ask of the password pool.
pub const PASSWORD_MAX_BYTES: usize = 4096;

/// Unwrap an `Ok`, or return the `Err` answer from the enclosing handler. (The `?` operator
/// would need every handler to return `Result`; handlers return a `Reply`.)
macro_rules! try_resp {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(resp) => return resp,
        }
    };
}
pub(crate) use try_resp;

/// The JSON object of a request body. An empty body counts as `{}` and needs no Content-Type.
pub fn json_object(req: &Request) -> Result<Map<String, Value>, Response> {
    if req.body.is_empty() {
        return Ok(Map::new());
    }
    if !req.is_json() {
        return Err(Response::error(415, "send the body as application/json"));
    }
    match serde_json::from_slice::<Value>(&req.body) {
        Ok(Value::Object(m)) => Ok(m),
        // Valid JSON of the wrong shape is a field problem (422), not a syntax one (400).
        Ok(_) => Err(Response::error(422, "the body must be a JSON object")),
        Err(_) => Err(Response::error(400, "the body is not valid JSON")),
    }
}

/// Field `name` as a string if present; any other JSON type is 422.
pub fn string_field(body: &Map<String, Value>, name: &str) -> Result<Option<String>, Response> {
    match body.get(name) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(Response::error(422, &format!("{name} must be a string"))),
    }
}

/// Field `name`, which must be present and a string (422 otherwise).
pub fn required_string(body: &Map<String, Value>, name: &str) -> Result<String, Response> {
    string_field(body, name)?.ok_or_else(|| Response::error(422, &format!("{name} is required")))
}

/// A name: 1 to [`NAME_MAX_CHARS`] characters, stored exactly as sent, but never only white
/// space and never holding a character that is not text: a control character (C0, DEL, C1 —
/// NUL and escape sequences) or a bidirectional override or isolate (U+202A–U+202E,
/// U+2066–U+2069), which would reorder how the dashboard shows this and the text around it.
pub fn name_field(value: String, name: &str) -> Result<String, Response> {
    // Counted in characters, not bytes: 200 characters of Chinese is a legitimate name.
    let n = value.chars().count();
    if n == 0 || n > NAME_MAX_CHARS {
        return Err(Response::error(
            422,
            &format!("{name} must be 1 to {NAME_MAX_CHARS} characters"),
        ));
    }
    if value.chars().all(char::is_whitespace) {
        return Err(Response::error(
            422,
            &format!("{name} must not be only white space"),
        ));
    }
    if value.chars().any(|c| c.is_control() || is_bidi_control(c)) {
        return Err(Response::error(
            422,
            &format!("{name} must not hold control or text-direction characters"),
        ));
    }
    Ok(value)
}

/// The bidirectional embeddings, overrides and isolates (Unicode UAX #9 explicit formatting).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// An address by its shape: `local@domain`, one `@`, no spaces or control characters, no empty
/// domain labels. Deliverability is the mail system's business, not ours.
pub fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.contains('@')
        && !domain.is_empty()
        && email.len() <= EMAIL_MAX
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !domain.contains("..")
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
        // Characters that are never part of a domain name and would let an address smuggle a
        // second recipient or a header into a mail client.
        && !domain.contains(['[', ']', '(', ')', ',', ';', ':', '<', '>', '\\', '"'])
}

/// An email field's value, if it has an address's shape (422 otherwise). Stored as sent: the
/// store compares emails case-insensitively.
pub fn email_field(value: String) -> Result<String, Response> {
    if valid_email(&value) {
        Ok(value)
    } else {
        Err(Response::error(
            422,
            "email must be an address like name@example.com",
        ))
    }
}

/// A whole number from `min` to [`QUESTIONS_MAX`], if present. `3.0` or `"3"` is refused: the
/// contract's numbers are JSON integers.
pub fn int_field(body: &Map<String, Value>, name: &str, min: i64) -> Result<Option<i64>, Response> {
    match body.get(name) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if (min..=QUESTIONS_MAX).contains(&n) => Ok(Some(n)),
            _ => Err(Response::error(
                422,
                &format!("{name} must be a whole number from {min} to {QUESTIONS_MAX}"),
            )),
        },
    }
}

/// `null` clears; a string must be an http(s) URL.
pub fn url_field(
    body: &Map<String, Value>,
    name: &str,
) -> Result<Option<Option<String>>, Response> {
    match body.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(s)) if valid_url(s) => Ok(Some(Some(s.clone()))),
        Some(_) => Err(Response::error(
            422,
            &format!("{name} must be an http(s) URL or null"),
        )),
    }
}

/// An http(s) URL by its shape: the links are shown to admins as links, so other schemes
/// (`javascript:`, `data:`) are refused outright.
pub fn valid_url(s: &str) -> bool {
    (s.starts_with("https://") || s.starts_with("http://"))
        && s.len() <= URL_MAX
        && s.len() > "http://".len() + 1
        && !s.chars().any(|c| c.is_whitespace() || c.is_control())
}

/// The fields of a PATCH body; every one optional, unknown fields ignored. Whether
/// `questions_answered` passes `questions_total` depends on the stored row, so the command
/// checks it.
pub fn parse_patch(body: &Map<String, Value>) -> Result<UserPatch, Response> {
    Ok(UserPatch {
        first_name: string_field(body, "first_name")?
            .map(|v| name_field(v, "first_name"))
            .transpose()?,
        last_name: string_field(body, "last_name")?
            .map(|v| name_field(v, "last_name"))
            .transpose()?,
        email: string_field(body, "email")?.map(email_field).transpose()?,
        questions_total: int_field(body, "questions_total", 1)?,
        questions_answered: int_field(body, "questions_answered", 0)?,
        transcript_url: url_field(body, "transcript_url")?,
        summary_url: url_field(body, "summary_url")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails() {
        for ok in [
            "a@b.c",
            "ada.lovelace+x@example.com",
            "名前@例え.jp",
            "o'brien@x.io",
        ] {
            assert!(valid_email(ok), "{ok}");
        }
        for bad in [
            "", "a", "@b.c", "a@", "a b@c.d", "a@b..c", "a@.b", "a@b.", "a@b@c", "a@b\n.c",
        ] {
            assert!(!valid_email(bad), "{bad:?}");
        }
    }

    #[test]
    fn names_must_be_text() {
        for ok in ["Ada", "Zoë", "O'Brien", " Ada ", "李", "عربي", "a\u{200D}b"] {
            assert!(name_field(ok.into(), "n").is_ok(), "{ok:?}");
        }
        for bad in [
            "",
            " ",
            "\t\n",
            "\u{3000}",
            "a\0b",
            "a\u{7}",
            "a\u{1b}[31m",
            "a\u{7f}",
            "a\u{85}",
            "a\u{9b}",
            "evil\u{202E}gnp.exe",
            "a\u{202A}",
            "a\u{2066}b",
            "a\u{2069}",
        ] {
            assert!(name_field(bad.into(), "n").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn urls() {
        assert!(valid_url("https://x.io/t"));
        assert!(!valid_url("ftp://x.io"));
        assert!(!valid_url("http://"));
        assert!(!valid_url("https://x.io/a b"));
    }
}
