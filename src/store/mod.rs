//! Storage: what the application keeps, behind one transaction interface.
//!
//! [`Tx`] is everything a command may read or write, inside one transaction: a command either
//! commits all of its changes or none. The backends implement it (today SQLite, in
//! [`sqlite`]); the application's rules in `app::command` are written once against it.
//!
//! The server key (`<db>.key`) is the secret invite tokens are derived from; see `auth.rs`.

use crate::auth::Digest32;
use crate::model::User;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

pub mod postgres;
pub mod row;
pub mod sqlite;

pub use postgres::Postgres;
pub use sqlite::Sqlite;

/// A user as the API creates it; the store assigns the id.
pub struct NewUser<'a> {
    pub first_name: &'a str,
    pub last_name: &'a str,
    pub email: &'a str,
    pub questions_total: i64,
    pub invite_nonce: &'a [u8],
    /// Wall-clock Unix ms.
    pub invite_expires_at: i64,
    /// Wall-clock Unix ms.
    pub created_at: i64,
}

impl NewUser<'_> {
    /// The user as stored under `id`, with its invite `token` (what every store's
    /// `insert_user` returns: nothing of a session yet).
    pub fn stored(&self, id: i64, token: String) -> User {
        User {
            id,
            first_name: self.first_name.to_string(),
            last_name: self.last_name.to_string(),
            email: self.email.to_string(),
            invite_token: token,
            invite_nonce: self.invite_nonce.to_vec(),
            invite_expires_at: self.invite_expires_at,
            invite_expired: false,
            token_activated: false,
            session_started_at: None,
            session_expires_at: None,
            session_expired: false,
            session_ended_at: None,
            questions_answered: 0,
            questions_total: self.questions_total,
            transcript_url: None,
            summary_url: None,
            created_at: self.created_at,
        }
    }
}

/// An admin account as sign-in needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminAccount {
    pub id: i64,
    pub email: String,
    /// Argon2id PHC string.
    pub password_hash: String,
}

/// An admin account as the Admins view shows it (never the password hash).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminInfo {
    pub id: i64,
    pub email: String,
    /// Wall-clock Unix ms.
    pub created_at: i64,
    /// Wall-clock Unix ms of the last password (or OIDC) sign-in; `None` before the first.
    pub last_sign_in_at: Option<i64>,
}

/// A valid admin session (its token is known only by its digest).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    pub token_digest: Digest32,
    pub admin_id: i64,
    pub email: String,
    /// Wall-clock Unix ms.
    pub expires_at: i64,
}

/// One entry of the event log as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    pub seq: u64,
    /// Wall-clock Unix ms of the change.
    pub at_ms: i64,
    pub user_id: i64,
    /// `added`, `updated` or `deleted`.
    pub kind: &'static str,
    /// Why an update happened (see `app::Cause::label`).
    pub cause: Option<&'static str>,
    /// The admin stream message, exactly as sent.
    pub admin_message: String,
    /// The agent stream message, if the change caused one.
    pub agent_message: Option<String>,
    /// The user row after the change, as JSON ([`row`]); none once deleted.
    pub user_row: Option<String>,
}

/// Where the log stands: the history it belongs to and the last number written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogHead {
    pub epoch: String,
    pub head: u64,
}

/// How much of the log is kept: at least the last `count` events and every event younger than
/// `age_ms` (API.md: 1,000 and 10 minutes).
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    pub count: u64,
    pub age_ms: i64,
}

/// Everything a node's view is built from, at one position of the log (one snapshot).
#[derive(Debug)]
pub struct Snapshot {
    pub users: Vec<User>,
    pub head: LogHead,
    /// The newest events (for the memory tail), oldest first.
    pub events: Vec<StoredEvent>,
    /// The first number storage still holds.
    pub stored_from: u64,
}

/// One node's share of presence as stored: JSON of its sessions map and admins list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceShare {
    pub sessions: String,
    pub admins: String,
}

/// The contract's retention.
pub const RETENTION: Retention = Retention {
    count: 1_000,
    age_ms: 10 * 60 * 1000,
};

#[derive(Debug)]
pub enum DbError {
    /// A UNIQUE constraint (duplicate email) refused the write.
    Conflict,
    /// Another process holds the database lock (SQLite `SQLITE_BUSY`), or the database cannot
    /// be reached: nothing was written; try again later.
    Busy,
    Sqlite(rusqlite::Error),
    Postgres(String),
    Io(String),
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DbError::Conflict => f.write_str("already exists"),
            DbError::Busy => f.write_str("storage busy or unreachable"),
            DbError::Sqlite(e) => write!(f, "sqlite: {e}"),
            DbError::Postgres(e) => write!(f, "postgres: {e}"),
            DbError::Io(e) => f.write_str(e),
        }
    }
}

pub type DbResult<T> = Result<T, DbError>;

/// The admin accounts as the Admins view manages them (contract v2: list, add, remove, change a
/// password), inside one transaction like the rest of [`Tx`]. Each backend implements it in its
/// own `admins.rs`.
pub trait AdminAccounts {
    /// Every admin account, oldest first. In a writing transaction the rows are locked, so a
    /// decision about them ("not the last admin") holds until the transaction ends.
    fn admins(&mut self) -> DbResult<Vec<AdminInfo>>;
    /// The account with this id and its password hash (for a password change).
    fn admin_by_id(&mut self, id: i64) -> DbResult<Option<(AdminInfo, String)>>;
    /// Delete an account (its sessions go with it); `false` if there was none.
    fn delete_admin(&mut self, id: i64) -> DbResult<bool>;
    fn set_admin_password(&mut self, id: i64, hash: &str) -> DbResult<bool>;
    fn note_admin_sign_in(&mut self, id: i64, now_ms: i64) -> DbResult<()>;
    /// End every session of admin `id` but `keep`; returns the digests of those ended, so
    /// their streams can be closed.
    fn end_admin_sessions(&mut self, id: i64, keep: Option<&Digest32>) -> DbResult<Vec<Digest32>>;
}

/// One transaction's view of the store. Users come back with their invite token derived under
/// the server key.
pub trait Tx: AdminAccounts {
    fn user(&mut self, id: i64) -> DbResult<Option<User>>;
    /// The user whose current invite token has this SHA-256 digest.
    fn user_by_token(&mut self, token_digest: &Digest32) -> DbResult<Option<User>>;
    /// The invite token of user `id` with invite nonce `nonce`, under the server key.
    fn invite_token(&self, id: i64, nonce: &[u8]) -> DbResult<String>;
    /// Insert a user; returns the stored row (id assigned, token derived).
    fn insert_user(&mut self, new: &NewUser) -> DbResult<User>;
    /// Write every mutable column of `u`; `false` if there is no such user.
    fn write_user(&mut self, u: &User) -> DbResult<bool>;
    /// `false` if there was no such user.
    fn delete_user(&mut self, id: i64) -> DbResult<bool>;

    /// Create the first admin only if there is none yet; `None` if one exists.
    fn create_first_admin(&mut self, email: &str, hash: &str, now_ms: i64)
        -> DbResult<Option<i64>>;
    fn find_admin(&mut self, email: &str) -> DbResult<Option<AdminAccount>>;
    fn create_admin_session(
        &mut self,
        admin_id: i64,
        token_digest: &Digest32,
        expires_at: i64,
        now_ms: i64,
    ) -> DbResult<()>;
    /// The unexpired session with this token digest.
    fn admin_session(
        &mut self,
        token_digest: &Digest32,
        now_ms: i64,
    ) -> DbResult<Option<AdminSession>>;
    /// Every unexpired admin session (to warm the cache at start).
    fn admin_sessions(&mut self, now_ms: i64) -> DbResult<Vec<AdminSession>>;
    /// Whether another connection committed since this one last asked (SQLite: another process,
    /// such as `catalytic admin revoke` or the `sqlite3` shell; `PRAGMA data_version`). The first
    /// call says yes; so does PostgreSQL always (other nodes write all the time).
    fn changed_by_others(&mut self) -> DbResult<bool>;
    fn delete_admin_session(&mut self, token_digest: &Digest32) -> DbResult<()>;

    /// Delete admin sessions that expired at or before `now_ms`; returns how many.
    fn prune_admin_sessions(&mut self, now_ms: i64) -> DbResult<usize>;

    /// Where the log stands.
    fn log_head(&mut self) -> DbResult<LogHead>;
    /// Take the next event number, for the event this transaction appends next. It is held by
    /// this transaction until it commits, so numbers follow commit order.
    fn next_seq(&mut self) -> DbResult<u64>;
    fn append_event(&mut self, e: &StoredEvent) -> DbResult<()>;
    /// The events numbered `from..=to` still held, oldest first.
    fn events_between(&mut self, from: u64, to: u64) -> DbResult<Vec<StoredEvent>>;
    /// The number of the oldest event still held.
    fn oldest_event(&mut self) -> DbResult<Option<u64>>;
    /// Drop events beyond `keep` at `now_ms`; returns how many went.
    fn trim_events(&mut self, keep: Retention, now_ms: i64) -> DbResult<usize>;

    /// Whether an agent message with this request id was applied at or after `since_ms`.
    fn agent_request_seen(&mut self, request_id: &str, since_ms: i64) -> DbResult<bool>;
    fn record_agent_request(&mut self, request_id: &str, now_ms: i64) -> DbResult<()>;
    /// Forget request ids older than `before_ms`.
    fn trim_agent_requests(&mut self, before_ms: i64) -> DbResult<usize>;

    /// Create an admin account; returns its id (`Conflict` if the email exists).
    fn insert_admin(&mut self, email: &str, password_hash: &str, now_ms: i64) -> DbResult<i64>;
    /// Whether the OpenID Connect login attempt with this id was used already.
    fn oidc_attempt_used(&mut self, attempt: &[u8; 16]) -> DbResult<bool>;
    /// Record the attempt as used; `false` if it was used already. Rows of attempts that
    /// expired before `now_ms` are removed on the way.
    fn use_oidc_attempt(
        &mut self,
        attempt: &[u8; 16],
        expires_at: i64,
        now_ms: i64,
    ) -> DbResult<bool>;
}

/// What only a cluster's shared store does: several nodes agree on who sweeps, who is here,
/// and start from the same snapshot (implemented by PostgreSQL).
pub trait ClusterTx: Tx {
    /// Every user, oldest first.
    fn all_users(&mut self) -> DbResult<Vec<User>>;
    /// Take or renew lease `name` for `holder` until `until_ms`, unless another holder's lease
    /// is still running at `now_ms`; whether `holder` holds it now.
    fn take_lease(
        &mut self,
        name: &str,
        holder: &str,
        until_ms: i64,
        now_ms: i64,
    ) -> DbResult<bool>;
    /// Running sessions whose stored end is at or before `now_ms` (at most `limit`).
    fn overdue_sessions(&mut self, now_ms: i64, limit: i64) -> DbResult<Vec<i64>>;
    /// Unused invite links that ran out at or before `now_ms`, not yet announced.
    fn overdue_invites(&mut self, now_ms: i64, limit: i64) -> DbResult<Vec<i64>>;
    /// Store this node's share of presence (refreshed at `now_ms`).
    fn share_presence(&mut self, node_id: &str, share: &PresenceShare, now_ms: i64)
        -> DbResult<()>;
    /// The share of every node but `except_node` refreshed after `fresh_after_ms`.
    fn presence_shares(
        &mut self,
        fresh_after_ms: i64,
        except_node: &str,
    ) -> DbResult<Vec<PresenceShare>>;
    /// A setting every node shares (`server_key`, `setup_code`).
    fn setting(&mut self, name: &str) -> DbResult<Option<Vec<u8>>>;
    /// Store a setting unless it is set; returns the value that holds afterwards.
    fn setting_or_insert(&mut self, name: &str, value: &[u8]) -> DbResult<Vec<u8>>;
    fn admin_count(&mut self) -> DbResult<i64>;
    /// Count a sign-in attempt against every limiter key at `now` (`api/limiter.rs`'s rules,
    /// for the whole deployment), or refuse it: `Err(seconds)` until it may try again.
    fn count_login_attempt(
        &mut self,
        keys: &[String],
        per_minute: u32,
        now: i64,
    ) -> DbResult<Result<(), i64>>;
    /// Uncount an attempt counted at `at` (it succeeded, or was never checked).
    fn uncount_login_attempt(&mut self, keys: &[String], at: i64) -> DbResult<()>;
    /// Forget the counts of windows that have ended; returns how many.
    fn sweep_login_attempts(&mut self, now: i64) -> DbResult<u64>;
}

/// The server key file beside the database.
pub fn key_path(db: &Path) -> PathBuf {
    let mut p = db.as_os_str().to_owned();
    p.push(".key");
    PathBuf::from(p)
}

/// The database's directory must exist: SQLite would create the file but not its directory,
/// and say only "unable to open database file".
pub fn check_db_dir(db: &Path) -> DbResult<()> {
    match db.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(dir) if !dir.is_dir() => Err(DbError::Io(format!(
            "cannot open database {}: the directory {} does not exist",
            db.display(),
            dir.display()
        ))),
        _ => Ok(()),
    }
}

/// Load the server key, or create one (owner-only). Returns the key and whether it is new. A
/// key file that another user owns, or that others may read or write, is refused (see
/// `files.rs`); the file used is logged, so an operator can tell which key a deployment runs on.
pub fn load_or_create_key(db: &Path) -> DbResult<([u8; 32], bool)> {
    check_db_dir(db)?;
    let path = key_path(db);
    match fs::read(&path) {
        Ok(bytes) if bytes.len() == 32 => {
            crate::files::check_private(&path, "the server key file").map_err(DbError::Io)?;
            let mut k = [0u8; 32];
            k.copy_from_slice(&bytes);
            log::info!("server key: {}", path.display());
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
    let key = crate::auth::random_bytes::<32>()
        .map_err(|e| DbError::Io(format!("OS randomness: {e}")))?;
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
    log::info!("server key: {} (new)", path.display());
    Ok((key, true))
}

#[cfg(test)]
mod tests {
    use super::*;

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
