-- Quotas an operator sets per project (`ferrumdeck projects set-quota`): past one, that
-- project's new runs get 429 (services/gateway/backpressure.py). NULL: no such quota.
ALTER TABLE projects
    ADD COLUMN max_queued integer CHECK (max_queued > 0),
    ADD COLUMN max_running integer CHECK (max_running > 0),
    ADD COLUMN runs_per_second double precision CHECK (runs_per_second > 0);
