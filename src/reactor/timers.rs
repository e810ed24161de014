//! What the timers fire: connection deadlines, heartbeat slices, `time_update`, session
//! expiry, housekeeping — and shutdown on a signal.

use super::*;

impl Server {
    // ------------------------------------------------------------------ timers

    pub(super) fn fire_timers(&mut self) {
        let mut fired = Vec::new();
        self.wheel.advance(self.now_ms(), &mut fired);
        for timer in fired {
            match timer {
                Timer::Conn { key, gen } => self.on_deadline(key, gen),
                Timer::SessionTick(user_id) => {
                    if let Some(subs) = self.hub.sessions.get_mut(&user_id) {
                        subs.tick = None;
                    }
                    if let Some(frame) = self.app.time_update_frame(user_id, app::wall_ms()) {
                        let mut effects =
                            vec![Effect::Broadcast(Audience::Session(user_id), frame)];
                        self.apply_effects(&mut effects, Instant::now());
                    }
                    self.ensure_session_tick(user_id);
                }
                Timer::SessionExpiry(user_id) => {
                    self.expiry_timers.remove(&user_id);
                    let started = Instant::now();
                    let mut effects = std::mem::take(&mut self.effects);
                    if let Err(e) = self.app.expire_session(user_id, &mut effects) {
                        log::error!(
                            "session {user_id} could not be expired: {e:?}; retrying in 1 s"
                        );
                        let t = self
                            .wheel
                            .insert(self.now_ms() + 1000, Timer::SessionExpiry(user_id));
                        self.expiry_timers.insert(user_id, t);
                    }
                    self.apply_effects(&mut effects, started);
                    self.effects = effects;
                }
                Timer::Heartbeat => self.heartbeat(),
                Timer::Housekeeping => self.housekeeping(),
                Timer::ShutdownDeadline => {
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.kill(key, CloseReason::Shutdown);
                    }
                }
                Timer::ResumeAccept => {
                    self.accept_paused = false;
                    self.accept();
                }
            }
        }
    }

    pub(super) fn on_deadline(&mut self, key: usize, gen: u32) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.gen == gen) else {
            return;
        };
        conn.deadline = None;
        match conn.phase {
            Phase::Http if conn.rbuf.is_empty() && conn.served && conn.out.is_empty() => {
                // An idle keep-alive connection: close quietly.
                self.kill(key, CloseReason::Client);
            }
            Phase::Http => {
                log::debug!("conn {key} request timeout");
                self.respond(
                    key,
                    Response::error(408, "request not complete within 10 s").closing(),
                    false,
                );
            }
            // The worker answers within milliseconds; a deadline here means a stuck queue.
            Phase::AwaitingWorker { .. } => self.rearm_deadline(key, REQUEST_TIMEOUT_MS),
            Phase::Ws(_) => {}
            Phase::WsClosing | Phase::Draining { .. } => self.kill(key, CloseReason::Client),
        }
    }

    /// One slice of the heartbeat: ping this slice's streams, drop those silent for two intervals.
    pub(super) fn heartbeat(&mut self) {
        let now = self.now_ms();
        let silent_after = 2 * self.cfg.heartbeat.as_millis() as u64;
        let slice = self.heartbeat_slice;
        self.heartbeat_slice = (slice + 1) % HEARTBEAT_SLICES;
        let mut key = slice;
        let end = self.conns.capacity();
        let (mut sent, mut bytes) = (0, 0);
        while key < end {
            if let Some(conn) = self.conns.get_mut(key) {
                let pinged = conn.is_live_stream()
                    && conn
                        .ws()
                        .is_some_and(|w| !matches!(w.role, StreamRole::Echo));
                if pinged {
                    if now.saturating_sub(conn.last_seen_ms) > silent_after {
                        log::info!("conn {key} silent for two heartbeats: closing");
                        self.kill(key, CloseReason::Heartbeat);
                    } else {
                        let (r, w) = conn.send_shared(&self.ping_frame, self.cfg.max_outbox_bytes);
                        bytes += w as u64;
                        match r {
                            Sent::Ok => sent += 1,
                            Sent::Overflow => self.kill(key, CloseReason::SlowConsumer),
                            Sent::Failed => self.kill(key, CloseReason::WriteError),
                        }
                    }
                }
            }
            key += HEARTBEAT_SLICES;
        }
        self.metrics.ws_messages_sent += sent;
        self.metrics.ws_bytes_sent += bytes;
        let at = now + self.heartbeat_slice_ms();
        self.wheel.insert(at, Timer::Heartbeat);
    }

    pub(super) fn housekeeping(&mut self) {
        let now = self.now_ms();
        self.recent_closes
            .retain(|_, t| now.saturating_sub(*t) < RECONNECT_WINDOW_MS);
        self.wheel
            .insert(now + HOUSEKEEPING_MS, Timer::Housekeeping);
    }

    // ------------------------------------------------------------------ shutdown

    pub(super) fn on_signal(&mut self) {
        let got: Vec<i32> = self.signals.pending().collect();
        if got.is_empty() || self.shutting_down {
            return;
        }
        log::info!("signal received: closing {} connections", self.conns.len());
        self.shutting_down = true;
        let _ = self.poll.registry().deregister(&mut self.listener);
        let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
        for key in keys {
            match self.conns.get(key).map(|c| &c.phase) {
                Some(Phase::Ws(_)) => self.close_stream(
                    key,
                    code::GOING_AWAY,
                    "Server shutting down",
                    CloseReason::Shutdown,
                ),
                Some(Phase::WsClosing | Phase::Draining { .. }) => {}
                _ => self.kill(key, CloseReason::Shutdown),
            }
        }
        let at = self.now_ms() + SHUTDOWN_GRACE_MS;
        self.wheel.insert(at, Timer::ShutdownDeadline);
    }
}
