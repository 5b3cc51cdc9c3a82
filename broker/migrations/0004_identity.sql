-- Identity: vendors and technicians as records the hospital controls, one-time enrollment
-- tokens, and the registry of the client certificates the broker issued.
-- Same portable rules as 0001: TEXT and BIGINT only, Unix milliseconds, booleans as 0/1,
-- 0 or '' where a value is not there yet.

-- A vendor the hospital has taken on. It must also have a policy file; disabling it refuses
-- every technician of the vendor at the handshake and ends their sessions.
CREATE TABLE vendors (
    vendor          TEXT   PRIMARY KEY,
    enabled         BIGINT NOT NULL DEFAULT 1,
    added_at        BIGINT NOT NULL,
    added_by        TEXT   NOT NULL,
    -- Why it was last disabled ('' while enabled).
    disabled_reason TEXT   NOT NULL DEFAULT ''
);

-- Technicians made before enrollment existed belong to vendors that were taken on then.
INSERT INTO vendors (vendor, enabled, added_at, added_by)
    SELECT vendor, 1, MIN(created_at), 'migration' FROM technicians GROUP BY vendor;

-- A technician row now exists from `technician add` on; totp_secret stays '' until the
-- technician enrolls (and again after a reset, until they enroll anew).
ALTER TABLE technicians ADD COLUMN display_name TEXT NOT NULL DEFAULT '';
ALTER TABLE technicians ADD COLUMN email TEXT NOT NULL DEFAULT '';
ALTER TABLE technicians ADD COLUMN enabled BIGINT NOT NULL DEFAULT 1;
ALTER TABLE technicians ADD COLUMN disabled_reason TEXT NOT NULL DEFAULT '';
ALTER TABLE technicians ADD COLUMN enrolled_at BIGINT NOT NULL DEFAULT 0;

-- One-time enrollment tokens, stored as the SHA-256 of the token's bytes, never the token.
CREATE TABLE enrollment_tokens (
    token_hash  TEXT   PRIMARY KEY,
    vendor      TEXT   NOT NULL,
    technician  TEXT   NOT NULL,
    created_at  BIGINT NOT NULL,
    created_by  TEXT   NOT NULL,
    expires_at  BIGINT NOT NULL,
    -- When it was spent by an enrollment (0: not yet).
    used_at     BIGINT NOT NULL DEFAULT 0,
    -- When a newer token for the same technician (a reset) or disabling made it void (0: not).
    void_at     BIGINT NOT NULL DEFAULT 0
);
CREATE INDEX enrollment_tokens_by_technician ON enrollment_tokens (vendor, technician);

-- Every client certificate the broker issued. A connection is let in only if its certificate
-- is here, unrevoked and unexpired, and its technician and vendor are enabled.
CREATE TABLE certificates (
    -- SHA-256 of the certificate's DER, lowercase hex.
    fingerprint   TEXT   PRIMARY KEY,
    serial        TEXT   NOT NULL,
    vendor        TEXT   NOT NULL,
    technician    TEXT   NOT NULL,
    issued_at     BIGINT NOT NULL,
    not_after     BIGINT NOT NULL,
    revoked_at    BIGINT NOT NULL DEFAULT 0,
    revoked_by    TEXT   NOT NULL DEFAULT '',
    revoke_reason TEXT   NOT NULL DEFAULT ''
);
CREATE INDEX certificates_by_technician ON certificates (vendor, technician);
