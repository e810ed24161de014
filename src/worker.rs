//! The password pool: a few threads that hash and check passwords (tens of milliseconds of
//! Argon2 each, which would stall every connection on the reactor thread), shared fairly
//! between client addresses.
//!
//! Why fair, and how (API.md "Sign-in abuse": an attempt from an address with none in flight is
//! checked within 1 s even while other addresses flood the pool):
//! * Jobs wait in one queue **per client address** (`addr::limit_key`: IPv6 by /64). Threads
//!   serve the addresses in turn, one job each, so a flooding address gets one thread's share,
//!   not the whole pool.
//! * An address that had **nothing in flight** (queued or running) goes to the *front* of the
//!   turn order: it is served by the next free thread, however many others wait. An address
//!   that already has work in flight joins at the back. A flood therefore delays a newcomer by
//!   at most the hashes already running (one per thread).
//! * Every queue is bounded: an address may hold [`PER_ADDRESS`] jobs, the pool [`TOTAL`];
//!   beyond either, `submit` refuses and the request is answered 503 + `Retry-After`. A
//!   newcomer is never refused for an address queue, only when the whole pool is full.
//!
//! Results come back through a channel plus the shared `mio::Waker`, so the reactor picks them
//! up in its loop. Dropping the pool lets its threads finish their current job and exit.

use crate::auth;
use mio::Waker;
use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread;
use std::time::Instant;

/// Jobs one address may have queued; beyond, its requests get 503.
pub const PER_ADDRESS: usize = 8;
/// Jobs queued in the whole pool; beyond, every request gets 503.
pub const TOTAL: usize = 256;
/// At most this many threads (Argon2 takes 19 MiB each while it runs).
const MAX_THREADS: usize = 4;

/// Who asked: a connection (slab key + generation), so a stale answer finds no one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Requester {
    pub key: usize,
    pub gen: u32,
    /// When the request arrived: a storage step after this job has its deadline counted from
    /// it (`storage::deadline_for`), so the request as a whole answers busy within 1 s.
    pub started: Instant,
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

/// The queues, under one lock (held for microseconds: never while hashing).
#[derive(Default)]
struct Queues {
    /// Waiting jobs per address.
    waiting: HashMap<IpAddr, VecDeque<(Requester, Job)>>,
    /// Addresses with waiting jobs, in the order they are served.
    turn: VecDeque<IpAddr>,
    /// Jobs queued or running per address (entries at zero are removed).
    in_flight: HashMap<IpAddr, usize>,
    queued: usize,
    closed: bool,
}

impl Queues {
    /// Queue a job for `addr`, or refuse it (`false`).
    fn push(&mut self, addr: IpAddr, who: Requester, job: Job) -> bool {
        let waiting = self.waiting.get(&addr).map_or(0, VecDeque::len);
        if self.closed || self.queued >= TOTAL || waiting >= PER_ADDRESS {
            return false;
        }
        let in_flight = self.in_flight.entry(addr).or_insert(0);
        if *in_flight == 0 {
            self.turn.push_front(addr);
        } else if waiting == 0 {
            self.turn.push_back(addr);
        }
        *in_flight += 1;
        self.waiting.entry(addr).or_default().push_back((who, job));
        self.queued += 1;
        true
    }

    /// The next job: the first address in turn, which goes to the back if it has more.
    fn pop(&mut self) -> Option<(IpAddr, Requester, Job)> {
        let addr = self.turn.pop_front()?;
        let queue = self.waiting.get_mut(&addr)?;
        let (who, job) = queue.pop_front()?;
        if queue.is_empty() {
            self.waiting.remove(&addr);
        } else {
            self.turn.push_back(addr);
        }
        self.queued -= 1;
        Some((addr, who, job))
    }

    /// A job of `addr` has finished.
    fn done(&mut self, addr: IpAddr) {
        if let Some(n) = self.in_flight.get_mut(&addr) {
            *n -= 1;
            if *n == 0 {
                self.in_flight.remove(&addr);
            }
        }
    }
}

struct Shared {
    queues: Mutex<Queues>,
    work: Condvar,
}

impl Shared {
    /// The lock, even if a thread panicked while holding it: the queues stay consistent
    /// (every change is a few lines with no panics in between).
    fn lock(&self) -> MutexGuard<'_, Queues> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Worker {
    shared: Arc<Shared>,
    done: Receiver<(Requester, Outcome)>,
}

impl Worker {
    /// Start the pool: one thread per core, at least 2 and at most [`MAX_THREADS`].
    pub fn start(waker: Arc<Waker>) -> std::io::Result<Worker> {
        let threads = thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(2, MAX_THREADS);
        let shared = Arc::new(Shared {
            queues: Mutex::new(Queues::default()),
            work: Condvar::new(),
        });
        let (done_tx, done) = mpsc::channel();
        for i in 0..threads {
            let shared = Arc::clone(&shared);
            let done_tx = done_tx.clone();
            let waker = Arc::clone(&waker);
            thread::Builder::new()
                .name(format!("catalytic-hash-{i}"))
                .spawn(move || serve(&shared, &done_tx, &waker))?;
        }
        Ok(Worker { shared, done })
    }

    /// Queue a job of client address `addr` (its limit key); `false` when its queue or the
    /// pool's is full.
    pub fn submit(&self, addr: IpAddr, who: Requester, job: Job) -> bool {
        let queued = self.shared.lock().push(addr, who, job);
        if queued {
            self.shared.work.notify_one();
        }
        queued
    }

    /// Finished jobs, without waiting.
    pub fn finished(&self) -> impl Iterator<Item = (Requester, Outcome)> + '_ {
        self.done.try_iter()
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        self.shared.lock().closed = true;
        self.shared.work.notify_all();
    }
}

/// One pool thread: take the next job in turn, run it without the lock, answer, repeat.
fn serve(shared: &Shared, done: &Sender<(Requester, Outcome)>, waker: &Waker) {
    loop {
        let (addr, who, job) = {
            let mut q = shared.lock();
            loop {
                if q.closed {
                    return;
                }
                if let Some(next) = q.pop() {
                    break next;
                }
                q = shared.work.wait(q).unwrap_or_else(|e| e.into_inner());
            }
        };
        let outcome = match job {
            Job::Verify { password, stored } => {
                Outcome::Verified(auth::verify_password(&password, &stored))
            }
            Job::Hash { password } => Outcome::Hashed(auth::hash_password(&password)),
        };
        shared.lock().done(addr);
        if done.send((who, outcome)).is_err() {
            return;
        }
        // A failed wake only delays the answer to the next loop turn.
        let _ = waker.wake();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, n])
    }

    fn job() -> Job {
        Job::Hash {
            password: String::new(),
        }
    }

    fn who(key: usize) -> Requester {
        Requester {
            key,
            gen: 0,
            started: Instant::now(),
        }
    }

    #[test]
    fn a_newcomer_goes_first_and_floods_take_turns() {
        let mut q = Queues::default();
        for i in 0..5 {
            assert!(q.push(ip(1), who(100 + i), job()));
        }
        for i in 0..3 {
            assert!(q.push(ip(2), who(200 + i), job()));
        }
        // Two threads busy with ip 1 and ip 2's first jobs.
        let first: Vec<usize> = (0..2).map(|_| q.pop().unwrap().1.key).collect();
        assert_eq!(
            first,
            [200, 100],
            "ip 2 had nothing in flight when it came, so it went first"
        );
        assert!(q.push(ip(3), who(300), job()));
        assert_eq!(
            q.pop().unwrap().1.key,
            300,
            "the newcomer is next, ahead of both floods"
        );
        let rest: Vec<usize> = std::iter::from_fn(|| q.pop().map(|j| j.1.key)).collect();
        assert_eq!(rest, [201, 101, 202, 102, 103, 104], "the floods alternate");
    }

    #[test]
    fn queues_are_bounded_per_address_and_in_total() {
        let mut q = Queues::default();
        for i in 0..PER_ADDRESS {
            assert!(q.push(ip(1), who(i), job()));
        }
        assert!(
            !q.push(ip(1), who(99), job()),
            "the address's queue is full"
        );
        assert!(
            q.push(ip(2), who(98), job()),
            "another address is not refused"
        );
        let mut n = 0u32;
        while q.queued < TOTAL {
            let a = IpAddr::from([10, 1, (n >> 8) as u8, n as u8]);
            assert!(q.push(a, who(0), job()));
            n += 1;
        }
        assert!(!q.push(ip(3), who(97), job()), "the pool is full");
        q.closed = true;
        assert!(!q.push(ip(4), who(96), job()));
    }

    #[test]
    fn in_flight_counts_running_jobs_too() {
        let mut q = Queues::default();
        assert!(q.push(ip(1), who(1), job()));
        let (a, _, _) = q.pop().unwrap();
        // ip 1 still has a job running: its next one waits behind a newcomer.
        assert!(q.push(ip(1), who(2), job()));
        assert!(q.push(ip(2), who(3), job()));
        assert_eq!(q.pop().unwrap().1.key, 3);
        q.done(a);
        assert_eq!(q.pop().unwrap().1.key, 2);
        assert!(q.pop().is_none());
    }
}
