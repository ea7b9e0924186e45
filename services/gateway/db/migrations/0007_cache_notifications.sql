-- Gateways remember keys and agent versions in memory (services/gateway/key_cache.py,
-- agent_cache.py) and drop an entry when told so on these channels. Telling them from
-- triggers, not from the store functions, covers every way the rows change: an operator
-- revoking a leaked key with an UPDATE in psql during an incident included.
CREATE FUNCTION ferrumdeck_notify_key_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferrumdeck_keys', OLD.id::text);
    RETURN NULL;
END $$;

CREATE TRIGGER api_keys_notify_changed AFTER UPDATE OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION ferrumdeck_notify_key_changed();

CREATE FUNCTION ferrumdeck_notify_agent_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ferrumdeck_agents',
                      json_build_object('project', NEW.project, 'name', NEW.name)::text);
    RETURN NULL;
END $$;

CREATE TRIGGER agents_notify_version AFTER INSERT ON agents
    FOR EACH ROW EXECUTE FUNCTION ferrumdeck_notify_agent_version();
