"""SQL for each resource, one module per table family; routes stay free of SQL."""
