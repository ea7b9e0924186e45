-- Runs whose job no worker could finish are failed with the reason and marked, so an
-- operator can find them (`GET /v1/runs?dead_lettered=true`) and queue them again.

ALTER TABLE runs ADD COLUMN dead_lettered_at timestamptz;
