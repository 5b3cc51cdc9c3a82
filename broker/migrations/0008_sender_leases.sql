-- One sender per destination: brokers sharing a database send the approvers' webhook and the
-- audit syslog to each destination from one broker at a time, the holder of its lease, and
-- keep here how far it got, so the next holder resumes there (see broker/src/sender.rs).
-- Portable between SQLite and PostgreSQL: TEXT and BIGINT only, times in Unix milliseconds
-- of the database's clock (one clock for every broker, whatever their own say).

CREATE TABLE sender_leases (
    -- `webhook` or `audit-syslog`.
    feature      TEXT   NOT NULL,
    -- Where it sends: `tls://siem.hospital.local:6514`; for the webhook its origin and a hash
    -- of the URL's path, never the path (it may carry a token).
    destination  TEXT   NOT NULL,
    -- The id of the broker holding (or last holding) the lease.
    holder       TEXT   NOT NULL,
    -- Bumped at each acquisition: a holder's renewals and cursor moves name the term they
    -- belong to, so a broker that lost its lease can never write here again.
    term         BIGINT NOT NULL,
    -- When the lease ends unless renewed; 0 when its holder let it go at shutdown.
    expires_at   BIGINT NOT NULL,
    -- The last audit event handled (sent, or finally given up on and recorded so): the next
    -- holder starts after it.
    after_seq    BIGINT NOT NULL,
    PRIMARY KEY (feature, destination)
);
