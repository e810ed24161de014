//! The event intake, and what a node of a cluster does beyond a single server.
//!
//! **Intake.** User-list events reach the view through [`Server::offer_event`] only, from the
//! storage threads (this node's writes) and, in a cluster, from the bus (everyone's). Invariant:
//! the view applies event `head + 1` and nothing else; an event from further ahead waits in
//! `intake` until the ones before it arrive (the bus fills the hole from the `events` table);
//! one at or below `head` is a duplicate and is dropped. A storage answer whose event waits
//! waits with it (`stalled`), so a client never reads a view older than its own write. With one
//! SQLite storage thread events come in order and the intake never holds anything.
//!
//! **Cluster.** The bus reports events, its connection, filled gaps and the need to resync
//! (reload the view from a snapshot and send every admin and agent stream away with 1013, so
//! they reconnect to a fresh `initial`). A janitor sweep every second, under a lease, expires
//! what no node's timer caught (the node that served the page died). Presence is shared through
//! the database: each node stores its share and reads everyone's, merged.
//!
//! Threads: everything here runs on the reactor thread. The bus and storage threads only
//! hand results over (channels and the shared waker); no database call is made from here,
//! every one is a queued job whose answer comes back through `jobs.rs`. A job that cannot be
//! queued (storage queue full) is dropped, never waited for: the periodic ones run again at
//! the next tick. Design: cluster-design.md §2b (event bus) and §2c (who owns the clock).
//!
//! Ordering: `head` only grows, one by one, except in `resynced`, where the snapshot replaces
//! the view whole, head included (after a new log history it may even be lower). Between
//! those, every stream sees the events in `seq` order exactly once (API.md "Cluster mode").

use super::*;
use crate::app::{
    event_log::MEMORY_CAP, Cause, ClusterCommand, Event, Logged, Outcome, UserChange,
};
use crate::bus::{Bus, BusNews};
use crate::hub::{Presence, Stream};
use crate::store::StoredEvent;
use std::collections::BTreeMap;

/// How often the janitor sweeps and presence is shared (ms).
const CLUSTER_TICK_MS: u64 = 1_000;
/// Presence is stored at least this often even when unchanged (ms), so a live node never
/// looks gone to the others (they drop a share after `cluster::PRESENCE_STALE_MS`).
const PRESENCE_REFRESH_MS: u64 = 3_000;
/// A hole in the intake older than this makes the node "behind" (`/readyz` 503).
const BEHIND_MS: u64 = 1_000;
/// Events waiting in the intake at most; beyond, the node resynchronises.
const INTAKE_MAX: usize = 100_000;
/// A session stream handshake waits at most about this long (+ a tick) for the view to reach
/// the activation storage saw; then it gets 503.
const HANDSHAKE_WAIT_MS: u128 = 2_000;

/// A resume at most this many events ahead of the view waits for them (`resume_ahead`).
const RESUME_AHEAD_MAX: u64 = 1_000;

/// A node's part in a cluster.
pub(super) struct ClusterNode {
    pub bus: Bus,
    /// `--node-id`: the holder name of the janitor lease and the key of this node's presence
    /// row, so two live nodes must never share one.
    pub node_id: String,
    /// The deployment's server key (user rows of other nodes' events carry no token).
    pub key: [u8; 32],
    /// The bus is connected to PostgreSQL.
    pub connected: bool,
    /// Monotonic ms since the bus lost PostgreSQL (recorded only; `ready` goes by
    /// `connected`).
    pub lost_since: Option<u64>,
    /// A snapshot was asked for and has not come yet.
    pub resyncing: bool,
    /// A snapshot is still wanted (the last one failed or could not be queued): the next tick
    /// asks again, so a database that refuses connections is asked once a second, not in a
    /// tight loop.
    pub resync_pending: bool,
    /// The other nodes' presence, from the last share (this node's own is read live).
    pub others_presence: Option<Presence>,
    /// Hub presence version and monotonic ms of the last share.
    pub shared: Option<(u64, u64)>,
    /// A presence share is with storage (one at a time, so a slow database is not queued up).
    pub sharing: bool,
}

impl ClusterNode {
    pub fn new(bus: Bus, node_id: String, key: [u8; 32]) -> ClusterNode {
        ClusterNode {
            bus,
            node_id,
            key,
            connected: false,
            lost_since: None,
            resyncing: false,
            resync_pending: false,
            others_presence: None,
            shared: None,
            sharing: false,
        }
    }
}

/// A logged event as the bus read it: the row decoded, the token derived. `None` when the row
/// does not decode (no user row, JSON that is not a row, an unknown cause): the caller
/// cannot apply it and must resynchronise rather than skip a number.
fn logged_from_stored(e: StoredEvent, key: &[u8; 32]) -> Option<Logged> {
    let change = match e.kind {
        "deleted" => UserChange::Deleted(e.user_id),
        kind => {
            let user = Box::new(crate::store::row::decode(e.user_row.as_deref()?, key)?);
            match kind {
                "added" => UserChange::Added(user),
                _ => UserChange::Updated(user, Cause::parse(e.cause?)?),
            }
        }
    };
    Some(Logged {
        seq: e.seq,
        at_ms: e.at_ms,
        change,
        admin_message: e.admin_message,
        agent_message: e.agent_message,
    })
}

impl Server {
    /// An event for the view, from storage or the bus: apply it and whatever it unblocks, in
    /// number order.
    pub(super) fn offer_event(&mut self, logged: Box<Logged>, started: Instant) {
        if logged.seq <= self.app.head() {
            return; // applied already (our own write, then the bus; or the other way round)
        }
        // The same event can arrive twice while it waits (storage's answer and the bus): the
        // first copy is kept, with its arrival time, and the second dropped.
        self.intake.entry(logged.seq).or_insert((logged, started));
        let now = self.time.now();
        while let Some(entry) = self.intake.first_entry() {
            if *entry.key() != self.app.head() + 1 {
                break;
            }
            let (logged, started) = entry.remove();
            if let Some(c) = &self.cluster {
                // `at_ms` is the database's clock, `wall_ms` this node's: clock skew shows up in
                // this metric (clamped at 0), not in any decision.
                let _ = c; // lag is measured from the commit on whichever node wrote it
                self.metrics
                    .bus_lag((now.wall_ms - logged.at_ms).max(0) as f64 / 1000.0);
            }
            self.apply_event(&Event::User(logged), now, started);
        }
        match (self.intake.is_empty(), self.gap_since) {
            (true, _) => self.gap_since = None,
            (false, None) => {
                self.gap_since = Some(now.mono_ms);
                self.metrics.bus_gaps += 1;
            }
            (false, Some(_)) => {}
        }
        if self.intake.len() > INTAKE_MAX {
            self.start_resync("too many events wait for an earlier one");
        }
        // Answers whose events are applied now go out.
        self.release_stalled();
    }

    /// The bus has news.
    pub(super) fn on_bus_news(&mut self) {
        let Some(c) = &self.cluster else {
            return;
        };
        // Drained whole first: handling news needs `&mut self`, the channel borrows `c`.
        let news: Vec<BusNews> = c.bus.news().collect();
        let key = c.key;
        for n in news {
            match n {
                BusNews::Events(events) => {
                    for e in events {
                        let seq = e.seq;
                        match logged_from_stored(e, &key) {
                            Some(logged) => self.offer_event(Box::new(logged), Instant::now()),
                            None => {
                                // The later events of this batch then wait in the intake behind
                                // the hole; the snapshot drops those it already covers.
                                log::error!("event {seq} in the log cannot be read");
                                self.start_resync("an event in the log cannot be read");
                            }
                        }
                    }
                }
                BusNews::Connected(up) => {
                    let now = self.now_ms();
                    if let Some(c) = &mut self.cluster {
                        if up && !c.connected {
                            log::info!("event bus connected");
                        }
                        c.connected = up;
                        c.lost_since = if up { None } else { c.lost_since.or(Some(now)) };
                    }
                }
                BusNews::Resync(why) => self.start_resync(why),
                BusNews::GapFilled => self.metrics.bus_gaps += 1,
            }
        }
    }

    /// The view cannot follow the log any more: reload it from a snapshot.
    pub(super) fn start_resync(&mut self, why: &str) {
        let Some(c) = &mut self.cluster else {
            return;
        };
        // At most one snapshot in flight: several reasons at once need only one.
        if c.resyncing {
            return;
        }
        c.resyncing = true;
        self.metrics.bus_resyncs += 1;
        log::warn!("resynchronising the view from PostgreSQL: {why}");
        // The tail refills the in-memory event log, so resumes (`since`) keep working after
        // the reset.
        let cmd = ClusterCommand::Snapshot {
            tail: MEMORY_CAP as u64,
        };
        if !self.storage.submit(jobs::Ticket::Snapshot, cmd) {
            // Not queued (storage queue full): the next tick asks again.
            if let Some(c) = &mut self.cluster {
                c.resyncing = false;
                c.resync_pending = true;
            }
        }
    }

    /// The snapshot came: replace the view, re-arm the clocks, and send admin and agent streams
    /// off to a fresh `initial` (1013: reconnect after a moment).
    pub(super) fn resynced(&mut self, result: Result<Outcome, crate::app::AppError>) {
        if let Some(c) = &mut self.cluster {
            c.resyncing = false;
        }
        let snapshot = match result {
            Ok(Outcome::Snapshot(s)) => s,
            other => {
                // Asked again at the next tick (≤ 1 s): while the database refuses
                // connections a job fails at once, and asking again at once would spin.
                log::warn!("resynchronisation failed ({other:?}); trying again in a second");
                if let Some(c) = &mut self.cluster {
                    c.resync_pending = true;
                }
                return;
            }
        };
        if let Some(c) = &mut self.cluster {
            c.resync_pending = false;
        }
        let now = self.time.now();
        self.app.reset(*snapshot);
        let head = self.app.head();
        self.intake.retain(|seq, _| *seq > head);
        // Clocks rebuilt from the new view: timers armed for the old one may be wrong either
        // way (a session that ended elsewhere, one that started elsewhere).
        self.session_clock = SessionClock::new();
        for (user_id, expires_at) in self.app.running_sessions() {
            self.session_clock.start(user_id, expires_at, now);
        }
        for (user_id, expires_at) in self.app.pending_invites() {
            self.session_clock.arm_invite(user_id, expires_at, now);
        }
        // Their views were built from events this node may have missed: 1013 (RFC 6455 §7.4.1,
        // try again later) makes them reconnect to a fresh `initial`. Session streams are
        // left open.
        for stream in [Stream::Admin, Stream::Agent] {
            let keys: Vec<usize> = self.hub.members(stream).collect();
            for key in keys {
                self.close_stream(
                    key,
                    code::TRY_AGAIN_LATER,
                    "Resynchronising; reconnect",
                    CloseReason::Shutdown,
                );
            }
        }
        log::info!("view resynchronised at event {head}");
        self.release_stalled();
        // Whatever the bus delivered meanwhile follows.
        if let Some((_, (logged, started))) = self.intake.pop_first() {
            self.offer_event(logged, started);
        }
    }

    /// Every second in a cluster: the janitor's sweep, and sharing presence.
    pub(super) fn cluster_tick(&mut self) {
        let now = self.time.now();
        let Some(c) = &self.cluster else {
            return;
        };
        let node_id = c.node_id.clone();
        let version = self.hub.presence_version();
        // This node's share is written when it changed or is due for a refresh; everyone's is
        // read every tick, so a change anywhere shows here within about two ticks.
        let share_due = c.shared.is_none_or(|(v, at)| {
            v != version || now.mono_ms.saturating_sub(at) >= PRESENCE_REFRESH_MS
        });
        let sharing = c.sharing;
        let resync_due = c.resyncing;
        let resync_pending = c.resync_pending && !c.resyncing;
        // Every tick, even if the last sweep is still running: the lease makes only one node
        // sweep, and a full queue just skips this tick.
        self.storage.submit(
            jobs::Ticket::Janitor,
            ClusterCommand::Janitor {
                node_id: node_id.clone(),
            },
        );
        if !sharing {
            let mine = share_due.then(|| self.hub.presence());
            if self.storage.submit(
                jobs::Ticket::SharePresence,
                ClusterCommand::SharePresence { node_id, mine },
            ) {
                if let Some(c) = &mut self.cluster {
                    c.sharing = true;
                    if share_due {
                        c.shared = Some((version, now.mono_ms));
                    }
                }
            }
        }
        if resync_pending {
            if let Some(c) = &mut self.cluster {
                c.resync_pending = false;
            }
            self.start_resync("the last snapshot failed or could not be queued");
        } else if !resync_due && self.intake_stuck(now.mono_ms) {
            self.start_resync("a hole in the log was not filled");
        }
        self.release_waiting_handshakes();
        // Re-armed every time: the tick never stops while the node runs.
        self.timers
            .insert(now.mono_ms + CLUSTER_TICK_MS, Timer::Cluster);
    }

    /// A resume (admin or agent stream) from a number this node has not applied yet but that
    /// is near: another node sent it a moment ago, and the bus brings it here within
    /// milliseconds. Answering `initial` then would hand the client a list older than the one
    /// it shows (API.md: any node can replay what is held), so the handshake waits for it
    /// (`await_view`). `None` outside a cluster, for another epoch, or a number far ahead
    /// (that is no race: `initial` at once).
    pub(super) fn resume_ahead(&self, stream: Stream, req: &crate::http::Request) -> Option<u64> {
        self.cluster.as_ref()?;
        if !matches!(stream, Stream::Admin | Stream::Agent) {
            return None;
        }
        let point = streams::resume_point(req).ok()??;
        let head = self.app.head();
        (point.epoch == self.app.epoch()
            && point.since > head
            && point.since - head <= RESUME_AHEAD_MAX)
            .then_some(point.since)
    }

    /// Hold stream handshake `req` until the view reaches `seq` (`release_stalled`) or for
    /// `HANDSHAKE_WAIT_MS` at most (`release_waiting_handshakes`); then it is upgraded again
    /// from the top (`jobs::handshake_looked_up`), and resumes or gets `initial`.
    pub(super) fn await_view(&mut self, key: usize, req: &crate::http::Request, seq: u64) {
        let Some(conn) = self.conns.get_mut(key) else {
            return;
        };
        let gen = conn.gen;
        conn.enter(crate::conn::Phase::AwaitingJob {
            keep_alive: req.keep_alive,
            pending: Box::new(crate::api::Pending::Handshake(Box::new(req.clone()))),
        });
        let ticket = jobs::Ticket::Request {
            key,
            gen,
            started: Instant::now(),
            write: false,
        };
        self.stalled.push((seq, ticket, Ok(Outcome::AwaitView)));
    }

    /// Stream handshakes that waited too long for the view (see `HANDSHAKE_WAIT_MS`) are
    /// answered now (a session stream 503, a resume `initial`). Runs once per tick, so a
    /// handshake waits `HANDSHAKE_WAIT_MS` plus up to a tick.
    fn release_waiting_handshakes(&mut self) {
        let overdue = |t: &jobs::Ticket, r: &Result<Outcome, crate::app::AppError>| {
            matches!(r, Ok(Outcome::SessionAt { .. } | Outcome::AwaitView))
                && matches!(t, jobs::Ticket::Request { started, .. }
                    if started.elapsed().as_millis() >= HANDSHAKE_WAIT_MS)
        };
        if !self.stalled.iter().any(|(_, t, r)| overdue(t, r)) {
            return;
        }
        let (done, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.stalled)
            .into_iter()
            .partition(|(_, t, r)| overdue(t, r));
        self.stalled = waiting;
        for (_, ticket, result) in done {
            self.answer(ticket, result);
        }
    }

    /// Answers whose events the view has applied go out (after events, or a resync).
    pub(super) fn release_stalled(&mut self) {
        let head = self.app.head();
        if !self.stalled.iter().any(|(seq, _, _)| *seq <= head) {
            return;
        }
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.stalled)
            .into_iter()
            .partition(|(seq, _, _)| *seq <= head);
        self.stalled = waiting;
        for (_, ticket, result) in ready {
            self.answer(ticket, result);
        }
    }

    /// The janitor's answer: expire what is overdue (guarded: whichever node wins, once).
    pub(super) fn swept(&mut self, result: Result<Outcome, crate::app::AppError>) {
        // A failed sweep is dropped: the next tick lists the same overdue ids again.
        let Ok(Outcome::Overdue { sessions, invites }) = result else {
            return;
        };
        // One guarded command per id: an expiry another node wins answers `Nothing`, and a
        // failed one is retried by the session clock a second later (`jobs.rs`).
        for id in sessions {
            self.storage.submit(
                jobs::Ticket::SessionExpiry(id),
                Command::ExpireSession { id },
            );
        }
        for id in invites {
            self.storage
                .submit(jobs::Ticket::InviteExpiry(id), Command::ExpireInvite { id });
        }
    }

    /// The other nodes' presence came back: tell the admins if it changed.
    pub(super) fn presence_shared(&mut self, result: Result<Outcome, crate::app::AppError>) {
        if let Some(c) = &mut self.cluster {
            c.sharing = false;
            if result.is_err() {
                c.shared = None; // not stored: write it again at the next tick
            }
        }
        if let (Ok(Outcome::Presence(others)), Some(c)) = (result, &mut self.cluster) {
            if c.others_presence.as_ref() != Some(&others) {
                c.others_presence = Some(others);
                self.presence_changed(self.time.now());
            }
        }
    }

    /// Sign-in attempts the limiter took back go to the database (cluster mode; the queue is
    /// always empty on a single server). Best effort: one that cannot be queued stays counted
    /// until its window ends.
    pub(super) fn send_uncounts(&mut self) {
        for (keys, at) in self.limiter.take_uncounts() {
            self.storage.submit(
                jobs::Ticket::Uncount,
                ClusterCommand::UncountLogin { keys, at },
            );
        }
    }

    /// Who is here: everyone's (cluster) or this node's.
    pub(super) fn current_presence(&self) -> Presence {
        self.hub.presence_with(
            self.cluster
                .as_ref()
                .and_then(|c| c.others_presence.as_ref()),
        )
    }

    /// A hole in the intake has not been filled for a while.
    /// Ten times `BEHIND_MS`: the bus reads every second and fills holes itself, so a hole
    /// that old means it is not filling this one, and only a snapshot helps.
    fn intake_stuck(&self, now_ms: u64) -> bool {
        self.gap_since
            .is_some_and(|since| now_ms.saturating_sub(since) > 10 * BEHIND_MS)
    }

    /// `/readyz`: not while draining; in a cluster, not while PostgreSQL is out of reach, a
    /// resync runs or is still wanted, or a hole in the log has waited over a second.
    pub(super) fn ready(&self) -> bool {
        if self.shutting_down || self.draining.is_some() {
            return false;
        }
        let Some(c) = &self.cluster else {
            return true;
        };
        let now = self.now_ms();
        let behind = self
            .gap_since
            .is_some_and(|since| now.saturating_sub(since) > BEHIND_MS);
        c.connected && !c.resyncing && !c.resync_pending && !behind
    }
}

/// Events waiting for an earlier one, by number (with when they arrived, for the broadcast
/// latency metric).
pub(super) type Intake = BTreeMap<u64, (Box<Logged>, Instant)>;
