-- Audit links become HMACs under a key the database does not hold; each link names the
-- id of its key so old keys keep verifying old links after a rotation. Links made
-- before this migration keep no key id and verify as the plain SHA-256 they were: the
-- first keyed link of a chain chains from the last of them, which records the switch.
ALTER TABLE audit_chain ADD COLUMN key_id text;
