-- Webhooks for run endings (services/gateway/webhook_sender.py). A delivery is written by
-- a trigger in the same transaction as the status change it announces, whichever code
-- path made it (a worker's final step, a cancel, an expiry, a dead letter): a committed
-- ending always has its deliveries, and none exists for a change rolled back. Gateways
-- take due deliveries with SKIP LOCKED, so any number of them share the sending.

CREATE TABLE webhooks (
    id          uuid        PRIMARY KEY,
    project     text        NOT NULL REFERENCES projects (name),
    url         text        NOT NULL,
    events      text[]      NOT NULL,
    secret      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    deleted_at  timestamptz
);
CREATE INDEX webhooks_of_project ON webhooks (project) WHERE deleted_at IS NULL;

CREATE TABLE webhook_deliveries (
    seq              bigserial   PRIMARY KEY,
    id               uuid        NOT NULL UNIQUE DEFAULT gen_random_uuid(),
    webhook_id       uuid        NOT NULL REFERENCES webhooks (id),
    project          text        NOT NULL,
    event            text        NOT NULL,
    run_id           uuid        NOT NULL REFERENCES runs (id),
    status           text        NOT NULL DEFAULT 'pending'
                                 CHECK (status IN ('pending', 'delivered', 'failed')),
    attempts         integer     NOT NULL DEFAULT 0,
    next_attempt_at  timestamptz DEFAULT now(),
    last_attempt_at  timestamptz,
    last_status_code integer,
    last_error       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    delivered_at     timestamptz
);
CREATE INDEX webhook_deliveries_due ON webhook_deliveries (next_attempt_at)
    WHERE status = 'pending';
CREATE INDEX webhook_deliveries_of_webhook ON webhook_deliveries (webhook_id, seq);

CREATE FUNCTION ferrumdeck_webhook_run_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO webhook_deliveries (webhook_id, project, event, run_id)
    SELECT w.id, NEW.project, 'run.' || NEW.status, NEW.id
      FROM webhooks w
     WHERE w.project = NEW.project
       AND w.deleted_at IS NULL
       AND 'run.' || NEW.status = ANY (w.events);
    RETURN NULL;
END $$;

CREATE TRIGGER runs_webhook_status
    AFTER UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          AND NEW.status IN ('completed', 'failed', 'cancelled', 'budget_exceeded',
                             'waiting_approval'))
    EXECUTE FUNCTION ferrumdeck_webhook_run_status();
