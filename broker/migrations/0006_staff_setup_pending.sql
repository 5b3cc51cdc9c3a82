-- A staff account set up (or reset) through a one-time link is made only once the person has
-- typed a code from their new authenticator. Until then the chosen password and the new TOTP
-- secret wait on the link's row, and the account (if it exists) keeps its old ones.
-- Same portable rules as 0001: TEXT and BIGINT only, Unix milliseconds, '' or 0 where a value
-- is not there yet.

-- The account the pending setup is for (the chosen name on the first admin's link, else the
-- link's own name); '' while nothing is pending.
ALTER TABLE staff_invites ADD COLUMN pending_name TEXT NOT NULL DEFAULT '';
-- The chosen password's argon2id hash (PHC string); '' while nothing is pending.
ALTER TABLE staff_invites ADD COLUMN pending_password_hash TEXT NOT NULL DEFAULT '';
-- The new TOTP secret, sealed to `pending_name` like staff.totp_secret; '' while nothing is
-- pending. Activation is conditional on this exact value, so a setup begun again in another
-- tab (a new secret) is never activated by a code from the one before.
ALTER TABLE staff_invites ADD COLUMN pending_totp_secret TEXT NOT NULL DEFAULT '';
-- Wrong confirming codes typed on this link. At the staff module's limit the link is spent:
-- `used_at` is set, so from now on it means "used or voided", and nothing of the account
-- changed either way.
ALTER TABLE staff_invites ADD COLUMN code_failures BIGINT NOT NULL DEFAULT 0;
