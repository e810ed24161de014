//! The OIDC thread: every network call to the identity provider, off the event loop.
//!
//! It owns the provider's discovery document and signing keys, fetched and cached here:
//! * **Discovery** (`<issuer>/.well-known/openid-configuration`) is fetched at start and retried
//!   with a doubling backoff (from [`FIRST_RETRY`] up to [`MAX_RETRY`], the contract's 5 s) while
//!   the provider is unreachable. Once it succeeds the reactor is told the authorization
//!   endpoint ([`Answer::Ready`]); until then OIDC sign-in answers 503.
//! * **Keys** (JWKS) are fetched with the discovery document and again when an ID token names a
//!   `kid` we do not know (the provider rotated its keys), at most once per [`REFETCH_EVERY`],
//!   so a flood of forged `kid`s cannot make us hammer the provider.
//! * **Token exchange**: the authorization code and PKCE verifier go to the token endpoint with
//!   the client's credentials; the ID token that comes back is validated (`token.rs`) here,
//!   and only the verified identity (or why it was refused) goes back to the reactor.
//!
//! Jobs arrive through a bounded queue ([`QUEUE`]; beyond it sign-in answers 503) and answers
//! go back through a channel plus the reactor's shared `mio::Waker`. Every request has a
//! timeout and every response body a size limit. Nothing here logs a code, a token or the
//! client secret: failures are logged by status and OAuth error code only.

use super::token::{self, Expected, Identity, Keys, Rejection};
use super::Settings;
use crate::worker::Requester;
use mio::Waker;
use serde::Deserialize;
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// Exchanges waiting at most; beyond that the callback is answered with "busy".
const QUEUE: usize = 64;
const FIRST_RETRY: Duration = Duration::from_millis(250);
const MAX_RETRY: Duration = Duration::from_secs(5);
/// Keys are fetched again on an unknown `kid` at most this often.
const REFETCH_EVERY: Duration = Duration::from_secs(60);
/// The largest discovery, JWKS or token response we read.
const MAX_BODY: u64 = 1 << 20;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const REQUEST_TIMEOUT: Duration = Duration::from_secs(8);

/// Work for the OIDC thread.
#[derive(Debug)]
pub enum Job {
    /// Trade an authorization code for tokens and validate the ID token.
    Exchange {
        code: String,
        verifier: String,
        nonce: String,
    },
}

/// Why an exchange did not give an identity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The provider could not be reached (or its discovery has not succeeded yet).
    Unavailable,
    /// The token endpoint refused the code (used, expired, or not ours).
    Refused,
    /// The ID token did not pass validation.
    Token(Rejection),
}

impl Failure {
    pub fn message(self) -> &'static str {
        match self {
            Failure::Unavailable => "the identity provider is unreachable; try again shortly",
            Failure::Refused => "the identity provider refused the sign-in; start again",
            Failure::Token(r) => r.message(),
        }
    }
}

pub type Outcome = Result<Identity, Failure>;

/// What the thread tells the reactor.
#[derive(Debug)]
pub enum Answer {
    /// Discovery succeeded: browsers can be sent to this authorization endpoint.
    Ready { authorization_endpoint: String },
    /// The answer to one connection's job.
    Done(Requester, Outcome),
}

/// The reactor's end of the OIDC thread. The answer channel needs no bound of its own: each
/// job gives one answer and discovery one `Ready`, so at most `QUEUE + 1` wait in it.
pub struct Helper {
    jobs: SyncSender<(Requester, Job)>,
    answers: Receiver<Answer>,
}

impl Helper {
    pub fn start(settings: Arc<Settings>, waker: Arc<Waker>) -> std::io::Result<Helper> {
        let (jobs, job_rx) = mpsc::sync_channel::<(Requester, Job)>(QUEUE);
        let (answer_tx, answers) = mpsc::channel();
        thread::Builder::new()
            .name("catalytic-oidc".into())
            .spawn(move || {
                let send = |a: Answer| {
                    let ok = answer_tx.send(a).is_ok();
                    // A failed wake only delays the answer to the next loop turn.
                    let _ = waker.wake();
                    ok
                };
                Thread::new(settings).run(job_rx, send);
            })?;
        Ok(Helper { jobs, answers })
    }

    /// Queue a job; `false` when the queue is full (or the thread is gone).
    pub fn submit(&self, who: Requester, job: Job) -> bool {
        self.jobs.try_send((who, job)).is_ok()
    }

    /// Answers so far, without waiting.
    pub fn answers(&self) -> impl Iterator<Item = Answer> + '_ {
        self.answers.try_iter()
    }
}

/// The parts of the discovery document we use.
#[derive(Debug, Deserialize)]
struct Discovery {
    issuer: String,
    authorization_endpoint: String,
    token_endpoint: String,
    jwks_uri: String,
    #[serde(default)]
    token_endpoint_auth_methods_supported: Option<Vec<String>>,
}

/// A discovered provider and its keys.
struct Provider {
    discovery: Discovery,
    keys: Keys,
    /// When the keys were last fetched because of an unknown `kid`.
    refetched_at: Option<Instant>,
}

struct Thread {
    settings: Arc<Settings>,
    agent: ureq::Agent,
    provider: Option<Provider>,
    backoff: Duration,
    next_try: Instant,
    /// The last discovery error logged, so a provider that stays down logs once, not every try.
    last_error: Option<String>,
}

impl Thread {
    fn new(settings: Arc<Settings>) -> Thread {
        let agent = ureq::Agent::config_builder()
            .timeout_connect(Some(CONNECT_TIMEOUT))
            .timeout_global(Some(REQUEST_TIMEOUT))
            .http_status_as_error(false)
            .max_redirects(3)
            // An https issuer's endpoints and keys must be https too.
            .https_only(settings.issuer.starts_with("https://"))
            .user_agent("catalytic")
            .build()
            .into();
        Thread {
            settings,
            agent,
            provider: None,
            backoff: FIRST_RETRY,
            next_try: Instant::now(),
            last_error: None,
        }
    }

    fn run(&mut self, jobs: Receiver<(Requester, Job)>, send: impl Fn(Answer) -> bool) {
        loop {
            if self.provider.is_none() && Instant::now() >= self.next_try {
                self.try_discovery(&send);
            }
            let wait = match self.provider {
                None => self.next_try.saturating_duration_since(Instant::now()),
                Some(_) => Duration::from_secs(3600),
            };
            match jobs.recv_timeout(wait) {
                Ok((who, job)) => {
                    let outcome = self.handle(job);
                    if !send(Answer::Done(who, outcome)) {
                        return;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
    }

    fn try_discovery(&mut self, send: &impl Fn(Answer) -> bool) {
        match self.discover() {
            Ok(p) => {
                log::info!(
                    "OpenID provider {} ready ({} signing keys)",
                    p.discovery.issuer,
                    p.keys.len()
                );
                let endpoint = p.discovery.authorization_endpoint.clone();
                self.provider = Some(p);
                self.backoff = FIRST_RETRY;
                self.last_error = None;
                send(Answer::Ready {
                    authorization_endpoint: endpoint,
                });
            }
            Err(e) => {
                if self.last_error.as_deref() != Some(e.as_str()) {
                    log::warn!(
                        "OpenID provider {} unavailable ({e}); retrying every {} s at most",
                        self.settings.issuer,
                        MAX_RETRY.as_secs()
                    );
                    self.last_error = Some(e);
                }
                self.next_try = Instant::now() + self.backoff;
                self.backoff = (self.backoff * 2).min(MAX_RETRY);
            }
        }
    }

    fn discover(&self) -> Result<Provider, String> {
        let issuer = self.settings.issuer.trim_end_matches('/');
        let url = format!("{issuer}/.well-known/openid-configuration");
        let body = self.get(&url)?;
        let d: Discovery =
            serde_json::from_str(&body).map_err(|e| format!("discovery document: {e}"))?;
        // OpenID Connect Discovery §4.3: the document must name the issuer we asked.
        if d.issuer.trim_end_matches('/') != issuer {
            return Err(format!(
                "the discovery document names issuer {} instead",
                d.issuer
            ));
        }
        let keys = self.fetch_keys(&d.jwks_uri)?;
        Ok(Provider {
            discovery: d,
            keys,
            refetched_at: None,
        })
    }

    fn fetch_keys(&self, jwks_uri: &str) -> Result<Keys, String> {
        Keys::from_json(&self.get(jwks_uri)?)
    }

    /// GET a JSON document: 200 and at most [`MAX_BODY`] bytes.
    fn get(&self, url: &str) -> Result<String, String> {
        let mut resp = self
            .agent
            .get(url)
            .header("Accept", "application/json")
            .call()
            .map_err(|e| format!("{url}: {e}"))?;
        if resp.status() != 200 {
            return Err(format!("{url}: HTTP {}", resp.status().as_u16()));
        }
        resp.body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| format!("{url}: {e}"))
    }

    fn handle(&mut self, job: Job) -> Outcome {
        match job {
            Job::Exchange {
                code,
                verifier,
                nonce,
            } => self.exchange(&code, &verifier, &nonce),
        }
    }

    fn exchange(&mut self, code: &str, verifier: &str, nonce: &str) -> Outcome {
        let Some(p) = &self.provider else {
            return Err(Failure::Unavailable);
        };
        let id_token = self.redeem(&p.discovery, code, verifier)?;
        let kid = token::key_id(&id_token).map_err(Failure::Token)?;
        self.refresh_keys_for(kid.as_deref());
        let Some(p) = &self.provider else {
            return Err(Failure::Unavailable);
        };
        let want = Expected {
            issuer: &p.discovery.issuer,
            client_id: &self.settings.client_id,
            nonce,
            now_s: crate::clock::wall_ms() / 1000,
        };
        token::validate(&id_token, &p.keys, &want).map_err(Failure::Token)
    }

    /// An unknown `kid`: fetch the keys again, unless that was done less than a minute ago.
    fn refresh_keys_for(&mut self, kid: Option<&str>) {
        let Some(p) = &self.provider else {
            return;
        };
        if p.keys.has(kid) || p.refetched_at.is_some_and(|t| t.elapsed() < REFETCH_EVERY) {
            return;
        }
        let fetched = self.fetch_keys(&p.discovery.jwks_uri);
        let Some(p) = &mut self.provider else {
            return;
        };
        p.refetched_at = Some(Instant::now());
        match fetched {
            Ok(keys) => {
                log::info!(
                    "OpenID provider keys fetched again after an unknown key id ({} keys)",
                    keys.len()
                );
                p.keys = keys;
            }
            Err(e) => log::warn!("OpenID provider keys could not be fetched again: {e}"),
        }
    }

    /// POST the code to the token endpoint; the ID token of a 200 answer.
    fn redeem(&self, d: &Discovery, code: &str, verifier: &str) -> Result<String, Failure> {
        let s = &self.settings;
        let mut form: Vec<(&str, &str)> = vec![
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", &s.redirect_uri),
            ("code_verifier", verifier),
        ];
        // client_secret_basic is the default (RFC 8414 §2); post only when it is all the
        // provider offers.
        let post_only = d
            .token_endpoint_auth_methods_supported
            .as_ref()
            .is_some_and(|m| {
                !m.iter().any(|x| x == "client_secret_basic")
                    && m.iter().any(|x| x == "client_secret_post")
            });
        let mut req = self
            .agent
            .post(&d.token_endpoint)
            .header("Accept", "application/json");
        if post_only {
            form.push(("client_id", &s.client_id));
            form.push(("client_secret", s.client_secret.expose()));
        } else {
            req = req.header(
                "Authorization",
                &basic_auth(&s.client_id, s.client_secret.expose()),
            );
        }
        let mut resp = req.send_form(form).map_err(|e| {
            log::warn!("OpenID token endpoint unreachable: {e}");
            Failure::Unavailable
        })?;
        let status = resp.status().as_u16();
        let body = resp
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| {
                log::warn!("OpenID token endpoint answer unreadable: {e}");
                Failure::Unavailable
            })?;
        #[derive(Deserialize)]
        struct TokenAnswer {
            #[serde(default)]
            id_token: Option<String>,
            #[serde(default)]
            error: Option<String>,
        }
        let answer: Option<TokenAnswer> = serde_json::from_str(&body).ok();
        match (status, answer) {
            (
                200,
                Some(TokenAnswer {
                    id_token: Some(t), ..
                }),
            ) => Ok(t),
            (200, _) => {
                log::warn!("OpenID token endpoint answered 200 without an ID token");
                Err(Failure::Token(Rejection::Malformed))
            }
            (400..=499, a) => {
                // The OAuth error code is a fixed vocabulary (RFC 6749 §5.2), safe to log.
                let code = a.and_then(|a| a.error).unwrap_or_default();
                let code: String = code
                    .chars()
                    .filter(|c| c.is_ascii_graphic())
                    .take(40)
                    .collect();
                log::warn!("OpenID token endpoint refused the code: HTTP {status} {code}");
                Err(Failure::Refused)
            }
            _ => {
                log::warn!("OpenID token endpoint failed: HTTP {status}");
                Err(Failure::Unavailable)
            }
        }
    }
}

/// `Authorization: Basic` for client credentials: each part form-encoded first (RFC 6749 §2.3.1).
fn basic_auth(id: &str, secret: &str) -> String {
    use base64::Engine as _;
    let pair = format!(
        "{}:{}",
        super::flow::percent_encode(id),
        super::flow::percent_encode(secret)
    );
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_auth_form_encodes_both_parts() {
        // "a b:c" → "a%20b:c%3A"... then base64.
        use base64::Engine as _;
        let h = basic_auth("a b", "c:d");
        let raw = base64::engine::general_purpose::STANDARD
            .decode(h.strip_prefix("Basic ").unwrap())
            .unwrap();
        assert_eq!(raw, b"a%20b:c%3Ad");
    }
}
