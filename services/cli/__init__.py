"""The `ferrumdeck` command."""
