//! Login attempts: what the server remembers between sending a browser to the identity
//! provider and the provider sending it back. Pure (the caller passes `now` and the key).
//!
//! ## Where an attempt lives
//! Not in memory: in cluster mode the callback may reach another node than the one that sent
//! the browser away. An attempt is a random 16-byte id and its start time, MAC'd with a key
//! derived from the deployment's server key, in the `oidc_attempt` cookie (HttpOnly,
//! `SameSite=Lax` so it comes back on the provider's cross-site redirect, `Path` limited to the
//! OIDC routes, 10 minutes). Everything secret about the attempt is *derived* from its id under
//! the key rather than stored — `state`, `nonce` and the PKCE verifier are
//! `HMAC(key, label ‖ id)` — so the cookie holds no secret a reader could use, and any node
//! with the key can check it.
//!
//! ## Invariants
//! * `state` is bound to the browser: the callback's `state` must be the one derived from the
//!   id in *this* browser's cookie (constant-time comparison), so a `state` issued to another
//!   browser is refused.
//! * An attempt is usable for [`ATTEMPT_MS`] from its start and once: the id is recorded as used
//!   in the database in the transaction that signs the admin in (`Tx::use_oidc_attempt`).
//! * A cookie whose MAC does not verify is treated like no cookie at all.

use crate::auth;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use sha2::{Digest, Sha256};

/// How long a login attempt may take, from the redirect to the provider to the callback.
pub const ATTEMPT_MS: i64 = 10 * 60 * 1000;
/// The attempt cookie's name.
pub const COOKIE: &str = "oidc_attempt";
/// A cookie path that covers exactly the OIDC routes.
pub const COOKIE_PATH: &str = "/api/admin/oidc";
/// Clock skew we forgive between the node that started an attempt and the one finishing it.
const SKEW_MS: i64 = 60_000;

/// One login attempt: its id and when it started (Unix ms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub id: [u8; 16],
    pub started_at: i64,
}

/// Why an attempt cookie was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CookieError {
    /// No cookie, or not one we made (bad MAC, wrong shape): another browser, or none.
    Missing,
    /// Ours, but older than [`ATTEMPT_MS`].
    Expired,
}

/// The keys of one deployment's attempts, derived from the server key so the invite-link key
/// itself is never used for two purposes.
#[derive(Clone)]
pub struct AttemptKeys {
    mac: [u8; 32],
}

impl std::fmt::Debug for AttemptKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AttemptKeys(<redacted>)")
    }
}

impl AttemptKeys {
    pub fn new(server_key: &[u8; 32]) -> AttemptKeys {
        AttemptKeys {
            mac: auth::hmac_sha256(server_key, &[b"catalytic oidc attempts v1"]),
        }
    }

    fn derive(&self, label: &[u8], id: &[u8; 16]) -> String {
        B64.encode(auth::hmac_sha256(&self.mac, &[label, id]))
    }

    /// The cookie value: base64url(id ‖ started_at ‖ MAC).
    pub fn cookie_value(&self, a: &Attempt) -> String {
        let started = a.started_at.to_be_bytes();
        let mac = auth::hmac_sha256(&self.mac, &[b"cookie", &a.id, &started]);
        let mut raw = Vec::with_capacity(16 + 8 + 32);
        raw.extend_from_slice(&a.id);
        raw.extend_from_slice(&started);
        raw.extend_from_slice(&mac);
        B64.encode(raw)
    }

    /// The attempt in a cookie value, if we made it and it is still usable at `now`.
    pub fn open_cookie(&self, value: &str, now: i64) -> Result<Attempt, CookieError> {
        let raw = B64
            .decode(value.as_bytes())
            .map_err(|_| CookieError::Missing)?;
        if raw.len() != 16 + 8 + 32 {
            return Err(CookieError::Missing);
        }
        let (id, rest) = raw.split_at(16);
        let (started, mac) = rest.split_at(8);
        if !auth::ct_eq(
            &auth::hmac_sha256(&self.mac, &[b"cookie", id, started]),
            mac,
        ) {
            return Err(CookieError::Missing);
        }
        let mut a = Attempt {
            id: [0; 16],
            started_at: 0,
        };
        a.id.copy_from_slice(id);
        let mut s = [0u8; 8];
        s.copy_from_slice(started);
        a.started_at = i64::from_be_bytes(s);
        if now - a.started_at >= ATTEMPT_MS || a.started_at - now > SKEW_MS {
            return Err(CookieError::Expired);
        }
        Ok(a)
    }

    /// The `state` parameter of this attempt.
    pub fn state(&self, a: &Attempt) -> String {
        self.derive(b"state", &a.id)
    }

    /// The `nonce` the ID token must carry.
    pub fn nonce(&self, a: &Attempt) -> String {
        self.derive(b"nonce", &a.id)
    }

    /// The PKCE code verifier (43 base64url characters: 256 bits, RFC 7636 §4.1).
    pub fn verifier(&self, a: &Attempt) -> String {
        self.derive(b"pkce", &a.id)
    }

    /// Whether `state` from the callback belongs to attempt `a`.
    pub fn state_matches(&self, a: &Attempt, state: &str) -> bool {
        auth::ct_eq(self.state(a).as_bytes(), state.as_bytes())
    }
}

/// The PKCE S256 challenge of a verifier: base64url(SHA-256(verifier)).
pub fn pkce_challenge(verifier: &str) -> String {
    B64.encode(Sha256::digest(verifier.as_bytes()))
}

/// The URL that sends the browser to the provider: authorization code flow with PKCE.
pub fn authorization_url(
    endpoint: &str,
    client_id: &str,
    redirect_uri: &str,
    state: &str,
    nonce: &str,
    verifier: &str,
) -> String {
    let sep = if endpoint.contains('?') { '&' } else { '?' };
    let params = [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect_uri),
        ("scope", "openid email profile"),
        ("state", state),
        ("nonce", nonce),
        ("code_challenge", &pkce_challenge(verifier)),
        ("code_challenge_method", "S256"),
    ];
    format!("{endpoint}{sep}{}", form_encode(&params))
}

/// `application/x-www-form-urlencoded` (also right for a query string).
pub fn form_encode(params: &[(&str, &str)]) -> String {
    let mut out = String::new();
    for (i, (k, v)) in params.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        percent_encode_into(&mut out, k);
        out.push('=');
        percent_encode_into(&mut out, v);
    }
    out
}

/// Percent-encode everything but RFC 3986's unreserved characters.
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    percent_encode_into(&mut out, s);
    out
}

fn percent_encode_into(out: &mut String, s: &str) {
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> AttemptKeys {
        AttemptKeys::new(&[7; 32])
    }

    #[test]
    fn cookie_round_trip_and_expiry() {
        let k = keys();
        let a = Attempt {
            id: [3; 16],
            started_at: 1_000_000,
        };
        let v = k.cookie_value(&a);
        assert_eq!(k.open_cookie(&v, 1_000_000 + 5_000), Ok(a));
        assert_eq!(
            k.open_cookie(&v, 1_000_000 + ATTEMPT_MS),
            Err(CookieError::Expired)
        );
        // Another deployment's key, a flipped byte, or garbage: not ours.
        assert_eq!(
            AttemptKeys::new(&[8; 32]).open_cookie(&v, 1_000_000),
            Err(CookieError::Missing)
        );
        let mut raw = B64.decode(&v).unwrap();
        raw[0] ^= 1;
        assert_eq!(
            k.open_cookie(&B64.encode(raw), 1_000_000),
            Err(CookieError::Missing)
        );
        assert_eq!(k.open_cookie("x", 0), Err(CookieError::Missing));
    }

    #[test]
    fn derived_values_differ_per_attempt_and_purpose() {
        let k = keys();
        let a = Attempt {
            id: [1; 16],
            started_at: 0,
        };
        let b = Attempt {
            id: [2; 16],
            started_at: 0,
        };
        assert_ne!(k.state(&a), k.state(&b));
        assert_ne!(k.state(&a), k.nonce(&a));
        assert_ne!(k.nonce(&a), k.verifier(&a));
        assert_eq!(k.verifier(&a).len(), 43);
        assert!(k.state_matches(&a, &k.state(&a)));
        assert!(!k.state_matches(&a, &k.state(&b)));
    }

    #[test]
    fn pkce_s256_matches_rfc7636_appendix_b() {
        assert_eq!(
            pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
        );
    }

    #[test]
    fn authorization_url_carries_the_flow() {
        let u = authorization_url(
            "https://id.example/auth?tenant=1",
            "cat",
            "https://c.example/api/admin/oidc/callback",
            "st",
            "no",
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk",
        );
        assert!(u.starts_with("https://id.example/auth?tenant=1&response_type=code&"));
        for part in [
            "client_id=cat",
            "redirect_uri=https%3A%2F%2Fc.example%2Fapi%2Fadmin%2Foidc%2Fcallback",
            "scope=openid%20email%20profile",
            "state=st",
            "nonce=no",
            "code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
            "code_challenge_method=S256",
        ] {
            assert!(u.contains(part), "{part} in {u}");
        }
    }
}
