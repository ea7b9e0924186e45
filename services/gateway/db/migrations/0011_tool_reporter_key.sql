-- Tool listings are keyed by the worker key that reported them, beside the worker's own
-- label: a report replaces only what the same key reported under the same label, so one
-- worker key can no longer rewrite or delete another's listing. Rows from before carry
-- no key; they are dropped, and every live worker reports again within a minute.
DELETE FROM worker_tools;
ALTER TABLE worker_tools ADD COLUMN key_id uuid NOT NULL REFERENCES api_keys (id);
ALTER TABLE worker_tools DROP CONSTRAINT worker_tools_pkey;
ALTER TABLE worker_tools ADD PRIMARY KEY (key_id, worker_id, name);
