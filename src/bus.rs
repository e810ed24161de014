//! The bus thread (cluster mode): PostgreSQL's `events` table as the log every node follows.
//!
//! One thread per node owns a dedicated connection (`application_name` =
//! `catalytic-bus-<node id>`, never through a transaction pooler) that `LISTEN`s on
//! [`EVENTS_CHANNEL`]. A notification only wakes it: it then reads `events WHERE seq > last`
//! from the table, in order, and hands the batch to the reactor (a channel and the shared
//! `mio::Waker`). Because event numbers follow commit order (see `store/postgres.rs`), what it
//! reads is always a run without holes that continues where the last one ended.
//!
//! Failure handling, so a node never silently misses an event:
//! * It also reads every second without a notification, so a lost notification costs at most
//!   a second.
//! * A broken connection is reopened with backoff (250 ms doubling to 5 s); after `LISTEN`
//!   again it reads from `last`, so whatever committed meanwhile arrives in order.
//! * If the table no longer holds `last + 1` (trimmed while this node was away), or the log's
//!   epoch changed (the database was replaced), it says [`BusNews::Resync`]: the reactor reloads
//!   its view from a fresh snapshot and tells its streams to start over.
//!
//! Ownership: the thread owns its connection and its position (`last`); the reactor owns the
//! view and never touches either, it only drains [`Bus::news`]. The news channel holds at most
//! `NEWS_CAP` messages (each at most `BATCH` events): the reactor drains it on every wake-up,
//! and a bus that gets that far ahead waits for it (the table keeps what it has not read). Why a dedicated connection: `LISTEN` belongs to a session, and a pooler in
//! transaction mode would hand the session to others and lose the notifications (PostgreSQL
//! docs, LISTEN/NOTIFY).

use crate::store::postgres::{connect, event_from_row, EVENTS_CHANNEL, EVENT_COLUMNS};
use crate::store::{DbError, StoredEvent};
use ::postgres::fallible_iterator::FallibleIterator;
use ::postgres::Client;
use mio::Waker;
use std::sync::mpsc::{self, Receiver, SyncSender};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

/// Read at least this often, notified or not.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Events handed over per read at most (the rest follow at once).
const BATCH: i64 = 1_000;
/// Messages the news channel holds before the bus waits for the reactor (at most
/// `NEWS_CAP × BATCH` events in memory).
const NEWS_CAP: usize = 64;
/// Reconnect waits: first this, doubling after every failed attempt up to `BACKOFF_MAX`, so a
/// database that is down is not hammered by every node; back to the first wait after a
/// connection that held for [`GOOD_CONNECTION`] (a new outage, not the same one).
const BACKOFF_FIRST: Duration = Duration::from_millis(250);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// A connection that lasted this long was a good one.
const GOOD_CONNECTION: Duration = Duration::from_secs(10);

/// What the bus tells the reactor.
#[derive(Debug)]
pub enum BusNews {
    /// The next events of the log, in order, without a hole.
    Events(Vec<StoredEvent>),
    /// Whether the bus is connected to PostgreSQL now.
    Connected(bool),
    /// The log cannot be followed from where this node stands: reload the view. The bus now
    /// follows from the head it saw (no later than any snapshot taken after this message).
    Resync(&'static str),
    /// The bus had to read events it was not woken for (after a reconnect, or a notification
    /// that never came): counted as a gap it filled.
    GapFilled,
}

/// The reactor's end of the bus.
pub struct Bus {
    news: Receiver<BusNews>,
}

impl Bus {
    /// Follow the log of `url` from event `last` (the view's position) under `epoch`.
    ///
    /// Spawns the thread and returns at once: the first connection is made on the thread, so
    /// a database that is down at start shows as `Connected(false)` news, not an error here.
    /// Errors: only the OS refusing a thread.
    pub fn start(
        url: String,
        node_id: &str,
        last: u64,
        epoch: String,
        waker: Arc<Waker>,
    ) -> std::io::Result<Bus> {
        let (tx, news) = mpsc::sync_channel(NEWS_CAP);
        let name = format!("catalytic-bus-{node_id}");
        thread::Builder::new()
            .name("catalytic-bus".into())
            .spawn(move || {
                Follower {
                    url,
                    name,
                    last,
                    epoch,
                    tx,
                    waker,
                }
                .run()
            })?;
        Ok(Bus { news })
    }

    /// News so far, without waiting.
    pub fn news(&self) -> impl Iterator<Item = BusNews> + '_ {
        self.news.try_iter()
    }
}

struct Follower {
    url: String,
    name: String,
    last: u64,
    epoch: String,
    tx: SyncSender<BusNews>,
    waker: Arc<Waker>,
}

impl Follower {
    /// Tell the reactor; `false` once it is gone (the thread ends).
    fn tell(&self, news: BusNews) -> bool {
        // Wake after sending: the reactor then drains everything queued so far.
        let ok = self.tx.send(news).is_ok();
        let _ = self.waker.wake();
        ok
    }

    fn run(mut self) {
        let mut backoff = BACKOFF_FIRST;
        let mut first = true;
        loop {
            let began = std::time::Instant::now();
            match self.follow(first) {
                // Only a reactor that went away ends the thread.
                Ok(()) => return,
                Err(e) => {
                    if !self.tell(BusNews::Connected(false)) {
                        return;
                    }
                    if began.elapsed() >= GOOD_CONNECTION {
                        // The connection held: this is a new outage, not the same one going on.
                        backoff = BACKOFF_FIRST;
                    }
                    log::warn!("event bus: {e}; reconnecting in {backoff:?}");
                    thread::sleep(backoff);
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    first = false;
                }
            }
        }
    }

    /// Connect, listen, and follow the log until the connection fails.
    fn follow(&mut self, first: bool) -> Result<(), DbError> {
        let mut client = connect(&self.url, &self.name)?;
        // LISTEN before the catch-up read below: an event committed between the two is read
        // by the catch-up or by the read its notification triggers; never missed.
        client.batch_execute(&format!("LISTEN {EVENTS_CHANNEL}"))?;
        if !self.tell(BusNews::Connected(true)) {
            return Ok(());
        }
        let epoch: String = client
            .query_one("SELECT epoch FROM log_head WHERE id = 1", &[])?
            .try_get(0)?;
        if epoch != self.epoch {
            self.epoch = epoch;
            self.jump_to_head(&mut client)?;
            if !self.tell(BusNews::Resync("the event log started a new history")) {
                return Ok(());
            }
        }
        // Whatever committed while we were away (or before LISTEN took effect).
        let caught_up = self.read(&mut client)?;
        if !first && caught_up > 0 && !self.tell(BusNews::GapFilled) {
            return Ok(());
        }
        loop {
            // Wait for a notification (or a second), then take every other pending one: one
            // read serves them all.
            let woken = client
                .notifications()
                .timeout_iter(POLL_EVERY)
                .next()?
                .is_some();
            while client.notifications().iter().next()?.is_some() {}
            let read = self.read(&mut client)?;
            if !woken && read > 0 && !self.tell(BusNews::GapFilled) {
                return Ok(());
            }
            // A sign of life every round, sent without waking the reactor: it is read with the
            // next news, and a dead reactor ends the thread within `POLL_EVERY`.
            if self.tx.send(BusNews::Connected(true)).is_err() {
                return Ok(());
            }
        }
    }

    /// Read and hand over every event after `last`; returns how many.
    fn read(&mut self, client: &mut Client) -> Result<usize, DbError> {
        let mut total = 0;
        loop {
            let rows = client.query(
                &format!(
                    "SELECT {EVENT_COLUMNS} FROM events WHERE seq > $1 ORDER BY seq LIMIT {BATCH}"
                ),
                &[&(self.last as i64)],
            )?;
            let events = rows
                .iter()
                .map(event_from_row)
                .collect::<Result<Vec<_>, _>>()?;
            let Some(first) = events.first() else {
                return Ok(total);
            };
            if first.seq != self.last + 1 {
                // Trimmed before we read it: we cannot fill this hole from the log.
                self.jump_to_head(client)?;
                if !self.tell(BusNews::Resync(
                    "events were trimmed before this node read them",
                )) {
                    return Ok(total);
                }
                continue;
            }
            let n = events.len();
            self.last = events.last().map_or(self.last, |e| e.seq);
            total += n;
            if !self.tell(BusNews::Events(events)) {
                return Ok(total);
            }
            if (n as i64) < BATCH {
                return Ok(total);
            }
        }
    }

    /// Follow from the log's head from now on (after a resync is announced, the reactor's new
    /// snapshot is at or past it).
    fn jump_to_head(&mut self, client: &mut Client) -> Result<(), DbError> {
        let head: i64 = client
            .query_one("SELECT head FROM log_head WHERE id = 1", &[])?
            .try_get(0)?;
        self.last = head as u64;
        Ok(())
    }
}
