"""A small MCP server whose tools exercise every path of the worker's MCP router.

`write_note` appends a line to `NOTES_FILE`, so a test can count how many times a call
really ran; the other tools cover read-only annotations, tool errors, slowness, large
results and structured output; `caller` answers with the FerrumDeck keys of the
request's `_meta` (the run's project and id), as a server keeping tenants apart reads
them. Run it over stdio with
`python -m testbed.mcp_servers.notes_server`, or serve `create_server(...)` over
streamable HTTP in the test process (`testbed.mcp_servers.serving`).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.types import ToolAnnotations

READ_ONLY = ToolAnnotations(read_only_hint=True)


def create_server(notes_file: Path) -> MCPServer:
    server: MCPServer = MCPServer("notes", subscriptions=False, log_level="WARNING")

    @server.tool(structured_output=False)
    def write_note(text: str) -> str:
        """Append a note. Not idempotent: every call adds a line."""
        with notes_file.open("a", encoding="utf-8") as notes:
            notes.write(text + "\n")
        return f"noted: {text}"

    @server.tool(annotations=READ_ONLY)
    def read_notes() -> list[str]:
        """The notes written so far, oldest first."""
        if not notes_file.exists():
            return []
        return notes_file.read_text(encoding="utf-8").splitlines()

    @server.tool(structured_output=False)
    def fail(message: str) -> str:
        """Fail with `message`."""
        raise ToolError(message)

    @server.tool(structured_output=False)
    async def slow(seconds: float) -> str:
        """Sleep for `seconds`, then answer."""
        await asyncio.sleep(seconds)
        return f"slept {seconds}s"

    @server.tool(structured_output=False)
    def big(chars: int) -> str:
        """Answer with exactly `chars` characters."""
        return "x" * chars

    @server.tool(annotations=ToolAnnotations(idempotent_hint=True))
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    @server.tool()
    def caller(ctx: Context) -> dict[str, Any]:
        """Who the client says this call is made for."""
        meta = ctx.request_context.meta or {}
        return {key: value for key, value in meta.items() if key.startswith("ferrumdeck/")}

    return server


def main() -> None:
    create_server(Path(os.environ["NOTES_FILE"])).run("stdio")


if __name__ == "__main__":
    main()
