"""Project names, as the gateway allows them, and lists of projects a resource is offered to.

A project name is what the `projects` table's CHECK allows (migration 0004). Where a
file or a report limits something to some projects (an MCP server's `projects`), the list
is checked as strictly as the name: a typo must fail at load, not leave the resource
offered to nobody, or to a project that happens to be created later under that name.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field

PROJECT_NAME = r"^[a-z0-9][a-z0-9_-]{0,62}$"
ProjectName = Annotated[str, Field(pattern=PROJECT_NAME)]


def _distinct(projects: list[str]) -> list[str]:
    repeated = sorted({name for name in projects if projects.count(name) > 1})
    if repeated:
        raise ValueError(f"names a project more than once: {', '.join(repeated)}")
    return projects


ProjectScope = Annotated[
    list[ProjectName], Field(min_length=1, max_length=1000), AfterValidator(_distinct)
]
"""The projects something is offered to: at least one, each once."""
