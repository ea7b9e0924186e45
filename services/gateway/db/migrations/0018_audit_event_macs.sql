-- Every event carries a MAC the gateway computes before it appends it, under a key the
-- database does not hold, so a row inserted by hand is reported even once linked.
-- `audit_mac_switch` records the first event id that must carry one: events before it
-- verify as they were. Stop every gateway before this migration runs: an older
-- gateway's unsealed events after the switch would be reported as forged.
ALTER TABLE audit_events ADD COLUMN mac_key_id text, ADD COLUMN mac text;

-- The MAC covers every field but the id, so a copy of a real event would verify: a MAC
-- may appear once.
CREATE UNIQUE INDEX audit_events_mac ON audit_events (mac);

CREATE TABLE audit_mac_switch (
    from_id bigint NOT NULL
);
INSERT INTO audit_mac_switch
SELECT CASE WHEN is_called THEN last_value + 1 ELSE last_value END FROM audit_events_id_seq;
CREATE UNIQUE INDEX audit_mac_switch_one_row ON audit_mac_switch ((true));
CREATE TRIGGER audit_mac_switch_append_only BEFORE UPDATE OR DELETE ON audit_mac_switch
    FOR EACH ROW EXECUTE FUNCTION audit_is_append_only();
CREATE TRIGGER audit_mac_switch_no_truncate BEFORE TRUNCATE ON audit_mac_switch
    FOR EACH STATEMENT EXECUTE FUNCTION audit_is_append_only();
