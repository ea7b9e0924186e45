-- Projects isolate teams; keys get roles; every state change leaves a hash-chained
-- audit event.

CREATE TABLE projects (
    name        text        PRIMARY KEY CHECK (name ~ '^[a-z0-9][a-z0-9_-]{0,62}$'),
    created_at  timestamptz NOT NULL DEFAULT now()
);
INSERT INTO projects (name) VALUES ('default');

-- Agents: versions are numbered per project and name.
ALTER TABLE runs DROP CONSTRAINT runs_agent_name_agent_version_fkey;
ALTER TABLE agents ADD COLUMN project text NOT NULL DEFAULT 'default' REFERENCES projects;
ALTER TABLE agents DROP CONSTRAINT agents_pkey;
ALTER TABLE agents ADD PRIMARY KEY (project, name, version);
ALTER TABLE agents ALTER COLUMN project DROP DEFAULT;

ALTER TABLE runs ADD COLUMN project text NOT NULL DEFAULT 'default' REFERENCES projects;
ALTER TABLE runs ALTER COLUMN project DROP DEFAULT;
ALTER TABLE runs ADD FOREIGN KEY (project, agent_name, agent_version)
    REFERENCES agents (project, name, version);
DROP INDEX runs_idempotency_key;
CREATE UNIQUE INDEX runs_idempotency_key ON runs (project, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
DROP INDEX runs_status_id;
DROP INDEX runs_agent_id;
CREATE INDEX runs_project_id ON runs (project, id DESC);
CREATE INDEX runs_project_status_id ON runs (project, status, id DESC);
CREATE INDEX runs_project_agent_id ON runs (project, agent_name, id DESC);

ALTER TABLE approvals ADD COLUMN project text NOT NULL DEFAULT 'default' REFERENCES projects;
ALTER TABLE approvals ALTER COLUMN project DROP DEFAULT;
CREATE INDEX approvals_project_id ON approvals (project, id DESC);

ALTER TABLE policies ADD COLUMN project text NOT NULL DEFAULT 'default' REFERENCES projects;
ALTER TABLE policies ALTER COLUMN project DROP DEFAULT;
ALTER TABLE policies DROP CONSTRAINT policies_pkey;
ALTER TABLE policies ADD PRIMARY KEY (project, version);

-- Human keys belong to a project; worker keys serve every project's runs.
ALTER TABLE api_keys ADD COLUMN project text REFERENCES projects;
UPDATE api_keys SET project = 'default' WHERE role <> 'worker';
ALTER TABLE api_keys DROP CONSTRAINT api_keys_role_check;
ALTER TABLE api_keys ADD CONSTRAINT api_keys_role_check
    CHECK (role IN ('admin', 'operator', 'integration', 'viewer', 'worker'));
ALTER TABLE api_keys ADD CONSTRAINT api_keys_project_for_humans
    CHECK ((role = 'worker') = (project IS NULL));

-- Audit: events are appended in the transaction of the change they record; the chain
-- (seq, prev_hash, hash per project) is linked right after commit by one chainer at a
-- time. Neither table accepts UPDATE, DELETE or TRUNCATE.
CREATE TABLE audit_events (
    id          bigserial   PRIMARY KEY,
    project     text        NOT NULL,
    actor       text        NOT NULL,
    actor_kind  text        NOT NULL CHECK (actor_kind IN ('key', 'worker', 'system')),
    action      text        NOT NULL,
    target      text        NOT NULL,
    details     jsonb       NOT NULL DEFAULT '{}',
    request_id  text,
    created_at  timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX audit_events_project_id ON audit_events (project, id DESC);

CREATE TABLE audit_chain (
    event_id    bigint      PRIMARY KEY REFERENCES audit_events (id),
    project     text        NOT NULL,
    seq         bigint      NOT NULL,
    prev_hash   text        NOT NULL,
    hash        text        NOT NULL,
    UNIQUE (project, seq)
);

CREATE FUNCTION audit_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the audit trail is append-only: % on % refused', TG_OP, TG_TABLE_NAME;
END $$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_is_append_only();
CREATE TRIGGER audit_events_no_truncate BEFORE TRUNCATE ON audit_events
    FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();
CREATE TRIGGER audit_chain_append_only BEFORE UPDATE OR DELETE ON audit_chain
    FOR EACH ROW EXECUTE FUNCTION audit_is_append_only();
CREATE TRIGGER audit_chain_no_truncate BEFORE TRUNCATE ON audit_chain
    FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();

-- Live events name their project, so each client is sent only its own project's.
CREATE OR REPLACE FUNCTION ferrumdeck_notify_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferrumdeck_events', json_build_object(
        'type', 'run',
        'project', NEW.project,
        'run_id', NEW.id,
        'agent', NEW.agent_name,
        'status', NEW.status,
        'steps', NEW.steps_count)::text);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ferrumdeck_notify_step() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferrumdeck_events', json_build_object(
        'type', 'step',
        'project', (SELECT project FROM runs WHERE id = NEW.run_id),
        'run_id', NEW.run_id,
        'seq', NEW.seq,
        'kind', NEW.kind,
        'status', NEW.status,
        'tool', NEW.tool)::text);
    RETURN NULL;
END $$;

CREATE OR REPLACE FUNCTION ferrumdeck_notify_approval() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferrumdeck_events', json_build_object(
        'type', 'approval',
        'project', NEW.project,
        'approval_id', NEW.id,
        'run_id', NEW.run_id,
        'seq', NEW.step_seq,
        'agent', NEW.agent_name,
        'tool', NEW.tool,
        'status', NEW.status)::text);
    RETURN NULL;
END $$;
