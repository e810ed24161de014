//! `catalytic admin create` and `catalytic admin token`: admin accounts from the shell.
//! They open the same SQLite file as the server (WAL allows both at once).

use crate::api::input::valid_email;
use crate::auth;
use crate::clock::wall_ms;
use crate::store::{DbError, Sqlite, Tx};
use std::io::{BufRead, IsTerminal};
use std::path::Path;
use std::time::Duration;

/// Create an admin; the password comes from `CATALYTIC_ADMIN_PASSWORD`, else from a prompt
/// that does not echo it (stdin is a terminal, asked twice), else one line on stdin.
pub fn admin_create(email: &str, db_path: &Path) -> Result<(), String> {
    if !valid_email(email) {
        return Err(format!("`{email}` is not an email address"));
    }
    let password = match std::env::var("CATALYTIC_ADMIN_PASSWORD") {
        Ok(p) => p,
        Err(_) if std::io::stdin().is_terminal() => prompt_password()?,
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
    let db = Sqlite::open(db_path, None).map_err(|e| e.to_string())?;
    let hash = auth::hash_password(&password)?;
    match db.create_admin(email, &hash, wall_ms()) {
        Ok(_) => {
            eprintln!("admin {email} created in {}", db_path.display());
            Ok(())
        }
        Err(DbError::Conflict) => Err(format!("an admin with email {email} already exists")),
        Err(e) => Err(e.to_string()),
    }
}

/// Ask for the password on the terminal without echoing it, twice, so a typo is caught.
fn prompt_password() -> Result<String, String> {
    let read = |prompt: &str| {
        rpassword::prompt_password(prompt).map_err(|e| format!("reading the password: {e}"))
    };
    let first = read("Password for the new admin: ")?;
    auth::check_password_rules(&first).map_err(|reason| reason.to_string())?;
    if read("Repeat the password: ")? != first {
        return Err("the two passwords differ; nothing was created".into());
    }
    Ok(first)
}

/// A fresh admin session token for `email`, valid for `ttl`.
pub fn admin_token(email: &str, db_path: &Path, ttl: Duration) -> Result<String, String> {
    let mut db = Sqlite::open(db_path, None).map_err(|e| e.to_string())?;
    let token = auth::new_token().map_err(|e| format!("OS randomness: {e}"))?;
    let now = wall_ms();
    db.write(|tx| {
        let admin = tx.find_admin(email)?.ok_or_else(|| {
            format!("no admin with email {email}; create one with `catalytic admin create`")
        })?;
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

impl From<DbError> for String {
    fn from(e: DbError) -> String {
        e.to_string()
    }
}
