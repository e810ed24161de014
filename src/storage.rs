//! The storage threads: every storage command runs here, never on the reactor.
//!
//! The reactor hands a command over with a ticket (who asked) and gets the outcome back through
//! a channel and the shared `mio::Waker`, like the password worker. With SQLite one thread owns
//! the connection, so commands run one at a time, in the order they were submitted, and their
//! events come back in the order they were numbered. With PostgreSQL a few threads each own a
//! connection and commands run side by side; their events may come back out of order, which the
//! reactor's intake puts right (it applies events by number, see `reactor/cluster.rs`).
//!
//! Storage that is busy (another process holds the write lock, e.g. a backup or the `sqlite3`
//! shell) must never stall the loop, and a write must not wait forever: every command carries a
//! deadline ([`WRITE_DEADLINE`] after it was submitted). SQLite's busy timeout is set to the time
//! left before each command runs; a command whose time is up, or that cannot get the lock in
//! time, answers [`AppError::Busy`] and changes nothing (the API answers 503 + `Retry-After`).
//! The queue is bounded: when it is full, `submit` refuses at once and the caller answers busy.

use crate::app::command::{self, Command, Outcome, Rules};
use crate::app::{cluster, AppError, ClusterCommand};
use crate::clock::wall_ms;
use crate::store::{Postgres, Sqlite};
use mio::Waker;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a command may wait for storage before it is answered busy (API.md: 1 s).
pub const WRITE_DEADLINE: Duration = Duration::from_millis(900);
/// Commands waiting at most; beyond, `submit` refuses.
const QUEUE: usize = 4096;

/// What a storage thread is asked to do.
#[derive(Debug)]
pub enum Work {
    Command(Command),
    /// Only a cluster's store takes these.
    Cluster(ClusterCommand),
}

impl Work {
    /// A write whose event is broadcast (admission control weighs these; `Command`'s rule).
    pub fn is_broadcast_write(&self) -> bool {
        match self {
            Work::Command(cmd) => cmd.is_broadcast_write(),
            Work::Cluster(_) => false,
        }
    }
}

impl From<Command> for Work {
    fn from(c: Command) -> Work {
        Work::Command(c)
    }
}

impl From<ClusterCommand> for Work {
    fn from(c: ClusterCommand) -> Work {
        Work::Cluster(c)
    }
}

struct Job<T> {
    ticket: T,
    work: Work,
    deadline: Instant,
}

/// The reactor's handle on the storage thread. `T` is the reactor's note of who asked.
pub struct Storage<T> {
    jobs: SyncSender<Job<T>>,
    done: Receiver<(T, Result<Outcome, AppError>)>,
}

/// One open database connection a storage thread owns. (One per thread, made once: its size
/// does not matter.)
#[allow(clippy::large_enum_variant)]
pub enum Backend {
    Sqlite(Sqlite),
    Postgres(Postgres),
}

impl<T: Send + 'static> Storage<T> {
    /// Start one thread per backend (connection). `waker` wakes the reactor for every answer.
    pub fn start(
        backends: Vec<Backend>,
        rules: Rules,
        waker: Arc<Waker>,
    ) -> std::io::Result<Storage<T>> {
        let (jobs, job_rx) = mpsc::sync_channel::<Job<T>>(QUEUE);
        let job_rx = Arc::new(Mutex::new(job_rx));
        let (done_tx, done) = mpsc::channel();
        for (i, mut db) in backends.into_iter().enumerate() {
            let (job_rx, done_tx, waker, rules) = (
                Arc::clone(&job_rx),
                done_tx.clone(),
                Arc::clone(&waker),
                rules.clone(),
            );
            thread::Builder::new()
                .name(format!("catalytic-storage-{i}"))
                .spawn(move || loop {
                    // The lock is held only while waiting for the next job, so the threads take
                    // turns at the queue and work side by side.
                    let job = match job_rx.lock().map(|rx| rx.recv()) {
                        Ok(Ok(job)) => job,
                        _ => return, // the reactor is gone
                    };
                    let outcome = run(&mut db, &rules, job.work, job.deadline);
                    if done_tx.send((job.ticket, outcome)).is_err() {
                        return;
                    }
                    // A failed wake only delays the answer to the next loop turn.
                    let _ = waker.wake();
                })?;
        }
        Ok(Storage { jobs, done })
    }

    /// Queue `work`; `false` when the queue is full (or the threads are gone): answer busy.
    pub fn submit(&self, ticket: T, work: impl Into<Work>) -> bool {
        let job = Job {
            ticket,
            work: work.into(),
            deadline: Instant::now() + WRITE_DEADLINE,
        };
        match self.jobs.try_send(job) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Answers ready now, without waiting, in the order the commands ran.
    pub fn finished(&self) -> impl Iterator<Item = (T, Result<Outcome, AppError>)> + '_ {
        self.done.try_iter()
    }
}

/// Run one command in its own transaction, giving up at `deadline`.
fn run(
    db: &mut Backend,
    rules: &Rules,
    work: Work,
    deadline: Instant,
) -> Result<Outcome, AppError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(AppError::Busy);
    }
    match (db, work) {
        (Backend::Sqlite(db), Work::Command(cmd)) => {
            db.set_busy_timeout(left)?;
            // The clock is read here, when the command runs, not when it was queued: a command
            // that waited for a lock must not, say, activate a link that ran out meanwhile.
            let now = wall_ms();
            if cmd.is_read() {
                db.read(|tx| command::execute(tx, rules, now, cmd))
            } else {
                db.write(|tx| command::execute(tx, rules, now, cmd))
            }
        }
        // The database's own clock decides, so every node sees the same time.
        (Backend::Postgres(db), Work::Command(cmd)) => db.transaction(cmd.is_read(), |tx, now| {
            command::execute(tx, rules, now, cmd)
        }),
        (Backend::Postgres(db), Work::Cluster(cmd)) => {
            db.cluster_transaction(cmd.is_read(), |tx, now| cluster::execute(tx, now, cmd))
        }
        (Backend::Sqlite(_), Work::Cluster(cmd)) => {
            log::error!("cluster work on a single node's SQLite: {cmd:?}");
            Err(AppError::Storage)
        }
    }
}
