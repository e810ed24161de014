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
//!
//! The order of the checks in [`Server::on_request`] is part of the contract: a foreign target
//! (400) and a cross-origin write (403) are refused before anything else, a draining node
//! sends API and stream clients away (503) before doing work for them, and connection limits
//! come after that — so a refused request never reaches a route and changes nothing.
//!
//! Invariants: everything here runs on the reactor thread and never blocks; work that needs
//! storage, a password hash or the OIDC provider leaves as a job (`drive_reply`) and the
//! connection waits in `AwaitingJob`, reading nothing more, so pipelined answers keep their
//! order (RFC 9112 §9.3.2). Every plain HTTP answer (not a 101) goes out through
//! [`Server::respond`], which adds the headers above and arms the next request's deadline.

use super::*;
use crate::assets;
use crate::http::{Method, Request, Response};
use crate::hub::Stream;

/// HSTS on https deployments: a year (API.md).
pub(super) const HSTS: &str = "max-age=31536000";

impl Server {
    /// One complete request from connection `key`.
    pub(super) fn on_request(&mut self, key: usize, req: Request) {
        // Arrival time: the storage deadline runs from it, and the latency metric of the
        // broadcast this request may cause.
        let started = Instant::now();
        // First: every limit and log line below must use the forwarded client address.
        self.note_client_ip(key, &req);
        if let Some(c) = self.conns.get_mut(key) {
            c.served = true;
            // Remembered on the connection because the answer may come much later, from a job:
            // `respond` adds the `/api/*` headers then.
            c.serving_api = req.path.starts_with("/api/");
        }
        let keep_alive = req.keep_alive;
        // Absolute form (RFC 9112 §3.2.2) naming another host: we are not a proxy; 400, and
        // the connection is closed.
        if req.target_origin.is_some() && !self.names_this_server(key, &req) {
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
        // Stream paths take the WebSocket handshake (RFC 6455 §4), which checks limits itself
        // so a refusal can be a close frame with a reason (1013) the browser can show.
        if req.wants_websocket || stream.is_some() {
            return self.upgrade(key, &req, stream, false);
        }
        // Limits are checked here per request (accept drops only past a reserve kept for these
        // refusals): an over-limit client gets an answer it can act on (429/503 with
        // `Retry-After`, API.md "Limits") instead of a reset.
        if let Some(refusal) = self.over_limit(key) {
            let resp = match refusal {
                Refusal::PerIp => Response::error(429, "too many connections from your address")
                    .header("Retry-After", "5"),
                _ => Response::error(503, "server at its connection limit; try again soon")
                    .header("Retry-After", "5"),
            };
            return self.respond(key, resp.closing(), keep_alive);
        }
        // HEAD is served like GET by the routes below (the `/api/*` arm returns earlier) and
        // the body dropped at the end (RFC 9110 §9.3.2: same headers, no content).
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
                // This node's view of the deployment (API.md), other nodes' pages included.
                self.metrics.presence_sessions = self.current_presence().sessions.len();
                Response::new(200).body(
                    "text/plain; version=0.0.4; charset=utf-8",
                    self.metrics.render(),
                )
            }
            (_, path) if path.starts_with("/api/") => return self.api_request(key, &req, started),
            (Method::Get | Method::Head, _) => {
                assets::serve(&req).unwrap_or_else(|| Response::error(404, "not found"))
            }
            // A path that exists but not for this method: 405 with `Allow` (RFC 9110 §15.5.6
            // requires it), not 404, so a client can tell a wrong method from a wrong path.
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

    /// `/api/*`: routed by `api::handle` at the reactor's wall clock (ms); the reply is sent
    /// now or handed to a job. A connection that is gone by now is ignored.
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
        // The per-IP count moves with the address: the connection was counted under the peer
        // (the proxy) at accept, or under its previous request's client; now under this one.
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

    /// An absolute-form target names this server when its origin is ours (the public URL's),
    /// or names the address the client connected to or the `Host` the request was sent to,
    /// under either scheme (a TLS proxy may forward `https://…`). RFC 9112 §3.2.2 has the
    /// target's authority override `Host`, so the two need not agree.
    fn names_this_server(&self, key: usize, req: &Request) -> bool {
        let Some(target) = req.target_origin.as_deref() else {
            return true;
        };
        let named = |authority: &str| {
            ["http", "https"].iter().any(|scheme| {
                crate::http::normalize_origin(&format!("{scheme}://{authority}")).as_deref()
                    == Some(target)
            })
        };
        self.own_origin.as_deref() == Some(target)
            || named(req.host.as_deref().unwrap_or(""))
            || self
                .conns
                .get(key)
                .and_then(|c| c.sock.local_addr().ok())
                .is_some_and(|local| named(&local.to_string()))
    }

    /// The contract's cross-origin write rule (API.md "Cross-origin writes").
    fn cross_origin_write(&self, req: &Request) -> bool {
        if !matches!(req.method(), Method::Post | Method::Patch | Method::Delete) {
            return false;
        }
        // An absent header is no evidence either way (non-browser clients send neither); a
        // present one is trusted because browsers set it and page scripts cannot forge it.
        let foreign_origin = req.origin.as_deref().is_some_and(|o| {
            let own = self.own_origin(req);
            own.is_none() || crate::http::normalize_origin(o) != own
        });
        let foreign_fetch = req.sec_fetch_site.as_deref().is_some_and(|site| {
            !site.eq_ignore_ascii_case("same-origin") && !site.eq_ignore_ascii_case("none")
        });
        foreign_origin || foreign_fetch
    }

    /// Whether this connection is beyond a connection limit; a refusal is counted in the
    /// metrics here. The counts already include this connection, hence `>`. A per-IP limit of
    /// 0 means none (`--max-connections-per-ip`); IPv6 clients count by /64 (`limit_key`).
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
            resp = resp.not_to_be_stored();
        }
        if self.hsts {
            resp = resp.header("Strict-Transport-Security", HSTS);
        }
        let close = resp.close || !keep_alive;
        let bytes = resp.encode(keep_alive);
        // No outbox cap for HTTP answers (`usize::MAX`): the backlog is bounded instead by
        // pausing input below, so a pipelining client cannot make us queue without end.
        let (_, first) = conn.send_owned(bytes, usize::MAX);
        let backlog = conn.out.queued_bytes();
        self.list_for_writing(key, first);
        if close {
            return self.linger_close(key);
        }
        // Over the backlog bound: stop reading requests until half of it is written
        // (`on_writable` resumes).
        if backlog > input::HTTP_BACKLOG_BYTES {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.input_paused = true;
            }
        }
        // The next request has a fresh deadline, counted from now.
        self.rearm_deadline(key, REQUEST_TIMEOUT_MS);
    }
}
