-- A run's event carries everything a list row shows (status, steps, tokens, cost, the
-- times behind its age), so a deck follows thousands of runs from the feed alone
-- instead of fetching each run per event. Usage changes are announced too: a step
-- recorded again with its final usage changes the tokens but not the step count. Still
-- no inputs or outputs (see 0003): the payload stays far under NOTIFY's 8000 bytes.

CREATE OR REPLACE FUNCTION ferrumdeck_notify_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferrumdeck_events', json_build_object(
        'type', 'run',
        'project', NEW.project,
        'run_id', NEW.id,
        'agent', NEW.agent_name,
        'agent_version', NEW.agent_version,
        'status', NEW.status,
        'steps', NEW.steps_count,
        'prompt_tokens', NEW.prompt_tokens,
        'completion_tokens', NEW.completion_tokens,
        'cost_usd', NEW.cost_usd,
        'created_at', NEW.created_at,
        'started_at', NEW.started_at,
        'finished_at', NEW.finished_at)::text);
    RETURN NULL;
END $$;

DROP TRIGGER runs_notify_update ON runs;
CREATE TRIGGER runs_notify_update
    AFTER UPDATE OF status, steps_count, prompt_tokens, completion_tokens, cost_usd ON runs
    FOR EACH ROW
    WHEN (OLD.status IS DISTINCT FROM NEW.status
          OR OLD.steps_count IS DISTINCT FROM NEW.steps_count
          OR OLD.prompt_tokens IS DISTINCT FROM NEW.prompt_tokens
          OR OLD.completion_tokens IS DISTINCT FROM NEW.completion_tokens
          OR OLD.cost_usd IS DISTINCT FROM NEW.cost_usd)
    EXECUTE FUNCTION ferrumdeck_notify_run();
