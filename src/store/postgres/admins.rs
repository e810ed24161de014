//! The admin accounts on PostgreSQL ([`AdminAccounts`]). Transactions here run under READ
//! COMMITTED, so a writing transaction reads the accounts `FOR UPDATE`: two admins removing
//! each other at once on two nodes are serialised on those rows, and the second sees that only
//! one account is left.

use super::PgTx;
use crate::auth::Digest32;
use crate::store::{AdminAccounts, AdminInfo, DbResult};
use postgres::Row;

fn admin_from_row(r: &Row) -> DbResult<AdminInfo> {
    Ok(AdminInfo {
        id: r.try_get(0)?,
        email: r.try_get(1)?,
        created_at: r.try_get(2)?,
        last_sign_in_at: r.try_get(3)?,
    })
}

impl AdminAccounts for PgTx<'_> {
    fn admins(&mut self) -> DbResult<Vec<AdminInfo>> {
        let s = self.stmt(if self.write {
            "SELECT id, email, created_at, last_sign_in_at FROM admins ORDER BY id FOR UPDATE"
        } else {
            "SELECT id, email, created_at, last_sign_in_at FROM admins ORDER BY id"
        })?;
        self.tx.query(&s, &[])?.iter().map(admin_from_row).collect()
    }

    fn admin_by_id(&mut self, id: i64) -> DbResult<Option<(AdminInfo, String)>> {
        let s = self.stmt(
            "SELECT id, email, created_at, last_sign_in_at, password_hash FROM admins WHERE id = $1",
        )?;
        self.tx
            .query_opt(&s, &[&id])?
            .map(|r| Ok((admin_from_row(&r)?, r.try_get(4)?)))
            .transpose()
    }

    fn delete_admin(&mut self, id: i64) -> DbResult<bool> {
        let s = self.stmt("DELETE FROM admins WHERE id = $1")?;
        Ok(self.tx.execute(&s, &[&id])? == 1)
    }

    fn set_admin_password(&mut self, id: i64, hash: &str) -> DbResult<bool> {
        let s = self.stmt("UPDATE admins SET password_hash = $2 WHERE id = $1")?;
        Ok(self.tx.execute(&s, &[&id, &hash])? == 1)
    }

    fn note_admin_sign_in(&mut self, id: i64, now_ms: i64) -> DbResult<()> {
        let s = self.stmt("UPDATE admins SET last_sign_in_at = $2 WHERE id = $1")?;
        self.tx.execute(&s, &[&id, &now_ms])?;
        Ok(())
    }

    fn end_admin_sessions(&mut self, id: i64, keep: Option<&Digest32>) -> DbResult<Vec<Digest32>> {
        let keep: &[u8] = keep.map_or(&[], |d| &d[..]);
        let s = self.stmt(
            "DELETE FROM admin_sessions WHERE admin_id = $1 AND token_hash <> $2
             RETURNING token_hash",
        )?;
        let mut ended = Vec::new();
        for r in self.tx.query(&s, &[&id, &keep])? {
            let h: Vec<u8> = r.try_get(0)?;
            // Digests we stored are 32 bytes; anything else is not one of ours to close.
            if let Ok(d) = Digest32::try_from(h.as_slice()) {
                ended.push(d);
            }
        }
        Ok(ended)
    }
}
