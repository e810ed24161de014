//! Jobs off the loop and their answers: storage commands (the storage thread) and password
//! checks (the password pool), both waking the loop through the `WAKER` token.
//!
//! A request that needs a job waits in `AwaitingJob` with its `Pending` note; when the answer
//! comes, `api::finish` builds the reply, which may ask for the next job. An answer for a
//! connection that left (the slot is empty or has a new generation) is dropped — but a stored
//! event is applied whoever asked for it, before anything else is done with the answer, so the
//! view and every stream follow storage in order.
//!
//! The threads, their queues and what a full queue means:
//! * storage (`crate::storage`): 4,096 commands, each with a 900 ms deadline; full → 503
//!   `Retry-After` for a request, an `error` for an agent message, a retry for an expiry;
//! * the password pool (`crate::worker`): 8 jobs per client address, 256 in all; full → 503;
//! * the OIDC thread (`crate::oidc`): 64 jobs; full → 503.
//!
//! No queue is ever waited on: the loop must keep serving heartbeats and streams while storage
//! is locked by a backup or PostgreSQL is unreachable (API.md "Storage busy").
//!
//! Order of effects for a stored change: the event is applied and its broadcasts queued first,
//! then the answer to whoever asked is queued; the write phase hands them to the kernel in
//! that order. So the view a client reads next already holds its own write, and the broadcast
//! of a change never leaves after the answer to the request that made it.

use super::*;
use crate::agent;
use crate::app::{AppError, Event, Outcome};
use crate::http::{Request, Response};
use crate::hub::Stream;
use crate::worker::Requester;
use serde_json::Value;

/// Who is waiting for a storage command, and for what. Every variant that names a connection
/// carries its generation: the answer may come after the client left and its slab key was
/// reused.
#[derive(Debug)]
pub enum Ticket {
    /// An HTTP request (or a stream handshake) of connection `key`.`gen`, in `AwaitingJob`.
    Request {
        key: usize,
        gen: u32,
        started: Instant,
        /// A broadcasting write, counted in flight by admission control until it is answered.
        write: bool,
    },
    /// A message of the agent stream `key`.`gen`; answered with an ack or an error.
    Agent {
        key: usize,
        gen: u32,
        request_id: Value,
        started: Instant,
    },
    /// A resuming stream's missed events, read from storage; it holds what is broadcast
    /// meanwhile.
    Replay {
        key: usize,
        gen: u32,
        stream: Stream,
        /// The client has events up to this number…
        since: u64,
        /// …and storage was asked for the ones up to this (the head when it asked).
        to: u64,
    },
    /// The session clock of this user ran out.
    SessionExpiry(i64),
    /// The unused invite link of this user ran out.
    InviteExpiry(i64),
    /// Trimming the log and pruning sessions.
    Housekeeping,
    /// The periodic re-check of trusted admin sessions (`Timer::AdminRecheck`).
    AdminRecheck,
    /// A fresh view for a node that must resynchronise (cluster).
    Snapshot,
    /// The janitor's lease and sweep (cluster).
    Janitor,
    /// This node's share of presence, and everyone's (cluster).
    SharePresence,
    /// Taking back a sign-in attempt counted in the database (cluster).
    Uncount,
}

impl Server {
    /// The per-request context the API handlers take: borrows of the view, the hub, the limiter
    /// and the metrics, plus the facts of this request. `now` is the wall clock, read once by
    /// the caller (the handlers never read a clock).
    pub(super) fn ctx(&mut self, client_ip: IpAddr, now: i64) -> Ctx<'_> {
        Ctx {
            app: &mut self.app,
            hub: &self.hub,
            others_presence: self
                .cluster
                .as_ref()
                .and_then(|c| c.others_presence.as_ref()),
            now,
            looked_up: false,
            client_ip,
            secure_cookies: self.public_url.starts_with("https://"),
            limiter: &mut self.limiter,
            device: &self.device,
            metrics: &mut self.metrics,
            oidc: self.oidc.as_ref(),
            password_login: self.cfg.password_login,
            cluster: self.cluster.is_some(),
        }
    }

    /// Carry out a reply for connection `key`: answer it, or hand its job over and wait.
    /// `started` is when the request arrived, for the latency of the broadcast it may cause.
    pub(super) fn drive_reply(
        &mut self,
        key: usize,
        reply: Reply,
        keep_alive: bool,
        started: Instant,
    ) {
        match reply {
            Reply::Now(resp) => self.respond(key, resp, keep_alive),
            Reply::Later(Job::Store(cmd), pending) => {
                self.await_storage(key, cmd, pending, keep_alive, started)
            }
            Reply::Later(Job::Cluster(cmd), pending) => {
                self.await_storage(key, cmd, pending, keep_alive, started)
            }
            Reply::Later(Job::Hash(job), pending) => {
                // Queued by the client's address: the pool serves addresses in turn.
                let Some(ip) = self.conns.get(key).map(|c| addr::limit_key(c.client_ip)) else {
                    return;
                };
                self.await_thread(key, pending, keep_alive, started, |s, who| {
                    s.worker.submit(ip, who, job)
                })
            }
            // The provider's calls (discovery, code exchange) take network round trips: never
            // on the loop.
            Reply::Later(Job::Oidc(job), pending) => {
                self.await_thread(key, pending, keep_alive, started, |s, who| {
                    s.oidc.as_ref().is_some_and(|o| o.submit(who, job))
                })
            }
        }
    }

    /// Hand a storage command to the storage thread; the connection waits in `AwaitingJob`
    /// (its further input stays unread, so pipelined answers keep their order). A full queue
    /// answers 503 at once: storage is far behind, and queuing without end would only turn a
    /// slow database into a memory problem.
    pub(super) fn await_storage(
        &mut self,
        key: usize,
        cmd: impl Into<crate::storage::Work>,
        pending: Pending,
        keep_alive: bool,
        started: Instant,
    ) {
        let Some(gen) = self.conns.get(key).map(|c| c.gen) else {
            return;
        };
        let cmd: crate::storage::Work = cmd.into();
        let write = cmd.is_broadcast_write();
        if write && self.overloaded(key) {
            return self.respond(key, overloaded(), keep_alive);
        }
        let ticket = Ticket::Request {
            key,
            gen,
            started,
            write,
        };
        if !self
            .storage
            .submit_by(ticket, cmd, crate::storage::deadline_for(started))
        {
            // The queue is full: storage is far behind. Say so rather than queue without end.
            self.metrics.storage_busy += 1;
            return self.respond(key, api::app_error(AppError::Busy), keep_alive);
        }
        if write {
            self.admission.submitted();
        }
        if let Some(conn) = self.conns.get_mut(key) {
            conn.enter(Phase::AwaitingJob {
                keep_alive,
                pending: Box::new(pending),
            });
        }
    }

    /// Whether a broadcasting write from connection `key` must be refused now because it would
    /// reach the streams later than the bound (`admission.rs`); counts the refusal.
    pub(super) fn overloaded(&mut self, key: usize) -> bool {
        let now = self.now_ms();
        let waited = self
            .conns
            .get(key)
            .and_then(|c| c.input_since_ms)
            .map_or(0, |since| now.saturating_sub(since));
        if !self.admission.over(&self.conns, now, waited) {
            return false;
        }
        self.metrics.overload_refusals += 1;
        true
    }

    /// Hand a job to a helper thread (`submit` queues it; `false` when its queue is full): the
    /// password pool or the OIDC thread. The connection waits in `AwaitingJob`.
    fn await_thread(
        &mut self,
        key: usize,
        pending: Pending,
        keep_alive: bool,
        started: Instant,
        submit: impl FnOnce(&Self, Requester) -> bool,
    ) {
        let Some(gen) = self.conns.get(key).map(|c| c.gen) else {
            return;
        };
        if submit(self, Requester { key, gen, started }) {
            if let Some(conn) = self.conns.get_mut(key) {
                conn.enter(Phase::AwaitingJob {
                    keep_alive,
                    pending: Box::new(pending),
                });
            }
        } else {
            let Some(client_ip) = self.conns.get(key).map(|c| c.client_ip) else {
                return;
            };
            let now = self.time.now().wall_ms;
            let busy = api::admin::not_queued(&mut self.ctx(client_ip, now), pending);
            self.respond(key, busy, keep_alive);
        }
    }

    /// The `WAKER` token fired: pick up every answer of every helper thread. One waker serves
    /// them all (mio allows one per poll), so each is asked; an answer that raced the wake-up
    /// is picked up by the next one. Collected before handling, since handling borrows `self`.
    pub(super) fn on_jobs_done(&mut self) {
        let hashed: Vec<_> = self.worker.finished().collect();
        for (who, outcome) in hashed {
            self.job_done(who.key, who.gen, Done::Hashed(outcome), who.started);
        }
        let signed: Vec<_> = self
            .oidc
            .as_mut()
            .map(|o| o.take_answers())
            .unwrap_or_default();
        for (who, outcome) in signed {
            self.job_done(who.key, who.gen, Done::Oidc(outcome), who.started);
        }
        let stored: Vec<_> = self.storage.finished().collect();
        for (ticket, result) in stored {
            self.storage_done(ticket, result);
        }
    }

    /// A storage answer: its event goes to the intake first (applied now if it is the next
    /// number); the answer itself waits until its event is applied, so whoever asked reads
    /// their own write — also when, in a cluster, events of other nodes came before it.
    fn storage_done(&mut self, ticket: Ticket, result: Result<Outcome, AppError>) {
        if matches!(
            ticket,
            Ticket::Request { write: true, .. } | Ticket::Agent { .. }
        ) {
            self.admission.answered();
        }
        let started = match &ticket {
            Ticket::Request { started, .. } | Ticket::Agent { started, .. } => *started,
            _ => Instant::now(),
        };
        match &result {
            Ok(Outcome::Changed(Event::User(logged))) => {
                let seq = logged.seq;
                self.offer_event(logged.clone(), started);
                if seq > self.app.head() {
                    self.stalled.push((seq, ticket, result));
                    return;
                }
            }
            // Admin-session events take no log number (admin streams must not see a gap for
            // them): applied at once, in the order their commands finished.
            Ok(Outcome::Changed(
                event @ (Event::AdminSessionEnded(_) | Event::AdminSessionsEnded(_)),
            )) => {
                self.apply_event(event, self.time.now(), started);
            }
            // A session stream's handshake on a node that has not applied the activation yet
            // (cluster): it waits, like an answer, until the view reaches the head storage saw
            // (bounded: `cluster_tick` lets it go after `HANDSHAKE_WAIT_MS`).
            Ok(Outcome::SessionAt { live: true, head }) if *head > self.app.head() => {
                self.stalled.push((*head, ticket, result));
                return;
            }
            _ => {}
        }
        self.answer(ticket, result);
    }

    /// Carry a storage answer to whoever asked (its event, if any, is applied).
    pub(super) fn answer(&mut self, ticket: Ticket, result: Result<Outcome, AppError>) {
        let now = self.time.now();
        if matches!(result, Err(AppError::Busy))
            && matches!(ticket, Ticket::Request { .. } | Ticket::Agent { .. })
        {
            self.metrics.storage_busy += 1;
        }
        match ticket {
            Ticket::Request {
                key, gen, started, ..
            } => self.job_done(key, gen, Done::Stored(result), started),
            // The ack goes only to the stream that sent the message, and only while it is
            // open: an agent that reconnected resends by `request_id` and is acked then.
            Ticket::Agent {
                key,
                gen,
                request_id,
                ..
            } => {
                if self
                    .conns
                    .get(key)
                    .is_some_and(|c| c.gen == gen && c.is_live_stream())
                {
                    let reply = agent::finish(&request_id, result);
                    self.send_frame(key, &reply);
                }
            }
            Ticket::SessionExpiry(user_id) => match result {
                Ok(Outcome::NotYet { expires_at }) => {
                    // The timer fired early (the wall clock moved): wait for the stored end.
                    self.session_clock.start(user_id, expires_at, now);
                }
                Ok(Outcome::Nothing) => self.session_clock.stop(user_id),
                Err(e) => {
                    log::warn!("session {user_id} could not be expired ({e:?}); retrying in 1 s");
                    self.session_clock.retry_expiry(user_id, now);
                }
                Ok(_) => {}
            },
            Ticket::InviteExpiry(user_id) => match result {
                Ok(Outcome::NotYet { expires_at }) => {
                    self.session_clock.arm_invite(user_id, expires_at, now)
                }
                Ok(Outcome::Nothing) => self.session_clock.disarm_invite(user_id),
                Err(e) => {
                    log::warn!("invite {user_id} expiry not recorded ({e:?}); retrying in 1 s");
                    self.session_clock.retry_invite(user_id, now);
                }
                Ok(_) => {}
            },
            Ticket::Replay {
                key,
                gen,
                stream,
                since,
                to,
            } => self.replayed(key, gen, stream, (since, to), result, now),
            // Storage trimmed its log: resumes from before `stored_from` get a fresh `initial`.
            Ticket::Housekeeping => match result {
                Ok(Outcome::Trimmed { stored_from }) => self.app.stored_from(stored_from),
                Ok(_) => {}
                Err(e) => log::warn!("housekeeping in storage failed: {e:?}"),
            },
            Ticket::AdminRecheck => match result {
                Ok(Outcome::SessionsGone(gone)) => self.admin_sessions_gone(&gone, now),
                Ok(_) => {}
                // Storage could not answer: nothing is known to be gone, so nothing closes
                // (a credential that cannot be checked is never refused as wrong).
                Err(e) => log::warn!("admin session re-check failed: {e:?}"),
            },
            // Cluster work: see `cluster.rs`.
            Ticket::Snapshot => self.resynced(result),
            Ticket::Janitor => self.swept(result),
            Ticket::SharePresence => self.presence_shared(result),
            Ticket::Uncount => {
                if let Err(e) = result {
                    // The attempt stays counted until its window ends: errs on the safe side.
                    log::warn!("a sign-in attempt could not be uncounted: {e:?}");
                }
            }
        }
    }

    /// Apply a stored event to the view and carry out its effects (the broadcasts are queued
    /// now and written at the turn's end). User-list events come here only through the intake,
    /// in number order. The effect buffer is reused across events (no allocation per change).
    pub(super) fn apply_event(&mut self, event: &Event, now: Now, started: Instant) {
        let mut effects = std::mem::take(&mut self.effects);
        self.admission.event_applied();
        if self.app.apply(event, &mut effects) {
            self.apply_effects(&mut effects, now, started);
        } else {
            // The intake hands over only `head + 1`, so this is a bug, not a client's doing;
            // the view is unchanged (apply refuses it whole).
            log::error!(
                "event log out of step at {}: an event that is not the next number was applied",
                self.app.head()
            );
        }
        effects.clear();
        self.effects = effects;
    }

    /// The events a resuming stream missed came back from storage: send `resumed`, them, and
    /// what was held meanwhile. If storage could not give every one of them (busy, or trimmed
    /// in between), a fresh `initial` replaces it all — it already reflects the held events.
    fn replayed(
        &mut self,
        key: usize,
        gen: u32,
        stream: Stream,
        (since, to): (u64, u64),
        result: Result<Outcome, AppError>,
        now: Now,
    ) {
        let live = self
            .conns
            .get(key)
            .is_some_and(|c| c.gen == gen && c.is_live_stream() && c.is_holding());
        if !live {
            return;
        }
        // Complete means: exactly the numbers `since + 1 ..= to`, in order. Anything less (a
        // trim raced the read) would be a replay with a hole, which the contract forbids.
        let complete = match &result {
            Ok(Outcome::Events(events))
                if events.len() as u64 == to - since
                    && events.iter().zip(since + 1..).all(|(e, n)| e.seq == n) =>
            {
                Some(events)
            }
            _ => None,
        };
        let (frames, resumed) = match complete {
            Some(events) => (self.app.resumed_from_storage(stream, since, events), true),
            None => (vec![self.app.initial(stream, now.wall_ms)], false),
        };
        self.metrics.resume(stream, resumed);
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        // A replay is followed by what was held while storage read it; a fresh `initial`
        // already contains those changes, so the held frames are dropped with it.
        let (_, first) = conn.release_held(frames, resumed);
        self.list_for_writing(key, first);
        if !resumed && stream == Stream::Admin {
            // The held presence frame went with the rest: send the current one.
            self.send_presence(key, now);
        }
    }

    /// A job of the request waiting on connection `key`.`gen` is done: finish it (`AwaitingJob →
    /// Http`), then serve whatever the client pipelined behind it (`resume`).
    fn job_done(&mut self, key: usize, gen: u32, done: Done, started: Instant) {
        let Some(conn) = self.conns.get_mut(key).filter(|c| c.gen == gen) else {
            return; // the client left while its job ran
        };
        // A connection waits for one job at a time; an answer for one that is not waiting (it
        // is closing, say) has nobody to go to.
        if !matches!(conn.phase(), Phase::AwaitingJob { .. }) {
            return;
        }
        let Phase::AwaitingJob {
            keep_alive,
            pending,
        } = conn.enter(Phase::Http)
        else {
            return;
        };
        let client_ip = conn.client_ip;
        // A client that half-closed after its request gets the answer, then the close.
        let half_closed = conn.input_paused && conn.out.is_empty();
        let keep_alive = keep_alive && !half_closed;
        match (*pending, done) {
            // A handshake is finished by the reactor (it opens a stream), not by the API.
            (Pending::Handshake(req), Done::Stored(result)) => {
                self.handshake_looked_up(key, &req, result)
            }
            (pending, done) => {
                let now = self.time.now().wall_ms;
                let reply = api::finish(&mut self.ctx(client_ip, now), pending, done);
                self.drive_reply(key, reply, keep_alive, started);
            }
        }
        self.resume.push(key);
    }

    /// A stream handshake's admin session was looked up: remember it and upgrade, or refuse.
    /// Storage that could not answer gets 503: a credential that cannot be checked is never
    /// refused as if it were wrong (API.md).
    fn handshake_looked_up(
        &mut self,
        key: usize,
        req: &Request,
        result: Result<Outcome, AppError>,
    ) {
        match result {
            Ok(Outcome::AdminSession(found)) => {
                // Remembered, then the upgrade runs again from the top with `looked_up`: the
                // cache now answers, and a second miss means "no such session" (1008).
                if let Some(session) = found {
                    self.app.remember_admin_session(session);
                }
                let stream = Stream::from_path(&req.path, self.cfg.echo_path.as_deref());
                self.upgrade(key, req, stream, true);
            }
            Ok(Outcome::SessionAt { live, head }) if live && head > self.app.head() => {
                // The view did not catch up within the wait: the session cannot be checked
                // here now, which is not the same as wrong (API.md: 503, never 401).
                log::info!("conn {key} session stream: this node is behind event {head}; 503");
                let busy = api::app_error(AppError::Busy).closing();
                self.respond(key, busy, false);
            }
            // (A resume waited for the view: reached, or waited long enough; see `await_view`.)
            Ok(Outcome::SessionAt { .. } | Outcome::AwaitView) => {
                let stream = Stream::from_path(&req.path, self.cfg.echo_path.as_deref());
                self.upgrade(key, req, stream, true);
            }
            Ok(other) => {
                log::error!("a handshake got {other:?} from storage");
                self.respond(key, Response::error(500, "internal error").closing(), false);
            }
            Err(_) => {
                let busy = api::app_error(AppError::Busy).closing();
                self.respond(key, busy, false);
            }
        }
    }
}

/// The answer to a broadcasting write refused by admission control (API.md limits).
fn overloaded() -> Response {
    Response::error(
        503,
        "server overloaded: changes reach the dashboards too late; nothing changed, try again in a moment",
    )
    .header("Retry-After", "1")
}
