-- Separation of duties: a policy may require the approver of a run's tool call to be
-- another key (or a key of another role) than the one that started the run, so runs
-- record that key. Runs started before this column existed have none (NULL): under
-- the setting nobody can be shown not to be their creator, so their calls cannot be
-- approved, only rejected (see store.approvals). No foreign key: every run insert would
-- then lock its key's row, and keys are revoked, never deleted.
ALTER TABLE runs ADD COLUMN created_by_key uuid;

-- The setting, per policy version beside its rules ('key', 'role', or NULL for off): a
-- column rather than a field inside `rules` (a list) so the database holds it to its
-- vocabulary and a decision reads it without decoding the rules.
ALTER TABLE policies ADD COLUMN distinct_approver text
    CHECK (distinct_approver IN ('key', 'role'));
