-- A run's input as chat messages (`messages` on POST /v1/runs: text and inline images),
-- kept as given for the worker and the thread's history. `input` still holds its text,
-- for lists, search and the audit trail. NULL: the run was given plain `input`.
ALTER TABLE runs ADD COLUMN messages jsonb;
