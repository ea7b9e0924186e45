"""MCP servers the tests talk to for real, over stdio and streamable HTTP."""
