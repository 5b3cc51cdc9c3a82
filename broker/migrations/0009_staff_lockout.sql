-- A staff account's lock ends by itself after the hospital's `staff_lockout` (unless that is
-- "until-reset"), counted from when it began. Same portable rules as 0005: BIGINT, Unix
-- milliseconds, 0 where there is no value (never locked).
ALTER TABLE staff ADD COLUMN locked_at BIGINT NOT NULL DEFAULT 0;
