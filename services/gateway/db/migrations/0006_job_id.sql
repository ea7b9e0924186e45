-- The stream entry id of a run's latest job, written by the outbox relay, so the
-- sweeper can tell a job that is still waiting in the stream (undelivered, or pending
-- with a worker) from one Redis lost, and re-publish only the latter.
ALTER TABLE runs ADD COLUMN job_id text;
