-- Accountable operators and a lockdown lifted by admins. Same portable rules as 0005: BIGINT,
-- Unix milliseconds, 0 / '' where there is no value.
--
-- When a staff account's last failed login (web or command line) was: the command line is a
-- new process each time, so the growing wait between attempts is measured from here.
ALTER TABLE staff ADD COLUMN login_failed_at BIGINT NOT NULL DEFAULT 0;
-- A lift of the lockdown by a first admin, waiting for a second, different admin when
-- hospital.toml says `lockdown_lift_admins = 2` ('' when none is pending).
ALTER TABLE lockdown ADD COLUMN lift_pending_by TEXT NOT NULL DEFAULT '';
ALTER TABLE lockdown ADD COLUMN lift_pending_at BIGINT NOT NULL DEFAULT 0;
ALTER TABLE lockdown ADD COLUMN lift_pending_reason TEXT NOT NULL DEFAULT '';
