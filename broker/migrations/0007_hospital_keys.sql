-- Which CA and sealing key this database belongs to, recorded by the first broker or admin
-- command that opened it. A broker whose data directory holds other keys (or none) is then
-- refused at start instead of failing later, one technician at a time (see keys.rs).
-- Portable between SQLite and PostgreSQL: TEXT and BIGINT only, times in Unix milliseconds.

CREATE TABLE hospital_keys (
    -- Always 1: one hospital per database.
    id              BIGINT PRIMARY KEY,
    -- `sha256:` and the CA certificate's SHA-256 in hex, as `technician add` prints it.
    ca_fingerprint  TEXT   NOT NULL,
    -- A fixed text sealed with secret.key (hex: nonce || ciphertext): it opens with that key
    -- only, and tells nothing about it.
    sealing_check   TEXT   NOT NULL,
    recorded_at     BIGINT NOT NULL
);
