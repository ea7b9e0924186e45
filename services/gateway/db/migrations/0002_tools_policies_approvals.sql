-- Tool calls under policy: decisions on steps, versioned policies, approvals, and the
-- tool catalogue workers report.

ALTER TABLE steps DROP CONSTRAINT steps_status_check;
ALTER TABLE steps ADD CONSTRAINT steps_status_check CHECK (status IN (
    'started', 'completed', 'failed', 'denied', 'waiting_approval', 'approved',
    'rejected', 'outcome_unknown'));
ALTER TABLE steps ADD COLUMN tool_call_id text;
ALTER TABLE steps ADD COLUMN idempotent boolean;
ALTER TABLE steps ADD COLUMN decision jsonb;

CREATE TABLE policies (
    version     integer     PRIMARY KEY,
    rules       jsonb       NOT NULL,
    created_by  text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE approvals (
    id              uuid        PRIMARY KEY,
    run_id          uuid        NOT NULL REFERENCES runs (id),
    step_seq        integer     NOT NULL,
    agent_name      text        NOT NULL,
    tool            text        NOT NULL,
    arguments       jsonb       NOT NULL,
    rule            text,
    policy_version  integer,
    explanation     text        NOT NULL,
    status          text        NOT NULL CHECK (status IN ('pending', 'approved', 'rejected',
                        'expired', 'cancelled')),
    reason          text,
    decided_by      text,
    expires_at      timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    decided_at      timestamptz,
    UNIQUE (run_id, step_seq)
);
CREATE INDEX approvals_status_id ON approvals (status, id DESC);
CREATE INDEX approvals_pending_expiry ON approvals (expires_at) WHERE status = 'pending';

CREATE TABLE worker_tools (
    worker_id     text        NOT NULL,
    name          text        NOT NULL,
    server        text        NOT NULL,
    tool          text        NOT NULL,
    description   text        NOT NULL,
    input_schema  jsonb       NOT NULL,
    idempotent    boolean     NOT NULL,
    reported_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (worker_id, name)
);
