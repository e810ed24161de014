//! WebSocket streams on the reactor: the upgrade and its checks, frames and messages in,
//! closing politely or failing the connection, and applying application effects (fan-out).

use super::*;

impl Server {
    // ------------------------------------------------------------------ WebSocket

    pub(super) fn stream_route(&self, path: &str) -> Option<StreamRoute> {
        match path {
            "/admin/stream" => Some(StreamRoute::Admin),
            "/agent/stream" => Some(StreamRoute::Agent),
            p if self.cfg.echo_path.as_deref() == Some(p) => Some(StreamRoute::Echo),
            p => {
                let id = p.strip_prefix("/session/")?.strip_suffix("/stream")?;
                Some(StreamRoute::Session(id.parse::<i64>().unwrap_or(0)))
            }
        }
    }

    pub(super) fn upgrade(&mut self, key: usize, req: &Request, route: Option<StreamRoute>) {
        let Some(route) = route else {
            return self.respond(
                key,
                Response::error(404, "no WebSocket endpoint here"),
                req.keep_alive,
            );
        };
        let host = req.host.as_deref().unwrap_or("");
        let own = [
            self.public_url.as_str(),
            &format!("http://{host}"),
            &format!("https://{host}"),
        ];
        let handshake = match ws::accept(req, &own) {
            Ok(h) => h,
            Err(e) => {
                log::debug!("conn {key} handshake refused: {e:?}");
                return self.respond(key, e.response().closing(), false);
            }
        };
        self.metrics.http_request(101);
        if let Some(refusal) = self.over_limit(key) {
            let reason = match refusal {
                Refusal::PerIp => "Too many connections from your address",
                _ => "Server busy",
            };
            return self.refuse_stream(key, handshake, code::TRY_AGAIN_LATER, reason);
        }
        let now = app::wall_ms();
        let authorized = match route {
            StreamRoute::Admin => req
                .cookie("admin_session")
                .filter(|t| self.app.admin_for_cookie(t).is_some())
                .map(|t| {
                    (
                        StreamRole::Admin {
                            session: auth::digest(t),
                        },
                        auth::digest(t),
                    )
                })
                .ok_or("Unauthorized"),
            StreamRoute::Session(id) => {
                let token = req
                    .query_param("token")
                    .or_else(|| req.cookie("session_token").map(String::from));
                match token {
                    Some(t) if self.app.session_token_ok(id, &t, now) => {
                        Ok((StreamRole::Session { user_id: id }, auth::digest(&t)))
                    }
                    _ => Err("Invalid or expired session"),
                }
            }
            StreamRoute::Agent => match (&self.cfg.agent_key, req.bearer()) {
                (None, _) => Err("Agent stream disabled"),
                (Some(k), Some(given)) if auth::ct_eq(k.as_bytes(), given.as_bytes()) => {
                    Ok((StreamRole::Agent, auth::digest(k)))
                }
                _ => Err("Unauthorized"),
            },
            StreamRoute::Echo => Ok((StreamRole::Echo, [0; 32])),
        };
        match authorized {
            Ok((role, credential)) => self.open_stream(key, handshake, role, credential),
            Err(reason) => {
                self.metrics.closed(CloseReason::Unauthorized);
                log::info!("conn {key} stream refused: {reason}");
                self.refuse_stream(key, handshake, code::POLICY, reason);
            }
        }
    }

    /// Complete the handshake, then close at once with `code` and `reason` (the contract's way
    /// of refusing a stream, so browsers see the reason).
    pub(super) fn refuse_stream(
        &mut self,
        key: usize,
        handshake: Vec<u8>,
        close_code: u16,
        reason: &str,
    ) {
        let mut bytes = handshake;
        bytes.extend_from_slice(&ws::close_frame(close_code, reason));
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.phase = Phase::WsClosing;
        if let (Sent::Failed, _) = conn.send_owned(bytes, usize::MAX) {
            return self.kill(key, CloseReason::Client);
        }
        self.rearm_deadline(key, CLOSE_WAIT_MS);
    }

    pub(super) fn open_stream(
        &mut self,
        key: usize,
        handshake: Vec<u8>,
        role: StreamRole,
        credential: Digest32,
    ) {
        let now = self.now_ms();
        let reconnect = self
            .recent_closes
            .get(&credential)
            .is_some_and(|t| now.saturating_sub(*t) < RECONNECT_WINDOW_MS);
        let hub_slot = match &role {
            StreamRole::Admin { .. } => self.hub.admins.insert(key),
            StreamRole::Agent => self.hub.agents.insert(key),
            StreamRole::Session { user_id } => self.hub.join_session(*user_id, key),
            StreamRole::Echo => 0,
        };
        let max_message = if matches!(role, StreamRole::Echo) {
            ECHO_MESSAGE_MAX
        } else {
            STREAM_MESSAGE_MAX
        };
        if let Some(kind) = role.kind() {
            self.metrics.stream_opened(kind, reconnect);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        log::debug!("conn {key}.{} stream {role:?} open", conn.gen);
        conn.last_seen_ms = now;
        if let Some(t) = conn.deadline.take() {
            self.wheel.cancel(t);
        }
        conn.phase = Phase::Ws(Box::new(WsState {
            role: role.clone(),
            hub_slot,
            credential,
            reader: ws::MessageReader::new(max_message),
            max_message,
        }));
        if let (Sent::Failed, _) = conn.send_owned(handshake, usize::MAX) {
            return self.kill(key, CloseReason::WriteError);
        }
        match role {
            StreamRole::Admin { .. } => {
                let frame = self.app.initial_frame(app::wall_ms());
                self.send_initial(key, &frame);
            }
            StreamRole::Session { user_id } => {
                if let Some(frame) = self.app.time_update_frame(user_id, app::wall_ms()) {
                    self.send_frame(key, &frame);
                }
                self.ensure_session_tick(user_id);
            }
            StreamRole::Agent | StreamRole::Echo => {}
        }
    }

    pub(super) fn send_initial(&mut self, key: usize, frame: &Rc<[u8]>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (sent, written) = conn.send_initial(frame);
        self.metrics.ws_messages_sent += 1;
        self.metrics.ws_bytes_sent += written as u64;
        if sent == Sent::Failed {
            self.kill(key, CloseReason::WriteError);
        }
    }

    /// Send one frame to one stream, under the outbox limit.
    pub(super) fn send_frame(&mut self, key: usize, frame: &Rc<[u8]>) {
        let limit = self.outbox_limit(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (sent, written) = conn.send_shared(frame, limit);
        self.metrics.ws_messages_sent += 1;
        self.metrics.ws_bytes_sent += written as u64;
        match sent {
            Sent::Ok => {}
            Sent::Overflow => self.kill(key, CloseReason::SlowConsumer),
            Sent::Failed => self.kill(key, CloseReason::WriteError),
        }
    }

    pub(super) fn outbox_limit(&self, key: usize) -> usize {
        match self.conns.get(key).and_then(|c| c.ws()) {
            Some(WsState {
                role: StreamRole::Echo,
                ..
            }) => self.cfg.max_outbox_bytes.max(2 * ECHO_MESSAGE_MAX),
            _ => self.cfg.max_outbox_bytes,
        }
    }

    /// One decoded client frame: the stream's `MessageReader` applies the message rules
    /// (fragments, size across fragments, UTF-8, close codes); this only acts on what it yields.
    pub(super) fn on_frame(&mut self, key: usize, fin: bool, opcode: u8, payload: &[u8]) {
        let now = self.now_ms();
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.last_seen_ms = now;
        let Some(state) = conn.ws_mut() else { return };
        let frame = ws::Frame {
            fin,
            opcode,
            payload,
        };
        let Some(event) = state.reader.read(frame) else {
            return; // a fragment, taken in
        };
        match event {
            ws::Event::Message { kind, data } => self.on_message(key, kind, &data),
            ws::Event::Ping(p) => self.send_frame(key, &Rc::from(ws::frame(ws::OP_PONG, p))),
            ws::Event::Pong => {}
            ws::Event::Close { echo } => {
                self.detach(key, CloseReason::Client);
                if let Some(conn) = self.conns.get_mut(key) {
                    conn.send_owned(echo, usize::MAX);
                }
                self.drain(key);
            }
            ws::Event::Violation(v) => self.fail_stream(key, v.code, v.reason),
        }
    }

    /// A complete message (text already checked as UTF-8), to the stream's role.
    pub(super) fn on_message(&mut self, key: usize, kind: ws::Kind, payload: &[u8]) {
        let Some(role) = self
            .conns
            .get(key)
            .and_then(|c| c.ws())
            .map(|w| w.role.clone())
        else {
            return;
        };
        match role {
            StreamRole::Echo => self.send_frame(key, &Rc::from(ws::frame(kind.opcode(), payload))),
            StreamRole::Agent => {
                let started = Instant::now();
                let mut effects = std::mem::take(&mut self.effects);
                let reply = crate::agent::handle(&mut self.app, payload, &mut effects);
                if let Some(reply) = reply {
                    self.send_frame(key, &reply);
                }
                self.apply_effects(&mut effects, started);
                self.effects = effects;
            }
            // Admin and session clients only answer pings; anything they say keeps them alive.
            StreamRole::Admin { .. } | StreamRole::Session { .. } => {}
        }
    }

    /// Leave the hub and count the stream as closed. Idempotent: acts only on an open stream.
    pub(super) fn detach(&mut self, key: usize, why: CloseReason) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !matches!(conn.phase, Phase::Ws(_)) {
            return;
        }
        let Phase::Ws(state) = std::mem::replace(&mut conn.phase, Phase::WsClosing) else {
            return;
        };
        match state.role {
            StreamRole::Admin { .. } => {
                self.hub.admins.try_remove(state.hub_slot);
            }
            StreamRole::Agent => {
                self.hub.agents.try_remove(state.hub_slot);
            }
            StreamRole::Session { user_id } => {
                if let Some(tick) = self.hub.leave_session(user_id, state.hub_slot) {
                    self.wheel.cancel(tick);
                }
            }
            StreamRole::Echo => {}
        }
        if let Some(kind) = state.role.kind() {
            self.metrics.stream_closed(kind);
            self.metrics.closed(why);
            self.recent_closes.insert(state.credential, self.now_ms());
        }
        log::debug!("conn {key} stream closed: {}", why.label());
    }

    /// Close an open stream politely: close frame, then wait for the client's.
    pub(super) fn close_stream(
        &mut self,
        key: usize,
        close_code: u16,
        reason: &str,
        why: CloseReason,
    ) {
        self.detach(key, why);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.dead.is_some() {
            return;
        }
        conn.phase = Phase::WsClosing;
        if let (Sent::Failed, _) = conn.send_owned(ws::close_frame(close_code, reason), usize::MAX)
        {
            return self.kill(key, CloseReason::Client);
        }
        self.rearm_deadline(key, CLOSE_WAIT_MS);
    }

    /// Fail the connection (RFC 6455 §7.1.7) after a protocol violation: close frame, then our
    /// FIN at once — no waiting for a close reply from a client that is already misbehaving.
    pub(super) fn fail_stream(&mut self, key: usize, close_code: u16, reason: &str) {
        self.detach(key, CloseReason::Client);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if let (Sent::Failed, _) = conn.send_owned(ws::close_frame(close_code, reason), usize::MAX)
        {
            return self.kill(key, CloseReason::Client);
        }
        self.drain(key);
    }

    // ------------------------------------------------------------------ effects

    pub(super) fn apply_effects(&mut self, effects: &mut Vec<Effect>, started: Instant) {
        for effect in effects.drain(..) {
            match effect {
                Effect::Broadcast(audience, frame) => {
                    let (members, kind) = match audience {
                        Audience::Admins => (&self.hub.admins, StreamKind::Admin),
                        Audience::Agents => (&self.hub.agents, StreamKind::Agent),
                        Audience::Session(id) => match self.hub.session_members(id) {
                            Some(m) => (m, StreamKind::Session),
                            None => continue,
                        },
                    };
                    let d = hub::deliver(
                        &mut self.conns,
                        members,
                        &frame,
                        self.cfg.max_outbox_bytes,
                        &mut self.reap,
                    );
                    self.metrics.ws_messages_sent += d.recipients;
                    self.metrics.ws_bytes_sent += d.bytes_written;
                    self.metrics
                        .broadcast(kind, started.elapsed().as_secs_f64());
                }
                Effect::CloseSession {
                    user_id,
                    code,
                    reason,
                    why,
                } => {
                    let keys: Vec<usize> = self
                        .hub
                        .session_members(user_id)
                        .map(|m| m.iter().map(|(_, k)| *k).collect())
                        .unwrap_or_default();
                    for key in keys {
                        self.close_stream(key, code, reason, why);
                    }
                }
                Effect::CloseAdminSession(session) => {
                    let keys: Vec<usize> = self
                        .hub
                        .admins
                        .iter()
                        .map(|(_, k)| *k)
                        .filter(|k| {
                            self.conns.get(*k).and_then(|c| c.ws()).is_some_and(
                                |w| matches!(&w.role, StreamRole::Admin { session: s } if *s == session),
                            )
                        })
                        .collect();
                    for key in keys {
                        self.close_stream(
                            key,
                            code::POLICY,
                            "Unauthorized",
                            CloseReason::Unauthorized,
                        );
                    }
                }
                Effect::ArmExpiry {
                    user_id,
                    expires_at,
                } => self.arm_expiry(user_id, expires_at),
                Effect::DisarmExpiry(user_id) => {
                    if let Some(t) = self.expiry_timers.remove(&user_id) {
                        self.wheel.cancel(t);
                    }
                }
            }
        }
    }

    pub(super) fn arm_expiry(&mut self, user_id: i64, expires_at: i64) {
        if let Some(t) = self.expiry_timers.remove(&user_id) {
            self.wheel.cancel(t);
        }
        let in_ms = (expires_at - app::wall_ms()).max(0) as u64;
        let t = self
            .wheel
            .insert(self.now_ms() + in_ms, Timer::SessionExpiry(user_id));
        self.expiry_timers.insert(user_id, t);
    }

    /// `time_update` every 10 s, on the session's own 10-second marks (remaining 30:00, 29:50…).
    pub(super) fn ensure_session_tick(&mut self, user_id: i64) {
        let Some(subs) = self.hub.sessions.get(&user_id) else {
            return;
        };
        if subs.tick.is_some() || subs.members.is_empty() {
            return;
        }
        let Some(expires_at) = self.app.user(user_id).and_then(|u| u.session_expires_at) else {
            return;
        };
        let remaining = expires_at - app::wall_ms();
        if remaining <= 0 {
            return;
        }
        let mut next = remaining % TIME_UPDATE_MS;
        if next < 500 {
            next += TIME_UPDATE_MS;
        }
        let t = self
            .wheel
            .insert(self.now_ms() + next as u64, Timer::SessionTick(user_id));
        if let Some(subs) = self.hub.sessions.get_mut(&user_id) {
            subs.tick = Some(t);
        }
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) enum StreamRoute {
    Admin,
    Session(i64),
    Agent,
    Echo,
}
