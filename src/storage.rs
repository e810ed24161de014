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
//! deadline: [`WRITE_DEADLINE`] after it was submitted, or for a request after the request
//! arrived ([`deadline_for`]), so one that needs several steps (a sign-in reads the account,
//! hashes, then writes its session) answers busy within one deadline, not one per step. SQLite's
//! busy timeout is set to the time
//! left before each command runs; a command whose time is up, or that cannot get the lock in
//! time, answers [`AppError::Busy`] and changes nothing (the API answers 503 + `Retry-After`).
//! The queue is bounded: when it is full, `submit` refuses at once and the caller answers busy.

use crate::app::command::{self, Command, Outcome, Rules};
use crate::app::{cluster, AppError, ClusterCommand};
use crate::clock::wall_ms;
use crate::store::{Postgres, Sqlite};
use mio::Waker;
use std::collections::VecDeque;
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How long a command may wait for storage before it is answered busy (API.md: 1 s).
pub const WRITE_DEADLINE: Duration = Duration::from_millis(900);
/// The least time a request's later storage step is given, however long its earlier steps took
/// (a password hash queued behind others, an identity provider's round trips): enough for a
/// free database, so only a busy one answers 503.
const LAST_STEP_WAIT: Duration = Duration::from_millis(50);

/// The deadline of a storage command for a request that arrived at `arrived`: API.md's "503
/// within 1 s" holds for the request as a whole, with at least [`LAST_STEP_WAIT`] from now.
pub fn deadline_for(arrived: Instant) -> Instant {
    (arrived + WRITE_DEADLINE).max(Instant::now() + LAST_STEP_WAIT)
}

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

/// The commands waiting for a storage thread. Not a `sync_channel`: its sender wakes a waiting
/// thread while holding the channel's lock, and on a server pinned to one CPU the woken thread
/// preempts the reactor right there, so the thread found the lock still held when it came back
/// for its next command — two more context switches per command, about 20 µs in a scheduler
/// trace. Here the reactor pushes under the lock and wakes a thread after letting go of it.
struct Queue<T> {
    jobs: Mutex<Pending<T>>,
    ready: Condvar,
}

struct Pending<T> {
    jobs: VecDeque<Job<T>>,
    /// The reactor is gone: the threads end.
    closed: bool,
}

impl<T> Queue<T> {
    /// The next command, waiting for one; `None` once the reactor is gone (or a thread
    /// panicked holding the lock, which leaves nothing to trust).
    fn next(&self) -> Option<Job<T>> {
        let mut pending = self.jobs.lock().ok()?;
        loop {
            if let Some(job) = pending.jobs.pop_front() {
                return Some(job);
            }
            if pending.closed {
                return None;
            }
            pending = self.ready.wait(pending).ok()?;
        }
    }
}

/// The reactor's handle on the storage thread. `T` is the reactor's note of who asked.
pub struct Storage<T> {
    queue: Arc<Queue<T>>,
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
        let queue = Arc::new(Queue {
            jobs: Mutex::new(Pending {
                jobs: VecDeque::new(),
                closed: false,
            }),
            ready: Condvar::new(),
        });
        let (done_tx, done) = mpsc::channel();
        for (i, mut db) in backends.into_iter().enumerate() {
            let (queue, done_tx, waker, rules) = (
                Arc::clone(&queue),
                done_tx.clone(),
                Arc::clone(&waker),
                rules.clone(),
            );
            thread::Builder::new()
                .name(format!("catalytic-storage-{i}"))
                .spawn(move || {
                    // The threads take turns at the queue and work side by side.
                    while let Some(job) = queue.next() {
                        let outcome = run(&mut db, &rules, job.work, job.deadline);
                        if done_tx.send((job.ticket, outcome)).is_err() {
                            return;
                        }
                        // A failed wake only delays the answer to the next loop turn.
                        let _ = waker.wake();
                    }
                })?;
        }
        Ok(Storage { queue, done })
    }

    /// Queue `work` with [`WRITE_DEADLINE`] from now; `false` when the queue is full (or the
    /// threads are gone): answer busy.
    pub fn submit(&self, ticket: T, work: impl Into<Work>) -> bool {
        self.submit_by(ticket, work, Instant::now() + WRITE_DEADLINE)
    }

    /// Queue `work` to be answered [`AppError::Busy`] if it cannot run by `deadline`; `false`
    /// when the queue is full (or the threads are gone): answer busy.
    pub fn submit_by(&self, ticket: T, work: impl Into<Work>, deadline: Instant) -> bool {
        let job = Job {
            ticket,
            work: work.into(),
            deadline,
        };
        {
            let Ok(mut pending) = self.queue.jobs.lock() else {
                return false;
            };
            if pending.jobs.len() >= QUEUE {
                return false;
            }
            pending.jobs.push_back(job);
        }
        self.queue.ready.notify_one();
        true
    }

    /// Answers ready now, without waiting, in the order the commands ran.
    pub fn finished(&self) -> impl Iterator<Item = (T, Result<Outcome, AppError>)> + '_ {
        self.done.try_iter()
    }
}

impl<T> Drop for Storage<T> {
    /// The reactor is gone: the threads run what is queued, then end.
    fn drop(&mut self) {
        if let Ok(mut pending) = self.queue.jobs.lock() {
            pending.closed = true;
        }
        self.queue.ready.notify_all();
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
