//! ID token validation: the provider's signed statement of who signed in. Pure: the keys,
//! the expectations and the time are passed in; the JOSE work (signature algorithms, key
//! decoding, `exp`/`iss`/`aud` checks) is `jsonwebtoken`'s, not ours.
//!
//! ## What an accepted token satisfies (OpenID Connect Core §3.1.3.7)
//! * its signature verifies under one of the provider's published keys — the one its `kid`
//!   names — with an asymmetric algorithm (RS*, PS*, ES256/384, EdDSA); `none` and the HMAC
//!   algorithms are refused, and keys embedded in the token header (`jwk`, `jku`) are ignored;
//! * `iss` is the provider's issuer; `aud` contains our client id, and when it names several
//!   audiences `azp` is our client id (an `azp` that names another client is refused too);
//! * `exp` is not past and `iat` not in the future, each with [`LEEWAY_S`];
//! * `nonce` is the one derived for this login attempt;
//! * it names an email address that the provider says is verified (`email_verified: true`,
//!   or Microsoft Entra's `xms_edov: true`).

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::Value;

/// Clock skew forgiven between us and the provider (seconds).
pub const LEEWAY_S: u64 = 60;
/// Keys kept from one JWKS document at most (providers publish a handful).
const MAX_KEYS: usize = 32;

/// The asymmetric algorithms we accept.
const ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// The provider's signing keys (a parsed JWKS).
#[derive(Debug, Default, Clone)]
pub struct Keys {
    keys: Vec<Jwk>,
}

impl Keys {
    /// Parse a JWKS document. Keys we cannot use (encryption keys, symmetric or unknown key
    /// types) are skipped rather than failing the whole set.
    pub fn from_json(body: &str) -> Result<Keys, String> {
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<Value>,
        }
        let set: Set = serde_json::from_str(body).map_err(|e| format!("JWKS: {e}"))?;
        let keys: Vec<Jwk> = set
            .keys
            .into_iter()
            .filter_map(|k| serde_json::from_value::<Jwk>(k).ok())
            .filter(|k| !matches!(k.common.public_key_use, Some(PublicKeyUse::Encryption)))
            .filter(|k| {
                DecodingKey::from_jwk(k)
                    .is_ok_and(|d| d.family() != jsonwebtoken::AlgorithmFamily::Hmac)
            })
            .take(MAX_KEYS)
            .collect();
        if keys.is_empty() {
            return Err("JWKS has no usable signing key".into());
        }
        Ok(Keys { keys })
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Whether a key with this id is known (no id: any key might do).
    pub fn has(&self, kid: Option<&str>) -> bool {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .any(|k| k.common.key_id.as_deref() == Some(kid)),
            None => !self.keys.is_empty(),
        }
    }

    /// The keys a token with this `kid` may be signed with.
    fn candidates<'a>(&'a self, kid: Option<&'a str>) -> impl Iterator<Item = &'a Jwk> + 'a {
        self.keys
            .iter()
            .filter(move |k| kid.is_none() || k.common.key_id.as_deref() == kid)
    }
}

/// What the token must say for this login attempt.
#[derive(Debug, Clone, Copy)]
pub struct Expected<'a> {
    pub issuer: &'a str,
    pub client_id: &'a str,
    pub nonce: &'a str,
    /// Unix seconds, now.
    pub now_s: i64,
}

/// Who signed in, as the provider vouches.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    pub email: String,
    /// The provider's stable id of the person (`sub`), for the log.
    pub subject: String,
}

/// Why a token was refused. Each has the short reason the sign-in page shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rejection {
    /// Not a JWT, or claims of the wrong shape or missing.
    Malformed,
    /// Signed with `none`, HMAC, or an algorithm its key is not for.
    Algorithm,
    /// Its `kid` names no key the provider publishes (even after fetching the keys again).
    UnknownKey,
    BadSignature,
    WrongIssuer,
    WrongAudience,
    Expired,
    IssuedInFuture,
    WrongNonce,
    NoEmail,
    EmailUnverified,
}

impl Rejection {
    pub fn message(self) -> &'static str {
        match self {
            Rejection::Malformed => "the identity provider sent a malformed ID token",
            Rejection::Algorithm => "the ID token is signed with an algorithm we do not accept",
            Rejection::UnknownKey => {
                "the ID token is signed with a key the provider does not publish"
            }
            Rejection::BadSignature => "the ID token's signature does not verify",
            Rejection::WrongIssuer => "the ID token comes from another issuer",
            Rejection::WrongAudience => "the ID token was issued for another application",
            Rejection::Expired => "the ID token has expired",
            Rejection::IssuedInFuture => "the ID token is dated in the future",
            Rejection::WrongNonce => "the ID token belongs to another sign-in",
            Rejection::NoEmail => "the identity provider did not share an email address",
            Rejection::EmailUnverified => {
                "your email address is not verified at the identity provider"
            }
        }
    }
}

/// The `kid` of a token's header (to decide whether the keys must be fetched again).
pub fn key_id(token: &str) -> Result<Option<String>, Rejection> {
    jsonwebtoken::decode_header(token)
        .map(|h| h.kid)
        .map_err(|_| Rejection::Malformed)
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    #[serde(default)]
    aud: Value,
    #[serde(default)]
    azp: Option<String>,
    #[serde(default)]
    iat: Option<f64>,
    #[serde(default)]
    nonce: Option<String>,
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<Value>,
    #[serde(default)]
    xms_edov: Option<Value>,
}

/// Validate `token` against `keys` and `want`.
pub fn validate(token: &str, keys: &Keys, want: &Expected) -> Result<Identity, Rejection> {
    let header = jsonwebtoken::decode_header(token).map_err(|_| Rejection::Malformed)?;
    if !ALGORITHMS.contains(&header.alg) {
        return Err(Rejection::Algorithm);
    }
    let mut v = Validation::new(header.alg);
    v.set_issuer(&[want.issuer]);
    v.set_audience(&[want.client_id]);
    v.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    v.leeway = LEEWAY_S;
    v.validate_nbf = true;
    let mut outcome = Err(Rejection::UnknownKey);
    for jwk in keys.candidates(header.kid.as_deref()) {
        if jwk
            .common
            .key_algorithm
            .is_some_and(|ka| format!("{ka:?}") != format!("{:?}", header.alg))
        {
            outcome = Err(Rejection::Algorithm);
            continue;
        }
        let Ok(key) = DecodingKey::from_jwk(jwk) else {
            continue;
        };
        match jsonwebtoken::decode::<Claims>(token, &key, &v) {
            Ok(data) => {
                outcome = Ok(data.claims);
                break;
            }
            Err(e) => {
                let r = rejection(e.kind());
                outcome = Err(r);
                // Only a signature that does not verify under this key lets another key try.
                if !matches!(r, Rejection::BadSignature | Rejection::Algorithm) {
                    break;
                }
            }
        }
    }
    let claims = outcome?;
    check_claims(&claims, want)?;
    let email = claims.email.filter(|e| crate::api::input::valid_email(e));
    let Some(email) = email else {
        return Err(Rejection::NoEmail);
    };
    Ok(Identity {
        email,
        subject: claims.sub,
    })
}

/// The checks `jsonwebtoken` does not do: `azp`, `iat`, `nonce`, `email_verified`.
fn check_claims(c: &Claims, want: &Expected) -> Result<(), Rejection> {
    let several_audiences = c.aud.as_array().is_some_and(|a| a.len() > 1);
    match c.azp.as_deref() {
        Some(azp) if azp != want.client_id => return Err(Rejection::WrongAudience),
        None if several_audiences => return Err(Rejection::WrongAudience),
        _ => {}
    }
    match c.iat {
        Some(iat) if iat > (want.now_s + LEEWAY_S as i64) as f64 => {
            return Err(Rejection::IssuedInFuture)
        }
        Some(_) => {}
        None => return Err(Rejection::Malformed),
    }
    let nonce_ok = c
        .nonce
        .as_deref()
        .is_some_and(|n| crate::auth::ct_eq(n.as_bytes(), want.nonce.as_bytes()));
    if !nonce_ok {
        return Err(Rejection::WrongNonce);
    }
    if c.email.is_none() {
        return Err(Rejection::NoEmail);
    }
    // Some providers send the boolean as a string.
    let yes = |v: &Option<Value>| {
        matches!(v, Some(Value::Bool(true))) || matches!(v, Some(Value::String(s)) if s == "true")
    };
    if !yes(&c.email_verified) && !yes(&c.xms_edov) {
        return Err(Rejection::EmailUnverified);
    }
    Ok(())
}

fn rejection(kind: &ErrorKind) -> Rejection {
    match kind {
        ErrorKind::InvalidSignature => Rejection::BadSignature,
        ErrorKind::ExpiredSignature => Rejection::Expired,
        ErrorKind::ImmatureSignature => Rejection::IssuedInFuture,
        ErrorKind::InvalidIssuer => Rejection::WrongIssuer,
        ErrorKind::InvalidAudience => Rejection::WrongAudience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_) => Rejection::Algorithm,
        _ => Rejection::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    const RSA_PEM: &[u8] = include_bytes!("testdata/rsa-test-key.pem");
    const EC_PEM: &[u8] = include_bytes!("testdata/ec-test-key.pem");
    const ISS: &str = "https://id.example";
    const CLIENT: &str = "catalytic";
    const NONCE: &str = "n-0123456789";

    fn now() -> i64 {
        jsonwebtoken::get_current_timestamp() as i64
    }

    fn rsa() -> EncodingKey {
        EncodingKey::from_rsa_pem(RSA_PEM).unwrap()
    }

    fn ec() -> EncodingKey {
        EncodingKey::from_ec_pem(EC_PEM).unwrap()
    }

    /// A JWKS with the public halves of the test keys, under ids `rsa-1` and `ec-1`.
    fn jwks() -> Keys {
        let mut r = Jwk::from_encoding_key(&rsa(), Algorithm::RS256).unwrap();
        r.common.key_id = Some("rsa-1".into());
        let mut e = Jwk::from_encoding_key(&ec(), Algorithm::ES256).unwrap();
        e.common.key_id = Some("ec-1".into());
        let doc = json!({"keys": [r, e, {"kty": "oct", "k": "c2VjcmV0"}, {"kty": "weird"}]});
        Keys::from_json(&doc.to_string()).unwrap()
    }

    fn claims() -> Value {
        let n = now();
        json!({
            "iss": ISS, "aud": CLIENT, "sub": "user-1", "iat": n, "exp": n + 300,
            "nonce": NONCE, "email": "ada@example.com", "email_verified": true
        })
    }

    fn sign(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
        let mut h = Header::new(alg);
        h.kid = Some(kid.into());
        jsonwebtoken::encode(&h, claims, key).unwrap()
    }

    fn check(token: &str) -> Result<Identity, Rejection> {
        validate(
            token,
            &jwks(),
            &Expected {
                issuer: ISS,
                client_id: CLIENT,
                nonce: NONCE,
                now_s: now(),
            },
        )
    }

    fn with(changes: Value) -> Value {
        let mut c = claims();
        for (k, v) in changes.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        c
    }

    #[test]
    fn rs256_and_es256_tokens_verify() {
        let want = Identity {
            email: "ada@example.com".into(),
            subject: "user-1".into(),
        };
        assert_eq!(
            check(&sign(Algorithm::RS256, "rsa-1", &rsa(), &claims())),
            Ok(want.clone())
        );
        assert_eq!(
            check(&sign(Algorithm::ES256, "ec-1", &ec(), &claims())),
            Ok(want)
        );
        assert_eq!(jwks().len(), 2, "the HMAC and unknown keys are skipped");
    }

    #[test]
    fn tampered_and_foreign_signatures_are_refused() {
        let t = sign(Algorithm::RS256, "rsa-1", &rsa(), &claims());
        let (head, rest) = t.split_once('.').unwrap();
        let (_, sig) = rest.split_once('.').unwrap();
        use base64::Engine as _;
        let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
        let forged = b64.encode(with(json!({"email": "mallory@example.com"})).to_string());
        assert_eq!(
            check(&format!("{head}.{forged}.{sig}")),
            Err(Rejection::BadSignature)
        );
        // The EC key claims to be the RSA key: wrong signature for that key.
        assert_eq!(
            check(&sign(Algorithm::ES256, "rsa-1", &ec(), &claims())),
            Err(Rejection::Algorithm)
        );
        assert_eq!(
            check(&sign(Algorithm::RS256, "rsa-2", &rsa(), &claims())),
            Err(Rejection::UnknownKey)
        );
        // HMAC with a key anyone could guess, and the `none` algorithm.
        let hs = sign(
            Algorithm::HS256,
            "rsa-1",
            &EncodingKey::from_secret(b"x").unwrap(),
            &claims(),
        );
        assert_eq!(check(&hs), Err(Rejection::Algorithm));
        let none = format!(
            "{}.{}.",
            b64.encode(r#"{"alg":"none"}"#),
            b64.encode(claims().to_string())
        );
        assert!(check(&none).is_err());
        assert_eq!(check("not a token"), Err(Rejection::Malformed));
    }

    #[test]
    fn claims_are_checked() {
        let n = now();
        for (changes, want) in [
            (json!({"exp": n - 600, "iat": n - 900}), Rejection::Expired),
            (json!({"iat": n + 600}), Rejection::IssuedInFuture),
            (
                json!({"iss": "https://evil.example"}),
                Rejection::WrongIssuer,
            ),
            (json!({"aud": "someone-else"}), Rejection::WrongAudience),
            (json!({"aud": [CLIENT, "other"]}), Rejection::WrongAudience),
            (json!({"azp": "other"}), Rejection::WrongAudience),
            (json!({"nonce": "another"}), Rejection::WrongNonce),
            (json!({"nonce": null}), Rejection::WrongNonce),
            (json!({"email_verified": false}), Rejection::EmailUnverified),
            (json!({"email_verified": null}), Rejection::EmailUnverified),
            (json!({"email": null}), Rejection::NoEmail),
            (json!({"email": "not-an-address"}), Rejection::NoEmail),
            (json!({"exp": null}), Rejection::Malformed),
            (json!({"iat": null}), Rejection::Malformed),
        ] {
            let t = sign(Algorithm::RS256, "rsa-1", &rsa(), &with(changes.clone()));
            assert_eq!(check(&t), Err(want), "{changes}");
        }
        for ok in [
            json!({"aud": [CLIENT, "other"], "azp": CLIENT}),
            json!({"email_verified": "true"}),
            json!({"email_verified": null, "xms_edov": true}),
            json!({"exp": n - 30}),
        ] {
            let t = sign(Algorithm::RS256, "rsa-1", &rsa(), &with(ok.clone()));
            assert!(check(&t).is_ok(), "{ok}");
        }
    }

    #[test]
    fn key_ids() {
        let t = sign(Algorithm::RS256, "rsa-1", &rsa(), &claims());
        assert_eq!(key_id(&t), Ok(Some("rsa-1".into())));
        let k = jwks();
        assert!(k.has(Some("ec-1")) && !k.has(Some("nope")) && k.has(None));
        assert!(Keys::from_json(r#"{"keys":[]}"#).is_err());
        assert!(Keys::from_json("{").is_err());
    }
}
