"""The notes MCP server plus `slow_note`, for the chaos suite and the soak bench.

`slow_note` writes its note and only then takes its time to answer, so a worker killed
while it waits leaves a side effect the platform cannot know about: the case a
non-idempotent tool call must never be repeated blindly in. It lives here rather than in
`notes_server` so that server's catalogue, which other tests list exactly, stays as it is.
Run it over stdio with `python -m testbed.mcp_servers.chaos_notes_server`.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from mcp.server.mcpserver import MCPServer

from testbed.mcp_servers.notes_server import create_server


def create_chaos_server(notes_file: Path) -> MCPServer:
    server = create_server(notes_file)

    @server.tool(structured_output=False)
    async def slow_note(text: str, seconds: float) -> str:
        """Append a note, then answer after `seconds`. Not idempotent."""
        with notes_file.open("a", encoding="utf-8") as notes:
            notes.write(text + "\n")
        await asyncio.sleep(seconds)
        return f"noted slowly: {text}"

    return server


def main() -> None:
    create_chaos_server(Path(os.environ["NOTES_FILE"])).run("stdio")


if __name__ == "__main__":
    main()
