-- Signed checkpoints of the audit chain (see broker/src/audit/checkpoint.rs): each says
-- "event `seq` has hash `head`", signed by a broker's Ed25519 key kept outside the database.
-- Whoever can write this table can delete a checkpoint but not forge one; the same checkpoints
-- also go to the checkpoint file in each broker's data directory and to the SIEM streams.
-- Portable between SQLite and PostgreSQL: TEXT and BIGINT only, times in Unix milliseconds.

CREATE TABLE audit_checkpoints (
    seq        BIGINT NOT NULL,
    -- The id of the broker that signed it.
    broker     TEXT   NOT NULL,
    head       TEXT   NOT NULL,
    -- SHA-256 of event `seq`'s contents without its number and chain fields.
    event      TEXT   NOT NULL,
    at         BIGINT NOT NULL,
    -- `ed25519:` and the public key in hex.
    public_key TEXT   NOT NULL,
    signature  TEXT   NOT NULL,
    PRIMARY KEY (seq, broker)
);
