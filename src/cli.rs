//! `catalytic admin create` and `catalytic admin token`: admin accounts from the shell.
//! They open the same database as the server: the SQLite file (WAL allows both at once), or the
//! cluster's PostgreSQL (`--database-url`), creating and migrating the schema of an empty one.

use crate::api::input::valid_email;
use crate::auth;
use crate::clock::wall_ms;
use crate::config::Database;
use crate::store::{DbError, Postgres, Sqlite, Tx};
use std::io::BufRead;
use std::time::Duration;

/// Create an admin; the password comes from `CATALYTIC_ADMIN_PASSWORD` or one line on stdin.
pub fn admin_create(email: &str, db: &Database) -> Result<(), String> {
    if !valid_email(email) {
        return Err(format!("`{email}` is not an email address"));
    }
    let password = match std::env::var("CATALYTIC_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) => {
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|e| format!("reading the password from stdin: {e}"))?;
            line.trim_end_matches(['\r', '\n']).to_string()
        }
    };
    auth::check_password_rules(&password)?;
    let hash = auth::hash_password(&password)?;
    match in_transaction(db, |tx, now| tx.insert_admin(email, &hash, now)) {
        Ok(_) => {
            eprintln!("admin {email} created in {}", describe(db));
            Ok(())
        }
        Err(DbError::Conflict) => Err(format!("an admin with email {email} already exists")),
        Err(e) => Err(e.to_string()),
    }
}

/// A fresh admin session token for `email`, valid for `ttl`.
pub fn admin_token(email: &str, db: &Database, ttl: Duration) -> Result<String, String> {
    let token = auth::new_token().map_err(|e| format!("OS randomness: {e}"))?;
    let found = in_transaction(db, |tx, now| {
        let Some(admin) = tx.find_admin(email)? else {
            return Ok(false);
        };
        let expires_at = now + ttl.as_millis() as i64;
        tx.create_admin_session(admin.id, &auth::digest(&token), expires_at, now)?;
        Ok(true)
    })
    .map_err(|e| e.to_string())?;
    if !found {
        return Err(format!(
            "no admin with email {email}; create one with `catalytic admin create`"
        ));
    }
    Ok(token)
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
