-- Agents, runs, steps, the transactional outbox and API keys.

CREATE TABLE agents (
    name           text        NOT NULL,
    version        integer     NOT NULL CHECK (version >= 1),
    model          text        NOT NULL,
    system_prompt  text        NOT NULL,
    tools          jsonb       NOT NULL DEFAULT '[]',
    budget         jsonb       NOT NULL,
    params         jsonb       NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (name, version)
);

CREATE TABLE runs (
    id                 uuid        PRIMARY KEY,
    agent_name         text        NOT NULL,
    agent_version      integer     NOT NULL,
    status             text        NOT NULL CHECK (status IN ('queued', 'running',
                           'waiting_approval', 'completed', 'failed', 'cancelled',
                           'budget_exceeded')),
    input              text        NOT NULL,
    output             text,
    error              text,
    metadata           jsonb       NOT NULL DEFAULT '{}',
    idempotency_key    text,
    request_hash       text,
    prompt_tokens      bigint      NOT NULL DEFAULT 0,
    completion_tokens  bigint      NOT NULL DEFAULT 0,
    -- NULL once any step had no known price: unknown, never silently 0.
    cost_usd           numeric(20, 10) DEFAULT 0,
    steps_count        integer     NOT NULL DEFAULT 0,
    epoch              integer     NOT NULL DEFAULT 0,
    lease_owner        text,
    lease_expires_at   timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now(),
    started_at         timestamptz,
    finished_at        timestamptz,
    updated_at         timestamptz NOT NULL DEFAULT now(),
    FOREIGN KEY (agent_name, agent_version) REFERENCES agents (name, version)
);
CREATE UNIQUE INDEX runs_idempotency_key ON runs (idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_status_id ON runs (status, id DESC);
CREATE INDEX runs_agent_id ON runs (agent_name, id DESC);

CREATE TABLE steps (
    run_id             uuid        NOT NULL REFERENCES runs (id),
    seq                integer     NOT NULL CHECK (seq >= 1),
    kind               text        NOT NULL CHECK (kind IN ('llm_call', 'tool_call',
                           'approval', 'note')),
    status             text        NOT NULL CHECK (status IN ('started', 'completed', 'failed')),
    model              text,
    tool               text,
    input              jsonb,
    output             jsonb,
    error              text,
    prompt_tokens      integer,
    completion_tokens  integer,
    cost_usd           numeric(20, 10),
    epoch              integer     NOT NULL,
    started_at         timestamptz NOT NULL,
    finished_at        timestamptz,
    PRIMARY KEY (run_id, seq)
);

CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    run_id      uuid        NOT NULL,
    reason      text        NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id          uuid        PRIMARY KEY,
    name        text        NOT NULL,
    role        text        NOT NULL CHECK (role IN ('admin', 'worker')),
    key_hash    text        NOT NULL UNIQUE,
    created_at  timestamptz NOT NULL DEFAULT now(),
    revoked_at  timestamptz
);
