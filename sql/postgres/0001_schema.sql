-- catalytic on PostgreSQL (cluster mode): the same data as the SQLite migrations in ../, in
-- PostgreSQL's types, plus what several nodes must share (the server key, the setup code, the
-- janitor lease, presence). Times are Unix milliseconds (UTC); tokens only as SHA-256 digests.

CREATE TABLE users (
    id                 BIGSERIAL PRIMARY KEY,
    first_name         TEXT    NOT NULL,
    last_name          TEXT    NOT NULL,
    email              TEXT    NOT NULL,
    -- The invite token is derived from the server key and this nonce; a new nonce kills the old link.
    invite_nonce       BYTEA   NOT NULL,
    invite_token_hash  BYTEA   NOT NULL UNIQUE,
    invite_expires_at  BIGINT  NOT NULL,
    invite_expired     BOOLEAN NOT NULL DEFAULT FALSE,
    token_activated    BOOLEAN NOT NULL DEFAULT FALSE,
    session_started_at BIGINT,
    session_expires_at BIGINT,
    session_expired    BOOLEAN NOT NULL DEFAULT FALSE,
    session_ended_at   BIGINT,
    questions_answered BIGINT  NOT NULL DEFAULT 0,
    questions_total    BIGINT  NOT NULL DEFAULT 10,
    transcript_url     TEXT,
    summary_url        TEXT,
    created_at         BIGINT  NOT NULL
);
-- Emails compare case-insensitively.
CREATE UNIQUE INDEX users_email ON users (lower(email));
-- The janitor's sweeps: running sessions by deadline, unused invites by expiry.
CREATE INDEX users_running ON users (session_expires_at)
    WHERE token_activated AND NOT session_expired;
CREATE INDEX users_invited ON users (invite_expires_at)
    WHERE NOT token_activated AND NOT invite_expired;

CREATE TABLE admins (
    id            BIGSERIAL PRIMARY KEY,
    email         TEXT   NOT NULL,
    password_hash TEXT   NOT NULL,
    created_at    BIGINT NOT NULL
);
CREATE UNIQUE INDEX admins_email ON admins (lower(email));

CREATE TABLE admin_sessions (
    token_hash BYTEA  PRIMARY KEY,
    admin_id   BIGINT NOT NULL REFERENCES admins(id) ON DELETE CASCADE,
    expires_at BIGINT NOT NULL,
    created_at BIGINT NOT NULL
);
CREATE INDEX admin_sessions_expiry ON admin_sessions (expires_at);

-- The event log (see ../0002_event_log.sql). `head` is taken by an UPDATE of this one row in
-- the writing transaction, which holds its row lock until commit: event numbers follow commit
-- order, so a node reading `seq > last` never skips one that commits late (a sequence would).
CREATE TABLE log_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch TEXT    NOT NULL,
    head  BIGINT  NOT NULL
);
-- The epoch is random; not a secret (md5 here is only a mixer).
INSERT INTO log_head (id, epoch, head)
    VALUES (1, substr(md5(random()::text || clock_timestamp()::text), 1, 16), 0);

CREATE TABLE events (
    seq           BIGINT PRIMARY KEY,
    at_ms         BIGINT NOT NULL,
    user_id       BIGINT NOT NULL,
    kind          TEXT   NOT NULL,
    cause         TEXT,
    admin_message TEXT   NOT NULL,
    agent_message TEXT,
    user_row      TEXT
);
CREATE INDEX events_age ON events (at_ms);

CREATE TABLE agent_requests (
    request_id TEXT   PRIMARY KEY,
    at_ms      BIGINT NOT NULL
);
CREATE INDEX agent_requests_age ON agent_requests (at_ms);

CREATE TABLE oidc_attempts_used (
    attempt    BYTEA  PRIMARY KEY,
    expires_at BIGINT NOT NULL
);
CREATE INDEX oidc_attempts_used_expiry ON oidc_attempts_used (expires_at);

-- What every node of a deployment must agree on: the server key invite links and signed
-- cookies derive from (`server_key`), the one-time setup code while no admin exists.
CREATE TABLE settings (
    name  TEXT  PRIMARY KEY,
    value BYTEA NOT NULL
);

-- Who runs the janitor (expiries nobody's timer caught, trimming): one holder at a time,
-- renewed while it lives. Only saves work: correctness comes from guarded updates.
CREATE TABLE leases (
    name   TEXT   PRIMARY KEY,
    holder TEXT   NOT NULL,
    until  BIGINT NOT NULL
);

-- Each node's share of presence (who has which page open there), refreshed while it lives; a
-- node that stops refreshing drops out.
CREATE TABLE presence (
    node_id    TEXT   PRIMARY KEY,
    updated_at BIGINT NOT NULL,
    sessions   TEXT   NOT NULL,
    admins     TEXT   NOT NULL
);
