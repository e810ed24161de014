-- The event log: every change of the invitee list, numbered, stored in the same transaction as
-- the change itself (see src/store/mod.rs). Admin and agent streams resume from it.

-- One row: the history this log belongs to (`epoch`, random, made here once) and the number of
-- the last event written (`head`; 0 before any). A number is taken by bumping `head` in the
-- writing transaction, so numbers follow commit order and are never reused, even after a trim.
-- (Since 0005_log_pages.sql the head is the larger of `head` and the last event's number, and
-- `head` is written only by a trim: see there.)
CREATE TABLE log_head (
    id    INTEGER PRIMARY KEY CHECK (id = 1),
    epoch TEXT    NOT NULL,
    head  INTEGER NOT NULL
);
INSERT INTO log_head (id, epoch, head) VALUES (1, lower(hex(randomblob(8))), 0);

CREATE TABLE events (
    seq           INTEGER PRIMARY KEY,
    at_ms         INTEGER NOT NULL,
    user_id       INTEGER NOT NULL,
    -- added | updated | deleted, and why an update happened (see src/app/event.rs).
    kind          TEXT    NOT NULL,
    cause         TEXT,
    -- The admin stream message exactly as sent ({"type":...,"seq":N,"data":...}).
    admin_message TEXT    NOT NULL,
    -- The agent stream message it caused, if any.
    agent_message TEXT,
    -- The stored user row after the change (JSON; none once deleted): another node applies the
    -- event to its view from it (cluster mode; kept here too so both stores hold one log shape).
    user_row      TEXT
);
CREATE INDEX events_age ON events(at_ms);

-- Agent messages already applied, by request_id (JSON text), for ten minutes: a repeat is acked
-- again and applied once.
CREATE TABLE agent_requests (
    request_id TEXT    PRIMARY KEY,
    at_ms      INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX agent_requests_age ON agent_requests(at_ms);

-- An unused invite link that ran out has been announced (its expiry is an event of its own).
ALTER TABLE users ADD COLUMN invite_expired INTEGER NOT NULL DEFAULT 0;
-- When the interview ended: all questions answered, or the session clock ran out.
ALTER TABLE users ADD COLUMN session_ended_at INTEGER;
UPDATE users SET session_ended_at = session_expires_at WHERE session_expired = 1;
