//! What nodes of a cluster do together through the shared store, besides the application's
//! commands: start from one snapshot, agree on who sweeps up expiries nobody's timer caught,
//! and share who is here.
//!
//! Like commands, each runs in one transaction at the database's clock (`now`), and decides
//! nothing a guarded update would not decide again: the janitor's lease only saves work (two
//! janitors after a network split just race the same guarded expiries, and one wins each).
//!
//! Who runs this: a storage thread (`storage.rs`), never the reactor; the reactor queues a
//! [`ClusterCommand`] and gets the [`Outcome`] back with its ticket. Reads
//! ([`ClusterCommand::is_read`]) run in a read-only REPEATABLE READ transaction, so a snapshot's
//! users, head and tail are one consistent state; the rest run at READ COMMITTED and rely on
//! the store's row locks (`store/postgres/cluster.rs`). An error rolls the whole command back.
//! Only cluster mode uses this module: a single SQLite server has nobody to agree with
//! (cluster-design.md §4).

use super::{AppResult, Outcome};
use crate::auth::Digest32;
use crate::hub::Presence;
use crate::store::{ClusterTx, PresenceShare, Snapshot};
use std::collections::BTreeMap;

/// The lease that names the janitor.
const JANITOR_LEASE: &str = "janitor";
/// A janitor that stops renewing loses the lease after this long (ms).
pub const LEASE_MS: i64 = 10_000;
/// Expiries handed out per sweep at most (the next sweep takes the rest).
const SWEEP_LIMIT: i64 = 100;
/// A node whose share is older than this has left presence (ms; API.md: within 15 s, and a
/// node refreshes its share every 3 s: three missed refreshes).
pub const PRESENCE_STALE_MS: i64 = 10_000;

/// Work only a cluster's store does.
#[derive(Debug)]
pub enum ClusterCommand {
    /// Read: the whole view at one position of the log (for a node that must resynchronise),
    /// with the newest `tail` events.
    Snapshot { tail: u64 },
    /// Take or renew the janitor lease for `node_id`; if held, list the overdue expiries.
    Janitor { node_id: String },
    /// Store `node_id`'s share of presence (when `mine` is given: it changed or is due for a
    /// refresh) and read everyone's, merged.
    SharePresence {
        node_id: String,
        mine: Option<Presence>,
    },
    /// Sign-in, step 1: count the attempt against `keys` for the whole deployment (or refuse
    /// it over `per_minute`), then look the account up.
    CountedFindAdmin {
        email: String,
        keys: Vec<String>,
        per_minute: u32,
    },
    /// Take back an attempt counted at `at` (it succeeded, or was never checked).
    UncountLogin { keys: Vec<String>, at: i64 },
    /// Read: is the session of user `id` live under one of these token digests, and where
    /// does the log stand (a node that has not applied the activation yet waits for it).
    LookupSession { id: i64, tokens: Vec<Digest32> },
}

impl ClusterCommand {
    /// Whether the command only reads (then it runs in a read-only transaction and must not
    /// write). `LookupSession` is a read although it is part of a handshake's decision: it
    /// changes nothing, it only tells the node to wait for its view.
    pub fn is_read(&self) -> bool {
        matches!(
            self,
            ClusterCommand::Snapshot { .. } | ClusterCommand::LookupSession { .. }
        )
    }
}

/// Run `cmd` at the database's time `now` (Unix ms).
///
/// Errors: any store error, as an `AppError` (`Busy` for timeouts, lock waits and a lost
/// connection). What follows is the caller's choice: the periodic commands (janitor,
/// presence) just run again at the next tick; a request waiting on one is answered with the
/// error (503 when busy). Refusals that are answers, not failures — a sign-in over its
/// limit — come back as `Ok` outcomes.
pub fn execute(tx: &mut dyn ClusterTx, now: i64, cmd: ClusterCommand) -> AppResult<Outcome> {
    match cmd {
        ClusterCommand::Snapshot { tail } => {
            // `stored_from`: the first event the table still holds (the head + 1 when it is
            // empty), so the node knows how far back a client's `since` can be resumed.
            let users = tx.all_users()?;
            let head = tx.log_head()?;
            let events = tx.events_between(head.head.saturating_sub(tail) + 1, head.head)?;
            let stored_from = tx.oldest_event()?.unwrap_or(head.head + 1);
            Ok(Outcome::Snapshot(Box::new(Snapshot {
                users,
                head,
                events,
                stored_from,
            })))
        }
        ClusterCommand::Janitor { node_id } => {
            // Not the holder: nothing to do this tick (another node sweeps). The lease runs
            // `LEASE_MS`, ten ticks, so a janitor that dies is replaced within 10–11 s,
            // inside the contract's 15 s for a session whose node is gone (API.md
            // "Cluster mode").
            if !tx.take_lease(JANITOR_LEASE, &node_id, now + LEASE_MS, now)? {
                return Ok(Outcome::Overdue {
                    sessions: Vec::new(),
                    invites: Vec::new(),
                });
            }
            // The listed ids are expired by separate guarded commands (`swept` in the
            // reactor), one transaction each, so one failing does not undo the others.
            tx.sweep_login_attempts(now)?;
            Ok(Outcome::Overdue {
                sessions: tx.overdue_sessions(now, SWEEP_LIMIT)?,
                invites: tx.overdue_invites(now, SWEEP_LIMIT)?,
            })
        }
        ClusterCommand::SharePresence { node_id, mine } => {
            // The other nodes' shares, merged: this node adds its own live part (`hub`), so
            // what it tells is never older than its own streams.
            if let Some(mine) = mine {
                tx.share_presence(&node_id, &encode(&mine), now)?;
            }
            let mut others = Presence::default();
            for share in tx.presence_shares(now - PRESENCE_STALE_MS, &node_id)? {
                merge(&mut others, &share);
            }
            Ok(Outcome::Presence(others))
        }
        ClusterCommand::CountedFindAdmin {
            email,
            keys,
            per_minute,
        } => match tx.count_login_attempt(&keys, per_minute, now)? {
            // Counted before the account is looked up, and whether or not it exists: the
            // answer to an unknown email costs the same attempt (no account probing). `at`
            // lets the reactor take exactly this attempt back if the password is right.
            Ok(()) => Ok(Outcome::LoginCounted {
                admin: tx.find_admin(&email)?,
                at: now,
            }),
            Err(retry_after_s) => Ok(Outcome::LoginLimited { retry_after_s }),
        },
        ClusterCommand::UncountLogin { keys, at } => {
            tx.uncount_login_attempt(&keys, at)?;
            Ok(Outcome::Nothing)
        }
        ClusterCommand::LookupSession { id, tokens } => {
            // Any one token that names user `id` with a live session is enough (several cookie
            // values may be sent); `head` tells the node which event its view must reach
            // before it opens the stream.
            let mut live = false;
            for token in &tokens {
                if let Some(u) = tx.user_by_token(token)? {
                    live = u.id == id && u.session_is_live(now);
                    if live {
                        break;
                    }
                }
            }
            Ok(Outcome::SessionAt {
                live,
                head: tx.log_head()?.head,
            })
        }
    }
}

/// This node's presence as stored: JSON objects keyed by user id (as a string: JSON keys are
/// strings) and by admin email, each with how many streams watch. Serialising maps of
/// strings and numbers cannot fail; `unwrap_or_default` only keeps `src/` free of `unwrap`.
fn encode(p: &Presence) -> PresenceShare {
    let sessions: BTreeMap<String, usize> = p
        .sessions
        .iter()
        .map(|(k, v)| (k.to_string(), *v))
        .collect();
    PresenceShare {
        sessions: serde_json::to_string(&sessions).unwrap_or_default(),
        admins: serde_json::to_string(&p.admins).unwrap_or_default(),
    }
}

/// Add one node's share to `all` (streams on several nodes add up). A share that does not
/// parse (written by another version) is skipped: presence is advisory.
fn merge(all: &mut Presence, share: &PresenceShare) {
    if let Ok(sessions) = serde_json::from_str::<BTreeMap<String, usize>>(&share.sessions) {
        for (id, n) in sessions {
            if let Ok(id) = id.parse::<i64>() {
                *all.sessions.entry(id).or_default() += n;
            }
        }
    }
    if let Ok(admins) = serde_json::from_str::<BTreeMap<String, usize>>(&share.admins) {
        for (email, n) in admins {
            *all.admins.entry(email).or_default() += n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_across_nodes() {
        let mut a = Presence::default();
        a.sessions.insert(7, 1);
        a.admins.insert("x@y.io".into(), 2);
        let mut b = Presence::default();
        b.sessions.insert(7, 2);
        b.sessions.insert(9, 1);
        b.admins.insert("z@y.io".into(), 1);
        let mut all = Presence::default();
        merge(&mut all, &encode(&a));
        merge(&mut all, &encode(&b));
        merge(
            &mut all,
            &PresenceShare {
                sessions: "garbage".into(),
                admins: "[]".into(),
            },
        );
        assert_eq!(all.sessions, BTreeMap::from([(7, 3), (9, 1)]));
        assert_eq!(
            all.admins,
            BTreeMap::from([("x@y.io".to_string(), 2), ("z@y.io".to_string(), 1)])
        );
    }
}
