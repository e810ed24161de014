//! Secrets: random tokens, their stored digests, invite-token derivation and password hashing.
//!
//! * Admin session tokens are 32 random bytes from the OS, handed out once (cookie or
//!   `admin token`), and stored only as SHA-256 digests.
//! * Invite tokens (which double as the invitee's session token) must be shown to admins again
//!   and again inside `invite_url`, yet must not sit in the database in the clear. So they are
//!   derived: `HMAC-SHA256(server key, user id ‖ per-user random nonce)`. The 32-byte server key
//!   lives in a file beside the database (`<db>.key`, mode 0600), the nonce and the token's digest
//!   in the database. A stolen database alone opens no session; a new nonce kills the old link.
//! * Comparisons of secrets run in constant time.
//! * Passwords are hashed with Argon2id (memory-hard); that takes tens of milliseconds, so the
//!   reactor hands it to the worker thread in `worker.rs`.

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256};
use std::fmt::Write as _;

pub type Digest32 = [u8; 32];

/// 32 bytes from the OS random source.
pub fn random_bytes<const N: usize>() -> Result<[u8; N], getrandom::Error> {
    let mut b = [0u8; N];
    getrandom::fill(&mut b)?;
    Ok(b)
}

/// A fresh random token, hex-encoded (64 characters).
pub fn new_token() -> Result<String, getrandom::Error> {
    Ok(hex(&random_bytes::<32>()?))
}

/// The digest under which a token is stored and looked up.
pub fn digest(token: &str) -> Digest32 {
    Sha256::digest(token.as_bytes()).into()
}

pub fn hex(bytes: &[u8]) -> String {
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Constant-time equality: the time taken does not depend on where the inputs differ.
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let diff = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(diff) == 0
}

/// HMAC-SHA256 (RFC 2104) of the concatenated `parts` under `key` (RustCrypto's `hmac`).
pub fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Digest32 {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        unreachable!("HMAC accepts keys of every length")
    };
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().into()
}

/// The invite token of user `id` with invite nonce `nonce`, under server key `key`.
pub fn invite_token(key: &[u8; 32], id: i64, nonce: &[u8]) -> String {
    hex(&hmac_sha256(
        key,
        &[b"catalytic invite v1", &id.to_be_bytes(), nonce],
    ))
}

/// Argon2id hash in PHC string form. Slow on purpose: call it off the reactor thread.
pub fn hash_password(password: &str) -> Result<String, String> {
    let salt_bytes = random_bytes::<16>().map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| e.to_string())?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// Whether `password` matches the stored PHC string. Slow on purpose: off the reactor thread.
pub fn verify_password(password: &str, stored: &str) -> bool {
    match PasswordHash::new(stored) {
        Ok(parsed) => Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok(),
        Err(_) => false,
    }
}

/// A PHC string for a password nobody knows, so a login for an unknown account costs the same
/// time as one for a known account (no account enumeration by timing).
pub const DUMMY_PASSWORD_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c29tZXNhbHRzb21lc2FsdA$0iQm3vtS0kL7Vq6Q9cJ5mRZb1k3W1e6p0y6b8T0d1d4";

/// The shortest admin password (API.md: at least 10 characters).
pub const PASSWORD_MIN_CHARS: usize = 10;
/// The longest admin password (the hash takes any length; this bounds the work).
pub const PASSWORD_MAX_CHARS: usize = 1024;
/// The strength estimator looks at this many characters at most: its work grows with the
/// length, and a password this long that is weak in its first part is weak.
const ESTIMATE_CHARS: usize = 128;
/// The lowest zxcvbn score accepted (of 0–4): 3 is "safely unguessable: moderate protection
/// from offline slow-hash scenario" (Argon2id is a slow hash).
const MIN_SCORE: u8 = 3;

/// Admin passwords (setup, `admin create`, every password change): at least 10 characters and
/// not easily guessed — zxcvbn, which knows common passwords, words, names, keyboard walks,
/// repeats, sequences and dates, must score it 3 of 4 or more. `user_inputs` (the email, …)
/// count as known words. `Err` says why, in words the setup page and the CLI show.
pub fn check_password_rules(password: &str, user_inputs: &[&str]) -> Result<(), String> {
    let n = password.chars().count();
    if n < PASSWORD_MIN_CHARS {
        return Err(format!(
            "it must be at least {PASSWORD_MIN_CHARS} characters long"
        ));
    }
    if n > PASSWORD_MAX_CHARS {
        return Err(format!(
            "it must be at most {PASSWORD_MAX_CHARS} characters long"
        ));
    }
    let head: String = password.chars().take(ESTIMATE_CHARS).collect();
    // The email's parts count too: `ada.lovelace@example.com` makes "adalovelace2024" weak.
    let mut inputs: Vec<&str> = Vec::new();
    for i in user_inputs {
        inputs.push(i);
        inputs.extend(i.split(['@', '.', '+', '-', '_']).filter(|p| p.len() > 2));
    }
    let estimate = zxcvbn::zxcvbn(&head, &inputs);
    if u8::from(estimate.score()) >= MIN_SCORE {
        return Ok(());
    }
    let mut why = String::from("it is too easy to guess");
    if let Some(feedback) = estimate.feedback() {
        if let Some(w) = feedback.warning() {
            let _ = write!(why, " ({w})");
        }
        if let Some(s) = feedback.suggestions().first() {
            let _ = write!(why, ". {s}");
        }
    }
    if !why.ends_with('.') {
        why.push('.');
    }
    why.push_str(" A few unrelated words or a longer phrase are strong and easy to remember");
    Err(why)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", &[b"what do ya want ", b"for nothing?"]);
        assert_eq!(
            hex(&mac),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }

    #[test]
    fn tokens_are_random_and_hex() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, b);
    }

    #[test]
    fn invite_token_depends_on_key_id_and_nonce() {
        let k1 = [1u8; 32];
        let k2 = [2u8; 32];
        let t = invite_token(&k1, 7, b"nonce");
        assert_eq!(t, invite_token(&k1, 7, b"nonce"));
        assert_ne!(t, invite_token(&k2, 7, b"nonce"));
        assert_ne!(t, invite_token(&k1, 8, b"nonce"));
        assert_ne!(t, invite_token(&k1, 7, b"other"));
    }

    #[test]
    fn constant_time_eq() {
        assert!(ct_eq(b"abc", b"abc"));
        assert!(!ct_eq(b"abc", b"abd"));
        assert!(!ct_eq(b"abc", b"ab"));
    }

    #[test]
    fn weak_passwords_are_refused_with_a_reason() {
        for weak in [
            "password",
            "12345678",
            "aaaaaaaa",
            "aaaaaaaaaa",
            "password12",
            "1234567890",
            "qwertyuiop",
            "Password123",
            "adminadmin1",
            "iloveyou12",
        ] {
            let why = check_password_rules(weak, &["admin@example.com"]).unwrap_err();
            assert!(!why.is_empty(), "{weak}");
        }
        let short = check_password_rules("x9#Lq!", &[]).unwrap_err();
        assert!(short.contains("at least 10"), "{short}");
        assert!(
            check_password_rules(&"Zq8!".repeat(300), &[]).is_err(),
            "too long"
        );
        let mine = check_password_rules("ada.lovelace@example.com", &["ada.lovelace@example.com"]);
        assert!(mine.is_err(), "the email itself");
        for strong in [
            "correct horse battery staple 42",
            "from stdin password 99",
            "Tr0ub4dor&3-plus-more",
            "vM8#qz!2Lr$wPx",
        ] {
            assert_eq!(
                check_password_rules(strong, &["admin@example.com"]),
                Ok(()),
                "{strong}"
            );
        }
    }

    #[test]
    fn password_round_trip() {
        let h = hash_password("correct horse").unwrap();
        assert!(verify_password("correct horse", &h));
        assert!(!verify_password("wrong horse", &h));
        assert!(!verify_password("correct horse", "not a phc string"));
        assert!(!verify_password("anything", DUMMY_PASSWORD_HASH));
    }
}
