-- A tool listing says which projects the tool is offered to: NULL is every project (its
-- server's entry names none), else the only projects whose runs may be offered it and
-- may call it. The gateway decides a call by the listing of the worker holding the run's
-- lease, read by its key and label, hence the primary key serves that look-up.
ALTER TABLE worker_tools ADD COLUMN projects text[]
    CHECK (projects IS NULL OR cardinality(projects) > 0);
