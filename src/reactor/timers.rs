//! What fires on time: connection deadlines, heartbeat slices, housekeeping, the session clock
//! (expiry and `time_update`), and shutdown on a signal.
//!
//! Two timer sets wait: the reactor's own (`Server::timers`, payload `Timer`) and the session
//! clock's (`crate::session_clock`). Both are clock-free ordered maps; `fire_timers` passes them
//! the monotonic `now` once per turn and handles what came due in deadline order. A timer
//! never fires early; late by however long the turn's other work took is fine for every
//! deadline here.
//!
//! Rules kept here:
//! * **One deadline per connection** (`Conn::deadline`), whose meaning follows the phase:
//!   request complete (10 s), close handshake or lingering close (2 s); an open stream has
//!   none. A deadline that fires for a connection that moved on is looked at by phase, and a
//!   stale one (older generation) finds nobody.
//! * **Admin session ends are watched per session**, not per stream: one `Timer::AdminExpiry`
//!   armed for the earliest end among sessions with open streams (`streams.rs`).
//! * **Periodic work re-arms itself** at the end of each firing (heartbeat, housekeeping, the
//!   admin re-check, drain), so a slow turn delays the next firing rather than bunching them.
//! * **Storage work from a timer is best effort** when it can wait (housekeeping, the re-check:
//!   a full queue skips one round) and retried when it cannot (expiries: a second later), so a
//!   timer never blocks on a full storage queue.

use super::*;
use crate::http::Response;

/// Draining closes a batch of streams this often (ms).
const DRAIN_TICK_MS: u64 = 100;

/// A drain in progress (`--drain-secs`): the streams open at the signal close evenly over the
/// drain time (API.md: "spread evenly over N seconds"), the `k`-th of `total` at
/// `from + k · ms / total` (monotonic ms), checked every `DRAIN_TICK_MS` or more rarely when
/// there are fewer streams than ticks; then the node shuts down.
pub(super) struct Drain {
    from: u64,
    ms: u64,
    total: usize,
    closed: usize,
}

impl Drain {
    /// How many streams should be closed by `now` (the first at once).
    fn due(&self, now: u64) -> usize {
        let elapsed = now.saturating_sub(self.from).min(self.ms);
        let due = (self.total as u128 * elapsed as u128 / self.ms.max(1) as u128) as usize + 1;
        due.min(self.total)
    }

    /// When the next stream falls due after `now`.
    fn next_tick(&self, now: u64) -> u64 {
        let next = (self.closed as u128 * self.ms as u128).div_ceil(self.total.max(1) as u128);
        (self.from + next as u64).max(now + DRAIN_TICK_MS.min(self.ms))
    }
}
use crate::session_clock::Due;

impl Server {
    /// Phase 4 of the turn: everything whose deadline has passed, reactor timers first, then the
    /// session clock's.
    pub(super) fn fire_timers(&mut self) {
        let mut fired = Vec::new();
        self.timers.advance(self.now_ms(), &mut fired);
        for timer in fired {
            match timer {
                Timer::Conn { key, gen } => self.on_deadline(key, gen),
                Timer::Heartbeat => self.heartbeat(),
                Timer::Housekeeping => self.housekeeping(),
                Timer::AdminRecheck => self.recheck_admin_sessions(),
                Timer::AdminExpiry => self.admin_expiries_due(),
                Timer::Presence => self.tell_presence(),
                Timer::Cluster => self.cluster_tick(),
                Timer::Drain => self.drain_tick(),
                // The grace period is over: whoever has not taken their close frame is dropped,
                // so a stuck client cannot keep the process from exiting.
                Timer::ShutdownDeadline => {
                    let keys: Vec<usize> = self.conns.iter().map(|(k, _)| k).collect();
                    for key in keys {
                        self.mark_dead(key, CloseReason::Shutdown);
                    }
                }
                Timer::ResumeAccept => {
                    self.accept_paused = false;
                    self.accept();
                }
            }
        }
        self.fire_session_clock();
    }

    /// Expiries and `time_update` ticks that came due. A tick is one frame built once for the
    /// session and shared by all of its streams; an expiry only asks storage — what follows
    /// (frames, closes) comes from the stored event, like any other change.
    fn fire_session_clock(&mut self) {
        let now = self.time.now();
        let mut due = Vec::new();
        self.session_clock.advance(now, &mut due);
        for d in due {
            match d {
                Due::TimeUpdate(user_id) => {
                    if let Some(frame) = self.app.time_update_frame(user_id, now.wall_ms) {
                        self.broadcast(Stream::Session(user_id), &frame);
                    }
                }
                // Recording runs on the storage thread; its event closes the session's
                // streams and tells admins and agents. A full queue means: try again shortly.
                Due::Expire(user_id) => {
                    let cmd = Command::ExpireSession { id: user_id };
                    if !self
                        .storage
                        .submit(jobs::Ticket::SessionExpiry(user_id), cmd)
                    {
                        self.session_clock.retry_expiry(user_id, now);
                    }
                }
                Due::InviteExpired(user_id) => {
                    let cmd = Command::ExpireInvite { id: user_id };
                    if !self
                        .storage
                        .submit(jobs::Ticket::InviteExpiry(user_id), cmd)
                    {
                        self.session_clock.retry_invite(user_id, now);
                    }
                }
            }
        }
    }

    /// Connection `key`.`gen`'s deadline passed: what that means depends on its phase.
    fn on_deadline(&mut self, key: usize, gen: u32) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.gen == gen) else {
            return;
        };
        conn.deadline = None;
        match conn.phase() {
            Phase::Http if conn.rbuf.is_empty() && conn.served && conn.out.is_empty() => {
                // An idle keep-alive connection: close quietly.
                self.mark_dead(key, CloseReason::Client);
            }
            Phase::Http => {
                log::debug!("conn {key} request timeout");
                self.respond(
                    key,
                    Response::error(408, "request not complete within 10 s")
                        .closing()
                        .not_to_be_stored(),
                    false,
                );
            }
            // The worker answers within milliseconds; a deadline here means a stuck queue.
            Phase::AwaitingJob { .. } => self.rearm_deadline(key, REQUEST_TIMEOUT_MS),
            // An open stream has no deadline (an admin session's end is watched per session:
            // `Timer::AdminExpiry`), so none can be due.
            Phase::Ws(_) => {}
            Phase::WsClosing | Phase::Draining { .. } => self.mark_dead(key, CloseReason::Client),
        }
    }

    /// One slice of the heartbeat: ping this slice's streams, drop those silent for two
    /// intervals. Slicing spreads the pings (and their writes) over the whole interval.
    fn heartbeat(&mut self) {
        let now = self.now_ms();
        let silent_after = 2 * self.cfg.heartbeat.as_millis() as u64;
        let slice = self.heartbeat_slice;
        self.heartbeat_slice = (slice + 1) % HEARTBEAT_SLICES;
        // Every tenth slab key, starting at this slice: a slab key stays put for its
        // connection's life, so each stream is visited exactly once per interval.
        let mut key = slice;
        let end = self.conns.capacity();
        let mut sent = 0;
        while key < end {
            if let Some(conn) = self.conns.get_mut(key) {
                let pinged =
                    conn.is_live_stream() && conn.ws().is_some_and(|w| w.stream.has_heartbeat());
                if pinged {
                    // Two intervals silent (API.md): a dead peer's kernel may accept our pings
                    // for minutes, so failed writes alone would never find it.
                    if now.saturating_sub(conn.last_seen_ms) > silent_after {
                        log::info!("conn {key} silent for two heartbeats: closing");
                        self.mark_dead(key, CloseReason::Heartbeat);
                    } else {
                        // The same pre-framed ping for everyone, under the outbox cap: a client
                        // that does not read its pings is a slow consumer like any other.
                        let (r, first) =
                            conn.send_shared(&self.ping_frame, self.cfg.max_outbox_bytes);
                        if first {
                            self.write_list.push(key);
                        }
                        match r {
                            crate::conn::Sent::Ok => sent += 1,
                            _ => self.drop_slow_consumer(key),
                        }
                    }
                }
            }
            key += HEARTBEAT_SLICES;
        }
        self.metrics.ws_messages_sent += sent;
        let at = now + self.heartbeat_slice_ms();
        self.timers.insert(at, Timer::Heartbeat);
    }

    /// Every 10 s: forget old reconnect bookkeeping. Every minute: trim the log in storage to
    /// what retention requires, and prune expired admin sessions.
    fn housekeeping(&mut self) {
        let now = self.time.now();
        self.recent_closes
            .retain(|_, t| now.mono_ms.saturating_sub(*t) < RECONNECT_WINDOW_MS);
        self.housekeeping_round += 1;
        if self.housekeeping_round.is_multiple_of(6) {
            // Best effort: a full queue skips one round.
            self.storage
                .submit(jobs::Ticket::Housekeeping, Command::Maintain);
        }
        self.timers
            .insert(now.mono_ms + HOUSEKEEPING_MS, Timer::Housekeeping);
    }

    /// Every second: ask storage which of the admin sessions this process trusts — the cache
    /// and the sessions of open admin streams — are gone, so a session ended elsewhere (`admin
    /// revoke`, another process) stops working within about a second (it took up to 5 s, while
    /// the revoked cookie still wrote). One read, however many sessions, and none at all when
    /// nothing else wrote to the database (`Command::AdminSessionsGone`).
    fn recheck_admin_sessions(&mut self) {
        let mut tokens: Vec<Digest32> = self.app.cached_admin_sessions().copied().collect();
        tokens.extend(self.hub.admin_sessions());
        tokens.sort_unstable();
        tokens.dedup();
        if !tokens.is_empty() {
            // Best effort: a full queue skips one round.
            self.admin_recheck_round += 1;
            let always = self.admin_recheck_round.is_multiple_of(5);
            self.storage.submit(
                jobs::Ticket::AdminRecheck,
                Command::AdminSessionsGone { tokens, always },
            );
        }
        let at = self.now_ms() + ADMIN_RECHECK_MS;
        self.timers.insert(at, Timer::AdminRecheck);
    }

    // ------------------------------------------------------------------ shutdown

    /// SIGINT/SIGTERM. Without `--drain-secs`: stop accepting, close every stream with 1001,
    /// give clients a grace period to take their close frames, then exit once all are gone.
    /// With it: keep the listener (a load balancer may still send requests until it sees
    /// `/readyz` fail), answer new requests 503, and close the streams in batches spread over
    /// the drain time, so their reconnects reach the other nodes gradually.
    pub(super) fn on_signal(&mut self) {
        // A second signal during shutdown or drain changes nothing (the first one's deadline
        // still ends it); reading `pending` drains the self-pipe either way.
        let got: Vec<i32> = self.signals.pending().collect();
        if got.is_empty() || self.shutting_down || self.draining.is_some() {
            return;
        }
        let drain_ms = self.cfg.drain.as_millis() as u64;
        if drain_ms == 0 {
            return self.shut_down();
        }
        let streams = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_live_stream())
            .count();
        // Evenly spread: the streams open now. Streams opened later get 503 at the handshake,
        // so the count does not grow.
        log::info!("signal received: draining {streams} streams over {drain_ms} ms");
        self.draining = Some(Drain {
            from: self.now_ms(),
            ms: drain_ms,
            total: streams,
            closed: 0,
        });
        self.timers.insert(self.now_ms(), Timer::Drain);
    }

    /// Close the streams due by now; when the drain time is up, shut down.
    fn drain_tick(&mut self) {
        let now = self.now_ms();
        let Some(drain) = self.draining.as_mut() else {
            return;
        };
        if now >= drain.from + drain.ms {
            return self.shut_down();
        }
        let due = drain.due(now).saturating_sub(drain.closed);
        drain.closed += due;
        let next = drain.next_tick(now).min(drain.from + drain.ms);
        let batch: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, c)| c.is_live_stream())
            .map(|(k, _)| k)
            .take(due)
            .collect();
        for key in batch {
            self.close_stream(
                key,
                code::GOING_AWAY,
                "Server shutting down",
                CloseReason::Shutdown,
            );
        }
        self.timers.insert(next, Timer::Drain);
    }

    /// Stop accepting, close what is left, and exit once every connection is gone (`run`
    /// returns when the slab is empty; `ShutdownDeadline` empties it after the grace period).
    fn shut_down(&mut self) {
        log::info!("shutting down: closing {} connections", self.conns.len());
        self.shutting_down = true;
        let _ = self.poll.registry().deregister(&mut self.listener);
        self.close_all_for_shutdown();
        let at = self.now_ms() + SHUTDOWN_GRACE_MS;
        self.timers.insert(at, Timer::ShutdownDeadline);
    }
}

use crate::hub::Stream;

#[cfg(test)]
mod tests {
    use super::Drain;

    /// The close times of `total` streams drained over `ms`, ticking as `drain_tick` does.
    fn close_times(total: usize, ms: u64) -> Vec<u64> {
        let mut d = Drain {
            from: 1_000,
            ms,
            total,
            closed: 0,
        };
        let mut now = d.from;
        let mut times = Vec::new();
        while now < d.from + ms {
            let due = d.due(now).saturating_sub(d.closed);
            d.closed += due;
            times.extend(std::iter::repeat_n(now - d.from, due));
            now = d.next_tick(now).min(d.from + ms);
        }
        // The drain's end shuts down: whatever is left closes then.
        times.extend(std::iter::repeat_n(ms, total - d.closed));
        times
    }

    #[test]
    fn a_few_streams_close_spread_over_the_whole_drain() {
        // 12 streams over 4 s closed 100 ms apart (all within 1.1 s) before.
        let t = close_times(12, 4_000);
        assert_eq!(t.len(), 12, "{t:?}");
        assert_eq!(t[0], 0);
        for w in t.windows(2) {
            assert!((330..=340).contains(&(w[1] - w[0])), "{t:?}");
        }
        assert!(t[11] >= 3_600, "{t:?}");
    }

    #[test]
    fn many_streams_close_in_even_batches_every_tick() {
        let t = close_times(10_000, 4_000);
        assert_eq!(t.len(), 10_000);
        // 40 ticks of 250 (the first at once), none later than the drain.
        let per_tick = t.iter().filter(|&&x| x == 0).count();
        assert!((1..=251).contains(&per_tick), "{per_tick}");
        assert!(*t.last().unwrap() <= 4_000);
        // The end's share is one tick's, not a pile.
        assert!(t.iter().filter(|&&x| x == 4_000).count() <= 251);
        let ticks: std::collections::BTreeSet<u64> = t.iter().copied().collect();
        assert!(ticks.len() >= 39, "{} ticks", ticks.len());
    }

    #[test]
    fn no_streams_still_waits_out_the_drain() {
        assert!(close_times(0, 2_000).is_empty());
    }
}
