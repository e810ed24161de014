-- Invitees, admins and admin sessions. Times are Unix milliseconds (UTC).
-- Tokens are never stored: only SHA-256 digests of them (see src/auth.rs).

CREATE TABLE users (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    first_name         TEXT    NOT NULL,
    last_name          TEXT    NOT NULL,
    email              TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    -- The invite token is derived from the server key and this nonce; a new nonce kills the old link.
    invite_nonce       BLOB    NOT NULL,
    invite_token_hash  BLOB    NOT NULL UNIQUE,
    invite_expires_at  INTEGER NOT NULL,
    token_activated    INTEGER NOT NULL DEFAULT 0,
    session_started_at INTEGER,
    session_expires_at INTEGER,
    session_expired    INTEGER NOT NULL DEFAULT 0,
    questions_answered INTEGER NOT NULL DEFAULT 0,
    questions_total    INTEGER NOT NULL DEFAULT 10,
    transcript_url     TEXT,
    summary_url        TEXT,
    created_at         INTEGER NOT NULL
);

CREATE TABLE admins (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    email         TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    password_hash TEXT    NOT NULL,
    created_at    INTEGER NOT NULL
);

CREATE TABLE admin_sessions (
    token_hash BLOB    PRIMARY KEY,
    admin_id   INTEGER NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    expires_at INTEGER NOT NULL,
    created_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX admin_sessions_expiry ON admin_sessions(expires_at);
