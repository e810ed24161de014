//! The sign-in limiter: failed attempts per minute, per client address, per account and per
//! device cookie, in fixed one-minute windows.
//!
//! Rules (API.md "Sign-in abuse"):
//! * **Counted on arrival.** [`LoginLimiter::begin`] counts an attempt against every key the
//!   moment it arrives — before the account is read or the password checked — or refuses it
//!   when any key is at the limit. So a burst of N attempts gets at most the limit checked and
//!   the rest 429, however long each check takes. (Counting when a check *ended* let 100
//!   attempts sent at once get 65 real checks against a limit of 10.)
//! * **Taken back** ([`LoginLimiter::take_back`]) when the attempt succeeds, or when it ends
//!   without a password check (the pool was full, storage could not answer): only attempts
//!   that were checked and failed stay counted.
//! * **Which keys** is the caller's choice ([`Key`]): sign-in uses the address and the account,
//!   or the address and the device cookie when the browser holds a valid one for that account
//!   (then other people's failures on the account do not lock it out); agent handshakes use the
//!   address alone.
//!
//! **Cluster mode** ([`LoginLimiter::shared`]): sign-ins are counted in the database under the
//! same rules, by the storage command that looks the account up (`app::cluster`,
//! `store/postgres/cluster.rs`), so a burst spread over the nodes is limited like one sent to a
//! single node. Such an attempt is a [`Counted`] too; taking it back queues an uncount that the
//! reactor sends to the database ([`LoginLimiter::take_uncounts`]). Failed agent handshakes
//! stay counted per process (they are answered within the handshake, before any storage trip).

use std::collections::HashMap;
use std::net::IpAddr;

const WINDOW_MS: i64 = 60_000;
/// Past this many tracked keys, expired windows are swept (memory stays bounded by the rate).
const SWEEP_AT: usize = 10_000;

/// What an attempt is counted against.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Key {
    /// A client address, as per-IP limits count it (`addr::limit_key`: IPv6 by /64).
    Ip(IpAddr),
    /// An account, by its lower-cased email.
    Account(String),
    /// One device cookie (its random id).
    Device([u8; 16]),
}

impl Key {
    /// The key as the database stores it (cluster mode).
    pub fn name(&self) -> String {
        match self {
            Key::Ip(ip) => format!("ip:{ip}"),
            Key::Account(email) => format!("account:{email}"),
            Key::Device(id) => {
                let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
                format!("device:{hex}")
            }
        }
    }
}

/// An attempt that was counted: hand it back to [`LoginLimiter::take_back`] if it must not
/// stay counted.
#[derive(Debug)]
pub struct Counted {
    keys: Vec<Key>,
    /// When it was counted (ms; in the database's clock when `shared`).
    at: i64,
    /// Counted in the database (cluster mode), not here.
    shared: bool,
}

impl Counted {
    /// An attempt the database counts (cluster mode); `at` is set once it has.
    pub fn shared(keys: Vec<Key>) -> Counted {
        Counted {
            keys,
            at: 0,
            shared: true,
        }
    }

    /// The database counted it at `at` (its clock, ms).
    pub fn counted_at(&mut self, at: i64) {
        self.at = at;
    }

    pub fn is_shared(&self) -> bool {
        self.shared
    }

    /// The keys as the database stores them.
    pub fn key_names(&self) -> Vec<String> {
        self.keys.iter().map(Key::name).collect()
    }
}

/// Uncounts for the database waiting to be sent, at most (beyond, they are dropped: an
/// attempt then stays counted until its window ends, which only errs on the safe side).
const UNCOUNTS_MAX: usize = 1_024;

pub struct LoginLimiter {
    per_minute: u32,
    /// Key → (start of its window, attempts counted in it).
    windows: HashMap<Key, (i64, u32)>,
    /// Cluster mode: sign-ins are counted in the database.
    shared: bool,
    /// Taken-back database counts for the reactor to send: (key names, when counted).
    uncounts: Vec<(Vec<String>, i64)>,
}

impl LoginLimiter {
    pub fn new(per_minute: u32, shared: bool) -> Self {
        LoginLimiter {
            per_minute: per_minute.max(1),
            windows: HashMap::new(),
            shared,
            uncounts: Vec::new(),
        }
    }

    /// Cluster mode: sign-ins are counted in the database, at this limit per minute.
    pub fn shared(&self) -> Option<u32> {
        self.shared.then_some(self.per_minute)
    }

    /// Uncounts queued for the database since the last call.
    pub fn take_uncounts(&mut self) -> Vec<(Vec<String>, i64)> {
        std::mem::take(&mut self.uncounts)
    }

    /// Count an attempt against every key at `now` (ms), or refuse it: `Err(seconds)` until
    /// the longest-limited key may try again. A refused attempt is not counted.
    pub fn begin(&mut self, keys: Vec<Key>, now: i64) -> Result<Counted, i64> {
        let over = keys
            .iter()
            .filter_map(|k| self.windows.get(k))
            .filter(|(start, n)| now - start < WINDOW_MS && *n >= self.per_minute)
            .map(|(start, _)| (start + WINDOW_MS - now + 999) / 1000)
            .max();
        if let Some(secs) = over {
            return Err(secs.max(1));
        }
        if self.windows.len() >= SWEEP_AT {
            self.windows
                .retain(|_, (start, _)| now - *start < WINDOW_MS);
        }
        for k in &keys {
            let w = self.windows.entry(k.clone()).or_insert((now, 0));
            if now - w.0 >= WINDOW_MS {
                *w = (now, 0);
            }
            w.1 += 1;
        }
        Ok(Counted {
            keys,
            at: now,
            shared: false,
        })
    }

    /// Uncount an attempt (it succeeded, or was never checked). A window that has started
    /// since it was counted does not hold it, and is left alone.
    pub fn take_back(&mut self, c: Counted) {
        if c.shared {
            if self.uncounts.len() < UNCOUNTS_MAX {
                self.uncounts.push((c.key_names(), c.at));
            }
            return;
        }
        for k in &c.keys {
            if let Some(w) = self.windows.get_mut(k) {
                if w.0 <= c.at && w.1 > 0 {
                    w.1 -= 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys() -> Vec<Key> {
        vec![
            Key::Ip("127.0.0.1".parse().unwrap()),
            Key::Account("a@b.c".into()),
        ]
    }

    #[test]
    fn attempts_count_on_arrival() {
        let mut l = LoginLimiter::new(2, false);
        let a = l.begin(keys(), 0).unwrap();
        let _b = l.begin(keys(), 1).unwrap();
        assert_eq!(
            l.begin(keys(), 1000).unwrap_err(),
            59,
            "two in flight fill the limit"
        );
        l.take_back(a);
        let _c = l.begin(keys(), 1000).expect("a success makes room");
        assert!(l.begin(keys(), 1000).is_err());
        assert!(l.begin(keys(), 60_000).is_ok(), "a new window");
    }

    #[test]
    fn keys_are_independent_and_a_refusal_counts_nothing() {
        let mut l = LoginLimiter::new(1, false);
        let _ = l.begin(vec![Key::Account("a@b.c".into())], 0).unwrap();
        let ip = Key::Ip("10.0.0.1".parse().unwrap());
        assert!(l
            .begin(vec![ip.clone(), Key::Account("a@b.c".into())], 0)
            .is_err());
        assert!(
            l.begin(vec![ip.clone(), Key::Device([7; 16])], 0).is_ok(),
            "the refused attempt above did not count against the address"
        );
    }

    #[test]
    fn a_shared_attempt_is_taken_back_through_the_database() {
        let mut l = LoginLimiter::new(1, true);
        assert_eq!(l.shared(), Some(1));
        let mut c = Counted::shared(vec![
            Key::Ip("10.0.0.1".parse().unwrap()),
            Key::Device([0xab; 16]),
        ]);
        c.counted_at(5);
        l.take_back(c);
        let hex = "ab".repeat(16);
        assert_eq!(
            l.take_uncounts(),
            vec![(vec!["ip:10.0.0.1".to_string(), format!("device:{hex}")], 5)]
        );
        assert!(l.take_uncounts().is_empty(), "sent once");
        assert!(
            l.begin(keys(), 0).is_ok() && l.begin(keys(), 0).is_err(),
            "the local windows are untouched"
        );
    }

    #[test]
    fn taking_back_after_the_window_turned_leaves_the_new_window() {
        let mut l = LoginLimiter::new(1, false);
        let old = l.begin(keys(), 0).unwrap();
        let _new = l.begin(keys(), 60_000).unwrap();
        l.take_back(old);
        assert!(
            l.begin(keys(), 60_001).is_err(),
            "the new window kept its attempt"
        );
    }
}
