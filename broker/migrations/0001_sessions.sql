-- Requests, approvals, sessions, technicians, lockdown.
-- Portable between SQLite and PostgreSQL: only TEXT and BIGINT columns, times as Unix
-- milliseconds (UTC), booleans as 0/1. One request row carries the whole life of a session:
-- requested -> approved -> active -> ended.

CREATE TABLE technicians (
    vendor          TEXT   NOT NULL,
    technician      TEXT   NOT NULL,
    -- TOTP secret sealed with the data directory's secret key (hex: nonce || ciphertext).
    totp_secret     TEXT   NOT NULL,
    -- The last TOTP step accepted: a code for this step or an earlier one is refused.
    totp_last_step  BIGINT NOT NULL DEFAULT 0,
    -- Consecutive wrong codes; at the lockout threshold `locked` becomes 1.
    otp_failures    BIGINT NOT NULL DEFAULT 0,
    locked          BIGINT NOT NULL DEFAULT 0,
    created_at      BIGINT NOT NULL,
    PRIMARY KEY (vendor, technician)
);

CREATE TABLE requests (
    id               TEXT   PRIMARY KEY,
    vendor           TEXT   NOT NULL,
    technician       TEXT   NOT NULL,
    -- Target names, one per line.
    targets          TEXT   NOT NULL,
    purpose          TEXT   NOT NULL,
    ticket           TEXT   NOT NULL,
    wanted_ms        BIGINT NOT NULL,
    -- requested | approved | active | ended
    state            TEXT   NOT NULL,
    created_at       BIGINT NOT NULL,
    -- An unanswered request expires at this time.
    answer_by        BIGINT NOT NULL,
    approvals_needed BIGINT NOT NULL,
    approvals_count  BIGINT NOT NULL DEFAULT 0,
    -- Set at approval: the end time, and each target's addresses ("name<TAB>addr,addr" lines).
    end_at           BIGINT,
    pinned           TEXT,
    -- Set when opened: when, and which broker holds the session.
    opened_at        BIGINT,
    broker_id        TEXT,
    -- Set when ended.
    ended_at         BIGINT,
    end_reason       TEXT,
    ended_by         TEXT,
    note             TEXT,
    updated_at       BIGINT NOT NULL
);
CREATE INDEX requests_by_state ON requests (state);
CREATE INDEX requests_by_technician ON requests (vendor, technician, created_at);

CREATE TABLE approvals (
    request_id  TEXT   NOT NULL,
    approver    TEXT   NOT NULL,
    approved_at BIGINT NOT NULL,
    until_at    BIGINT NOT NULL,
    PRIMARY KEY (request_id, approver)
);

-- At most one row (id = 1): present and active = 1 while the hospital has stopped remote access.
CREATE TABLE lockdown (
    id      BIGINT PRIMARY KEY,
    active  BIGINT NOT NULL,
    reason  TEXT   NOT NULL,
    set_by  TEXT   NOT NULL,
    since   BIGINT NOT NULL
);
