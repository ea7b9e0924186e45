-- Which worker (its label, the lease owner) started a tool call: after a worker dies, an
-- operator refuses or allows again every call of unknown outcome it left, and only the
-- steps can say whose they were (a run's lease names its latest holder only).
ALTER TABLE steps ADD COLUMN worker text;
