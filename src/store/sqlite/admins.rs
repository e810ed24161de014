//! The admin accounts on SQLite ([`AdminAccounts`]). A writing transaction here is `BEGIN
//! IMMEDIATE`: it holds the database's write lock from its start, so what it read about the
//! accounts ("not the last admin") still holds when it writes.

use super::SqliteTx;
use crate::auth::Digest32;
use crate::store::{AdminAccounts, AdminInfo, DbResult};
use rusqlite::{params, OptionalExtension, Row};

/// Columns of an admin row, in the order [`admin_from_row`] reads them.
const ADMIN_COLUMNS: &str = "id, email, created_at, last_sign_in_at";

fn admin_from_row(r: &Row<'_>) -> rusqlite::Result<AdminInfo> {
    Ok(AdminInfo {
        id: r.get(0)?,
        email: r.get(1)?,
        created_at: r.get(2)?,
        last_sign_in_at: r.get(3)?,
    })
}

impl AdminAccounts for SqliteTx<'_> {
    fn admins(&mut self) -> DbResult<Vec<AdminInfo>> {
        let mut stmt = self
            .tx
            .prepare_cached(&format!("SELECT {ADMIN_COLUMNS} FROM admins ORDER BY id"))?;
        let rows = stmt.query_map([], admin_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn admin_by_id(&mut self, id: i64) -> DbResult<Option<(AdminInfo, String)>> {
        Ok(self
            .tx
            .prepare_cached(&format!(
                "SELECT {ADMIN_COLUMNS}, password_hash FROM admins WHERE id = ?1"
            ))?
            .query_row([id], |r| Ok((admin_from_row(r)?, r.get(4)?)))
            .optional()?)
    }

    fn delete_admin(&mut self, id: i64) -> DbResult<bool> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM admins WHERE id = ?1")?
            .execute([id])?;
        Ok(n == 1)
    }

    fn set_admin_password(&mut self, id: i64, hash: &str) -> DbResult<bool> {
        let n = self
            .tx
            .prepare_cached("UPDATE admins SET password_hash = ?2 WHERE id = ?1")?
            .execute(params![id, hash])?;
        Ok(n == 1)
    }

    fn note_admin_sign_in(&mut self, id: i64, now_ms: i64) -> DbResult<()> {
        self.tx
            .prepare_cached("UPDATE admins SET last_sign_in_at = ?2 WHERE id = ?1")?
            .execute(params![id, now_ms])?;
        Ok(())
    }

    fn end_admin_sessions(&mut self, id: i64, keep: Option<&Digest32>) -> DbResult<Vec<Digest32>> {
        let keep: &[u8] = keep.map_or(&[], |d| &d[..]);
        let mut ended = Vec::new();
        {
            let mut stmt = self.tx.prepare_cached(
                "SELECT token_hash FROM admin_sessions WHERE admin_id = ?1 AND token_hash != ?2",
            )?;
            let rows = stmt.query_map(params![id, keep], |r| r.get::<_, Vec<u8>>(0))?;
            for h in rows {
                // Digests we stored are 32 bytes; anything else is not one of ours to close.
                if let Ok(d) = Digest32::try_from(h?.as_slice()) {
                    ended.push(d);
                }
            }
        }
        self.tx
            .prepare_cached("DELETE FROM admin_sessions WHERE admin_id = ?1 AND token_hash != ?2")?
            .execute(params![id, keep])?;
        Ok(ended)
    }
}
