//! HTTP requests on the reactor: routing, the API and its job round trips, connection limits,
//! and queuing the answer.

use super::*;
use crate::assets;
use crate::http::{Method, Request, Response};
use crate::hub::Stream;

impl Server {
    /// One complete request from connection `key`.
    pub(super) fn on_request(&mut self, key: usize, req: Request) {
        let started = Instant::now();
        self.note_client_ip(key, &req);
        if let Some(c) = self.conns.get_mut(key) {
            c.served = true;
        }
        let keep_alive = req.keep_alive;
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

    /// Behind a trusted proxy, the client is the last `X-Forwarded-For` hop.
    fn note_client_ip(&mut self, key: usize, req: &Request) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !self.cfg.trusted_proxies.contains(&conn.peer_ip) {
            return;
        }
        let Some(ip) = req
            .x_forwarded_for
            .as_deref()
            .and_then(|h| h.rsplit(',').next())
            .and_then(|hop| hop.trim().parse::<IpAddr>().ok())
        else {
            return;
        };
        if ip != conn.client_ip {
            let old = std::mem::replace(&mut conn.client_ip, ip);
            release_ip(&mut self.per_ip, old);
            *self.per_ip.entry(ip).or_insert(0) += 1;
        }
    }

    /// Whether this connection is beyond a connection limit.
    pub(super) fn over_limit(&mut self, key: usize) -> Option<Refusal> {
        let conn = self.conns.get(key)?;
        let refusal = if self.conns.len() > self.max_connections {
            Refusal::MaxConnections
        } else if self.cfg.max_connections_per_ip > 0
            && self.per_ip.get(&conn.client_ip).copied().unwrap_or(0) as usize
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
        let close = resp.close || !keep_alive;
        let bytes = resp.encode(keep_alive);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
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
