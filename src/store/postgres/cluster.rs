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

use super::{user_from_row, PgTx, USER_COLUMNS};
use crate::model::User;
use crate::store::{ClusterTx, DbResult, PresenceShare};

/// The sign-in limiter's window (ms).
const LOGIN_WINDOW_MS: i64 = 60_000;

impl ClusterTx for PgTx<'_> {
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

    fn overdue_sessions(&mut self, now_ms: i64, limit: i64) -> DbResult<Vec<i64>> {
        let s = self.stmt(
            "SELECT id FROM users
             WHERE token_activated AND NOT session_expired AND session_expires_at <= $1
             ORDER BY session_expires_at LIMIT $2",
        )?;
        let rows = self.tx.query(&s, &[&now_ms, &limit])?;
        rows.iter().map(|r| Ok(r.try_get(0)?)).collect()
    }

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

    fn presence_shares(&mut self, fresh_after_ms: i64) -> DbResult<Vec<PresenceShare>> {
        let s = self.stmt("SELECT sessions, admins FROM presence WHERE updated_at > $1")?;
        let rows = self.tx.query(&s, &[&fresh_after_ms])?;
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
        let mut keys = keys.to_vec();
        keys.sort_unstable();
        keys.dedup();
        let ensure = self.stmt(
            "INSERT INTO login_failures (key, window_start, attempts)
             SELECT k, $2, 0 FROM unnest($1::text[]) AS k ORDER BY k ON CONFLICT (key) DO NOTHING",
        )?;
        self.tx.execute(&ensure, &[&keys, &now])?;
        let read = self.stmt(
            "SELECT window_start, attempts FROM login_failures WHERE key = ANY($1)
             ORDER BY key FOR UPDATE",
        )?;
        let limit = per_minute.max(1) as i32;
        let mut over: Option<i64> = None;
        for row in self.tx.query(&read, &[&keys])? {
            let (start, n): (i64, i32) = (row.try_get(0)?, row.try_get(1)?);
            if now - start < LOGIN_WINDOW_MS && n >= limit {
                let secs = ((start + LOGIN_WINDOW_MS - now + 999) / 1000).max(1);
                over = Some(over.map_or(secs, |o| o.max(secs)));
            }
        }
        if let Some(secs) = over {
            return Ok(Err(secs));
        }
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
        // Locked in key order first, like `count_login_attempt`.
        let s = self.stmt(
            "UPDATE login_failures SET attempts = attempts - 1
             WHERE key IN (SELECT key FROM login_failures WHERE key = ANY($1)
                           ORDER BY key FOR UPDATE)
               AND window_start <= $2 AND attempts > 0",
        )?;
        self.tx.execute(&s, &[&keys, &at])?;
        Ok(())
    }

    fn sweep_login_attempts(&mut self, now: i64) -> DbResult<u64> {
        let s = self.stmt("DELETE FROM login_failures WHERE window_start < $1")?;
        Ok(self.tx.execute(&s, &[&(now - LOGIN_WINDOW_MS)])?)
    }
}
