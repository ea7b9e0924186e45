-- Whether the run was started with `stream: true` (POST /v1/runs): its workers publish
-- the model's tokens from the first call on, for GET /v1/runs/{id}/stream. The tokens
-- themselves live in Redis for minutes, never here.
ALTER TABLE runs ADD COLUMN stream boolean NOT NULL DEFAULT false;
