//! The event log in memory: the framed messages of the last changes of the invitee list, so a
//! stream that reconnects gets exactly what it missed.
//!
//! Invariants:
//! * `entries` are consecutive: their numbers run without a gap and the last one is `head`
//!   (when there are any). `head` is the number of the last change applied to the view, so the
//!   view and this tail always stand at the same position: a stream that takes the view
//!   (`initial`) or a replay from here, and then joins the broadcast in the same loop turn, can
//!   neither miss nor repeat an event.
//! * It holds what storage holds ([`RETENTION`]: the last 1,000 events and every event of the
//!   last 10 minutes), loaded at start, so a resume works across a restart; beyond
//!   [`MEMORY_CAP`] events the oldest go even if younger than 10 minutes (a reconnecting client
//!   then gets a fresh `initial`, never a wrong replay).

use crate::store::{Retention, StoredEvent, RETENTION};
use crate::ws;
use std::collections::VecDeque;
use std::rc::Rc;

/// Events kept in memory at most, whatever their age (about 40 MB of messages). Ten minutes
/// of writes at 160 per second.
pub const MEMORY_CAP: usize = 100_000;

/// One logged change, framed once for every stream that will ever be sent it.
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
    /// Frame a stored event.
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

/// A client's claim of where it stopped: `?epoch=E&since=N`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResumePoint {
    pub epoch: String,
    pub since: u64,
}

pub struct EventLog {
    /// Names the history this log belongs to (random per database).
    epoch: String,
    /// Number of the last change applied (0: none yet).
    head: u64,
    entries: VecDeque<Entry>,
    retention: Retention,
}

impl EventLog {
    /// The log at `head`, with the stored events still held (oldest first). Only the run of
    /// consecutive numbers that ends at `head` is kept.
    pub fn new(epoch: String, head: u64, stored: &[StoredEvent]) -> EventLog {
        let mut entries = VecDeque::new();
        let mut want = head;
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
            retention: RETENTION,
        }
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

    /// Drop what the retention rule no longer requires at `now` (wall ms).
    pub fn trim(&mut self, now: i64) {
        let oldest_kept = self.head.saturating_sub(self.retention.count);
        while let Some(front) = self.entries.front() {
            if front.seq <= oldest_kept && front.at_ms < now - self.retention.age_ms {
                self.entries.pop_front();
            } else {
                break;
            }
        }
    }

    /// The entries after `point`, if this log can replay them: same epoch, `since` not ahead of
    /// the log, and every entry after it still held. `None` means "send a fresh `initial`".
    pub fn since(&self, point: &ResumePoint) -> Option<impl Iterator<Item = &Entry>> {
        if point.epoch != self.epoch || point.since > self.head {
            return None;
        }
        let first_needed = point.since + 1;
        let held_from = self.entries.front().map_or(self.head + 1, |e| e.seq);
        if first_needed < held_from {
            return None;
        }
        let skip = (first_needed - held_from) as usize;
        Some(self.entries.iter().skip(skip))
    }

    #[cfg(test)]
    pub fn with_retention(mut self, retention: Retention) -> Self {
        self.retention = retention;
        self
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

    fn seqs<'a>(it: impl Iterator<Item = &'a Entry>) -> Vec<u64> {
        it.map(|e| e.seq).collect()
    }

    #[test]
    fn replays_exactly_what_was_missed() {
        let all: Vec<_> = (1..=5).map(|s| stored(s, 0)).collect();
        let log = EventLog::new("e".into(), 5, &all);
        assert_eq!(seqs(log.since(&at("e", 2)).unwrap()), [3, 4, 5]);
        assert_eq!(seqs(log.since(&at("e", 5)).unwrap()), Vec::<u64>::new());
        assert_eq!(seqs(log.since(&at("e", 0)).unwrap()), [1, 2, 3, 4, 5]);
        assert!(log.since(&at("other", 2)).is_none(), "another history");
        assert!(log.since(&at("e", 6)).is_none(), "ahead of the log");
    }

    #[test]
    fn only_the_run_ending_at_head_is_loaded() {
        let with_gap = [stored(1, 0), stored(3, 0), stored(4, 0)];
        let log = EventLog::new("e".into(), 4, &with_gap);
        assert_eq!(log.held(), 2);
        assert!(log.since(&at("e", 1)).is_none(), "event 2 is not held");
        assert_eq!(seqs(log.since(&at("e", 2)).unwrap()), [3, 4]);
        let empty = EventLog::new("e".into(), 9, &[]);
        assert_eq!(seqs(empty.since(&at("e", 9)).unwrap()), Vec::<u64>::new());
        assert!(empty.since(&at("e", 8)).is_none());
    }

    #[test]
    fn push_refuses_anything_but_the_next_number() {
        let mut log = EventLog::new("e".into(), 0, &[]);
        assert!(log.push(entry(1, 0)));
        assert!(!log.push(entry(1, 0)), "a duplicate");
        assert!(!log.push(entry(3, 0)), "a gap");
        assert!(log.push(entry(2, 0)));
        assert_eq!(log.head(), 2);
        assert_eq!(seqs(log.since(&at("e", 0)).unwrap()), [1, 2]);
    }

    #[test]
    fn trimming_keeps_the_last_n_and_the_recent_ones() {
        let keep = Retention {
            count: 3,
            age_ms: 1_000,
        };
        let mut log = EventLog::new("e".into(), 0, &[]).with_retention(keep);
        for s in 1..=10 {
            // Events 1..=6 are old, 7..=10 recent.
            log.push(entry(s, if s <= 6 { 0 } else { 10_000 }));
        }
        log.trim(10_500);
        assert_eq!(seqs(log.since(&at("e", 6)).unwrap()), [7, 8, 9, 10]);
        assert!(log.since(&at("e", 5)).is_none());
        log.trim(20_000);
        assert_eq!(log.held(), 3, "the last three stay however old");
    }
}
