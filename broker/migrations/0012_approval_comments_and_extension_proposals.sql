-- An approval may say why; so may a change of a live session's end time. Same portable rules
-- as 0005: TEXT, BIGINT Unix milliseconds, '' where there is no value.
ALTER TABLE approvals ADD COLUMN comment TEXT NOT NULL DEFAULT '';
ALTER TABLE extensions ADD COLUMN comment TEXT NOT NULL DEFAULT '';

-- A later end time asked for by one approver of a vendor that needs several: it takes effect
-- when enough different approvers have asked (at the earliest end any of them gave), and is
-- cleared then or whenever the end time is changed otherwise; only a live session's count.
CREATE TABLE extension_proposals (
    request_id  TEXT   NOT NULL,
    approver    TEXT   NOT NULL,
    proposed_at BIGINT NOT NULL,
    end_at      BIGINT NOT NULL,
    comment     TEXT   NOT NULL DEFAULT '',
    PRIMARY KEY (request_id, approver)
);
