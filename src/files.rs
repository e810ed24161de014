//! Files that hold secrets: the database (password hashes, every invitee, session digests), its
//! `-wal` and `-shm` companions, the server key, the agent key file, the OIDC client secret.
//!
//! * What catalytic creates is created owner-only (0600) from the first byte — never created
//!   wider and narrowed after, which would leave a window.
//! * `serve` tightens database files that exist with wider modes (an upgrade from a version that
//!   created them 0644), and says so.
//! * A key file others may read or write, or that belongs to another user, is refused: a key
//!   planted before the first start (or readable by others) lets whoever holds it, with a copy
//!   of the database, compute every invite link offline.
//!
//! On platforms without Unix modes these checks do nothing.

use std::fs;
use std::path::{Path, PathBuf};

/// The database file and the two SQLite writes beside it in WAL mode.
pub fn database_files(db: &Path) -> [PathBuf; 3] {
    let with = |suffix: &str| {
        let mut p = db.as_os_str().to_owned();
        p.push(suffix);
        PathBuf::from(p)
    };
    [db.to_path_buf(), with("-wal"), with("-shm")]
}

/// Before SQLite opens `db`: create it empty and owner-only if it does not exist (SQLite then
/// gives `-wal` and `-shm` the database file's mode), and tighten every database file that
/// exists with a wider mode.
pub fn prepare_database(db: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        match fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(db)
        {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            // Let SQLite report what is wrong with the path (a missing directory, …).
            Err(_) => return Ok(()),
        }
        for path in database_files(db) {
            tighten(&path)?;
        }
    }
    #[cfg(not(unix))]
    let _ = db;
    Ok(())
}

/// Make an existing file owner-only if it is wider; a missing file is fine.
pub fn tighten(path: &Path) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let Ok(meta) = fs::metadata(path) else {
            return Ok(());
        };
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(mode & 0o700)).map_err(|e| {
                format!(
                    "{} can be read by other users and cannot be made private: {e}",
                    path.display()
                )
            })?;
            log::warn!(
                "{} could be read by other users (mode {mode:o}); it is now owner-only",
                path.display()
            );
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

/// Refuse a key file that another user owns or that others may read or write.
pub fn check_private(path: &Path, what: &str) -> Result<(), String> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let meta =
            fs::metadata(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        let me = unsafe { libc::geteuid() };
        if meta.uid() != me {
            return Err(format!(
                "{what} {} belongs to another user (uid {}); refusing it: a key someone else \
                 planted would let them compute secrets. Move it away to start with a new one",
                path.display(),
                meta.uid()
            ));
        }
        if meta.mode() & 0o066 != 0 {
            return Err(format!(
                "{what} {} can be read or written by other users (mode {:o}); refusing it. \
                 `chmod 600` it if it is yours, or move it away to start with a new one",
                path.display(),
                meta.mode() & 0o777
            ));
        }
    }
    #[cfg(not(unix))]
    let _ = (path, what);
    Ok(())
}

/// Warn (not refuse) when others may read a secret file the operator provides: it may be a
/// mounted secret whose mode the operator does not control.
pub fn warn_if_others_can_read(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = fs::metadata(path) {
            if meta.permissions().mode() & 0o077 != 0 {
                log::warn!(
                    "{} can be read by other users; `chmod 600` it",
                    path.display()
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn a_new_database_is_owner_only_and_old_ones_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("x.db");
        prepare_database(&db).unwrap();
        assert_eq!(mode(&db), 0o600);
        let [_, wal, _] = database_files(&db);
        fs::write(&wal, b"").unwrap();
        fs::set_permissions(&wal, fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&db, fs::Permissions::from_mode(0o664)).unwrap();
        prepare_database(&db).unwrap();
        assert_eq!((mode(&db), mode(&wal)), (0o600, 0o600));
    }

    #[test]
    fn key_files_others_can_touch_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let k = dir.path().join("k");
        fs::write(&k, [0u8; 32]).unwrap();
        fs::set_permissions(&k, fs::Permissions::from_mode(0o600)).unwrap();
        assert!(check_private(&k, "key").is_ok());
        for m in [0o644, 0o640, 0o602, 0o620] {
            fs::set_permissions(&k, fs::Permissions::from_mode(m)).unwrap();
            let e = check_private(&k, "the key file").unwrap_err();
            assert!(e.contains("other users"), "{m:o}: {e}");
        }
        fs::set_permissions(&k, fs::Permissions::from_mode(0o400)).unwrap();
        assert!(
            check_private(&k, "key").is_ok(),
            "read-only for the owner is fine"
        );
    }
}
