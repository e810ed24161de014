-- Failed sign-ins counted for the whole deployment (cluster mode), per limiter key
-- ("ip:…", "account:…", "device:…"), in fixed one-minute windows: the window's start (Unix ms,
-- the database's clock) and the attempts counted in it. Rows of windows that ended are
-- reused by the next attempt on the same key and swept by housekeeping.
CREATE TABLE login_failures (
    key          TEXT PRIMARY KEY,
    window_start BIGINT NOT NULL,
    attempts     INTEGER NOT NULL
);
