//! `catalytic admin create|token|revoke`: admin accounts and their sessions from the shell.
//! They open the same SQLite file as the server (WAL allows both at once).

use crate::api::input::valid_email;
use crate::auth;
use crate::clock::wall_ms;
use crate::store::{DbError, Sqlite, Tx};
use std::io::BufRead;
use std::path::Path;
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

/// Create an admin; the password comes from `CATALYTIC_ADMIN_PASSWORD` or one line on stdin.
pub fn admin_create(email: &str, db_path: &Path) -> Result<(), Failure> {
    if !valid_email(email) {
        return Err(refused(format!("`{email}` is not an email address")));
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
    auth::check_password_rules(&password, &[email])
        .map_err(|why| refused(format!("password refused: {why}")))?;
    let db = Sqlite::open(db_path, None)?;
    let hash = auth::hash_password(&password)?;
    match db.create_admin(email, &hash, wall_ms()) {
        Ok(_) => {
            eprintln!("admin {email} created in {}", db_path.display());
            Ok(())
        }
        Err(DbError::Conflict) => Err(Failure::from(format!(
            "an admin with email {email} already exists"
        ))),
        Err(e) => Err(e.into()),
    }
}

/// A fresh admin session token for `email`, valid for `ttl`.
pub fn admin_token(email: &str, db_path: &Path, ttl: Duration) -> Result<String, Failure> {
    let mut db = Sqlite::open(db_path, None)?;
    let token = auth::new_token().map_err(|e| format!("OS randomness: {e}"))?;
    let now = wall_ms();
    db.write(|tx| {
        let admin = tx.find_admin(email)?.ok_or_else(|| no_such_admin(email))?;
        tx.create_admin_session(
            admin.id,
            &auth::digest(&token),
            now + ttl.as_millis() as i64,
            now,
        )?;
        Ok::<_, String>(())
    })?;
    Ok(token)
}

/// End every session of `email`; returns how many there were. A running server closes their
/// open streams within 10 s (it re-checks the sessions of open admin streams every 5 s).
pub fn admin_revoke(email: &str, db_path: &Path) -> Result<usize, Failure> {
    let mut db = Sqlite::open(db_path, None)?;
    let n = db.write(|tx| {
        let admin = tx.find_admin(email)?.ok_or_else(|| no_such_admin(email))?;
        Ok::<_, String>(tx.delete_admin_sessions_of(admin.id)?)
    })?;
    eprintln!("revoked {n} session(s) of admin {email}; open streams close within 10 s");
    Ok(n)
}

fn no_such_admin(email: &str) -> String {
    format!("no admin with email {email}; create one with `catalytic admin create`")
}

impl From<DbError> for String {
    fn from(e: DbError) -> String {
        e.to_string()
    }
}
