-- Jobs wait in the outbox until the runs stream has room, and leave it one project at a
-- time in turn (services/gateway/outbox.py): each row says whose it is, and the index
-- lets the relay find every project's oldest job without reading the backlog.
ALTER TABLE outbox ADD COLUMN project text;
UPDATE outbox o SET project = r.project FROM runs r WHERE r.id = o.run_id;
UPDATE outbox SET project = 'default' WHERE project IS NULL;
ALTER TABLE outbox ALTER COLUMN project SET NOT NULL;
CREATE INDEX outbox_project_id ON outbox (project, id);
-- Each project's queued and running runs, counted once a second by every gateway for
-- backpressure and the queue view (services/gateway/backpressure.py): an index-only scan
-- of those runs alone.
CREATE INDEX runs_waiting_project ON runs (project, status)
    WHERE status IN ('queued', 'running');
