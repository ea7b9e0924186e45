-- Conversations (threads): runs that continue one another. A run on a thread starts from
-- the thread's earlier runs — their inputs, replies and tool results — which the worker
-- gets with its claim (services/gateway/store/threads.py). A thread runs one run at a
-- time, and the database holds that: at most one run of a thread is open, so two
-- requests racing for an idle thread (even in one batch of the intake) cannot both win.

CREATE TABLE threads (
    id          uuid        PRIMARY KEY,
    project     text        NOT NULL REFERENCES projects (name),
    metadata    jsonb       NOT NULL DEFAULT '{}',
    created_at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX threads_of_project ON threads (project, id);

ALTER TABLE runs ADD COLUMN thread_id uuid REFERENCES threads (id);
CREATE INDEX runs_of_thread ON runs (thread_id, id) WHERE thread_id IS NOT NULL;
CREATE UNIQUE INDEX runs_open_on_thread ON runs (thread_id)
    WHERE thread_id IS NOT NULL AND status IN ('queued', 'running', 'waiting_approval');
