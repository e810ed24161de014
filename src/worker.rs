//! The one helper thread: password hashing and checking (tens of milliseconds of Argon2 each),
//! which would stall every connection if it ran on the reactor thread.
//!
//! Jobs go in through a bounded channel (a login flood gets 503, not a growing queue); results
//! come back through a channel plus a `mio::Waker`, so the reactor picks them up in its loop.

use crate::auth;
use mio::Waker;
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread;

/// Jobs queued at most; beyond that the request is answered 503.
const QUEUE: usize = 64;

/// Who asked: a connection (slab key + generation), so a stale answer finds no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    pub key: usize,
    pub gen: u32,
}

#[derive(Debug)]
pub enum Job {
    /// Check `password` against `stored` (a PHC string; the dummy one for unknown accounts).
    Verify { password: String, stored: String },
    /// Hash a new password.
    Hash { password: String },
}

#[derive(Debug)]
pub enum Outcome {
    Verified(bool),
    Hashed(Result<String, String>),
}

pub struct Worker {
    jobs: SyncSender<(Requester, Job)>,
    done: Receiver<(Requester, Outcome)>,
}

impl Worker {
    pub fn start(waker: Arc<Waker>) -> std::io::Result<Worker> {
        let (jobs, job_rx) = mpsc::sync_channel::<(Requester, Job)>(QUEUE);
        let (done_tx, done) = mpsc::channel();
        thread::Builder::new()
            .name("catalytic-hash".into())
            .spawn(move || {
                for (who, job) in job_rx {
                    let outcome = match job {
                        Job::Verify { password, stored } => {
                            Outcome::Verified(auth::verify_password(&password, &stored))
                        }
                        Job::Hash { password } => Outcome::Hashed(auth::hash_password(&password)),
                    };
                    if done_tx.send((who, outcome)).is_err() {
                        return;
                    }
                    // A failed wake only delays the answer to the next loop turn.
                    let _ = waker.wake();
                }
            })?;
        Ok(Worker { jobs, done })
    }

    /// Queue a job; `false` when the queue is full (or the thread is gone).
    pub fn submit(&self, who: Requester, job: Job) -> bool {
        match self.jobs.try_send((who, job)) {
            Ok(()) => true,
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => false,
        }
    }

    /// Finished jobs, without waiting.
    pub fn finished(&self) -> impl Iterator<Item = (Requester, Outcome)> + '_ {
        self.done.try_iter()
    }
}
