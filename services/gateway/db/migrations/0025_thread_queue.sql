-- Runs waiting for their thread (`if_busy: "enqueue"`): a run created on a thread that
-- has a run open is kept as `waiting_thread`, with no job, outside the unique index of
-- open runs per thread (0021), and queued when the runs before it have ended, oldest
-- first (services/gateway/store/thread_queue.py).
ALTER TABLE runs DROP CONSTRAINT runs_status_check;
ALTER TABLE runs ADD CONSTRAINT runs_status_check CHECK (status IN ('queued', 'running',
    'waiting_approval', 'waiting_thread', 'completed', 'failed', 'cancelled',
    'budget_exceeded'));
CREATE INDEX runs_waiting_on_thread ON runs (thread_id, id) WHERE status = 'waiting_thread';
