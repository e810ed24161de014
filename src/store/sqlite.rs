//! SQLite storage: open, migrate, and the [`Tx`] interface over one embedded database file.
//!
//! Durability: WAL journal with `synchronous=NORMAL`. A commit is in the WAL (in the OS page
//! cache) before the HTTP answer is written, so a killed or crashed *process* loses no
//! acknowledged write; only a power cut can drop the last few commits, and even then the file
//! stays consistent. `FULL` would add an fsync (milliseconds) to every API write; see
//! docs/SECURITY.md for the trade-off.
//!
//! Writes run in `BEGIN IMMEDIATE` transactions: the write lock is taken up front, so two
//! writers (the server and the `admin` CLI) never deadlock upgrading a read lock, and a
//! command's reads see exactly the state it changes.

use super::{
    AdminAccount, AdminSession, DbError, DbResult, LogHead, NewUser, Retention, StoredEvent, Tx,
};
use crate::auth::{self, Digest32};
use crate::model::User;
use rusqlite::{params, Connection, OptionalExtension, Row, TransactionBehavior};
use std::path::Path;

mod admins;

/// Migrations, applied in order inside one transaction each; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[
    include_str!("../../sql/0001_init.sql"),
    include_str!("../../sql/0002_event_log.sql"),
    include_str!("../../sql/0003_oidc.sql"),
    include_str!("../../sql/0004_admins.sql"),
    include_str!("../../sql/0005_log_pages.sql"),
];

/// The number of the last event written (`sql/0005_log_pages.sql`): the last row's, or the
/// number kept in `log_head` by the last trim, whichever is larger.
const HEAD: &str = "max(coalesce((SELECT max(seq) FROM events), 0),
                       (SELECT head FROM log_head WHERE id = 1))";

/// How long a statement waits for another process's lock before giving up (`SQLITE_BUSY`),
/// unless the caller sets its own deadline ([`Sqlite::set_busy_timeout`]).
const BUSY_TIMEOUT_MS: u64 = 2000;

/// Columns of a user row, in the order [`user_from_row`] reads them.
const USER_COLUMNS: &str = "id, first_name, last_name, email, invite_nonce, invite_expires_at,
    token_activated, session_started_at, session_expires_at, session_expired,
    questions_answered, questions_total, transcript_url, summary_url, created_at,
    invite_expired, session_ended_at";

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                DbError::Conflict
            }
            rusqlite::Error::SqliteFailure(f, _)
                if matches!(
                    f.code,
                    rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked
                ) =>
            {
                DbError::Busy
            }
            _ => DbError::Sqlite(e),
        }
    }
}

/// One SQLite database.
pub struct Sqlite {
    conn: Connection,
    /// `PRAGMA data_version` when `changed_by_others` last read it.
    seen_version: std::cell::Cell<Option<i64>>,
    /// The server key invite tokens are derived under. `None` for the admin CLI, which never
    /// reads users (and must not create a key: a server finding its key missing re-keys the
    /// stored invite digests, which it could not do if the CLI had made a new key first).
    key: Option<[u8; 32]>,
}

impl Sqlite {
    /// Open (creating if needed) and migrate the database at `path`.
    /// The file is created owner-only (SQLite gives `-wal` and `-shm` the same mode), and
    /// existing files others could read are tightened first (`files.rs`).
    pub fn open(path: &Path, key: Option<[u8; 32]>) -> DbResult<Sqlite> {
        super::check_db_dir(path)?;
        let is_new = !path.exists();
        crate::files::prepare_database(path).map_err(DbError::Io)?;
        let conn = Connection::open(path)
            .map_err(|e| DbError::Io(format!("cannot open database {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_millis(BUSY_TIMEOUT_MS))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut db = Sqlite {
            conn,
            key,
            seen_version: std::cell::Cell::new(None),
        };
        db.migrate()?;
        if is_new {
            log::info!("created new database {}", path.display());
        }
        Ok(db)
    }

    /// Wait at most `timeout` for another process's lock from now on (the storage thread sets
    /// each job's remaining time before running it).
    pub fn set_busy_timeout(&self, timeout: std::time::Duration) -> DbResult<()> {
        Ok(self.conn.busy_timeout(timeout)?)
    }

    fn migrate(&mut self) -> DbResult<()> {
        let version: i64 = self
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))?;
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let tx = self.conn.transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", (i + 1) as i64)?;
            tx.commit()?;
            log::info!("database migrated to version {}", i + 1);
        }
        Ok(())
    }

    /// Run `f` in a write transaction: committed if it returns `Ok`, rolled back otherwise.
    pub fn write<T, E: From<DbError>>(
        &mut self,
        f: impl FnOnce(&mut SqliteTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self
            .conn
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(DbError::from)?;
        let mut stx = SqliteTx {
            tx,
            key: self.key,
            seen_version: &self.seen_version,
        };
        let out = f(&mut stx)?;
        stx.tx.commit().map_err(DbError::from)?;
        Ok(out)
    }

    /// Run `f` in a read transaction (a consistent snapshot; never waits for writers in WAL).
    pub fn read<T, E: From<DbError>>(
        &mut self,
        f: impl FnOnce(&mut SqliteTx<'_>) -> Result<T, E>,
    ) -> Result<T, E> {
        let tx = self.conn.transaction().map_err(DbError::from)?;
        let mut stx = SqliteTx {
            tx,
            key: self.key,
            seen_version: &self.seen_version,
        };
        f(&mut stx)
    }

    /// Every user, oldest first.
    pub fn load_users(&mut self) -> DbResult<Vec<User>> {
        self.read(|tx| {
            let key = tx.key()?;
            let mut stmt = tx
                .tx
                .prepare(&format!("SELECT {USER_COLUMNS} FROM users ORDER BY id"))?;
            let rows = stmt.query_map([], |r| user_from_row(r, &key))?;
            Ok(rows.collect::<Result<_, _>>()?)
        })
    }

    /// Re-derive and store every invite digest (after the server key had to be replaced).
    pub fn rehash_invites(&mut self, users: &[User]) -> DbResult<()> {
        self.write(|tx| {
            for u in users {
                tx.tx.execute(
                    "UPDATE users SET invite_token_hash = ?1 WHERE id = ?2",
                    params![&auth::digest(&u.invite_token)[..], u.id],
                )?;
            }
            Ok(())
        })
    }

    pub fn admin_count(&self) -> DbResult<i64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM admins", [], |r| r.get(0))?)
    }

    /// Create an admin account (the `admin create` CLI).
    pub fn create_admin(&self, email: &str, password_hash: &str, now_ms: i64) -> DbResult<i64> {
        self.conn.execute(
            "INSERT INTO admins (email, password_hash, created_at) VALUES (?1, ?2, ?3)",
            params![email, password_hash, now_ms],
        )?;
        Ok(self.conn.last_insert_rowid())
    }
}

/// A user row as a [`User`], its token derived under `key`.
fn user_from_row(r: &Row<'_>, key: &[u8; 32]) -> rusqlite::Result<User> {
    let id: i64 = r.get(0)?;
    let invite_nonce: Vec<u8> = r.get(4)?;
    Ok(User {
        id,
        first_name: r.get(1)?,
        last_name: r.get(2)?,
        email: r.get(3)?,
        invite_token: auth::invite_token(key, id, &invite_nonce),
        invite_nonce,
        invite_expires_at: r.get(5)?,
        token_activated: r.get(6)?,
        session_started_at: r.get(7)?,
        session_expires_at: r.get(8)?,
        session_expired: r.get(9)?,
        questions_answered: r.get(10)?,
        questions_total: r.get(11)?,
        transcript_url: r.get(12)?,
        summary_url: r.get(13)?,
        created_at: r.get(14)?,
        invite_expired: r.get(15)?,
        session_ended_at: r.get(16)?,
    })
}

fn admin_session_from_row(r: &Row<'_>) -> rusqlite::Result<AdminSession> {
    let digest: Vec<u8> = r.get(0)?;
    let mut token_digest = [0u8; 32];
    if digest.len() == 32 {
        token_digest.copy_from_slice(&digest);
    }
    Ok(AdminSession {
        token_digest,
        admin_id: r.get(1)?,
        email: r.get(2)?,
        expires_at: r.get(3)?,
    })
}

fn event_from_row(r: &Row<'_>) -> rusqlite::Result<StoredEvent> {
    let kind: String = r.get(3)?;
    let cause: Option<String> = r.get(4)?;
    Ok(StoredEvent {
        seq: r.get::<_, i64>(0)? as u64,
        at_ms: r.get(1)?,
        user_id: r.get(2)?,
        kind: crate::app::event::kind_label(&kind),
        cause: cause.as_deref().and_then(crate::app::Cause::from_label),
        admin_message: r.get(5)?,
        agent_message: r.get(6)?,
        user_row: r.get(7)?,
    })
}

/// An open SQLite transaction.
pub struct SqliteTx<'c> {
    tx: rusqlite::Transaction<'c>,
    key: Option<[u8; 32]>,
    seen_version: &'c std::cell::Cell<Option<i64>>,
}

impl SqliteTx<'_> {
    fn key(&self) -> DbResult<[u8; 32]> {
        self.key
            .ok_or_else(|| DbError::Io("users need the server key, which was not loaded".into()))
    }

    fn user_where(&mut self, clause: &str, value: &dyn rusqlite::ToSql) -> DbResult<Option<User>> {
        let key = self.key()?;
        Ok(self
            .tx
            .prepare_cached(&format!("SELECT {USER_COLUMNS} FROM users WHERE {clause}"))?
            .query_row([value], |r| user_from_row(r, &key))
            .optional()?)
    }
}

impl Tx for SqliteTx<'_> {
    fn invite_token(&self, id: i64, nonce: &[u8]) -> DbResult<String> {
        Ok(auth::invite_token(&self.key()?, id, nonce))
    }

    fn user(&mut self, id: i64) -> DbResult<Option<User>> {
        self.user_where("id = ?1", &id)
    }

    fn user_by_token(&mut self, token_digest: &Digest32) -> DbResult<Option<User>> {
        self.user_where("invite_token_hash = ?1", &&token_digest[..])
    }

    /// The token digest is written in the same transaction so the row never exists without one.
    fn insert_user(&mut self, u: &NewUser) -> DbResult<User> {
        // A placeholder digest that cannot collide (it is the nonce, 16 bytes, not 32).
        self.tx
            .prepare_cached(
                "INSERT INTO users (first_name, last_name, email, invite_nonce, invite_token_hash,
                                    invite_expires_at, questions_total, created_at)
                 VALUES (?1, ?2, ?3, ?4, ?4, ?5, ?6, ?7)",
            )?
            .execute(params![
                u.first_name,
                u.last_name,
                u.email,
                u.invite_nonce,
                u.invite_expires_at,
                u.questions_total,
                u.created_at
            ])?;
        let id = self.tx.last_insert_rowid();
        let token = self.invite_token(id, u.invite_nonce)?;
        self.tx
            .prepare_cached("UPDATE users SET invite_token_hash = ?1 WHERE id = ?2")?
            .execute(params![&auth::digest(&token)[..], id])?;
        Ok(u.stored(id, token))
    }

    fn write_user(&mut self, u: &User) -> DbResult<bool> {
        let n = self
            .tx
            .prepare_cached(
                "UPDATE users SET first_name = ?2, last_name = ?3, email = ?4, invite_nonce = ?5,
                    invite_token_hash = ?6, invite_expires_at = ?7, token_activated = ?8,
                    session_started_at = ?9, session_expires_at = ?10, session_expired = ?11,
                    questions_answered = ?12, questions_total = ?13, transcript_url = ?14,
                    summary_url = ?15, invite_expired = ?16, session_ended_at = ?17
                 WHERE id = ?1",
            )?
            .execute(params![
                u.id,
                u.first_name,
                u.last_name,
                u.email,
                u.invite_nonce,
                &auth::digest(&u.invite_token)[..],
                u.invite_expires_at,
                u.token_activated,
                u.session_started_at,
                u.session_expires_at,
                u.session_expired,
                u.questions_answered,
                u.questions_total,
                u.transcript_url,
                u.summary_url,
                u.invite_expired,
                u.session_ended_at,
            ])?;
        Ok(n == 1)
    }

    fn delete_user(&mut self, id: i64) -> DbResult<bool> {
        let n = self
            .tx
            .prepare_cached("DELETE FROM users WHERE id = ?1")?
            .execute([id])?;
        Ok(n == 1)
    }

    /// One statement, so the "no admin yet" check and the insert cannot be split by the CLI.
    fn create_first_admin(
        &mut self,
        email: &str,
        hash: &str,
        now_ms: i64,
    ) -> DbResult<Option<i64>> {
        let n = self.tx.execute(
            "INSERT INTO admins (email, password_hash, created_at)
             SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM admins)",
            params![email, hash, now_ms],
        )?;
        Ok((n == 1).then(|| self.tx.last_insert_rowid()))
    }

    fn find_admin(&mut self, email: &str) -> DbResult<Option<AdminAccount>> {
        Ok(self
            .tx
            .prepare_cached("SELECT id, email, password_hash FROM admins WHERE email = ?1")?
            .query_row([email], |r| {
                Ok(AdminAccount {
                    id: r.get(0)?,
                    email: r.get(1)?,
                    password_hash: r.get(2)?,
                })
            })
            .optional()?)
    }

    fn create_admin_session(
        &mut self,
        admin_id: i64,
        token_digest: &Digest32,
        expires_at: i64,
        now_ms: i64,
    ) -> DbResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO admin_sessions (token_hash, admin_id, expires_at, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![&token_digest[..], admin_id, expires_at, now_ms])?;
        Ok(())
    }

    fn admin_session(
        &mut self,
        token_digest: &Digest32,
        now_ms: i64,
    ) -> DbResult<Option<AdminSession>> {
        let row = self
            .tx
            .prepare_cached(
                "SELECT s.token_hash, s.admin_id, a.email, s.expires_at
                 FROM admin_sessions s JOIN admins a ON a.id = s.admin_id
                 WHERE s.token_hash = ?1 AND s.expires_at > ?2",
            )?
            .query_row(params![&token_digest[..], now_ms], admin_session_from_row)
            .optional()?;
        // The index found the row; the final check is in constant time anyway.
        Ok(row.filter(|s| auth::ct_eq(&s.token_digest, token_digest)))
    }

    fn changed_by_others(&mut self) -> DbResult<bool> {
        let now: i64 = self.tx.query_row("PRAGMA data_version", [], |r| r.get(0))?;
        Ok(self.seen_version.replace(Some(now)) != Some(now))
    }

    fn admin_sessions(&mut self, now_ms: i64) -> DbResult<Vec<AdminSession>> {
        let mut stmt = self.tx.prepare(
            "SELECT s.token_hash, s.admin_id, a.email, s.expires_at
             FROM admin_sessions s JOIN admins a ON a.id = s.admin_id
             WHERE s.expires_at > ?1",
        )?;
        let rows = stmt.query_map([now_ms], admin_session_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn delete_admin_session(&mut self, token_digest: &Digest32) -> DbResult<()> {
        self.tx
            .prepare_cached("DELETE FROM admin_sessions WHERE token_hash = ?1")?
            .execute([&token_digest[..]])?;
        Ok(())
    }

    fn prune_admin_sessions(&mut self, now_ms: i64) -> DbResult<usize> {
        Ok(self.tx.execute(
            "DELETE FROM admin_sessions WHERE expires_at <= ?1",
            [now_ms],
        )?)
    }

    fn log_head(&mut self) -> DbResult<LogHead> {
        Ok(self.tx.query_row(
            &format!("SELECT epoch, {HEAD} FROM log_head WHERE id = 1"),
            [],
            |r| {
                Ok(LogHead {
                    epoch: r.get(0)?,
                    head: r.get::<_, i64>(1)? as u64,
                })
            },
        )?)
    }

    /// Read, not written: the number becomes taken when `append_event` stores it, in the same
    /// write transaction, which holds the database's one write lock until it commits (so
    /// numbers follow commit order). Writing `log_head` too would cost a page in every commit.
    fn next_seq(&mut self) -> DbResult<u64> {
        let head: i64 = self
            .tx
            .prepare_cached(&format!("SELECT {HEAD}"))?
            .query_row([], |r| r.get(0))?;
        Ok(head as u64 + 1)
    }

    fn append_event(&mut self, e: &StoredEvent) -> DbResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO events (seq, at_ms, user_id, kind, cause, admin_message, agent_message,
                                     user_row)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?
            .execute(params![
                e.seq as i64,
                e.at_ms,
                e.user_id,
                e.kind,
                e.cause,
                e.admin_message,
                e.agent_message,
                e.user_row
            ])?;
        Ok(())
    }

    fn events_between(&mut self, from: u64, to: u64) -> DbResult<Vec<StoredEvent>> {
        let mut stmt = self.tx.prepare_cached(
            "SELECT seq, at_ms, user_id, kind, cause, admin_message, agent_message, user_row
             FROM events WHERE seq BETWEEN ?1 AND ?2 ORDER BY seq",
        )?;
        let rows = stmt.query_map(params![from as i64, to as i64], event_from_row)?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    fn oldest_event(&mut self) -> DbResult<Option<u64>> {
        let seq: Option<i64> = self
            .tx
            .query_row("SELECT MIN(seq) FROM events", [], |r| r.get(0))?;
        Ok(seq.map(|s| s as u64))
    }

    /// Deletes a prefix of the log: every event before the newest `keep.count` and before the
    /// first one younger than `keep.age_ms` (`sql/0005_log_pages.sql`). The head is kept in
    /// `log_head` first, so its number is never reused even if no row stayed.
    fn trim_events(&mut self, keep: Retention, now_ms: i64) -> DbResult<usize> {
        let head: i64 = self
            .tx
            .query_row(&format!("SELECT {HEAD}"), [], |r| r.get(0))?;
        self.tx
            .execute("UPDATE log_head SET head = ?1 WHERE id = 1", [head])?;
        // Walks the log from its oldest row (rowid order) to the first young one: it reads the
        // rows that go, and at most `keep.count` that stay.
        let first_young: Option<i64> = self
            .tx
            .query_row(
                "SELECT seq FROM events WHERE at_ms >= ?1 ORDER BY seq LIMIT 1",
                [now_ms - keep.age_ms],
                |r| r.get(0),
            )
            .optional()?;
        let keep_from = (head + 1 - keep.count as i64).min(first_young.unwrap_or(i64::MAX));
        Ok(self
            .tx
            .execute("DELETE FROM events WHERE seq < ?1", [keep_from])?)
    }

    fn agent_request_seen(&mut self, request_id: &str, since_ms: i64) -> DbResult<bool> {
        Ok(self
            .tx
            .prepare_cached("SELECT 1 FROM agent_requests WHERE request_id = ?1 AND at_ms >= ?2")?
            .exists(params![request_id, since_ms])?)
    }

    fn record_agent_request(&mut self, request_id: &str, now_ms: i64) -> DbResult<()> {
        self.tx
            .prepare_cached(
                "INSERT INTO agent_requests (request_id, at_ms) VALUES (?1, ?2)
                 ON CONFLICT (request_id) DO UPDATE SET at_ms = excluded.at_ms",
            )?
            .execute(params![request_id, now_ms])?;
        Ok(())
    }

    fn trim_agent_requests(&mut self, before_ms: i64) -> DbResult<usize> {
        Ok(self
            .tx
            .execute("DELETE FROM agent_requests WHERE at_ms < ?1", [before_ms])?)
    }

    fn insert_admin(&mut self, email: &str, password_hash: &str, now_ms: i64) -> DbResult<i64> {
        self.tx
            .prepare_cached(
                "INSERT INTO admins (email, password_hash, created_at) VALUES (?1, ?2, ?3)",
            )?
            .execute(params![email, password_hash, now_ms])?;
        Ok(self.tx.last_insert_rowid())
    }

    fn oidc_attempt_used(&mut self, attempt: &[u8; 16]) -> DbResult<bool> {
        Ok(self
            .tx
            .prepare_cached("SELECT 1 FROM oidc_attempts_used WHERE attempt = ?1")?
            .exists([&attempt[..]])?)
    }

    fn use_oidc_attempt(
        &mut self,
        attempt: &[u8; 16],
        expires_at: i64,
        now_ms: i64,
    ) -> DbResult<bool> {
        self.tx
            .prepare_cached("DELETE FROM oidc_attempts_used WHERE expires_at < ?1")?
            .execute([now_ms])?;
        let n = self
            .tx
            .prepare_cached(
                "INSERT INTO oidc_attempts_used (attempt, expires_at) VALUES (?1, ?2)
                 ON CONFLICT (attempt) DO NOTHING",
            )?
            .execute(params![&attempt[..], expires_at])?;
        Ok(n == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: [u8; 32] = [9; 32];

    fn temp_db() -> (tempfile::TempDir, Sqlite) {
        let dir = tempfile::tempdir().unwrap();
        let db = Sqlite::open(&dir.path().join("t.db"), Some(KEY)).unwrap();
        (dir, db)
    }

    fn new_user<'a>(email: &'a str, nonce: &'a [u8]) -> NewUser<'a> {
        NewUser {
            first_name: "A",
            last_name: "B",
            email,
            questions_total: 10,
            invite_nonce: nonce,
            invite_expires_at: 100,
            created_at: 1,
        }
    }

    #[test]
    fn users_round_trip_and_email_is_unique() {
        let (_d, mut db) = temp_db();
        let u = db
            .write(|tx| tx.insert_user(&new_user("a@x.io", b"n1")))
            .unwrap();
        assert_eq!(u.invite_token, auth::invite_token(&KEY, u.id, b"n1"));
        assert!(matches!(
            db.write(|tx| tx.insert_user(&new_user("A@X.IO", b"n2"))),
            Err(DbError::Conflict)
        ));
        let mut users = db.load_users().unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].invite_token, u.invite_token);
        let by_token = db
            .read(|tx| tx.user_by_token(&auth::digest(&u.invite_token)))
            .unwrap();
        assert_eq!(by_token.map(|x| x.id), Some(u.id));
        users[0].questions_answered = 4;
        assert!(db.write(|tx| tx.write_user(&users[0])).unwrap());
        assert_eq!(db.load_users().unwrap()[0].questions_answered, 4);
        assert!(db.write(|tx| tx.delete_user(u.id)).unwrap());
        assert!(!db.write(|tx| tx.delete_user(u.id)).unwrap());
        let check: String = db
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn a_failed_transaction_changes_nothing() {
        let (_d, mut db) = temp_db();
        let r: DbResult<()> = db.write(|tx| {
            tx.insert_user(&new_user("a@x.io", b"n1"))?;
            Err(DbError::Io("changed my mind".into()))
        });
        assert!(r.is_err());
        assert!(db.load_users().unwrap().is_empty());
    }

    #[test]
    fn admin_sessions_expire() {
        let (_d, mut db) = temp_db();
        let id = db.create_admin("root@x.io", "hash", 0).unwrap();
        db.write(|tx| {
            assert_eq!(tx.create_first_admin("b@x.io", "h", 0)?, None);
            let h = auth::digest("tok");
            tx.create_admin_session(id, &h, 1000, 0)?;
            let s = tx.admin_session(&h, 999)?.unwrap();
            assert_eq!(
                (s.admin_id, s.email.as_str(), s.expires_at),
                (id, "root@x.io", 1000)
            );
            assert_eq!(tx.admin_sessions(999)?, vec![s]);
            assert_eq!(tx.admin_session(&h, 1000)?, None);
            assert_eq!(tx.admin_session(&auth::digest("other"), 0)?, None);
            tx.delete_admin_session(&h)?;
            assert_eq!(tx.admin_session(&h, 0)?, None);
            tx.create_admin_session(id, &h, 1000, 0)?;
            assert_eq!(tx.prune_admin_sessions(1000)?, 1);
            assert_eq!(
                tx.find_admin("ROOT@x.io")?.map(|a| a.id),
                Some(id),
                "emails compare case-insensitively"
            );
            Ok::<_, DbError>(())
        })
        .unwrap();
    }

    #[test]
    fn oidc_attempts_are_used_once() {
        let (_d, mut db) = temp_db();
        db.write(|tx| {
            let a = [1u8; 16];
            assert!(!tx.oidc_attempt_used(&a)?);
            assert!(tx.use_oidc_attempt(&a, 1000, 0)?);
            assert!(tx.oidc_attempt_used(&a)?);
            assert!(!tx.use_oidc_attempt(&a, 1000, 10)?, "second use refused");
            // Past its expiry the row is pruned by the next use of another attempt.
            assert!(tx.use_oidc_attempt(&[2u8; 16], 5000, 1001)?);
            assert!(!tx.oidc_attempt_used(&a)?);
            let id = tx.insert_admin("new@x.io", "h", 0)?;
            assert_eq!(tx.find_admin("NEW@x.io")?.map(|a| a.id), Some(id));
            Ok::<_, DbError>(())
        })
        .unwrap();
    }

    /// Appends events at the given times (Unix ms), each numbered by `next_seq`.
    fn append_at(db: &mut Sqlite, times: &[i64]) -> Vec<u64> {
        db.write(|tx| {
            let mut seqs = Vec::new();
            for &at_ms in times {
                let seq = tx.next_seq()?;
                tx.append_event(&StoredEvent {
                    seq,
                    at_ms,
                    user_id: 1,
                    kind: "added",
                    cause: None,
                    admin_message: format!("{{\"seq\":{seq}}}"),
                    agent_message: None,
                    user_row: None,
                })?;
                seqs.push(seq);
            }
            Ok::<_, DbError>(seqs)
        })
        .unwrap()
    }

    fn stored_seqs(db: &mut Sqlite) -> Vec<u64> {
        db.read(|tx| tx.events_between(0, u64::MAX >> 1))
            .unwrap()
            .iter()
            .map(|e| e.seq)
            .collect()
    }

    #[test]
    fn event_numbers_follow_on_and_a_trim_removes_a_prefix() {
        let (_d, mut db) = temp_db();
        assert_eq!(db.read(|tx| tx.log_head()).unwrap().head, 0);
        assert_eq!(append_at(&mut db, &[1_000, 2_000, 3_000]), [1, 2, 3]);
        // The clock stepped back: event 5 is older than event 4.
        assert_eq!(append_at(&mut db, &[9_000, 500, 9_500]), [4, 5, 6]);
        assert_eq!(db.read(|tx| tx.log_head()).unwrap().head, 6);
        let keep = Retention {
            count: 2,
            age_ms: 1_000,
        };
        // Young from 9,000 on (at 10,000): events 1–3 go; 5, though old, stays behind 4.
        let trimmed = db.write(|tx| tx.trim_events(keep, 10_000)).unwrap();
        assert_eq!(trimmed, 3);
        assert_eq!(stored_seqs(&mut db), [4, 5, 6], "no hole in the log");
        // Everything old: the count keeps the newest two.
        db.write(|tx| tx.trim_events(keep, 100_000)).unwrap();
        assert_eq!(stored_seqs(&mut db), [5, 6]);
        // Even a trim that keeps nothing leaves the numbers where they were.
        let none = Retention {
            count: 0,
            age_ms: 0,
        };
        db.write(|tx| tx.trim_events(none, 100_000)).unwrap();
        assert_eq!(stored_seqs(&mut db), Vec::<u64>::new());
        assert_eq!(db.read(|tx| tx.log_head()).unwrap().head, 6);
        assert_eq!(
            append_at(&mut db, &[100_000]),
            [7],
            "numbers are never reused"
        );
    }

    #[test]
    fn changes_by_other_connections_are_noticed_and_our_own_are_not() {
        let (dir, mut db) = temp_db();
        let changed = |db: &mut Sqlite| db.read(|tx| tx.changed_by_others()).unwrap();
        assert!(changed(&mut db), "the first call says yes");
        assert!(!changed(&mut db));
        db.write(|tx| tx.insert_user(&new_user("own@x.io", b"n1")))
            .unwrap();
        assert!(!changed(&mut db), "our own commit");
        let other = Sqlite::open(&dir.path().join("t.db"), None).unwrap();
        other.create_admin("cli@x.io", "hash", 0).unwrap();
        assert!(changed(&mut db), "another connection's commit");
        assert!(!changed(&mut db));
    }

    #[test]
    fn migrations_apply_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.db");
        drop(Sqlite::open(&p, None).unwrap());
        let db = Sqlite::open(&p, None).unwrap();
        let v: i64 = db
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }
}
