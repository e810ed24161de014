//! What only a cluster's store does ([`ClusterTx`]): the snapshot's user list, the janitor's
//! lease and sweep, presence shares, shared settings, and failed sign-ins counted for the whole
//! deployment.
//!
//! Failed sign-ins follow `api/limiter.rs`'s rules (fixed one-minute windows, counted on
//! arrival, taken back when the attempt succeeds or is never checked), so a burst spread over
//! the nodes is limited like one sent to a single node. Invariant: the rows of an attempt's
//! keys are locked (`FOR UPDATE`, in key order, so two attempts sharing keys cannot deadlock)
//! from the check to the commit: two nodes counting the same key at once are serialised and
//! the second sees the first's count.
//!
//! Transactions: every method runs inside the one transaction `Postgres::transaction` opened
//! for the command. Writes run at PostgreSQL's default isolation, READ COMMITTED: each
//! statement sees what committed before it started, so no race-prone decision rests on a
//! plain read: the lease
//! re-checks its holder in `ON CONFLICT … WHERE` (evaluated on the latest row version, under
//! its row lock), and the limiter reads counts `FOR UPDATE`. The snapshot (`all_users` with
//! the log head) runs read-only at REPEATABLE READ, so users and head are one consistent view.
//! Times are Unix ms of the database's clock (`now_ms`), never a node's own clock.

use super::{user_from_row, PgTx, USER_COLUMNS};
use crate::model::User;
use crate::store::{ClusterTx, DbResult, PresenceShare};

/// The sign-in limiter's window (ms).
const LOGIN_WINDOW_MS: i64 = 60_000;

impl ClusterTx for PgTx<'_> {
    // Oldest first (ids follow creation), as the trait promises; the view rebuilds its list
    // from this. Invite tokens are derived here with the deployment's key, never stored.
    fn all_users(&mut self) -> DbResult<Vec<User>> {
        let key = self.key;
        let rows = self.tx.query(
            &format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"),
            &[],
        )?;
        rows.iter().map(|r| user_from_row(r, &key)).collect()
    }

    fn take_lease(
        &mut self,
        name: &str,
        holder: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> DbResult<bool> {
        // One statement, so no other node can slip in between a read and a write: the insert
        // wins when nobody held the lease; on conflict the row is updated (renewed, or taken
        // over) only if we already hold it or the old holder's `until` has passed. `RETURNING`
        // yields a row only when our insert or update happened, so `Some` means "we hold it".
        // Two nodes racing for an expired lease are serialised on the row lock; the second
        // sees the first's fresh `until` and gets no row.
        let s = self.stmt(
            "INSERT INTO leases (name, holder, until) VALUES ($1, $2, $3)
             ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, until = excluded.until
             WHERE leases.holder = excluded.holder OR leases.until < $4
             RETURNING holder",
        )?;
        Ok(self
            .tx
            .query_opt(&s, &[&name, &holder, &until_ms, &now_ms])?
            .is_some())
    }

    // Only ids, oldest deadline first, at most `limit`: each is then expired by its own guarded
    // command (`ExpireSession`, which locks the row `FOR UPDATE` and re-checks), so reading
    // without a lock here is safe; a row another node expires meanwhile is simply skipped there.
    fn overdue_sessions(&mut self, now_ms: i64, limit: i64) -> DbResult<Vec<i64>> {
        let s = self.stmt(
            "SELECT id FROM users
             WHERE token_activated AND NOT session_expired AND session_expires_at <= $1
             ORDER BY session_expires_at LIMIT $2",
        )?;
        let rows = self.tx.query(&s, &[&now_ms, &limit])?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    // Same shape as `overdue_sessions`: unused links past their end not yet announced
    // (`invite_expired` false), guarded again by `ExpireInvite`.
    fn overdue_invites(&mut self, now_ms: i64, limit: i64) -> DbResult<Vec<i64>> {
        let s = self.stmt(
            "SELECT id FROM users
             WHERE NOT token_activated AND NOT invite_expired AND invite_expires_at <= $1
             ORDER BY invite_expires_at LIMIT $2",
        )?;
        let rows = self.tx.query(&s, &[&now_ms, &limit])?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

    fn share_presence(
        &mut self,
        node_id: &str,
        share: &PresenceShare,
        now_ms: i64,
    ) -> DbResult<()> {
        // One row per node, overwritten whole (an upsert): a node never edits another's row,
        // so no two writers contend. `updated_at` is the database's clock, so readers judge
        // staleness on the same clock as the writer.
        let s = self.stmt(
            "INSERT INTO presence (node_id, updated_at, sessions, admins) VALUES ($1, $2, $3, $4)
             ON CONFLICT (node_id) DO UPDATE
             SET updated_at = excluded.updated_at, sessions = excluded.sessions,
                 admins = excluded.admins",
        )?;
        self.tx
            .execute(&s, &[&node_id, &now_ms, &share.sessions, &share.admins])?;
        Ok(())
    }

    // Rows of nodes that stopped refreshing are left in the table and only filtered out here
    // (`updated_at > fresh_after_ms`): a node that comes back under the same id overwrites its
    // row. The JSON in `sessions`/`admins` is parsed by the caller, which skips what it cannot.
    fn presence_shares(
        &mut self,
        fresh_after_ms: i64,
        except_node: &str,
    ) -> DbResult<Vec<PresenceShare>> {
        let s = self.stmt(
            "SELECT sessions, admins FROM presence WHERE updated_at > $1 AND node_id <> $2",
        )?;
        let rows = self.tx.query(&s, &[&fresh_after_ms, &except_node])?;
        rows.iter()
            .map(|r| {
                Ok(PresenceShare {
                    sessions: r.try_get(0)?,
                    admins: r.try_get(1)?,
                })
            })
            .collect()
    }

    fn setting(&mut self, name: &str) -> DbResult<Option<Vec<u8>>> {
        Ok(self
            .tx
            .query_opt("SELECT value FROM settings WHERE name = $1", &[&name])?
            .map(|r| r.try_get(0))
            .transpose()?)
    }

    // First writer wins: `DO NOTHING` keeps a value another node stored first, and the read
    // that follows returns whichever value holds. Under READ COMMITTED the insert waits for a
    // concurrent uncommitted insert of the same name and then does nothing, so the read sees
    // that committed row; every node ends up with the same value.
    fn setting_or_insert(&mut self, name: &str, value: &[u8]) -> DbResult<Vec<u8>> {
        self.tx.execute(
            "INSERT INTO settings (name, value) VALUES ($1, $2) ON CONFLICT (name) DO NOTHING",
            &[&name, &value],
        )?;
        Ok(self
            .tx
            .query_one("SELECT value FROM settings WHERE name = $1", &[&name])?
            .try_get(0)?)
    }

    fn admin_count(&mut self) -> DbResult<i64> {
        Ok(self
            .tx
            .query_one("SELECT count(*) FROM admins", &[])?
            .try_get(0)?)
    }

    fn count_login_attempt(
        &mut self,
        keys: &[String],
        per_minute: u32,
        now: i64,
    ) -> DbResult<Result<(), i64>> {
        // Sorted and deduplicated: every transaction then locks rows in the same order, which
        // is what rules out a deadlock between two attempts sharing keys (PostgreSQL would
        // detect one and abort a transaction: `DbError::Busy`, a 503 to that sign-in).
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let ensure = self.stmt(
            "INSERT INTO login_failures (key, window_start, attempts)
             SELECT k, $2, 0 FROM unnest($1::text[]) AS k ORDER BY k ON CONFLICT (key) DO NOTHING",
        )?;
        // Make sure a row exists for every key, so `FOR UPDATE` below has something to lock
        // (it cannot lock a row that is not there yet, and two first attempts would both count
        // from zero).
        self.tx.execute(&ensure, &[&keys, &now])?;
        let read = self.stmt(
            "SELECT window_start, attempts FROM login_failures WHERE key = ANY($1)
             ORDER BY key FOR UPDATE",
        )?;
        // A limit of 0 would refuse everything forever; treated as 1, like `api/limiter.rs`.
        let limit = per_minute.max(1) as i32;
        let mut over: Option<i64> = None;
        for row in self.tx.query(&read, &[&keys])? {
            let (start, n): (i64, i32) = (row.try_get(0)?, row.try_get(1)?);
            // Over the limit while the window runs: refuse, with the seconds until the window
            // ends, rounded up (at least 1, for `Retry-After`); the longest wait of all keys.
            if now - start < LOGIN_WINDOW_MS && n >= limit {
                let secs = ((start + LOGIN_WINDOW_MS - now + 999) / 1000).max(1);
                over = Some(over.map_or(secs, |o| o.max(secs)));
            }
        }
        // A refused attempt is not counted (API.md "Sign-in abuse": limited requests do not
        // count); the transaction still commits, but changed nothing but the ensured rows.
        if let Some(secs) = over {
            return Ok(Err(secs));
        }
        // Count it: a window that ended starts afresh at `now` with this one attempt.
        let count = self.stmt(
            "UPDATE login_failures SET
                 window_start = CASE WHEN $2 - window_start >= $3 THEN $2 ELSE window_start END,
                 attempts = CASE WHEN $2 - window_start >= $3 THEN 1 ELSE attempts + 1 END
             WHERE key = ANY($1)",
        )?;
        self.tx.execute(&count, &[&keys, &now, &LOGIN_WINDOW_MS])?;
        Ok(Ok(()))
    }

    fn uncount_login_attempt(&mut self, keys: &[String], at: i64) -> DbResult<()> {
        // Locked in key order first, like `count_login_attempt`. Only the window the attempt was
        // counted in is touched (`window_start <= at`): an attempt from an ended window is
        // not taken off a newer one. Never below zero.
        let s = self.stmt(
            "UPDATE login_failures SET attempts = attempts - 1
             WHERE key IN (SELECT key FROM login_failures WHERE key = ANY($1)
                           ORDER BY key FOR UPDATE)
               AND window_start <= $2 AND attempts > 0",
        )?;
        self.tx.execute(&s, &[&keys, &at])?;
        Ok(())
    }

    // Run by the janitor under its lease: rows whose window ended are deleted (a later attempt
    // on that key recreates its row). Not locked first: if it deletes an ended row between a
    // concurrent attempt's ensure step and its `FOR UPDATE`, that attempt goes uncounted on
    // that key — one attempt of slack, accepted to keep the sweep a single cheap statement.
    fn sweep_login_attempts(&mut self, now: i64) -> DbResult<u64> {
        let s = self.stmt("DELETE FROM login_failures WHERE window_start < $1")?;
        Ok(self.tx.execute(&s, &[&(now - LOGIN_WINDOW_MS)])?)
    }
}
