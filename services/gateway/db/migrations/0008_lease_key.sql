-- The worker key that claimed a run's current lease. Every later callback must come from
-- that key as well as carry the epoch, so a second worker key cannot act on a lease it
-- did not claim. Leases claimed before this column existed have none, so they match no
-- key: their workers are refused, the leases expire and the runs are claimed again.
ALTER TABLE runs ADD COLUMN lease_key uuid;
