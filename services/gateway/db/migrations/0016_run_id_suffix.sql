-- Operators know a run by its short id, the last characters of its UUIDv7 (its random
-- part), so `GET /v1/runs?id_ends_with=` looks runs up by the end of their id. Reversed,
-- the end is a prefix, which a btree with text_pattern_ops finds for `LIKE 'x%'`.
CREATE INDEX runs_project_id_reversed ON runs (project, reverse(id::text) text_pattern_ops);
