//! WebSocket streams on the reactor: the upgrade and its checks, frames and messages in,
//! closing politely or failing the connection, and carrying out application effects (fan-out).

use super::*;
use crate::agent::{self, Agent};
use crate::api::access;
use crate::conn::{Sent, WsState};
use crate::http::{Request, Response};
use crate::hub::{self, Left, Stream};

/// Largest message on the contract's streams (bytes); 1009 beyond.
pub(super) const STREAM_MESSAGE_MAX: usize = 64 * 1024;
/// Largest message on the conformance echo endpoint (bytes).
const ECHO_MESSAGE_MAX: usize = 16 * 1024 * 1024;

impl Server {
    /// An upgrade request (or a request for a stream path): check the handshake, limits and
    /// credentials, then open the stream or refuse it.
    pub(super) fn upgrade(&mut self, key: usize, req: &Request, stream: Option<Stream>) {
        let Some(stream) = stream else {
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
        let Some(client_ip) = self.conns.get(key).map(|c| c.client_ip) else {
            return;
        };
        let now = self.time.now().wall_ms;
        let agent_key = self.cfg.agent_key.clone();
        let verdict = access::authorize_stream(
            &mut self.ctx(client_ip, now),
            stream,
            req,
            agent_key.as_deref(),
        );
        match verdict {
            Ok(credential) => self.open_stream(key, handshake, stream, credential),
            Err(reason) => {
                self.metrics.closed(CloseReason::Unauthorized);
                log::info!("conn {key} stream refused: {reason}");
                self.refuse_stream(key, handshake, code::POLICY, reason);
            }
        }
    }

    /// Complete the handshake, then close at once with `code` and `reason` (the contract's way
    /// of refusing a stream, so browsers see the reason).
    fn refuse_stream(&mut self, key: usize, handshake: Vec<u8>, close_code: u16, reason: &str) {
        let mut bytes = handshake;
        bytes.extend_from_slice(&ws::close_frame(close_code, reason));
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.enter(Phase::WsClosing);
        if let (Sent::Failed, _) = conn.send_owned(bytes, usize::MAX) {
            return self.mark_dead(key, CloseReason::Client);
        }
        self.rearm_deadline(key, CLOSE_WAIT_MS);
    }

    fn open_stream(
        &mut self,
        key: usize,
        handshake: Vec<u8>,
        stream: Stream,
        credential: Digest32,
    ) {
        let now = self.time.now();
        let reconnect = self
            .recent_closes
            .get(&credential)
            .is_some_and(|t| now.mono_ms.saturating_sub(*t) < RECONNECT_WINDOW_MS);
        let hub_slot = self.hub.join(stream, key, credential);
        let max_message = if stream == Stream::Echo {
            ECHO_MESSAGE_MAX
        } else {
            STREAM_MESSAGE_MAX
        };
        self.metrics.stream_opened(stream, reconnect);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        log::debug!("conn {key}.{} stream {stream:?} open", conn.gen);
        conn.last_seen_ms = now.mono_ms;
        if let Some(t) = conn.deadline.take() {
            self.timers.cancel(t);
        }
        conn.enter(Phase::Ws(Box::new(WsState {
            stream,
            hub_slot,
            credential,
            reader: ws::MessageReader::new(max_message),
            max_message,
        })));
        if let (Sent::Failed, _) = conn.send_owned(handshake, usize::MAX) {
            return self.mark_dead(key, CloseReason::WriteError);
        }
        match stream {
            Stream::Admin => {
                let frame = self.app.initial_frame(now.wall_ms);
                self.send_initial(key, &frame);
            }
            Stream::Session(user_id) => {
                if let Some(frame) = self.app.time_update_frame(user_id, now.wall_ms) {
                    self.send_frame(key, &frame);
                }
                self.session_clock.watch(user_id, now);
            }
            Stream::Agent | Stream::Echo => {}
        }
    }

    fn send_initial(&mut self, key: usize, frame: &Rc<[u8]>) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (sent, written) = conn.send_initial(frame);
        self.metrics.ws_messages_sent += 1;
        self.metrics.ws_bytes_sent += written as u64;
        if sent == Sent::Failed {
            self.mark_dead(key, CloseReason::WriteError);
        }
    }

    /// Send one frame to one stream, under its outbox limit.
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
            Sent::Overflow => self.mark_dead(key, CloseReason::SlowConsumer),
            Sent::Failed => self.mark_dead(key, CloseReason::WriteError),
        }
    }

    fn outbox_limit(&self, key: usize) -> usize {
        match self.conns.get(key).and_then(|c| c.ws()) {
            Some(w) if w.stream == Stream::Echo => {
                self.cfg.max_outbox_bytes.max(2 * ECHO_MESSAGE_MAX)
            }
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
                self.linger_close(key);
            }
            ws::Event::Violation(v) => self.fail_stream(key, v.code, v.reason),
        }
    }

    /// A complete message (text already checked as UTF-8), to the stream's handler.
    pub(super) fn on_message(&mut self, key: usize, kind: ws::Kind, payload: &[u8]) {
        let Some(stream) = self.conns.get(key).and_then(|c| c.ws()).map(|w| w.stream) else {
            return;
        };
        match stream {
            Stream::Echo => self.send_frame(key, &Rc::from(ws::frame(kind.opcode(), payload))),
            Stream::Agent => self.on_agent_message(key, payload),
            // Admin and session clients only answer pings; anything they say keeps them alive.
            Stream::Admin | Stream::Session(_) => {}
        }
    }

    /// An agent message: run its command like an API request would, then answer it.
    fn on_agent_message(&mut self, key: usize, payload: &[u8]) {
        let reply = match agent::read(payload) {
            Agent::Reply(frame) => frame,
            Agent::Quiet => return,
            Agent::Store(cmd, request_id) => {
                let started = Instant::now();
                let Done::Stored(result) = self.run_command(cmd, self.time.now(), started) else {
                    return;
                };
                agent::finish(&request_id, result)
            }
        };
        self.send_frame(key, &reply);
    }

    /// Leave the hub and count the stream as closed (`Ws → WsClosing`). Idempotent: acts only
    /// on an open stream.
    pub(super) fn detach(&mut self, key: usize, why: CloseReason) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if !matches!(conn.phase(), Phase::Ws(_)) {
            return;
        }
        let Phase::Ws(state) = conn.enter(Phase::WsClosing) else {
            return;
        };
        if let Left::LastOfSession(user_id) = self.hub.leave(state.stream, state.hub_slot, key) {
            self.session_clock.unwatch(user_id);
        }
        if state.stream != Stream::Echo {
            self.metrics.stream_closed(state.stream);
            self.metrics.closed(why);
            self.recent_closes.insert(state.credential, self.now_ms());
        }
        log::debug!("conn {key} stream closed: {}", why.label());
    }

    /// Close an open stream politely: close frame, then wait (≤ 2 s) for the client's.
    fn close_stream(&mut self, key: usize, close_code: u16, reason: &str, why: CloseReason) {
        self.detach(key, why);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        if conn.dead.is_some() || !matches!(conn.phase(), Phase::WsClosing) {
            return;
        }
        if let (Sent::Failed, _) = conn.send_owned(ws::close_frame(close_code, reason), usize::MAX)
        {
            return self.mark_dead(key, CloseReason::Client);
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
            return self.mark_dead(key, CloseReason::Client);
        }
        self.linger_close(key);
    }

    /// Close every open stream with 1001 (a signal arrived); other connections just go.
    pub(super) fn close_all_for_shutdown(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns.get(key).map(|c| c.phase()) {
                Some(Phase::Ws(_)) => self.close_stream(
                    key,
                    code::GOING_AWAY,
                    "Server shutting down",
                    CloseReason::Shutdown,
                ),
                Some(Phase::WsClosing | Phase::Draining { .. }) => {}
                _ => self.mark_dead(key, CloseReason::Shutdown),
            }
        }
    }

    // ------------------------------------------------------------------ effects

    /// Carry out what applying an event asked for. `started` is when the event's cause
    /// arrived, for the broadcast latency metric.
    pub(super) fn apply_effects(&mut self, effects: &mut Vec<Effect>, now: Now, started: Instant) {
        for effect in effects.drain(..) {
            match effect {
                Effect::Broadcast(stream, frame) => {
                    let d = hub::deliver(
                        &mut self.conns,
                        self.hub.members(stream),
                        &frame,
                        self.cfg.max_outbox_bytes,
                    );
                    for (key, why) in d.failed {
                        self.mark_dead(key, why);
                    }
                    self.metrics.ws_messages_sent += d.recipients;
                    self.metrics.ws_bytes_sent += d.bytes_written;
                    if self.hub.has_members(stream) || !matches!(stream, Stream::Session(_)) {
                        self.metrics
                            .broadcast(stream, started.elapsed().as_secs_f64());
                    }
                }
                Effect::CloseSession {
                    user_id,
                    code,
                    reason,
                    why,
                } => {
                    let keys: Vec<usize> = self.hub.members(Stream::Session(user_id)).collect();
                    for key in keys {
                        self.close_stream(key, code, reason, why);
                    }
                }
                Effect::CloseAdminSession(session) => {
                    for key in self.hub.admins_with_session(&session) {
                        self.close_stream(
                            key,
                            code::POLICY,
                            "Unauthorized",
                            CloseReason::Unauthorized,
                        );
                    }
                }
                Effect::StartClock {
                    user_id,
                    expires_at,
                } => self.session_clock.start(user_id, expires_at, now),
                Effect::StopClock(user_id) => self.session_clock.stop(user_id),
            }
        }
    }
}
