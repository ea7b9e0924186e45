"""The control plane: the only process that touches PostgreSQL."""
