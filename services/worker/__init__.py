"""The data plane: stream consumers that run the agent loop. Never touches PostgreSQL."""
