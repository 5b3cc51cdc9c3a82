-- The audit log: append-only, numbered without gaps, each event chained to the one before by
-- its hash (see broker/src/audit). `audit_head` holds the last number and hash; every append
-- updates it first, which serialises appends across connections and brokers.

CREATE TABLE audit_events (
    seq         BIGINT PRIMARY KEY,
    at          BIGINT NOT NULL,
    actor       TEXT   NOT NULL,
    kind        TEXT   NOT NULL,
    request_id  TEXT,
    vendor      TEXT,
    technician  TEXT,
    target      TEXT,
    -- Ordered key/value pairs as a JSON array of [key, value] pairs.
    details     TEXT   NOT NULL,
    prev_hash   TEXT   NOT NULL,
    hash        TEXT   NOT NULL
);
CREATE INDEX audit_by_request ON audit_events (request_id, seq);
CREATE INDEX audit_by_time ON audit_events (at);

CREATE TABLE audit_head (
    id   BIGINT PRIMARY KEY,
    seq  BIGINT NOT NULL,
    hash TEXT   NOT NULL
);
INSERT INTO audit_head (id, seq, hash) VALUES (1, 0, '0000000000000000000000000000000000000000000000000000000000000000');

-- Auditors' reviews of ended sessions.
CREATE TABLE reviews (
    request_id  TEXT   NOT NULL,
    reviewer    TEXT   NOT NULL,
    reviewed_at BIGINT NOT NULL,
    comment     TEXT   NOT NULL,
    PRIMARY KEY (request_id, reviewer)
);
