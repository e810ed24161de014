//! Secrets at rest: the database, its `-wal` and `-shm` files and the server key are readable
//! by their owner only (0600), whichever command creates them; `serve` tightens existing
//! ones; a key file others can read or write, or that another user owns, is refused at start;
//! the key file in use is logged.

mod common;

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use common::*;

fn mode(p: &Path) -> u32 {
    fs::metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

fn with_suffix(db: &Path, suffix: &str) -> PathBuf {
    PathBuf::from(format!("{}{suffix}", db.display()))
}

fn chmod(p: &Path, m: u32) {
    fs::set_permissions(p, fs::Permissions::from_mode(m)).unwrap();
}

/// Issue 12, item 11: the database, `-wal` and `-shm` were created 0644, readable by every
/// user of the machine (password hashes, every invitee, session digests).
#[test]
fn database_and_key_files_are_owner_only() {
    let srv = Server::start(&[]);
    srv.create_user("Ada", "Lovelace", None);
    for suffix in ["", "-wal", "-shm", ".key"] {
        let p = with_suffix(&srv.db, suffix);
        assert_eq!(mode(&p), 0o600, "{} is {:o}", p.display(), mode(&p));
    }
    assert!(
        srv.logs.joined().contains(&format!(
            "server key: {} (new)",
            with_suffix(&srv.db, ".key").display()
        )),
        "the log names the key file"
    );

    // `admin create` on a fresh path creates the database owner-only too.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("cli.sqlite");
    let out = run_cli(
        &[
            "admin",
            "create",
            "--email",
            "a@example.com",
            "--db",
            db.to_str().unwrap(),
        ],
        &[("CATALYTIC_ADMIN_PASSWORD", ADMIN_PASSWORD)],
        None,
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(mode(&db), 0o600, "database made by `admin create`");
    for suffix in ["-wal", "-shm"] {
        let p = with_suffix(&db, suffix);
        if p.exists() {
            assert_eq!(mode(&p), 0o600, "{}", p.display());
        }
    }
}

#[test]
fn serve_tightens_an_existing_database() {
    let mut srv = Server::start(&[]);
    srv.create_user("Ada", "Lovelace", None);
    srv.stop();
    chmod(&srv.db, 0o644);
    let wal = with_suffix(&srv.db, "-wal");
    if wal.exists() {
        chmod(&wal, 0o664);
    }
    srv.spawn();
    assert_eq!(mode(&srv.db), 0o600, "the database was tightened");
    if wal.exists() {
        assert_eq!(mode(&wal), 0o600, "the WAL was tightened");
    }
    assert!(
        srv.logs.joined().contains("it is now owner-only"),
        "and it says so"
    );
    assert_eq!(srv.users().len(), 1, "the data is intact");
}

/// Issue 12, item 11: an existing key file was accepted with any owner or mode: one planted
/// before the first start let a reader of the database compute every invite link offline.
#[test]
fn a_key_file_others_can_read_or_write_is_refused() {
    let mut srv = Server::start(&[]);
    srv.stop();
    let key = with_suffix(&srv.db, ".key");
    let db = srv.db_arg();
    for m in [0o644, 0o640, 0o622, 0o606] {
        chmod(&key, m);
        let out = run_cli(
            &["serve", "--listen", "127.0.0.1:0", "--db", &db],
            &[],
            None,
        );
        assert!(!out.status.success(), "started with a {m:o} key file");
        assert!(
            out.stderr.contains("other users") && out.stderr.contains(&key.display().to_string()),
            "{m:o}: the message names the file and why: {}",
            out.stderr
        );
    }
    // Planted by another user, even 0600: refused.
    chmod(&key, 0o600);
    let rc = unsafe {
        let path = std::ffi::CString::new(key.to_str().unwrap()).unwrap();
        libc::chown(path.as_ptr(), 4321, 4321)
    };
    assert_eq!(rc, 0, "chown (the tests run as root)");
    assert_eq!(fs::metadata(&key).unwrap().uid(), 4321);
    let out = run_cli(
        &["serve", "--listen", "127.0.0.1:0", "--db", &db],
        &[],
        None,
    );
    assert!(
        !out.status.success(),
        "started with another user's key file"
    );
    assert!(out.stderr.contains("another user"), "{}", out.stderr);
    // Its owner's again, 0600 (or 0400): accepted, and the log says which key is in use.
    let rc = unsafe {
        let path = std::ffi::CString::new(key.to_str().unwrap()).unwrap();
        libc::chown(path.as_ptr(), libc::geteuid(), libc::getegid())
    };
    assert_eq!(rc, 0);
    chmod(&key, 0o400);
    srv.spawn();
    assert!(
        srv.logs
            .joined()
            .contains(&format!("server key: {}", key.display())),
        "the log names the key file"
    );
}
