-- How much of a thread's history an agent's runs are sent (`history: {"max_tokens": N}`
-- on an agent version); NULL: the newest 200 earlier runs, whatever their size.
ALTER TABLE agents ADD COLUMN history jsonb;
