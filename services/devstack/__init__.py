"""The local development stack behind `ferrumdeck dev`: embedded servers and a demo model."""
