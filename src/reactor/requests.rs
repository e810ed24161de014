//! HTTP requests on the reactor: routing, the API and its job round trips, connection limits,
//! and queuing the answer.
//!
//! Rules applied here, to every request before any route sees it:
//! * the client address (`addr`: canonical, and behind a trusted proxy the forwarded one);
//! * an absolute-form target must name this server (then it is served like origin form);
//! * the cross-origin write rule: a `POST`/`PATCH`/`DELETE` whose `Origin` is present and not
//!   ours, or whose `Sec-Fetch-Site` is present and neither `same-origin` nor `none`, gets 403
//!   and changes nothing — whatever its body (an empty `text/plain` form post needs no
//!   preflight and carries the cookies of a same-site page);
//! * every answer: `Strict-Transport-Security` on an https deployment; every `/api/*` answer:
//!   `Cache-Control: no-store` and `X-Content-Type-Options: nosniff` (some carry invite links).

use super::*;
use crate::assets;
use crate::http::{Method, Request, Response};
use crate::hub::Stream;

/// HSTS on https deployments: a year (API.md).
pub(super) const HSTS: &str = "max-age=31536000";

impl Server {
    /// One complete request from connection `key`.
    pub(super) fn on_request(&mut self, key: usize, req: Request) {
        let started = Instant::now();
        self.note_client_ip(key, &req);
        if let Some(c) = self.conns.get_mut(key) {
            c.served = true;
            c.serving_api = req.path.starts_with("/api/");
        }
        let keep_alive = req.keep_alive;
        if req.target_origin.is_some() && !self.names_this_server(&req) {
            let resp = Response::error(400, "the request target names another server");
            return self.respond(key, resp.closing(), false);
        }
        if self.cross_origin_write(&req) {
            log::info!(
                "cross-origin write to {} refused (Origin {:?}, Sec-Fetch-Site {:?})",
                req.path,
                req.origin,
                req.sec_fetch_site
            );
            let resp = Response::error(403, "cross-origin request refused");
            return self.respond(key, resp, keep_alive);
        }
        let stream = Stream::from_path(&req.path, self.cfg.echo_path.as_deref());
        let is_api = req.path.starts_with("/api/");
        if self.draining.is_some() && (is_api || req.wants_websocket || stream.is_some()) {
            // Draining: clients go to the other nodes.
            let busy = Response::error(503, "this server is shutting down; try again")
                .header("Retry-After", "1");
            return self.respond(key, busy.closing(), false);
        }
        if req.wants_websocket || stream.is_some() {
            return self.upgrade(key, &req, stream, false);
        }
        if let Some(refusal) = self.over_limit(key) {
            let resp = match refusal {
                Refusal::PerIp => Response::error(429, "too many connections from your address")
                    .header("Retry-After", "5"),
                _ => Response::error(503, "server at its connection limit; try again soon")
                    .header("Retry-After", "5"),
            };
            return self.respond(key, resp.closing(), keep_alive);
        }
        let head = req.method() == Method::Head;
        let resp = match (req.method(), req.path.as_str()) {
            (Method::Get | Method::Head, "/healthz") => {
                Response::new(200).body("text/plain; charset=utf-8", "ok")
            }
            (Method::Get | Method::Head, "/readyz") => {
                if self.ready() {
                    Response::new(200).body("text/plain; charset=utf-8", "ready")
                } else {
                    Response::new(503)
                        .header("Retry-After", "1")
                        .body("text/plain; charset=utf-8", "not ready")
                }
            }
            (Method::Get | Method::Head, "/metrics") => {
                self.metrics.open_connections = self.conns.len();
                self.metrics.presence_sessions = self.hub.sessions_watched();
                Response::new(200).body(
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
            (_, path) if path.starts_with("/api/") => return self.api_request(key, &req, started),
            (Method::Get | Method::Head, _) => {
                assets::serve(&req).unwrap_or_else(|| Response::error(404, "not found"))
            }
            _ if assets::serve(&req).is_some()
                || matches!(req.path.as_str(), "/healthz" | "/readyz" | "/metrics") =>
            {
                Response::error(405, "method not allowed").header("Allow", "GET, HEAD")
            }
            _ => Response::error(404, "not found"),
        };
        let resp = if head { resp.head_only() } else { resp };
        self.respond(key, resp, keep_alive);
    }

    fn api_request(&mut self, key: usize, req: &Request, started: Instant) {
        let Some(client_ip) = self.conns.get(key).map(|c| c.client_ip) else {
            return;
        };
        let now = self.time.now().wall_ms;
        let reply = api::handle(&mut self.ctx(client_ip, now), req);
        self.drive_reply(key, reply, req.keep_alive, started);
    }

    /// Behind a trusted proxy, the client is found by walking `X-Forwarded-For` from the right
    /// past trusted hops (`addr::TrustedProxies::client`); each request of a kept-alive
    /// connection names its own.
    fn note_client_ip(&mut self, key: usize, req: &Request) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !self.cfg.trusted_proxies.trusts(conn.peer_ip) {
            return;
        }
        let ip = self
            .cfg
            .trusted_proxies
            .client(conn.peer_ip, req.x_forwarded_for.as_deref());
        if ip != conn.client_ip {
            let old = std::mem::replace(&mut conn.client_ip, ip);
            release_ip(&mut self.per_ip, old);
            *self.per_ip.entry(addr::limit_key(ip)).or_insert(0) += 1;
        }
    }

    /// The server's own origin for this request (API.md): the public URL's, or `http://<Host>`
    /// without one. `None` when the `Host` is not a valid host (then no `Origin` is ours).
    pub(super) fn own_origin(&self, req: &Request) -> Option<String> {
        match &self.own_origin {
            Some(o) => Some(o.clone()),
            None => crate::http::normalize_origin(&format!("http://{}", req.host.as_deref()?)),
        }
    }

    /// An absolute-form target names this server when its origin is ours, or is the `Host`
    /// the request was sent to (under either scheme: a TLS proxy may forward `https://…`).
    fn names_this_server(&self, req: &Request) -> bool {
        let Some(target) = req.target_origin.as_deref() else {
            return true;
        };
        let host = req.host.as_deref().unwrap_or("");
        self.own_origin.as_deref() == Some(target)
            || ["http", "https"].iter().any(|scheme| {
                crate::http::normalize_origin(&format!("{scheme}://{host}")).as_deref()
                    == Some(target)
            })
    }

    /// The contract's cross-origin write rule (API.md "Cross-origin writes").
    fn cross_origin_write(&self, req: &Request) -> bool {
        if !matches!(req.method(), Method::Post | Method::Patch | Method::Delete) {
            return false;
        }
        let foreign_origin = req.origin.as_deref().is_some_and(|o| {
            let own = self.own_origin(req);
            own.is_none() || crate::http::normalize_origin(o) != own
        });
        let foreign_fetch = req.sec_fetch_site.as_deref().is_some_and(|site| {
            !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none")
        });
        foreign_origin || foreign_fetch
    }

    /// Whether this connection is beyond a connection limit.
    pub(super) fn over_limit(&mut self, key: usize) -> Option<Refusal> {
        let conn = self.conns.get(key)?;
        let refusal = if self.conns.len() > self.max_connections {
            Refusal::MaxConnections
        } else if self.cfg.max_connections_per_ip > 0
            && self
                .per_ip
                .get(&addr::limit_key(conn.client_ip))
                .copied()
                .unwrap_or(0) as usize
                > self.cfg.max_connections_per_ip
        {
            Refusal::PerIp
        } else {
            return None;
        };
        self.metrics.refused(refusal);
        log::debug!("conn {key} refused: {refusal:?} ({})", conn.client_ip);
        Some(refusal)
    }

    /// Queue an HTTP response; a closing one moves the connection to `Draining`.
    pub(super) fn respond(&mut self, key: usize, resp: Response, keep_alive: bool) {
        self.metrics.http_request(resp.status);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let mut resp = resp;
        if std::mem::take(&mut conn.serving_api) {
            resp = resp
                .header("Cache-Control", "no-store")
                .header("X-Content-Type-Options", "nosniff");
        }
        if self.hsts {
            resp = resp.header("Strict-Transport-Security", HSTS);
        }
        let close = resp.close || !keep_alive;
        let bytes = resp.encode(keep_alive);
        let (_, first) = conn.send_owned(bytes, usize::MAX);
        let backlog = conn.out.queued_bytes();
        self.list_for_writing(key, first);
        if close {
            return self.linger_close(key);
        }
        if backlog > input::HTTP_BACKLOG_BYTES {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.input_paused = true;
            }
        }
        // The next request has a fresh deadline, counted from now.
        self.rearm_deadline(key, REQUEST_TIMEOUT_MS);
    }
}
