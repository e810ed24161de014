//! PostgreSQL storage (cluster mode): the same [`Tx`] as SQLite, shared by every node.
//!
//! What changes with several nodes, and how this file handles it:
//! * **Numbers in commit order.** `next_seq` bumps the one `log_head` row; its row lock is held
//!   until the transaction commits, so event `n+1` cannot commit before `n`. A node that reads
//!   `events WHERE seq > last` therefore never skips an event that commits late.
//! * **Exactly once.** Rows a command changes are read `FOR UPDATE`: two nodes expiring (or
//!   activating, or answering) the same user at once are serialised on its row, and the second
//!   sees the first's result (already expired: nothing to do).
//! * **Wake-ups.** Appending an event also `NOTIFY`s `catalytic_events` in the same transaction:
//!   PostgreSQL delivers it at commit, in commit order. It only wakes the bus threads; the
//!   `events` table is the truth.
//! * **One clock.** Decisions use the database's clock (`now_ms`), so nodes whose clocks differ
//!   still agree on when a session ended.
//! * **Never wait long.** Connections time out after 2 s, statements and lock waits after 1 s
//!   (the contract's 503 bound); a broken connection is reopened on the next command.

use super::{
    AdminAccount, AdminSession, ClusterTx, DbError, DbResult, LogHead, NewUser, Retention,
    StoredEvent, Tx,
};
use crate::auth::{self, Digest32};
use crate::model::User;
use postgres::error::SqlState;
use postgres::{Client, IsolationLevel, NoTls, Row, Statement};
use std::collections::HashMap;
use std::time::Duration;

mod admins;
mod cluster;

/// Schema migrations, in order; `schema_version` counts them.
const MIGRATIONS: &[&str] = &[
    include_str!("../../sql/postgres/0001_schema.sql"),
    include_str!("../../sql/postgres/0002_admins.sql"),
    include_str!("../../sql/postgres/0003_login_failures.sql"),
];

/// Taken while migrating, so nodes that start together migrate once.
const MIGRATION_LOCK: i64 = 0x6361_7461_6c79; // "catalytic" in spirit: any fixed number.

/// The channel `append_event` notifies and the bus listens on.
pub const EVENTS_CHANNEL: &str = "catalytic_events";

/// Longest a connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest one statement (or one lock wait) may take; the API answers 503 beyond.
const STATEMENT_TIMEOUT_MS: u64 = 1_000;

/// Columns of a user row, in the order [`user_from_row`] reads them. A macro, not a `const`, so
/// `concat!` can build whole statements from it: the statement cache is keyed by `&'static str`.
macro_rules! user_columns {
    () => {
        "id, first_name, last_name, email, invite_nonce, invite_expires_at, token_activated,
         session_started_at, session_expires_at, session_expired, questions_answered,
         questions_total, transcript_url, summary_url, created_at, invite_expired,
         session_ended_at"
    };
}
const USER_COLUMNS: &str = user_columns!();

impl From<postgres::Error> for DbError {
    fn from(e: postgres::Error) -> Self {
        match e.code() {
            Some(c) if *c == SqlState::UNIQUE_VIOLATION => DbError::Conflict,
            // Timeouts, lock waits, serialisation failures, a server going down: try later.
            Some(c)
                if *c == SqlState::QUERY_CANCELED
                    || *c == SqlState::LOCK_NOT_AVAILABLE
                    || *c == SqlState::T_R_SERIALIZATION_FAILURE
                    || *c == SqlState::T_R_DEADLOCK_DETECTED
                    || *c == SqlState::ADMIN_SHUTDOWN
                    || *c == SqlState::CRASH_SHUTDOWN
                    || *c == SqlState::CANNOT_CONNECT_NOW
                    || *c == SqlState::TOO_MANY_CONNECTIONS =>
            {
                DbError::Busy
            }
            Some(_) => DbError::Postgres(match e.as_db_error() {
                Some(db) => format!("{}: {}", db.code().code(), db.message()),
                None => e.to_string(),
            }),
            // No SQL state: the connection itself failed (refused, reset, closed, timed out).
            None => DbError::Busy,
        }
    }
}

/// Connect to `url` as `application_name` (shown in `pg_stat_activity`), with the timeouts
/// above. The URL may carry a password; errors never repeat it.
pub fn connect(url: &str, application_name: &str) -> DbResult<Client> {
    let mut config: postgres::Config = url
        .parse()
        .map_err(|_| DbError::Io("--database-url is not a valid postgres:// URL".into()))?;
    config
        .application_name(application_name)
        .connect_timeout(CONNECT_TIMEOUT)
        .keepalives(true)
        .keepalives_idle(Duration::from_secs(10))
        .options(&format!(
            "-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout={STATEMENT_TIMEOUT_MS} \
             -c client_min_messages=warning"
        ));
    Ok(config.connect(NoTls)?)
}

/// One connection to the cluster's database.
pub struct Postgres {
    url: String,
    application_name: String,
    client: Option<Client>,
    /// Statements prepared on `client` (one round trip saved per statement after the first).
    statements: HashMap<&'static str, Statement>,
    key: [u8; 32],
}

impl Postgres {
    /// Connect, create or migrate the schema (once, however many nodes start together), and
    /// load the deployment's server key (made by whichever node migrated first).
    pub fn open(url: &str, application_name: &str) -> DbResult<Postgres> {
        let mut client = connect(url, application_name)?;
        migrate(&mut client)?;
        let key = server_key(&mut client)?;
        Ok(Postgres {
            url: url.to_string(),
            application_name: application_name.to_string(),
            client: Some(client),
            statements: HashMap::new(),
            key,
        })
    }

    /// Another connection to the same database, for another thread.
    pub fn another(&self, application_name: &str) -> DbResult<Postgres> {
        let client = connect(&self.url, application_name)?;
        Ok(Postgres {
            url: self.url.clone(),
            application_name: application_name.to_string(),
            client: Some(client),
            statements: HashMap::new(),
            key: self.key,
        })
    }

    /// The deployment's server key (invite tokens, signed cookies).
    pub fn key(&self) -> [u8; 32] {
        self.key
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    /// The client, reconnecting first if the last one broke.
    fn client(&mut self) -> DbResult<&mut Client> {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.statements.clear();
            self.client = None;
            self.client = Some(connect(&self.url, &self.application_name)?);
        }
        self.client.as_mut().ok_or(DbError::Busy)
    }

    /// Run `f` in a transaction at the database's clock (`now_ms`, passed to `f`): committed
    /// if it returns `Ok`, rolled back otherwise. Read-only transactions see one snapshot.
    pub fn transaction<T, E: From<DbError>>(
        &mut self,
        read_only: bool,
        f: impl FnOnce(&mut PgTx<'_>, i64) -> Result<T, E>,
    ) -> Result<T, E> {
        let key = self.key;
        // Reconnect (and forget the old connection's statements) before taking the cache.
        self.client()?;
        let mut statements = std::mem::take(&mut self.statements);
        let result = (|| {
            let client = self.client.as_mut().ok_or(DbError::Busy)?;
            let tx = if read_only {
                client
                    .build_transaction()
                    .isolation_level(IsolationLevel::RepeatableRead)
                    .read_only(true)
                    .start()
            } else {
                client.transaction()
            }
            .map_err(DbError::from)?;
            let mut ptx = PgTx {
                tx,
                statements: &mut statements,
                key,
                write: !read_only,
            };
            let now = ptx.now_ms()?;
            let out = f(&mut ptx, now)?;
            ptx.tx.commit().map_err(DbError::from)?;
            Ok(out)
        })();
        // A connection that broke is noticed (`is_closed`) and reopened by the next command.
        self.statements = statements;
        result
    }

    /// Run `f` in a transaction that may also use what only a cluster's store does.
    pub fn cluster_transaction<T, E: From<DbError>>(
        &mut self,
        read_only: bool,
        f: impl FnOnce(&mut dyn ClusterTx, i64) -> Result<T, E>,
    ) -> Result<T, E> {
        self.transaction(read_only, |tx, now| f(tx, now))
    }
}

/// Create or migrate the schema under an advisory lock (nodes starting together wait for the
/// first and then find nothing to do).
fn migrate(client: &mut Client) -> DbResult<()> {
    client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])?;
    let result = (|| {
        client.batch_execute(
            "CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)",
        )?;
        let version: i32 = client
            .query_opt("SELECT version FROM schema_version", &[])?
            .map_or(0, |r| r.get(0));
        for (i, sql) in MIGRATIONS.iter().enumerate().skip(version.max(0) as usize) {
            let mut tx = client.transaction()?;
            tx.batch_execute(sql)?;
            tx.execute("DELETE FROM schema_version", &[])?;
            tx.execute(
                "INSERT INTO schema_version (version) VALUES ($1)",
                &[&((i + 1) as i32)],
            )?;
            tx.commit()?;
            log::info!("PostgreSQL schema migrated to version {}", i + 1);
        }
        Ok::<_, postgres::Error>(())
    })();
    let unlocked = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
    result?;
    unlocked?;
    Ok(())
}

/// The deployment's server key: made once (by whichever node gets there first), then read.
fn server_key(client: &mut Client) -> DbResult<[u8; 32]> {
    let fresh =
        auth::random_bytes::<32>().map_err(|e| DbError::Io(format!("OS randomness: {e}")))?;
    client.execute(
        "INSERT INTO settings (name, value) VALUES ('server_key', $1) ON CONFLICT (name) DO NOTHING",
        &[&&fresh[..]],
    )?;
    let stored: Vec<u8> = client
        .query_one("SELECT value FROM settings WHERE name = 'server_key'", &[])?
        .get(0);
    stored
        .try_into()
        .map_err(|_| DbError::Io("the server key in the database is not 32 bytes".into()))
}

fn user_from_row(r: &Row, key: &[u8; 32]) -> DbResult<User> {
    let id: i64 = r.try_get(0)?;
    let invite_nonce: Vec<u8> = r.try_get(4)?;
    Ok(User {
        id,
        first_name: r.try_get(1)?,
        last_name: r.try_get(2)?,
        email: r.try_get(3)?,
        invite_token: auth::invite_token(key, id, &invite_nonce),
        invite_nonce,
        invite_expires_at: r.try_get(5)?,
        token_activated: r.try_get(6)?,
        session_started_at: r.try_get(7)?,
        session_expires_at: r.try_get(8)?,
        session_expired: r.try_get(9)?,
        questions_answered: r.try_get(10)?,
        questions_total: r.try_get(11)?,
        transcript_url: r.try_get(12)?,
        summary_url: r.try_get(13)?,
        created_at: r.try_get(14)?,
        invite_expired: r.try_get(15)?,
        session_ended_at: r.try_get(16)?,
    })
}

fn admin_session_from_row(r: &Row) -> DbResult<AdminSession> {
    let digest: Vec<u8> = r.try_get(0)?;
    let mut token_digest = [0u8; 32];
    if digest.len() == 32 {
        token_digest.copy_from_slice(&digest);
    }
    Ok(AdminSession {
        token_digest,
        admin_id: r.try_get(1)?,
        email: r.try_get(2)?,
        expires_at: r.try_get(3)?,
    })
}

/// A stored event row (`seq, at_ms, user_id, kind, cause, admin_message, agent_message,
/// user_row`).
pub fn event_from_row(r: &Row) -> DbResult<StoredEvent> {
    let kind: String = r.try_get(3)?;
    let cause: Option<String> = r.try_get(4)?;
    Ok(StoredEvent {
        seq: r.try_get::<_, i64>(0)? as u64,
        at_ms: r.try_get(1)?,
        user_id: r.try_get(2)?,
        kind: crate::app::event::kind_label(&kind),
        cause: cause.as_deref().and_then(crate::app::Cause::from_label),
        admin_message: r.try_get(5)?,
        agent_message: r.try_get(6)?,
        user_row: r.try_get(7)?,
    })
}

/// The columns [`event_from_row`] reads, for `SELECT … FROM events`.
pub const EVENT_COLUMNS: &str =
    "seq, at_ms, user_id, kind, cause, admin_message, agent_message, user_row";

/// An open PostgreSQL transaction.
pub struct PgTx<'c> {
    tx: postgres::Transaction<'c>,
    statements: &'c mut HashMap<&'static str, Statement>,
    key: [u8; 32],
    /// Rows read are locked (`FOR UPDATE`): they are about to change.
    write: bool,
}

impl PgTx<'_> {
    fn stmt(&mut self, sql: &'static str) -> DbResult<Statement> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.tx.prepare(sql)?;
        self.statements.insert(sql, s.clone());
        Ok(s)
    }

    /// The database's clock, Unix ms.
    fn now_ms(&mut self) -> DbResult<i64> {
        let s = self.stmt("SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint")?;
        Ok(self.tx.query_one(&s, &[])?.try_get(0)?)
    }

    fn one_user(
        &mut self,
        sql_read: &'static str,
        sql_lock: &'static str,
        p: &(dyn postgres::types::ToSql + Sync),
    ) -> DbResult<Option<User>> {
        let s = self.stmt(if self.write { sql_lock } else { sql_read })?;
        let key = self.key;
        self.tx
            .query_opt(&s, &[p])?
            .map(|r| user_from_row(&r, &key))
            .transpose()
    }
}

impl Tx for PgTx<'_> {
    fn invite_token(&self, id: i64, nonce: &[u8]) -> DbResult<String> {
        Ok(auth::invite_token(&self.key, id, nonce))
    }

    fn user(&mut self, id: i64) -> DbResult<Option<User>> {
        self.one_user(
            concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"),
            concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE id = $1 FOR UPDATE"
            ),
            &id,
        )
    }

    fn user_by_token(&mut self, token_digest: &Digest32) -> DbResult<Option<User>> {
        self.one_user(
            concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE invite_token_hash = $1"
            ),
            concat!(
                "SELECT ",
                user_columns!(),
                " FROM users WHERE invite_token_hash = $1 FOR UPDATE"
            ),
            &&token_digest[..],
        )
    }

    /// The row gets its id first (a placeholder digest: the nonce, which cannot collide with
    /// a 32-byte digest), then its real digest, in the same transaction.
    fn insert_user(&mut self, u: &NewUser) -> DbResult<User> {
        let s = self.stmt(
            "INSERT INTO users (first_name, last_name, email, invite_nonce, invite_token_hash,
                                invite_expires_at, questions_total, created_at)
             VALUES ($1, $2, $3, $4, $4, $5, $6, $7) RETURNING id",
        )?;
        let id: i64 = self
            .tx
            .query_one(
                &s,
                &[
                    &u.first_name,
                    &u.last_name,
                    &u.email,
                    &u.invite_nonce,
                    &u.invite_expires_at,
                    &u.questions_total,
                    &u.created_at,
                ],
            )?
            .try_get(0)?;
        let token = self.invite_token(id, u.invite_nonce)?;
        let s = self.stmt("UPDATE users SET invite_token_hash = $1 WHERE id = $2")?;
        self.tx.execute(&s, &[&&auth::digest(&token)[..], &id])?;
        Ok(u.stored(id, token))
    }

    fn write_user(&mut self, u: &User) -> DbResult<bool> {
        let s = self.stmt(
            "UPDATE users SET first_name = $2, last_name = $3, email = $4, invite_nonce = $5,
                invite_token_hash = $6, invite_expires_at = $7, token_activated = $8,
                session_started_at = $9, session_expires_at = $10, session_expired = $11,
                questions_answered = $12, questions_total = $13, transcript_url = $14,
                summary_url = $15, invite_expired = $16, session_ended_at = $17
             WHERE id = $1",
        )?;
        let n = self.tx.execute(
            &s,
            &[
                &u.id,
                &u.first_name,
                &u.last_name,
                &u.email,
                &u.invite_nonce,
                &&auth::digest(&u.invite_token)[..],
                &u.invite_expires_at,
                &u.token_activated,
                &u.session_started_at,
                &u.session_expires_at,
                &u.session_expired,
                &u.questions_answered,
                &u.questions_total,
                &u.transcript_url,
                &u.summary_url,
                &u.invite_expired,
                &u.session_ended_at,
            ],
        )?;
        Ok(n == 1)
    }

    fn delete_user(&mut self, id: i64) -> DbResult<bool> {
        let s = self.stmt("DELETE FROM users WHERE id = $1")?;
        Ok(self.tx.execute(&s, &[&id])? == 1)
    }

    /// The table lock makes "no admin yet" and the insert one step for every node: of two
    /// setups racing on two nodes, the second finds the first's admin.
    fn create_first_admin(
        &mut self,
        email: &str,
        hash: &str,
        now_ms: i64,
    ) -> DbResult<Option<i64>> {
        self.tx
            .batch_execute("LOCK TABLE admins IN SHARE ROW EXCLUSIVE MODE")?;
        let row = self.tx.query_opt(
            "INSERT INTO admins (email, password_hash, created_at)
             SELECT $1, $2, $3 WHERE NOT EXISTS (SELECT 1 FROM admins) RETURNING id",
            &[&email, &hash, &now_ms],
        )?;
        Ok(row.map(|r| r.try_get(0)).transpose()?)
    }

    fn find_admin(&mut self, email: &str) -> DbResult<Option<AdminAccount>> {
        let s = self
            .stmt("SELECT id, email, password_hash FROM admins WHERE lower(email) = lower($1)")?;
        self.tx
            .query_opt(&s, &[&email])?
            .map(|r| {
                Ok(AdminAccount {
                    id: r.try_get(0)?,
                    email: r.try_get(1)?,
                    password_hash: r.try_get(2)?,
                })
            })
            .transpose()
    }

    fn create_admin_session(
        &mut self,
        admin_id: i64,
        token_digest: &Digest32,
        expires_at: i64,
        now_ms: i64,
    ) -> DbResult<()> {
        let s = self.stmt(
            "INSERT INTO admin_sessions (token_hash, admin_id, expires_at, created_at)
             VALUES ($1, $2, $3, $4)",
        )?;
        self.tx
            .execute(&s, &[&&token_digest[..], &admin_id, &expires_at, &now_ms])?;
        Ok(())
    }

    fn admin_session(
        &mut self,
        token_digest: &Digest32,
        now_ms: i64,
    ) -> DbResult<Option<AdminSession>> {
        let s = self.stmt(
            "SELECT s.token_hash, s.admin_id, a.email, s.expires_at
             FROM admin_sessions s JOIN admins a ON a.id = s.admin_id
             WHERE s.token_hash = $1 AND s.expires_at > $2",
        )?;
        let found = self
            .tx
            .query_opt(&s, &[&&token_digest[..], &now_ms])?
            .map(|r| admin_session_from_row(&r))
            .transpose()?;
        Ok(found.filter(|s| auth::ct_eq(&s.token_digest, token_digest)))
    }

    fn changed_by_others(&mut self) -> DbResult<bool> {
        Ok(true)
    }

    fn admin_sessions(&mut self, now_ms: i64) -> DbResult<Vec<AdminSession>> {
        let rows = self.tx.query(
            "SELECT s.token_hash, s.admin_id, a.email, s.expires_at
             FROM admin_sessions s JOIN admins a ON a.id = s.admin_id
             WHERE s.expires_at > $1",
            &[&now_ms],
        )?;
        rows.iter().map(admin_session_from_row).collect()
    }

    fn delete_admin_session(&mut self, token_digest: &Digest32) -> DbResult<()> {
        let s = self.stmt("DELETE FROM admin_sessions WHERE token_hash = $1")?;
        self.tx.execute(&s, &[&&token_digest[..]])?;
        Ok(())
    }

    fn prune_admin_sessions(&mut self, now_ms: i64) -> DbResult<usize> {
        Ok(self.tx.execute(
            "DELETE FROM admin_sessions WHERE expires_at <= $1",
            &[&now_ms],
        )? as usize)
    }

    fn log_head(&mut self) -> DbResult<LogHead> {
        let r = self
            .tx
            .query_one("SELECT epoch, head FROM log_head WHERE id = 1", &[])?;
        Ok(LogHead {
            epoch: r.try_get(0)?,
            head: r.try_get::<_, i64>(1)? as u64,
        })
    }

    fn next_seq(&mut self) -> DbResult<u64> {
        let s = self.stmt("UPDATE log_head SET head = head + 1 WHERE id = 1 RETURNING head")?;
        Ok(self.tx.query_one(&s, &[])?.try_get::<_, i64>(0)? as u64)
    }

    /// Insert and notify in one round trip; the notification leaves at commit.
    fn append_event(&mut self, e: &StoredEvent) -> DbResult<()> {
        let s = self.stmt(
            "WITH ins AS (
                INSERT INTO events (seq, at_ms, user_id, kind, cause, admin_message,
                                    agent_message, user_row)
                VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING seq)
             SELECT pg_notify('catalytic_events', seq::text) FROM ins",
        )?;
        self.tx.query(
            &s,
            &[
                &(e.seq as i64),
                &e.at_ms,
                &e.user_id,
                &e.kind,
                &e.cause,
                &e.admin_message,
                &e.agent_message,
                &e.user_row,
            ],
        )?;
        Ok(())
    }

    fn events_between(&mut self, from: u64, to: u64) -> DbResult<Vec<StoredEvent>> {
        let s = self.stmt(
            "SELECT seq, at_ms, user_id, kind, cause, admin_message, agent_message, user_row
             FROM events WHERE seq BETWEEN $1 AND $2 ORDER BY seq",
        )?;
        let rows = self.tx.query(&s, &[&(from as i64), &(to as i64)])?;
        rows.iter().map(event_from_row).collect()
    }

    fn oldest_event(&mut self) -> DbResult<Option<u64>> {
        let r = self.tx.query_one("SELECT min(seq) FROM events", &[])?;
        Ok(r.try_get::<_, Option<i64>>(0)?.map(|s| s as u64))
    }

    fn trim_events(&mut self, keep: Retention, now_ms: i64) -> DbResult<usize> {
        Ok(self.tx.execute(
            "DELETE FROM events
             WHERE seq <= (SELECT head FROM log_head WHERE id = 1) - $1 AND at_ms < $2",
            &[&(keep.count as i64), &(now_ms - keep.age_ms)],
        )? as usize)
    }

    fn agent_request_seen(&mut self, request_id: &str, since_ms: i64) -> DbResult<bool> {
        let s = self.stmt(
            "SELECT 1 FROM agent_requests WHERE request_id = $1 AND at_ms >= $2 FOR UPDATE",
        )?;
        Ok(self.tx.query_opt(&s, &[&request_id, &since_ms])?.is_some())
    }

    fn record_agent_request(&mut self, request_id: &str, now_ms: i64) -> DbResult<()> {
        let s = self.stmt(
            "INSERT INTO agent_requests (request_id, at_ms) VALUES ($1, $2)
             ON CONFLICT (request_id) DO UPDATE SET at_ms = excluded.at_ms",
        )?;
        self.tx.execute(&s, &[&request_id, &now_ms])?;
        Ok(())
    }

    fn trim_agent_requests(&mut self, before_ms: i64) -> DbResult<usize> {
        Ok(self
            .tx
            .execute("DELETE FROM agent_requests WHERE at_ms < $1", &[&before_ms])?
            as usize)
    }

    fn insert_admin(&mut self, email: &str, password_hash: &str, now_ms: i64) -> DbResult<i64> {
        let r = self.tx.query_one(
            "INSERT INTO admins (email, password_hash, created_at) VALUES ($1, $2, $3) RETURNING id",
            &[&email, &password_hash, &now_ms],
        )?;
        Ok(r.try_get(0)?)
    }

    fn oidc_attempt_used(&mut self, attempt: &[u8; 16]) -> DbResult<bool> {
        Ok(self
            .tx
            .query_opt(
                "SELECT 1 FROM oidc_attempts_used WHERE attempt = $1",
                &[&&attempt[..]],
            )?
            .is_some())
    }

    fn use_oidc_attempt(
        &mut self,
        attempt: &[u8; 16],
        expires_at: i64,
        now_ms: i64,
    ) -> DbResult<bool> {
        self.tx.execute(
            "DELETE FROM oidc_attempts_used WHERE expires_at < $1",
            &[&now_ms],
        )?;
        let n = self.tx.execute(
            "INSERT INTO oidc_attempts_used (attempt, expires_at) VALUES ($1, $2)
             ON CONFLICT (attempt) DO NOTHING",
            &[&&attempt[..], &expires_at],
        )?;
        Ok(n == 1)
    }
}
