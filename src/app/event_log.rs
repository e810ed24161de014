//! The event log in memory: the framed messages of the last changes of the invitee list, so a
//! stream that reconnects gets exactly what it missed.
//!
//! Invariants:
//! * `entries` are consecutive: their numbers run without a gap and the last one is `head`
//!   (when there are any). `head` is the number of the last change applied to the view, so the
//!   view and this tail always stand at the same position: a stream that takes the view
//!   (`initial`) or a replay from here, and then joins the broadcast in the same loop turn, can
//!   neither miss nor repeat an event.
//! * Memory keeps the last [`MEMORY_CAP`] events (about a megabyte): the replays a reconnect
//!   wave needs (seconds of missed events) are served from here. Storage keeps what the
//!   contract promises ([`crate::store::RETENTION`]: the last 1,000 events and every event of
//!   the last 10 minutes), with the data, so a resume also works across a restart; `stored_from`
//!   is the first number storage still holds, and a resume from between it and the memory tail
//!   is read from storage ([`Replay::Storage`]). Anything older gets a fresh `initial`, never a
//!   wrong replay.
//!
//! Why a resume must be exact (API.md "resume"): the client applies the replay to the list it
//! already has, so a missing event leaves it wrong until the next reload, and a repeated one
//! (a `user_added` twice) shows a duplicate. When in doubt the answer is `initial`, which the
//! client takes as a full replacement: slower, never wrong.

use crate::store::StoredEvent;
use crate::ws;
use std::collections::VecDeque;
use std::rc::Rc;

/// Events kept in memory at most (about 1 MB of messages): far more than a client that drops
/// for a few seconds misses, far less than ten minutes of a busy import.
pub const MEMORY_CAP: usize = 2_048;

/// One logged change, framed once for every stream that will ever be sent it: the live
/// broadcast and every replay from memory share these bytes.
#[derive(Debug, Clone)]
pub struct Entry {
    pub seq: u64,
    /// Wall-clock Unix ms of the change.
    pub at_ms: i64,
    /// The admin stream frame.
    pub admin: Rc<[u8]>,
    /// The agent stream frame, if the change caused one.
    pub agent: Option<Rc<[u8]>>,
}

impl Entry {
    /// Frame a stored event (loaded at start, or read for a replay from storage).
    pub fn from_stored(e: &StoredEvent) -> Entry {
        Entry {
            seq: e.seq,
            at_ms: e.at_ms,
            admin: Rc::from(ws::text_frame(e.admin_message.as_bytes())),
            agent: e
                .agent_message
                .as_ref()
                .map(|m| Rc::from(ws::text_frame(m.as_bytes()))),
        }
    }
}

impl Entry {
    /// The frame a stream of this kind gets for the entry (agents: only changes that caused
    /// an agent message).
    pub fn for_stream(&self, agent: bool) -> Option<Rc<[u8]>> {
        if agent {
            self.agent.clone()
        } else {
            Some(Rc::clone(&self.admin))
        }
    }
}

/// A client's claim of where it stopped: `?epoch=E&since=N`. Only a claim: it is checked
/// against this log ([`EventLog::since`]) and never trusted further.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    pub epoch: String,
    pub since: u64,
}

/// How a resume can be served.
pub enum Replay<'a> {
    /// From memory: these entries, in order (possibly none: the client is up to date).
    Memory(Box<dyn Iterator<Item = &'a Entry> + 'a>),
    /// From storage: events `from..=to`; the ones after `to` are in memory or still to come.
    Storage { from: u64, to: u64 },
    /// Not at all: another history, a number ahead of the log, or events no longer held.
    Impossible,
}

/// The tail of the log, at the view's position. See the module doc for its invariants.
pub struct EventLog {
    /// Names the history this log belongs to (random per database).
    epoch: String,
    /// Number of the last change applied (0: none yet).
    head: u64,
    /// Consecutive, ending at `head`; at most [`MEMORY_CAP`] (the oldest is dropped first).
    entries: VecDeque<Entry>,
    /// The first number storage still holds (`head + 1` when it holds none).
    stored_from: u64,
}

impl EventLog {
    /// The log at `head`, with the newest stored events (oldest first) and the first number
    /// storage holds. Only the run of consecutive numbers that ends at `head` is kept.
    pub fn new(epoch: String, head: u64, stored: &[StoredEvent], stored_from: u64) -> EventLog {
        let mut entries = VecDeque::new();
        let mut want = head;
        // Walk back from the newest: a hole (a number storage no longer holds) ends the run,
        // since a replay across it would skip an event.
        for e in stored.iter().rev() {
            if e.seq != want || entries.len() == MEMORY_CAP {
                break;
            }
            entries.push_front(Entry::from_stored(e));
            want = want.saturating_sub(1);
        }
        EventLog {
            epoch,
            head,
            entries,
            stored_from: stored_from.min(head + 1),
        }
    }

    /// Storage trimmed its log: it now holds events from `seq` on (never past `head + 1`: what
    /// the view has applied is what storage was asked about).
    pub fn set_stored_from(&mut self, seq: u64) {
        self.stored_from = seq.min(self.head + 1);
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// Number of the last change applied.
    pub fn head(&self) -> u64 {
        self.head
    }

    /// Append change number `entry.seq`. Returns `false` (and changes nothing) unless it is the
    /// next number: the caller has missed something and must reload.
    pub fn push(&mut self, entry: Entry) -> bool {
        if entry.seq != self.head + 1 {
            return false;
        }
        self.head = entry.seq;
        self.entries.push_back(entry);
        if self.entries.len() > MEMORY_CAP {
            self.entries.pop_front();
        }
        true
    }

    /// How to replay what came after `point`: same epoch, `since` not ahead of the log, and
    /// every event after it still held, in memory or in storage.
    pub fn since(&self, point: &ResumePoint) -> Replay<'_> {
        // Another history (the database was replaced) or a number we never reached (the
        // client talked to a node that is ahead, or made it up): no replay can be right.
        if point.epoch != self.epoch || point.since > self.head {
            return Replay::Impossible;
        }
        let first_needed = point.since + 1;
        let in_memory_from = self.entries.front().map_or(self.head + 1, |e| e.seq);
        if first_needed >= in_memory_from {
            let skip = (first_needed - in_memory_from) as usize;
            return Replay::Memory(Box::new(self.entries.iter().skip(skip)));
        }
        if first_needed >= self.stored_from {
            return Replay::Storage {
                from: first_needed,
                to: self.head,
            };
        }
        Replay::Impossible
    }

    /// Events held.
    pub fn held(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(seq: u64, at_ms: i64) -> StoredEvent {
        StoredEvent {
            seq,
            at_ms,
            user_id: 1,
            kind: "updated",
            cause: None,
            admin_message: format!(r#"{{"seq":{seq}}}"#),
            agent_message: seq
                .is_multiple_of(2)
                .then(|| format!(r#"{{"agent":{seq}}}"#)),
            user_row: None,
        }
    }

    fn entry(seq: u64, at_ms: i64) -> Entry {
        Entry::from_stored(&stored(seq, at_ms))
    }

    fn at(epoch: &str, since: u64) -> ResumePoint {
        ResumePoint {
            epoch: epoch.into(),
            since,
        }
    }

    fn seqs(replay: Replay<'_>) -> Vec<u64> {
        match replay {
            Replay::Memory(it) => it.map(|e| e.seq).collect(),
            Replay::Storage { from, to } => panic!("from storage: {from}..={to}"),
            Replay::Impossible => panic!("not at all"),
        }
    }

    #[test]
    fn replays_exactly_what_was_missed() {
        let all: Vec<_> = (1..=5).map(|s| stored(s, 0)).collect();
        let log = EventLog::new("e".into(), 5, &all, 1);
        assert_eq!(seqs(log.since(&at("e", 2))), [3, 4, 5]);
        assert_eq!(seqs(log.since(&at("e", 5))), Vec::<u64>::new());
        assert_eq!(seqs(log.since(&at("e", 0))), [1, 2, 3, 4, 5]);
        assert!(
            matches!(log.since(&at("other", 2)), Replay::Impossible),
            "another history"
        );
        assert!(
            matches!(log.since(&at("e", 6)), Replay::Impossible),
            "ahead of the log"
        );
    }

    #[test]
    fn only_the_run_ending_at_head_is_loaded() {
        let with_gap = [stored(1, 0), stored(3, 0), stored(4, 0)];
        let log = EventLog::new("e".into(), 4, &with_gap, 3);
        assert_eq!(log.held(), 2);
        assert!(
            matches!(log.since(&at("e", 1)), Replay::Impossible),
            "event 2 is not held"
        );
        assert_eq!(seqs(log.since(&at("e", 2))), [3, 4]);
        let empty = EventLog::new("e".into(), 9, &[], 10);
        assert_eq!(seqs(empty.since(&at("e", 9))), Vec::<u64>::new());
        assert!(matches!(empty.since(&at("e", 8)), Replay::Impossible));
    }

    #[test]
    fn push_refuses_anything_but_the_next_number() {
        let mut log = EventLog::new("e".into(), 0, &[], 1);
        assert!(log.push(entry(1, 0)));
        assert!(!log.push(entry(1, 0)), "a duplicate");
        assert!(!log.push(entry(3, 0)), "a gap");
        assert!(log.push(entry(2, 0)));
        assert_eq!(log.head(), 2);
        assert_eq!(seqs(log.since(&at("e", 0))), [1, 2]);
    }

    #[test]
    fn older_events_come_from_storage_while_it_holds_them() {
        let mut log = EventLog::new("e".into(), 0, &[], 1);
        let n = MEMORY_CAP as u64 + 10;
        for s in 1..=n {
            log.push(entry(s, 0));
        }
        assert_eq!(log.held(), MEMORY_CAP);
        assert_eq!(seqs(log.since(&at("e", 10))).len(), MEMORY_CAP);
        assert!(matches!(
            log.since(&at("e", 3)),
            Replay::Storage { from: 4, to } if to == n
        ));
        log.set_stored_from(6);
        assert!(matches!(
            log.since(&at("e", 5)),
            Replay::Storage { from: 6, .. }
        ));
        assert!(
            matches!(log.since(&at("e", 4)), Replay::Impossible),
            "event 5 was trimmed from storage"
        );
    }
}
