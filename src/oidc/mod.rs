//! Admin sign-in with the organisation's identity provider (OpenID Connect, authorization code
//! flow with PKCE S256).
//!
//! The pieces, and who owns what:
//! * [`Oidc`] — the reactor's handle: the settings, the attempt keys, whether discovery has
//!   succeeded (the authorization endpoint), and the [`provider::Helper`] that talks to the
//!   provider. Owned by the reactor, read by the handlers in `api::oidc` through `Ctx`.
//! * `flow` — login attempts (cookie, `state`, `nonce`, PKCE verifier), pure.
//! * `token` — ID token validation, pure.
//! * `provider` — the OIDC thread: discovery, JWKS cache, token exchange. The only code that
//!   touches the network for OIDC; the event loop never waits for the provider.
//!
//! The sign-in itself (`api::oidc`): `/api/admin/oidc/login` starts an attempt and redirects to
//! the provider; `/api/admin/oidc/callback` checks the attempt cookie against `state`, asks
//! storage whether the attempt was used, has the OIDC thread redeem the code and validate the
//! ID token, then — in one storage transaction — records the attempt as used, finds or creates
//! the admin, and creates the session.

pub mod flow;
pub mod provider;
pub mod token;

use crate::config::{ClientSecret, OidcConfig};
use crate::worker::Requester;
use mio::Waker;
use std::sync::Arc;

pub use provider::{Failure, Job, Outcome};

/// The route the provider sends browsers back to, under the public URL.
pub const CALLBACK_PATH: &str = "/api/admin/oidc/callback";

/// The client secret: never printed, never logged.
pub struct Secret(String);

impl Secret {
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// What the OIDC thread and the handlers need to know about the provider and this client.
#[derive(Debug)]
pub struct Settings {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    /// `<public-url>/api/admin/oidc/callback`, exactly as registered at the provider.
    pub redirect_uri: String,
    pub allowed_domains: Vec<String>,
    /// The sign-in button's label.
    pub name: String,
}

impl Settings {
    /// Resolve the configuration (reads the client secret file).
    pub fn load(cfg: &OidcConfig, public_url: &str) -> Result<Settings, String> {
        let secret = match &cfg.client_secret {
            ClientSecret::Value(v) => v.clone(),
            ClientSecret::File(path) => {
                crate::files::warn_if_others_can_read(path);
                std::fs::read_to_string(path)
                    .map_err(|e| {
                        format!(
                            "--oidc-client-secret-file {}: cannot read it: {e}",
                            path.display()
                        )
                    })?
                    .trim()
                    .to_string()
            }
        };
        if secret.is_empty() {
            return Err("the OpenID Connect client secret is empty".into());
        }
        Ok(Settings {
            issuer: cfg.issuer.clone(),
            client_id: cfg.client_id.clone(),
            client_secret: Secret(secret),
            redirect_uri: format!("{}{CALLBACK_PATH}", public_url.trim_end_matches('/')),
            allowed_domains: cfg.allowed_domains.clone(),
            name: cfg.name.clone(),
        })
    }

    /// Whether an email's domain lets a new admin account be created on first sign-in.
    pub fn domain_allowed(&self, email: &str) -> bool {
        email.rsplit_once('@').is_some_and(|(_, d)| {
            let d = d.to_ascii_lowercase();
            self.allowed_domains.contains(&d)
        })
    }
}

/// The reactor's OIDC state.
pub struct Oidc {
    pub settings: Arc<Settings>,
    pub keys: flow::AttemptKeys,
    /// Set once discovery succeeded; until then sign-in answers 503.
    authorization_endpoint: Option<String>,
    helper: provider::Helper,
}

impl Oidc {
    /// Start the OIDC thread (it begins discovery at once). `server_key` is the deployment's
    /// key; attempts are MAC'd under a key derived from it.
    pub fn start(
        settings: Settings,
        server_key: &[u8; 32],
        waker: Arc<Waker>,
    ) -> Result<Oidc, String> {
        let settings = Arc::new(settings);
        let helper = provider::Helper::start(settings.clone(), waker)
            .map_err(|e| format!("OIDC thread: {e}"))?;
        Ok(Oidc {
            settings,
            keys: flow::AttemptKeys::new(server_key),
            authorization_endpoint: None,
            helper,
        })
    }

    pub fn authorization_endpoint(&self) -> Option<&str> {
        self.authorization_endpoint.as_deref()
    }

    pub fn submit(&self, who: Requester, job: Job) -> bool {
        self.helper.submit(who, job)
    }

    /// Answers of finished jobs. Notes that the provider is ready are taken in here.
    pub fn take_answers(&mut self) -> Vec<(Requester, Outcome)> {
        let mut done = Vec::new();
        for a in self.helper.answers() {
            match a {
                provider::Answer::Ready {
                    authorization_endpoint,
                } => self.authorization_endpoint = Some(authorization_endpoint),
                provider::Answer::Done(who, outcome) => done.push((who, outcome)),
            }
        }
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains_compare_case_insensitively() {
        let s = Settings {
            issuer: "https://id.example".into(),
            client_id: "c".into(),
            client_secret: Secret("s".into()),
            redirect_uri: String::new(),
            allowed_domains: vec!["example.com".into()],
            name: "Id".into(),
        };
        assert!(s.domain_allowed("Ada@Example.COM"));
        assert!(!s.domain_allowed("ada@sub.example.com"));
        assert!(!s.domain_allowed("ada@example.com.evil"));
        assert!(!format!("{s:?}").contains("\"s\""));
    }
}
