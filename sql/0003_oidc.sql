-- OpenID Connect sign-in: the login attempts that were used, so each is used once.
-- An attempt lives in its browser's cookie (any node can check it); only its id is stored here,
-- when it signs someone in. A row may go once its attempt could no longer be used anyway.
CREATE TABLE oidc_attempts_used (
    attempt    BLOB    PRIMARY KEY,
    expires_at INTEGER NOT NULL
) WITHOUT ROWID;

CREATE INDEX oidc_attempts_used_expiry ON oidc_attempts_used(expires_at);
