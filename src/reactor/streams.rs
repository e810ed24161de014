//! WebSocket streams on the reactor: the upgrade and its checks, frames and messages in,
//! closing politely or failing the connection, and carrying out application effects (fan-out).
//!
//! ## Opening a stream (`upgrade` → `open_stream`)
//! The checks run in this order, and each refusal has its own shape:
//! 1. the handshake itself (`ws::accept`: `GET`, `Upgrade: websocket`, version 13, a key, and
//!    an `Origin` that is ours when present — RFC 6455 §4.2.1 and §10.2, API.md "The server's
//!    own origin"): a plain HTTP error and the connection closes, since no WebSocket exists yet;
//! 2. connection limits (`over_limit`): the handshake completes and the stream closes at once
//!    with 1013, a code a client backs off on, instead of a bare network error;
//! 3. the credential (`api::access::authorize_stream`): 101 then close 1008 with the reason
//!    (API.md: clients must not reconnect on 1008); an agent over its failure limit gets 429
//!    instead of a handshake; an admin session this process has not seen yet is looked up in
//!    storage first (the request waits in `AwaitingJob` and comes back with `looked_up`).
//!
//! Only then does the connection join the hub and get its opening frames. They are queued
//! behind the 101 in the same outbox, so the client never sees a frame before the handshake.
//!
//! ## What each stream gets first
//! * admin and agent: `initial`, or `resumed` and the missed events (from the memory tail, or
//!   read from storage while later broadcasts are held — `replay_from_storage`); admins then
//!   get `presence`. The opening stands at the same log position as the broadcasts that follow:
//!   the view changes only in `App::apply`, never between building the opening and joining.
//! * session: `time_update`, then `progress` (API.md); the session clock ticks for it from now.
//!
//! ## Fan-out
//! `broadcast` hands one encoded frame to every member of a stream (`hub::deliver`); a member
//! that cannot take it is marked dead after the walk, never during it. `apply_effects` is the one
//! place that turns what the application asked for into sends, closes and clock changes.

use super::*;
use crate::agent::{self, Agent};
use crate::api::access::{self, Credential, Denied};
use crate::app::{Opening, ResumePoint};
use crate::conn::{Sent, WsState};
use crate::http::{Request, Response};
use crate::hub::{self, Left, Stream};

/// Largest message on the contract's streams (bytes); 1009 beyond.
pub(super) const STREAM_MESSAGE_MAX: usize = 64 * 1024;
/// Largest message on the conformance echo endpoint (bytes): the Autobahn suite sends messages
/// of up to 16 MiB, and the endpoint exists only for it (`--echo-path`).
const ECHO_MESSAGE_MAX: usize = 16 * 1024 * 1024;

impl Server {
    /// An upgrade request (or a request for a stream path): check the handshake, limits and
    /// credentials, then open the stream or refuse it. `looked_up`: the admin session was just
    /// looked up in storage (a second miss means no such session).
    pub(super) fn upgrade(
        &mut self,
        key: usize,
        req: &Request,
        stream: Option<Stream>,
        looked_up: bool,
    ) {
        let Some(stream) = stream else {
            return self.respond(
                key,
                Response::error(404, "no WebSocket endpoint here"),
                req.keep_alive,
            );
        };
        // Exactly one origin is ours (API.md): an https deployment takes no http origin. The
        // check matters because browsers send cookies with a cross-site handshake and the
        // same-origin policy does not cover WebSockets (cross-site WebSocket hijacking).
        let own = self.own_origin(req);
        let own: Vec<&str> = own.iter().map(String::as_str).collect();
        let handshake = match ws::accept(req, &own) {
            // HSTS on every answer of an https deployment, the 101 included.
            Ok(h) if self.hsts => with_header(h, "Strict-Transport-Security", requests::HSTS),
            Ok(h) => h,
            Err(e) => {
                log::debug!("conn {key} handshake refused: {e:?}");
                return self.respond(key, e.response().closing(), false);
            }
        };
        if let Some(refusal) = self.over_limit(key) {
            // Counted as a 101: that is what went out, whatever closes right after it.
            self.metrics.http_request(101);
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
        // Cloned: `ctx` borrows the server mutably for the rest of the decision.
        let agent_key = self.cfg.agent_key.clone();
        let mut ctx = self.ctx(client_ip, now);
        ctx.looked_up = looked_up;
        let verdict = access::authorize_stream(&mut ctx, stream, req, agent_key.as_deref());
        match verdict {
            Ok(credential) => {
                if !looked_up {
                    if let Some(seq) = self.resume_ahead(stream, req) {
                        return self.await_view(key, req, seq);
                    }
                }
                self.metrics.http_request(101);
                self.open_stream(key, req, handshake, stream, credential)
            }
            Err(Denied::No(_, reason)) => {
                self.metrics.http_request(101);
                self.metrics.closed(CloseReason::Unauthorized);
                log::info!("conn {key} stream refused: {reason}");
                self.refuse_stream(key, handshake, code::POLICY, reason);
            }
            Err(Denied::Limited(resp)) => self.respond(key, resp.closing(), false),
            Err(Denied::LookUp(tokens)) => self.await_storage(
                key,
                Command::LookupAdminSession { tokens },
                Pending::Handshake(Box::new(req.clone())),
                req.keep_alive,
                Instant::now(),
            ),
            Err(Denied::LookUpSession(id, tokens)) => self.await_storage(
                key,
                crate::app::ClusterCommand::LookupSession { id, tokens },
                Pending::Handshake(Box::new(req.clone())),
                req.keep_alive,
                Instant::now(),
            ),
        }
    }

    /// Complete the handshake, then close at once with `code` and `reason` (the contract's way
    /// of refusing a stream, so browsers see the reason: a refused handshake surfaces in a
    /// browser only as a network error with no status). → `WsClosing`, 2 s for the client's
    /// close frame.
    fn refuse_stream(&mut self, key: usize, handshake: Vec<u8>, close_code: u16, reason: &str) {
        let mut bytes = handshake;
        bytes.extend_from_slice(&ws::close_frame(close_code, reason));
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        conn.enter(Phase::WsClosing);
        let (_, first) = conn.send_owned(bytes, usize::MAX);
        self.list_for_writing(key, first);
        self.rearm_deadline(key, CLOSE_WAIT_MS);
    }

    /// Join the hub, move the connection to `Ws`, and queue the 101 and the opening frames.
    /// `credential` is what `authorize_stream` accepted: its digest names the stream for the
    /// reconnect metric and (admins) for closing it when that session ends.
    fn open_stream(
        &mut self,
        key: usize,
        req: &Request,
        handshake: Vec<u8>,
        stream: Stream,
        credential: Credential,
    ) {
        let now = self.time.now();
        let reconnect = self
            .recent_closes
            .get(&credential.digest)
            .is_some_and(|t| now.mono_ms.saturating_sub(*t) < RECONNECT_WINDOW_MS);
        let hub_slot = self.hub.join(
            stream,
            key,
            credential.digest,
            credential.admin_email.as_deref(),
        );
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
        if stream != Stream::Echo {
            // The backlog of a slow stream must show in its outbox (admission control, the
            // outbox limit); the conformance endpoint keeps the kernel's autotuning.
            open::cap_send_buffer(&conn.sock);
        }
        // The heartbeat counts silence from here, not from the connection's first byte.
        conn.last_seen_ms = now.mono_ms;
        // The request deadline is over; an open stream has no deadline of its own (its admin
        // session's end, if any, is watched per session: below).
        if let Some(t) = conn.deadline.take() {
            self.timers.cancel(t);
        }
        conn.enter(Phase::Ws(Box::new(WsState {
            stream,
            hub_slot,
            credential: credential.digest,
            reader: ws::MessageReader::new(max_message),
            max_message,
            session_expires_at: credential.expires_at,
            presence_told: 0,
        })));
        if let Some(at) = credential.expires_at {
            // An open stream is a standing read of the invitee list: it ends with its session.
            self.watch_admin_expiry(credential.digest, at, now);
        }
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (_, first) = conn.send_owned(handshake, usize::MAX);
        self.list_for_writing(key, first);
        match stream {
            Stream::Admin | Stream::Agent => {
                // A malformed resume point is not an error: the stream gets `initial`, which
                // the client takes as a full replacement (API.md), and it counts as a failed
                // resume.
                let asked = resume_point(req);
                let point = asked.as_ref().ok().and_then(|p| p.as_ref());
                match self.app.open(stream, point, now.wall_ms) {
                    Opening::Frames { frames, resumed } => {
                        if !matches!(asked, Ok(None)) {
                            self.metrics.resume(stream, resumed);
                        }
                        self.send_opening(key, &frames);
                    }
                    Opening::ReadStorage { from, to } => {
                        self.replay_from_storage(key, stream, from, to, now)
                    }
                }
                if stream == Stream::Admin {
                    self.send_presence(key, now);
                }
            }
            Stream::Session(user_id) => {
                if let Some(frame) = self.app.time_update_frame(user_id, now.wall_ms) {
                    self.send_frame(key, &frame);
                }
                if let Some(frame) = self.app.progress_frame(user_id) {
                    self.send_frame(key, &frame);
                }
                self.session_clock.watch(user_id, now);
            }
            Stream::Echo => {}
        }
        if matches!(stream, Stream::Admin | Stream::Session(_)) {
            self.presence_changed(now);
        }
    }

    /// A resume from beyond the memory tail: hold what is broadcast to the stream from now on,
    /// and read the events it missed from storage (`jobs::Ticket::Replay` finishes it). If the
    /// read cannot even be queued, the stream gets a fresh `initial` at once.
    fn replay_from_storage(&mut self, key: usize, stream: Stream, from: u64, to: u64, now: Now) {
        let Some(gen) = self.conns.get(key).map(|c| c.gen) else {
            return;
        };
        let ticket = jobs::Ticket::Replay {
            key,
            gen,
            stream,
            since: from - 1,
            to,
        };
        if self
            .storage
            .submit(ticket, Command::ReadEvents { from, to })
        {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.hold();
            }
        } else {
            self.metrics.resume(stream, false);
            let initial = self.app.initial(stream, now.wall_ms);
            self.send_opening(key, &[initial]);
        }
    }

    /// The first frames of a stream (`initial`, or `resumed` and the replay): may pass the
    /// outbox limit once, since a large list must still reach a new admin (API.md "Limits").
    fn send_opening(&mut self, key: usize, frames: &[Rc<[u8]>]) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (_, first) = conn.send_opening(frames);
        self.metrics.ws_messages_sent += frames.len() as u64;
        self.list_for_writing(key, first);
    }

    /// Send one frame to one stream, under its outbox limit; past it the stream is a slow
    /// consumer and is marked dead (close 1013 at reap: the client reconnects later and gets a
    /// full `initial`, so nothing is lost by dropping it).
    pub(super) fn send_frame(&mut self, key: usize, frame: &Rc<[u8]>) {
        let limit = self.outbox_limit(key);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (sent, first) = conn.send_shared(frame, limit);
        self.metrics.ws_messages_sent += 1;
        self.list_for_writing(key, first);
        if sent == Sent::Overflow {
            self.drop_slow_consumer(key);
        }
    }

    /// `--max-outbox-bytes`, except on the echo endpoint, which must be able to queue two of its
    /// 16 MiB messages (the Autobahn cases echo them back).
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
        // Any frame proves the client alive (API.md: silent for two intervals is closed), a
        // fragment or a pong as much as a message.
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
            // RFC 6455 §5.5.2: a Pong with the Ping's payload, as soon as practical.
            ws::Event::Ping(p) => self.send_frame(key, &Rc::from(ws::frame(ws::OP_PONG, p))),
            ws::Event::Pong => {}
            // RFC 6455 §5.5.1: answer a close with a close (the reader built the echo: the
            // client's code, or none), then our FIN once it is written.
            ws::Event::Close { echo } => {
                self.detach(key, CloseReason::Client);
                if let Some(conn) = self.conns.get_mut(key) {
                    let (_, first) = conn.send_owned(echo, usize::MAX);
                    self.list_for_writing(key, first);
                }
                self.linger_close(key);
            }
            ws::Event::Violation(v) => self.fail_stream(key, v.code, v.reason),
        }
    }

    /// A complete message (text already checked as UTF-8, RFC 6455 §8.1), to the stream's
    /// handler. Only the agent's messages carry commands; the contract gives admin and session
    /// clients nothing to say but `pong`.
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

    /// An agent message: its command runs like an API request's; the stream reads on, and the
    /// ack (or error) follows when storage has answered.
    fn on_agent_message(&mut self, key: usize, payload: &[u8]) {
        match agent::read(payload) {
            Agent::Reply(frame) => self.send_frame(key, &frame),
            Agent::Quiet => {}
            Agent::Store(cmd, request_id) => {
                let Some(gen) = self.conns.get(key).map(|c| c.gen) else {
                    return;
                };
                if self.overloaded(key) {
                    return self.send_frame(key, &agent::overloaded(&request_id));
                }
                let ticket = jobs::Ticket::Agent {
                    key,
                    gen,
                    request_id: request_id.clone(),
                    started: Instant::now(),
                };
                if self.storage.submit(ticket, cmd) {
                    self.admission.submitted();
                } else {
                    // Storage is far behind: the agent gets an `error` for this `request_id` and
                    // may resend it (a repeated id is applied once), rather than the stream
                    // stalling.
                    self.metrics.storage_busy += 1;
                    let busy = agent::finish(&request_id, Err(crate::app::AppError::Busy));
                    self.send_frame(key, &busy);
                }
            }
        }
    }

    /// Leave the hub and count the stream as closed (`Ws → WsClosing`). Idempotent: acts only
    /// on an open stream. Every way a stream ends passes here exactly once (the reap phase
    /// too), so the hub, the session clock's watchers, presence and the metrics stay in step.
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
        if matches!(state.stream, Stream::Admin | Stream::Session(_)) {
            self.presence_changed(self.time.now());
        }
        // The echo endpoint is for conformance runs only and never counted (API.md metrics).
        if state.stream != Stream::Echo {
            self.metrics.stream_closed(state.stream);
            self.metrics.closed(why);
            self.recent_closes.insert(state.credential, self.now_ms());
        }
        log::debug!("conn {key} stream closed: {}", why.label());
    }

    /// Close an open stream politely: close frame, then wait (≤ 2 s) for the client's.
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
        // Already closing (its close frame is queued) or dead: one close frame only
        // (RFC 6455 §5.5.1: nothing is sent after it).
        if conn.dead.is_some() || !matches!(conn.phase(), Phase::WsClosing) {
            return;
        }
        let (_, first) = conn.send_owned(ws::close_frame(close_code, reason), usize::MAX);
        self.list_for_writing(key, first);
        self.rearm_deadline(key, CLOSE_WAIT_MS);
    }

    /// A stream whose client does not read what it is sent (its outbox went over the cap, API.md
    /// limits): what it was not sent yet is dropped, a half-sent frame is finished, then close
    /// 1013 `Slow consumer` and our FIN → `Draining` (a client that still reads nothing is cut
    /// at its deadline). It reconnects later to a fresh `initial`, so nothing is lost. Before,
    /// the socket was closed at once, so a client reading again found a frame cut in half and
    /// no close frame. Anything that is not an open stream is simply ended.
    pub(super) fn drop_slow_consumer(&mut self, key: usize) {
        if !self.conns.get(key).is_some_and(|c| c.is_live_stream()) {
            return self.mark_dead(key, CloseReason::SlowConsumer);
        }
        self.detach(key, CloseReason::SlowConsumer);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let first =
            conn.replace_unsent_with(ws::close_frame(code::TRY_AGAIN_LATER, "Slow consumer"));
        self.list_for_writing(key, first);
        self.linger_close(key);
    }

    /// Fail the connection (RFC 6455 §7.1.7) after a protocol violation: close frame, then our
    /// FIN at once — no waiting for a close reply from a client that is already misbehaving.
    /// `close_code` is the violation's (1002 protocol, 1007 bad UTF-8, 1009 too big). → `Draining`.
    pub(super) fn fail_stream(&mut self, key: usize, close_code: u16, reason: &str) {
        self.detach(key, CloseReason::Client);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let (_, first) = conn.send_owned(ws::close_frame(close_code, reason), usize::MAX);
        self.list_for_writing(key, first);
        self.linger_close(key);
    }

    /// Watch admin session `session`, which ends at `at` (wall ms), for its open streams:
    /// once per session and end, however many streams it has.
    fn watch_admin_expiry(&mut self, session: Digest32, at: i64, now: Now) {
        if !self.admin_expiries.insert((at, session)) {
            return;
        }
        if self.admin_expiry.is_none_or(|(armed, _)| at < armed) {
            self.arm_admin_expiry(at, now);
        }
    }

    /// Arm `Timer::AdminExpiry` for wall time `at`, in place of the one armed. Timers run on
    /// the monotonic clock, so a wall clock that moves makes it fire early or late: early is
    /// caught in `admin_expiries_due`; late is bounded by the clock's step and, at worst, by
    /// the re-check of admin sessions in storage every 5 s at the latest (`recheck_admin_sessions`), which
    /// also closes the streams of a session that has run out.
    fn arm_admin_expiry(&mut self, at: i64, now: Now) {
        if let Some((_, t)) = self.admin_expiry.take() {
            self.timers.cancel(t);
        }
        let due = now.mono_ms + at.saturating_sub(now.wall_ms).max(0) as u64;
        self.admin_expiry = Some((at, self.timers.insert(due, Timer::AdminExpiry)));
    }

    /// `Timer::AdminExpiry`: every admin stream whose session has ended by the wall clock
    /// closes 1008 `Session expired` (API.md: within 1 s of the expiry); the timer is armed
    /// again for the next end still to come. One walk over the admin streams however many
    /// sessions came due at once (a wall clock that jumped ahead).
    pub(super) fn admin_expiries_due(&mut self) {
        self.admin_expiry = None;
        let now = self.time.now();
        let mut any_due = false;
        while let Some(&(at, _)) = self.admin_expiries.first() {
            if at > now.wall_ms {
                self.arm_admin_expiry(at, now);
                break;
            }
            self.admin_expiries.pop_first();
            any_due = true;
        }
        if !any_due {
            return;
        }
        let ended: Vec<usize> = self
            .hub
            .members(Stream::Admin)
            .filter(|&key| {
                self.conns
                    .get(key)
                    .and_then(|c| c.ws())
                    .and_then(|w| w.session_expires_at)
                    .is_some_and(|end| end <= now.wall_ms)
            })
            .collect();
        for key in ended {
            self.close_stream(key, code::POLICY, "Session expired", CloseReason::Expired);
        }
    }

    /// Storage says these admin sessions are gone (ended elsewhere: `admin revoke`, another
    /// process's logout) or have run out: stop trusting them, and close their streams (1008,
    /// with `Session expired` or `Unauthorized` so the page knows whether to sign in again).
    pub(super) fn admin_sessions_gone(&mut self, gone: &[Digest32], now: Now) {
        for digest in gone {
            let cached = self.app.forget_admin_session(digest);
            let keys = self.hub.admins_with_session(digest);
            let expired = cached.as_ref().is_some_and(|s| s.expires_at <= now.wall_ms);
            let (reason, why) = if expired {
                ("Session expired", CloseReason::Expired)
            } else {
                ("Unauthorized", CloseReason::Unauthorized)
            };
            // Log only what someone did elsewhere; a cached session simply running out with no
            // stream open is routine.
            if !keys.is_empty() || (cached.is_some() && !expired) {
                log::info!(
                    "admin session of {} ended elsewhere ({}): {} stream(s) closed",
                    cached.as_ref().map_or("an admin", |s| s.email.as_str()),
                    if expired {
                        "expired"
                    } else {
                        "revoked or signed out"
                    },
                    keys.len()
                );
            }
            for key in keys {
                self.close_stream(key, code::POLICY, reason, why);
            }
        }
    }

    /// Close every open stream with 1001 (a signal arrived); other connections just go. Streams
    /// already closing keep their close handshake; HTTP connections are dropped at the end of
    /// the turn (a request in flight is lost: the client retries against the next server).
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

    /// Hand one encoded frame to every stream of `stream`; those that cannot take it die. The
    /// frame is shared (`Rc`), so the cost per member is a reference count and a list entry;
    /// the bytes go out in the write phase at the end of the turn.
    pub(super) fn broadcast(&mut self, stream: Stream, frame: &Rc<[u8]>) {
        let d = hub::deliver(
            &mut self.conns,
            self.hub.members(stream),
            frame,
            self.cfg.max_outbox_bytes,
            &mut self.write_list,
        );
        self.delivered(d);
    }

    /// Account for a delivery: close the streams it could not reach, count the messages.
    pub(super) fn delivered(&mut self, d: hub::Delivery) {
        for (key, why) in d.failed {
            match why {
                CloseReason::SlowConsumer => self.drop_slow_consumer(key),
                why => self.mark_dead(key, why),
            }
        }
        self.metrics.ws_messages_sent += d.recipients;
    }

    /// Carry out what applying an event asked for. `started` is when the event's cause
    /// arrived, for the broadcast latency metric.
    pub(super) fn apply_effects(&mut self, effects: &mut Vec<Effect>, now: Now, started: Instant) {
        for effect in effects.drain(..) {
            match effect {
                Effect::Broadcast(stream, frame) => {
                    // A session frame nobody watches is not a broadcast worth timing (most
                    // sessions are not watched); admin and agent ones always count.
                    let watched = self.hub.has_members(stream);
                    self.broadcast(stream, &frame);
                    if watched || !matches!(stream, Stream::Session(_)) {
                        self.metrics
                            .broadcast(stream, started.elapsed().as_secs_f64());
                    }
                }
                // The session ended or its link stopped working: every page showing it closes
                // (1000 after `session_expired`; 1008 when the link is dead, so it does not
                // reconnect).
                Effect::CloseSession {
                    user_id,
                    code,
                    reason,
                    why,
                } => {
                    // Collected first: closing a stream leaves the set being walked.
                    let keys: Vec<usize> = self.hub.members(Stream::Session(user_id)).collect();
                    for key in keys {
                        self.close_stream(key, code, reason, why);
                    }
                }
                // Logout, a removed admin or a changed password: that session's streams close
                // 1008 on this node at once (other nodes find out by their re-check, every second).
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
                // The session clock is the only timer owner for sessions; the application only
                // says what should run (it never sees `Timers`).
                Effect::StartClock {
                    user_id,
                    expires_at,
                } => self.session_clock.start(user_id, expires_at, now),
                Effect::StopClock(user_id) => self.session_clock.stop(user_id),
                Effect::InviteClock {
                    user_id,
                    expires_at: Some(at),
                } => self.session_clock.arm_invite(user_id, at, now),
                Effect::InviteClock {
                    user_id,
                    expires_at: None,
                } => self.session_clock.disarm_invite(user_id),
            }
        }
    }
}

/// `head` (a complete response head, ending in an empty line) with one more header, inserted
/// before the final CRLF.
fn with_header(mut head: Vec<u8>, name: &str, value: &str) -> Vec<u8> {
    let end = head.len().saturating_sub(2);
    head.splice(end..end, format!("{name}: {value}\r\n").into_bytes());
    head
}

/// The resume point a handshake asks for: `Ok(None)` when it asks for none, `Err(())` when its
/// `epoch`/`since` are malformed (it gets a fresh `initial`, and counts as a resume that failed).
/// An epoch longer than 64 bytes cannot be ours (ours are short random strings) and is not
/// worth comparing.
pub(super) fn resume_point(req: &Request) -> Result<Option<ResumePoint>, ()> {
    let (epoch, since) = (req.query_param("epoch"), req.query_param("since"));
    if epoch.is_none() && since.is_none() {
        return Ok(None);
    }
    let since = since.and_then(|s| s.parse::<u64>().ok()).ok_or(())?;
    let epoch = epoch.filter(|e| !e.is_empty() && e.len() <= 64).ok_or(())?;
    Ok(Some(ResumePoint { epoch, since }))
}
