//! Device cookies (OWASP's defence against lockout by others): a browser that signed in as an
//! account once carries a signed `device` cookie naming that account. A sign-in attempt with a
//! valid device cookie for the account it names is limited by that cookie's own failures, not
//! the account's, so strangers who know an admin's email cannot lock the admin out.
//!
//! The cookie is `<payload>.<mac>` in base64url: payload = version ‖ random id (16 bytes) ‖
//! issue time (Unix s, 8 bytes) ‖ the account's lower-cased email; mac = HMAC-SHA256 under a
//! key derived from the server key (like the OIDC attempt key), so any node of a deployment
//! can check it and nobody without the key can make one. It holds no secret: knowing it lets
//! nobody in, it only changes which failure count an attempt draws on. It lives a year
//! (`Max-Age` and the signed issue time), `HttpOnly; SameSite=Strict; Path=/api/admin`.

use crate::auth;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;

pub const COOKIE: &str = "device";
/// Sent only where it is used (sign-in), not with every request and stream handshake.
const PATH: &str = "/api/admin";
/// A year, in seconds (API.md): long enough that an admin who signs in now and then keeps it.
const LIFETIME_S: i64 = 365 * 24 * 3600;
/// The payload's first byte, so the format can change without misreading old cookies.
const VERSION: u8 = 1;
/// Longest cookie value we try to open (an email is at most 254 bytes).
const VALUE_MAX: usize = 600;

/// The signing key of one deployment's device cookies. Derived from the server key with its own
/// label, so it signs nothing else and a leak of one derived key does not give the others.
#[derive(Clone)]
pub struct DeviceKeys {
    mac: [u8; 32],
}

// Keys never reach a log line, even through a `{:?}` of a struct that holds them.
impl std::fmt::Debug for DeviceKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DeviceKeys(<redacted>)")
    }
}

/// A device cookie that opened: its id (the limiter's key) and the account it names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub id: [u8; 16],
    pub account: String,
}

impl DeviceKeys {
    pub fn new(server_key: &[u8; 32]) -> DeviceKeys {
        DeviceKeys {
            mac: auth::hmac_sha256(server_key, &[b"catalytic device cookies v1"]),
        }
    }

    /// A new cookie value naming `account` (lower-cased here), issued at `now_ms`. Each value has
    /// a fresh random id, so each browser draws on failures of its own. `Err` only when the OS
    /// has no randomness to give.
    pub fn issue(&self, account: &str, now_ms: i64) -> Result<String, getrandom::Error> {
        let id = auth::random_bytes::<16>()?;
        let mut payload = vec![VERSION];
        payload.extend_from_slice(&id);
        payload.extend_from_slice(&(now_ms / 1000).to_be_bytes());
        payload.extend_from_slice(account.to_lowercase().as_bytes());
        let mac = auth::hmac_sha256(&self.mac, &[&payload]);
        Ok(format!("{}.{}", B64.encode(&payload), B64.encode(mac)))
    }

    /// The device a cookie value names, if it is ours, intact and under a year old at `now_ms`.
    /// The MAC is checked (in constant time) before any byte of the payload is trusted.
    pub fn open(&self, value: &str, now_ms: i64) -> Option<Device> {
        if value.len() > VALUE_MAX {
            return None;
        }
        let (payload, mac) = value.split_once('.')?;
        let payload = B64.decode(payload).ok()?;
        let mac = B64.decode(mac).ok()?;
        if !auth::ct_eq(&auth::hmac_sha256(&self.mac, &[&payload]), &mac) {
            return None;
        }
        if payload.len() < 1 + 16 + 8 || payload[0] != VERSION {
            return None;
        }
        let id: [u8; 16] = payload[1..17].try_into().ok()?;
        let issued = i64::from_be_bytes(payload[17..25].try_into().ok()?);
        let age = now_ms / 1000 - issued;
        // A minute of clock skew between nodes is tolerated for a cookie "from the future".
        if !(-60..LIFETIME_S).contains(&age) {
            return None;
        }
        let account = String::from_utf8(payload[25..].to_vec()).ok()?;
        Some(Device { id, account })
    }
}

/// The `Set-Cookie` value of a device cookie: `HttpOnly` (no script reads it), `SameSite=Strict`
/// (no other site's request carries it), `Secure` on https deployments.
pub fn set_cookie(value: &str, secure: bool) -> String {
    let secure = if secure { "; Secure" } else { "" };
    format!(
        "{COOKIE}={value}; HttpOnly; SameSite=Strict; Path={PATH}; Max-Age={LIFETIME_S}{secure}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cookie_names_its_account_and_cannot_be_forged() {
        let keys = DeviceKeys::new(&[1; 32]);
        let v = keys.issue("Ada@Example.com", 1_000_000).unwrap();
        let d = keys.open(&v, 2_000_000).unwrap();
        assert_eq!(d.account, "ada@example.com");
        assert_ne!(
            keys.open(&keys.issue("ada@example.com", 0).unwrap(), 0)
                .unwrap()
                .id,
            d.id,
            "every cookie has its own id"
        );
        assert!(
            DeviceKeys::new(&[2; 32]).open(&v, 2_000_000).is_none(),
            "another key"
        );
        let (p, m) = v.split_once('.').unwrap();
        let mut raw = B64.decode(p).unwrap();
        *raw.last_mut().unwrap() ^= 1;
        assert!(keys
            .open(&format!("{}.{m}", B64.encode(&raw)), 2_000_000)
            .is_none());
        assert!(keys.open("garbage", 0).is_none() && keys.open("a.b", 0).is_none());
        let year = LIFETIME_S * 1000;
        assert!(keys.open(&v, 1_000_000 + year).is_none(), "a year old");
    }

    #[test]
    fn the_cookie_is_scoped_to_sign_in() {
        let c = set_cookie("v", true);
        assert!(
            c.starts_with("device=v; HttpOnly; SameSite=Strict; Path=/api/admin; Max-Age=31536000")
        );
        assert!(c.ends_with("; Secure"));
    }
}
