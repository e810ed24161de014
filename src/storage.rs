//! The storage thread: every storage command runs here, never on the reactor.
//!
//! The reactor hands a command over with a ticket (who asked) and gets the outcome back through
//! a channel and the shared `mio::Waker`, like the password worker. One thread owns the SQLite
//! connection, so commands run one at a time, in the order they were submitted, and their
//! events come back in the order they were numbered.
//!
//! Storage that is busy (another process holds the write lock, e.g. a backup or the `sqlite3`
//! shell) must never stall the loop, and a write must not wait forever: every command carries a
//! deadline ([`WRITE_DEADLINE`] after it was submitted). SQLite's busy timeout is set to the time
//! left before each command runs; a command whose time is up, or that cannot get the lock in
//! time, answers [`AppError::Busy`] and changes nothing (the API answers 503 + `Retry-After`).
//! The queue is bounded: when it is full, `submit` refuses at once and the caller answers busy.

use crate::app::command::{self, Command, Outcome, Rules};
use crate::app::AppError;
use crate::clock::wall_ms;
use crate::store::Sqlite;
use mio::Waker;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

/// How long a command may wait for storage before it is answered busy (API.md: 1 s).
pub const WRITE_DEADLINE: Duration = Duration::from_millis(900);
/// Commands waiting at most; beyond, `submit` refuses.
const QUEUE: usize = 4096;

struct Job<T> {
    ticket: T,
    command: Command,
    deadline: Instant,
}

/// The reactor's handle on the storage thread. `T` is the reactor's note of who asked.
pub struct Storage<T> {
    jobs: SyncSender<Job<T>>,
    done: Receiver<(T, Result<Outcome, AppError>)>,
}

impl<T: Send + 'static> Storage<T> {
    /// Start the thread with the open database. `waker` wakes the reactor for every answer.
    pub fn start(mut db: Sqlite, rules: Rules, waker: Arc<Waker>) -> std::io::Result<Storage<T>> {
        let (jobs, job_rx) = mpsc::sync_channel::<Job<T>>(QUEUE);
        let (done_tx, done) = mpsc::channel();
        thread::Builder::new()
            .name("catalytic-storage".into())
            .spawn(move || {
                for job in job_rx {
                    let outcome = run(&mut db, &rules, job.command, job.deadline);
                    if done_tx.send((job.ticket, outcome)).is_err() {
                        return;
                    }
                    // A failed wake only delays the answer to the next loop turn.
                    let _ = waker.wake();
                }
            })?;
        Ok(Storage { jobs, done })
    }

    /// Queue `command`; `false` when the queue is full (or the thread is gone): answer busy.
    pub fn submit(&self, ticket: T, command: Command) -> bool {
        let job = Job {
            ticket,
            command,
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
    db: &mut Sqlite,
    rules: &Rules,
    cmd: Command,
    deadline: Instant,
) -> Result<Outcome, AppError> {
    let left = deadline.saturating_duration_since(Instant::now());
    if left.is_zero() {
        return Err(AppError::Busy);
    }
    db.set_busy_timeout(left)?;
    // The clock is read here, when the command runs, not when it was queued: a command that
    // waited for a lock must not, say, activate a link that ran out meanwhile.
    let now = wall_ms();
    if cmd.is_read() {
        db.read(|tx| command::execute(tx, rules, now, cmd))
    } else {
        db.write(|tx| command::execute(tx, rules, now, cmd))
    }
}
