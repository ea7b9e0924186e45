-- Change notifications for live views: every change an operator watches (a run's status or
-- step count, a step, an approval's status) is announced on the `ferrumdeck_events`
-- channel in the same transaction, so it is sent on commit and never for a rollback.
-- Payloads carry ids and states only, never inputs or outputs: NOTIFY payloads must stay
-- under 8000 bytes, and what a run says is read through the API, where access is checked.

CREATE FUNCTION ferrumdeck_notify_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferrumdeck_events', json_build_object(
        'type', 'run',
        'run_id', NEW.id,
        'agent', NEW.agent_name,
        'status', NEW.status,
        'steps', NEW.steps_count)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER runs_notify_insert AFTER INSERT ON runs
    FOR EACH ROW EXECUTE FUNCTION ferrumdeck_notify_run();
CREATE TRIGGER runs_notify_update AFTER UPDATE OF status, steps_count ON runs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.steps_count IS DISTINCT FROM NEW.steps_count)
    EXECUTE FUNCTION ferrumdeck_notify_run();

CREATE FUNCTION ferrumdeck_notify_step() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferrumdeck_events', json_build_object(
        'type', 'step',
        'run_id', NEW.run_id,
        'seq', NEW.seq,
        'kind', NEW.kind,
        'status', NEW.status,
        'tool', NEW.tool)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER steps_notify AFTER INSERT OR UPDATE ON steps
    FOR EACH ROW EXECUTE FUNCTION ferrumdeck_notify_step();

CREATE FUNCTION ferrumdeck_notify_approval() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferrumdeck_events', json_build_object(
        'type', 'approval',
        'approval_id', NEW.id,
        'run_id', NEW.run_id,
        'seq', NEW.step_seq,
        'agent', NEW.agent_name,
        'tool', NEW.tool,
        'status', NEW.status)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER approvals_notify_insert AFTER INSERT ON approvals
    FOR EACH ROW EXECUTE FUNCTION ferrumdeck_notify_approval();
CREATE TRIGGER approvals_notify_update AFTER UPDATE OF status ON approvals
    FOR EACH ROW WHEN (OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION ferrumdeck_notify_approval();
