-- Hospital staff who use the web UI (approvers, admins, auditors), their browser sessions,
-- and the one-time links that create or reset an account.
-- Portable between SQLite and PostgreSQL: TEXT and BIGINT only, times in Unix milliseconds.

CREATE TABLE staff (
    name            TEXT   PRIMARY KEY,
    -- Comma-separated roles: approver, admin, auditor.
    roles           TEXT   NOT NULL,
    -- argon2id, PHC string format (salt and parameters inside).
    password_hash   TEXT   NOT NULL,
    -- TOTP secret sealed with the data directory's secret key (hex: nonce || ciphertext).
    totp_secret     TEXT   NOT NULL,
    -- The last TOTP step accepted: a code for this step or an earlier one is refused.
    totp_last_step  BIGINT NOT NULL DEFAULT 0,
    -- Consecutive failed logins; at the threshold `locked` becomes 1 until an admin resets.
    login_failures  BIGINT NOT NULL DEFAULT 0,
    locked          BIGINT NOT NULL DEFAULT 0,
    disabled        BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL
);

-- Logged-in browsers. The cookie holds a random id; only its SHA-256 is stored.
CREATE TABLE staff_sessions (
    id_hash    TEXT   PRIMARY KEY,
    staff      TEXT   NOT NULL,
    csrf       TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    last_seen  BIGINT NOT NULL
);
CREATE INDEX staff_sessions_by_staff ON staff_sessions (staff);

-- One-time links: the first admin's, a new account's, or an account reset's.
-- Only the SHA-256 of the token is stored.
CREATE TABLE staff_invites (
    token_hash TEXT   PRIMARY KEY,
    -- The account it creates or resets.
    name       TEXT   NOT NULL,
    roles      TEXT   NOT NULL,
    created_by TEXT   NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    used_at    BIGINT
);
