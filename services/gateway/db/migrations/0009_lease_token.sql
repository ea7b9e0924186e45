-- The digest of the current lease's token (see services/gateway/lease_tokens.py). Every
-- callback after the claim must present the token as well as the epoch and come from the
-- claiming key. Leases claimed before this column existed have no digest, so they match
-- no token: their workers are refused, the leases expire and the runs are claimed again.
ALTER TABLE runs ADD COLUMN lease_token_digest bytea;
