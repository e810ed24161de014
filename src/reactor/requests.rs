//! HTTP requests on the reactor: routing, the API and its password-worker round trip, limits,
//! and queuing the answer.

use super::*;

impl Server {
    // ------------------------------------------------------------------ HTTP

    pub(super) fn on_request(&mut self, key: usize, req: Request) {
        let started = Instant::now();
        self.note_client_ip(key, &req);
        if let Some(c) = self.conns.get_mut(key) {
            c.served = true;
        }
        let keep_alive = req.keep_alive;
        let stream_route = self.stream_route(&req.path);
        if req.wants_websocket || stream_route.is_some() {
            return self.upgrade(key, &req, stream_route);
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
            (Method::Get | Method::Head, "/metrics") => {
                self.metrics.open_connections = self.conns.len();
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
                || matches!(req.path.as_str(), "/healthz" | "/metrics") =>
            {
                Response::error(405, "method not allowed").header("Allow", "GET, HEAD")
            }
            _ => Response::error(404, "not found"),
        };
        let resp = if head { resp.head_only() } else { resp };
        self.respond(key, resp, keep_alive);
    }

    pub(super) fn api_request(&mut self, key: usize, req: &Request, started: Instant) {
        let Some(conn) = self.conns.get(key) else {
            return;
        };
        let (client_ip, gen) = (conn.client_ip, conn.gen);
        let mut effects = std::mem::take(&mut self.effects);
        let mut ctx = Ctx {
            client_ip,
            secure_cookies: self.public_url.starts_with("https://"),
            limiter: &mut self.limiter,
            metrics: &mut self.metrics,
        };
        let reply = api::handle(&mut self.app, req, &mut ctx, &mut effects);
        match reply {
            Reply::Now(resp) => self.respond(key, resp, req.keep_alive),
            Reply::Later(job, pending) => {
                if self.worker.submit(Requester { key, gen }, job) {
                    if let Some(c) = self.conns.get_mut(key) {
                        c.phase = Phase::AwaitingWorker {
                            keep_alive: req.keep_alive,
                            pending: Box::new(pending),
                        };
                    }
                } else {
                    let busy = Response::error(503, "sign-in is busy; try again in a moment")
                        .header("Retry-After", "1");
                    self.respond(key, busy, req.keep_alive);
                }
            }
        }
        self.apply_effects(&mut effects, started);
        self.effects = effects;
    }

    pub(super) fn on_worker_done(&mut self) {
        let done: Vec<_> = self.worker.finished().collect();
        for (who, outcome) in done {
            let Some(conn) = self.conns.get_mut(who.key).filter(|c| c.gen == who.gen) else {
                continue; // the client left while its password was checked
            };
            let Phase::AwaitingWorker {
                keep_alive,
                pending,
            } = std::mem::replace(&mut conn.phase, Phase::Http)
            else {
                continue;
            };
            let client_ip = conn.client_ip;
            let mut ctx = Ctx {
                client_ip,
                secure_cookies: self.public_url.starts_with("https://"),
                limiter: &mut self.limiter,
                metrics: &mut self.metrics,
            };
            let resp = api::finish(&mut self.app, *pending, outcome, &mut ctx);
            let half_closed = self
                .conns
                .get(who.key)
                .is_some_and(|c| c.input_paused && c.out.is_empty());
            self.respond(who.key, resp, keep_alive && !half_closed);
            self.resume.push(who.key);
        }
    }

    /// Behind a trusted proxy, the client is the last `X-Forwarded-For` hop.
    pub(super) fn note_client_ip(&mut self, key: usize, req: &Request) {
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
        if let (Sent::Failed, _) = conn.send_owned(bytes, usize::MAX) {
            return self.kill(key, CloseReason::Client);
        }
        if close {
            return self.drain(key);
        }
        if conn.out.queued_bytes() > HTTP_BACKLOG_BYTES {
            conn.input_paused = true;
        }
        // The next request has a fresh deadline, counted from now.
        let gen = conn.gen;
        if let Some(t) = conn.deadline.take() {
            self.wheel.cancel(t);
        }
        let t = self
            .wheel
            .insert(self.now_ms() + REQUEST_TIMEOUT_MS, Timer::Conn { key, gen });
        if let Some(c) = self.conns.get_mut(key) {
            c.deadline = Some(t);
        }
    }
}
