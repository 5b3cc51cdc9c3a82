-- A live session may outlive its connection (a vendor policy's `resume`). Same portable rules
-- as 0001: BIGINT counters and Unix milliseconds.
--
-- `attachment` counts the connections that have carried the session (1 once opened, one more
-- per resumption); a broker's connection holds the session only while the row still carries
-- the number it attached with, so a resumption anywhere takes the session from the old
-- connection. `detached_at` is when the session's connection was lost (NULL while a
-- connection holds it; `broker_id` is NULL then too).
ALTER TABLE requests ADD COLUMN attachment BIGINT NOT NULL DEFAULT 0;
ALTER TABLE requests ADD COLUMN detached_at BIGINT;
