-- Admin accounts, v2: when each admin last signed in (the dashboard's Admins view shows it).
-- NULL until the first sign-in after this migration (CLI tokens do not count as sign-ins).
ALTER TABLE admins ADD COLUMN last_sign_in_at INTEGER;
