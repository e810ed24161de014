//! SQLite storage: open, migrate, and the handful of queries the server and the CLI need.
//!
//! Durability: WAL journal with `synchronous=NORMAL`. A commit is in the WAL (in the OS page
//! cache) before the HTTP answer is written, so a killed or crashed *process* loses no
//! acknowledged write; only a power cut can drop the last few commits, and even then the file
//! stays consistent. `FULL` would add an fsync (milliseconds) to every API write on the reactor
//! thread; see docs/SECURITY.md for the trade-off.

use crate::auth::{self, Digest32};
use crate::model::User;
use rusqlite::{params, Connection, OptionalExtension};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Migrations, applied in order inside one transaction each; `PRAGMA user_version` counts them.
const MIGRATIONS: &[&str] = &[include_str!("../sql/0001_init.sql")];

pub struct Db {
    conn: Connection,
}

/// Fields of a user that the API sets; the rest are derived or defaulted.
pub struct NewUser<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub questions_total: i64,
    pub invite_nonce: &'a [u8],
    pub invite_expires_at: i64,
    pub created_at: i64,
}

#[derive(Debug)]
pub enum DbError {
    /// A UNIQUE constraint (duplicate email) refused the write.
    Conflict,
    Sqlite(rusqlite::Error),
    Io(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Conflict => f.write_str("already exists"),
            DbError::Sqlite(e) => write!(f, "sqlite: {e}"),
            DbError::Io(e) => f.write_str(e),
        }
    }
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        match &e {
            rusqlite::Error::SqliteFailure(f, _)
                if f.extended_code == rusqlite::ffi::SQLITE_CONSTRAINT_UNIQUE =>
            {
                DbError::Conflict
            }
            _ => DbError::Sqlite(e),
        }
    }
}

pub type DbResult<T> = Result<T, DbError>;

impl Db {
    /// Open (creating if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> DbResult<Db> {
        let conn = Connection::open(path)
            .map_err(|e| DbError::Io(format!("cannot open database {}: {e}", path.display())))?;
        conn.busy_timeout(std::time::Duration::from_millis(2000))?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        let mut db = Db { conn };
        db.migrate()?;
        Ok(db)
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

    /// Every user, with tokens derived under `key`.
    pub fn load_users(&self, key: &[u8; 32]) -> DbResult<Vec<User>> {
        let mut stmt = self.conn.prepare(
            "SELECT id, first_name, last_name, email, invite_nonce, invite_expires_at,
                    token_activated, session_started_at, session_expires_at, session_expired,
                    questions_answered, questions_total, transcript_url, summary_url, created_at
             FROM users ORDER BY id",
        )?;
        let rows = stmt.query_map([], |r| {
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
            })
        })?;
        Ok(rows.collect::<Result<_, _>>()?)
    }

    /// Insert a user; the caller derives the token from the returned id. The token digest is
    /// written in the same transaction so the row never exists without one.
    pub fn insert_user(&mut self, u: &NewUser, key: &[u8; 32]) -> DbResult<i64> {
        let tx = self.conn.transaction()?;
        // A placeholder digest that cannot collide (it is the nonce, 16 bytes, not 32).
        tx.prepare_cached(
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
        let id = tx.last_insert_rowid();
        let digest = auth::digest(&auth::invite_token(key, id, u.invite_nonce));
        tx.prepare_cached("UPDATE users SET invite_token_hash = ?1 WHERE id = ?2")?
            .execute(params![&digest[..], id])?;
        tx.commit()?;
        Ok(id)
    }

    /// Write every mutable column of `u` (the in-memory copy is the source of the values).
    pub fn update_user(&self, u: &User) -> DbResult<bool> {
        let n = self
            .conn
            .prepare_cached(
                "UPDATE users SET first_name = ?2, last_name = ?3, email = ?4, invite_nonce = ?5,
                    invite_token_hash = ?6, invite_expires_at = ?7, token_activated = ?8,
                    session_started_at = ?9, session_expires_at = ?10, session_expired = ?11,
                    questions_answered = ?12, questions_total = ?13, transcript_url = ?14,
                    summary_url = ?15
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
            ])?;
        Ok(n == 1)
    }

    pub fn delete_user(&self, id: i64) -> DbResult<bool> {
        let n = self
            .conn
            .prepare_cached("DELETE FROM users WHERE id = ?1")?
            .execute([id])?;
        Ok(n == 1)
    }

    /// Re-derive and store every invite digest (after the server key had to be replaced).
    pub fn rehash_invites(&mut self, users: &[User]) -> DbResult<()> {
        let tx = self.conn.transaction()?;
        for u in users {
            tx.execute(
                "UPDATE users SET invite_token_hash = ?1 WHERE id = ?2",
                params![&auth::digest(&u.invite_token)[..], u.id],
            )?;
        }
        tx.commit()?;
        Ok(())
    }

    pub fn admin_count(&self) -> DbResult<i64> {
        Ok(self
            .conn
            .query_row("SELECT COUNT(*) FROM admins", [], |r| r.get(0))?)
    }

    pub fn create_admin(&self, email: &str, password_hash: &str, now_ms: i64) -> DbResult<i64> {
        self.conn.execute(
            "INSERT INTO admins (email, password_hash, created_at) VALUES (?1, ?2, ?3)",
            params![email, password_hash, now_ms],
        )?;
        Ok(self.conn.last_insert_rowid())
    }

    /// Create the first admin only if there is none yet (one statement, so no race with the CLI).
    pub fn create_first_admin(
        &self,
        email: &str,
        password_hash: &str,
        now_ms: i64,
    ) -> DbResult<Option<i64>> {
        let n = self.conn.execute(
            "INSERT INTO admins (email, password_hash, created_at)
             SELECT ?1, ?2, ?3 WHERE NOT EXISTS (SELECT 1 FROM admins)",
            params![email, password_hash, now_ms],
        )?;
        Ok((n == 1).then(|| self.conn.last_insert_rowid()))
    }

    pub fn find_admin(&self, email: &str) -> DbResult<Option<(i64, String)>> {
        Ok(self
            .conn
            .prepare_cached("SELECT id, password_hash FROM admins WHERE email = ?1")?
            .query_row([email], |r| Ok((r.get(0)?, r.get(1)?)))
            .optional()?)
    }

    pub fn create_admin_session(
        &self,
        admin_id: i64,
        token_hash: &Digest32,
        expires_at: i64,
        now_ms: i64,
    ) -> DbResult<()> {
        self.conn
            .prepare_cached(
                "INSERT INTO admin_sessions (token_hash, admin_id, expires_at, created_at)
                 VALUES (?1, ?2, ?3, ?4)",
            )?
            .execute(params![&token_hash[..], admin_id, expires_at, now_ms])?;
        Ok(())
    }

    /// The admin id and expiry of an unexpired session with this token digest.
    pub fn admin_session(
        &self,
        token_hash: &Digest32,
        now_ms: i64,
    ) -> DbResult<Option<(i64, i64)>> {
        let row: Option<(Vec<u8>, i64, i64)> = self
            .conn
            .prepare_cached(
                "SELECT token_hash, admin_id, expires_at FROM admin_sessions
                 WHERE token_hash = ?1 AND expires_at > ?2",
            )?
            .query_row(params![&token_hash[..], now_ms], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()?;
        // The index found the row; the final check is in constant time anyway.
        Ok(row.and_then(|(h, id, exp)| auth::ct_eq(&h, token_hash).then_some((id, exp))))
    }

    pub fn delete_admin_session(&self, token_hash: &Digest32) -> DbResult<()> {
        self.conn
            .prepare_cached("DELETE FROM admin_sessions WHERE token_hash = ?1")?
            .execute([&token_hash[..]])?;
        Ok(())
    }

    pub fn prune_admin_sessions(&self, now_ms: i64) -> DbResult<usize> {
        Ok(self.conn.execute(
            "DELETE FROM admin_sessions WHERE expires_at <= ?1",
            [now_ms],
        )?)
    }
}

/// The server key file beside the database.
pub fn key_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".key");
    PathBuf::from(p)
}

/// Load the server key, or create one. Returns the key and whether it is new.
pub fn load_or_create_key(db: &Path) -> DbResult<([u8; 32], bool)> {
    let path = key_path(db);
    match fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => {
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes);
            return Ok((k, false));
        }
        Ok(_) => {
            return Err(DbError::Io(format!(
                "{} is not a 32-byte key file; move it away to start with a new key",
                path.display()
            )))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(DbError::Io(format!("cannot read {}: {e}", path.display()))),
    }
    let key = auth::random_bytes::<32>().map_err(|e| DbError::Io(format!("OS randomness: {e}")))?;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let write = |opts: &fs::OpenOptions| -> std::io::Result<()> {
        let mut f = opts.open(&path)?;
        f.write_all(&key)?;
        f.sync_all()
    };
    write(&opts).map_err(|e| DbError::Io(format!("cannot create {}: {e}", path.display())))?;
    Ok((key, true))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_db() -> (tempfile::TempDir, Db) {
        let dir = tempfile::tempdir().unwrap();
        let db = Db::open(&dir.path().join("t.db")).unwrap();
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
        let key = [9u8; 32];
        let id = db.insert_user(&new_user("a@x.io", b"n1"), &key).unwrap();
        assert!(matches!(
            db.insert_user(&new_user("A@X.IO", b"n2"), &key),
            Err(DbError::Conflict)
        ));
        let mut users = db.load_users(&key).unwrap();
        assert_eq!(users.len(), 1);
        assert_eq!(users[0].invite_token, auth::invite_token(&key, id, b"n1"));
        users[0].questions_answered = 4;
        assert!(db.update_user(&users[0]).unwrap());
        assert_eq!(db.load_users(&key).unwrap()[0].questions_answered, 4);
        assert!(db.delete_user(id).unwrap());
        assert!(!db.delete_user(id).unwrap());
        let check: String = db
            .conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .unwrap();
        assert_eq!(check, "ok");
    }

    #[test]
    fn admin_sessions_expire() {
        let (_d, db) = temp_db();
        let id = db.create_admin("root@x.io", "hash", 0).unwrap();
        assert_eq!(db.create_first_admin("b@x.io", "h", 0).unwrap(), None);
        let h = auth::digest("tok");
        db.create_admin_session(id, &h, 1000, 0).unwrap();
        assert_eq!(db.admin_session(&h, 999).unwrap(), Some((id, 1000)));
        assert_eq!(db.admin_session(&h, 1000).unwrap(), None);
        assert_eq!(db.admin_session(&auth::digest("other"), 0).unwrap(), None);
        db.delete_admin_session(&h).unwrap();
        assert_eq!(db.admin_session(&h, 0).unwrap(), None);
    }

    #[test]
    fn migrations_apply_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("m.db");
        drop(Db::open(&p).unwrap());
        let db = Db::open(&p).unwrap();
        let v: i64 = db
            .conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
    }

    #[test]
    fn key_file_is_created_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("k.db");
        let (k1, new1) = load_or_create_key(&p).unwrap();
        let (k2, new2) = load_or_create_key(&p).unwrap();
        assert!(new1 && !new2);
        assert_eq!(k1, k2);
    }
}
