//! Who listens to what, and fan-out.
//!
//! The hub holds slab keys only: the admin set, one set per session (with that session's
//! `time_update` timer), and the agent set. A broadcast is one already-encoded frame
//! (`Rc<[u8]>`) handed to every member: written at once where the socket has room, queued
//! (a reference, not a copy) where it has not. A member that fails or overflows is only
//! *marked*; the reactor removes it after the loop turn, so a broadcast never changes the set
//! it walks.

use crate::conn::{Conn, Sent};
use crate::metrics::CloseReason;
use crate::timers::TimerId;
use slab::Slab;
use std::collections::HashMap;
use std::rc::Rc;

#[derive(Default)]
pub struct SessionSubs {
    pub members: Slab<usize>,
    /// The next `time_update` for this session, while it has members.
    pub tick: Option<TimerId>,
}

#[derive(Default)]
pub struct Hub {
    pub admins: Slab<usize>,
    pub agents: Slab<usize>,
    pub sessions: HashMap<i64, SessionSubs>,
}

/// What one broadcast did, for the metrics.
#[derive(Debug, Default, Clone, Copy)]
pub struct Delivery {
    pub recipients: u64,
    pub bytes_written: u64,
}

/// Hand `frame` to every connection in `members`. Failed or overflowing connections are marked
/// dead and pushed on `reap`.
pub fn deliver(
    conns: &mut Slab<Conn>,
    members: &Slab<usize>,
    frame: &Rc<[u8]>,
    limit: usize,
    reap: &mut Vec<usize>,
) -> Delivery {
    let mut d = Delivery::default();
    for (_, &key) in members.iter() {
        let Some(conn) = conns.get_mut(key) else {
            continue;
        };
        if !conn.is_live_stream() {
            continue;
        }
        let (sent, written) = conn.send_shared(frame, limit);
        d.bytes_written += written as u64;
        match sent {
            Sent::Ok => d.recipients += 1,
            Sent::Overflow => {
                conn.dead = Some(CloseReason::SlowConsumer);
                reap.push(key);
            }
            Sent::Failed => {
                conn.dead = Some(CloseReason::WriteError);
                reap.push(key);
            }
        }
    }
    d
}

impl Hub {
    pub fn session_members(&self, user_id: i64) -> Option<&Slab<usize>> {
        self.sessions.get(&user_id).map(|s| &s.members)
    }

    /// Join the set of `user_id`'s session streams; returns the slot.
    pub fn join_session(&mut self, user_id: i64, key: usize) -> usize {
        self.sessions
            .entry(user_id)
            .or_default()
            .members
            .insert(key)
    }

    /// Leave a session set. Returns the session's tick timer when the set became empty, so the
    /// caller can cancel it.
    pub fn leave_session(&mut self, user_id: i64, slot: usize) -> Option<TimerId> {
        let subs = self.sessions.get_mut(&user_id)?;
        subs.members.try_remove(slot);
        if subs.members.is_empty() {
            return self.sessions.remove(&user_id).and_then(|s| s.tick);
        }
        None
    }
}
