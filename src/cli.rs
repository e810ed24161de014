//! `catalytic admin create|token|revoke`: admin accounts and their sessions from the shell.
//! They open the same database as the server: the SQLite file (WAL allows both at once), or the
//! cluster's PostgreSQL (`--database-url`), creating and migrating the schema of an empty one.

use crate::api::input::valid_email;
use crate::auth;
use crate::clock::wall_ms;
use crate::config::Database;
use crate::store::{DbError, Postgres, Sqlite, Tx};
use std::io::{BufRead, IsTerminal};
use std::time::Duration;

/// Why an admin command failed, and its exit status: 2 for input the command refuses (a weak
/// password, a malformed email — like a bad flag), 1 for everything else.
#[derive(Debug)]
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl From<String> for Failure {
    fn from(message: String) -> Failure {
        Failure { code: 1, message }
    }
}

impl From<DbError> for Failure {
    fn from(e: DbError) -> Failure {
        Failure::from(e.to_string())
    }
}

fn refused(message: String) -> Failure {
    Failure { code: 2, message }
}

/// Create an admin; the password comes from `CATALYTIC_ADMIN_PASSWORD`, else from a prompt
/// that does not echo it (stdin is a terminal, asked twice), else one line on stdin.
pub fn admin_create(email: &str, db: &Database) -> Result<(), Failure> {
    if !valid_email(email) {
        return Err(refused(format!("`{email}` is not an email address")));
    }
    let password = match std::env::var("CATALYTIC_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) if std::io::stdin().is_terminal() => prompt_password(email)?,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password from stdin: {e}"))?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    auth::check_password_rules(&password, &[email])
        .map_err(|why| refused(format!("password refused: {why}")))?;
    let hash = auth::hash_password(&password)?;
    match in_transaction(db, |tx, now| tx.insert_admin(email, &hash, now)) {
        Ok(_) => {
            eprintln!("admin {email} created in {}", describe(db));
            Ok(())
        }
        Err(DbError::Conflict) => Err(Failure::from(format!(
            "an admin with email {email} already exists"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// Ask for the password on the terminal without echoing it, twice, so a typo is caught.
/// A weak password is refused before it is asked again.
fn prompt_password(email: &str) -> Result<String, Failure> {
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| format!("reading the password: {e}"))
    };
    let first = read("Password for the new admin: ")?;
    auth::check_password_rules(&first, &[email])
        .map_err(|why| refused(format!("password refused: {why}")))?;
    if read("Repeat the password: ")? != first {
        return Err(Failure::from(
            "the two passwords differ; nothing was created".to_string(),
        ));
    }
    Ok(first)
}

/// A fresh admin session token for `email`, valid for `ttl`.
pub fn admin_token(email: &str, db: &Database, ttl: Duration) -> Result<String, Failure> {
    let token = auth::new_token().map_err(|e| format!("OS randomness: {e}"))?;
    let found = in_transaction(db, |tx, now| {
        let Some(admin) = tx.find_admin(email)? else {
            return Ok(false);
        };
        let expires_at = now + ttl.as_millis() as i64;
        tx.create_admin_session(admin.id, &auth::digest(&token), expires_at, now)?;
        Ok(true)
    })?;
    if !found {
        return Err(no_such_admin(email));
    }
    Ok(token)
}

/// End every session of `email`; returns how many there were. A running server closes their
/// open streams within 10 s (it re-checks the sessions it trusts every second).
pub fn admin_revoke(email: &str, db: &Database) -> Result<usize, Failure> {
    let ended = in_transaction(db, |tx, _| match tx.find_admin(email)? {
        Some(admin) => Ok(Some(tx.end_admin_sessions(admin.id, None)?.len())),
        None => Ok(None),
    })?;
    let n = ended.ok_or_else(|| no_such_admin(email))?;
    eprintln!("revoked {n} session(s) of admin {email}; open streams close within 10 s");
    Ok(n)
}

fn no_such_admin(email: &str) -> Failure {
    Failure::from(format!(
        "no admin with email {email}; create one with `catalytic admin create`"
    ))
}

/// Run `f` in one write transaction of `db` at its clock (the database's, for PostgreSQL).
fn in_transaction<T>(
    db: &Database,
    f: impl FnOnce(&mut dyn Tx, i64) -> Result<T, DbError>,
) -> Result<T, DbError> {
    match db {
        Database::Sqlite(path) => Sqlite::open(path, None)?.write(|tx| f(tx, wall_ms())),
        Database::Postgres(url) => {
            Postgres::open(url, "catalytic-cli")?.transaction(false, |tx, now| f(tx, now))
        }
    }
}

/// Where the accounts live, for messages (never the URL: it may carry a password).
fn describe(db: &Database) -> String {
    match db {
        Database::Sqlite(path) => path.display().to_string(),
        Database::Postgres(_) => "the PostgreSQL database".into(),
    }
}
