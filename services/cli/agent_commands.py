"""`ferrumdeck agents …`: agents as code. `apply` registers a new version only for the
definitions that differ from the latest one, so running it again on the same file — in
CI on every push, say — changes nothing and says so.
"""

from __future__ import annotations

import argparse
from typing import Any

from pydantic import ValidationError

from services.cli import paging
from services.cli.api_session import OK, Subcommands, api_command
from services.cli.output import print_json, table
from services.cli.user_input import InputError, validation_summary, yaml_document
from services.client import FerrumDeck, NotFound
from services.contract.api import Agent, AgentCreate


def definitions(path: str) -> list[AgentCreate]:
    """The agents of a YAML file: a list of definitions, or one under an `agents:` key."""
    document = yaml_document(path)
    if isinstance(document, dict) and "agents" in document:
        document = document["agents"]
    if not isinstance(document, list) or not document:
        raise InputError(f"{path}: expected a list of agents, or an `agents:` key holding one")
    specs: list[AgentCreate] = []
    for index, item in enumerate(document, start=1):
        name = item.get("name") if isinstance(item, dict) else None
        try:
            specs.append(AgentCreate.model_validate(item))
        except ValidationError as exc:
            label = f"agent #{index}" + (f" ({name!r})" if name else "")
            raise InputError(f"{path}: {label}: {validation_summary(exc)}") from None
    names = [spec.name for spec in specs]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise InputError(f"{path}: defined more than once: {', '.join(twice)}")
    return specs


def latest(deck: FerrumDeck, name: str) -> Agent | None:
    try:
        versions = deck.agent_versions(name, limit=1).items
    except NotFound:
        return None
    return versions[0] if versions else None


def same_definition(agent: Agent, spec: AgentCreate) -> bool:
    """The gateway's own test (`store.agents.same_definition`), on the API's bodies."""
    fields: dict[str, Any] = agent.model_dump(include=set(AgentCreate.model_fields))
    return fields == spec.model_dump()


def _apply(deck: FerrumDeck, args: argparse.Namespace) -> int:
    results: list[dict[str, Any]] = []
    for spec in definitions(args.file):
        current = latest(deck, spec.name)
        if current is not None and same_definition(current, spec):
            outcome, agent = "unchanged", current
        else:
            outcome, agent = "created", deck.create_agent(spec)
        results.append({"name": agent.name, "version": agent.version, "outcome": outcome})
        if not args.as_json:
            print(f"{agent.name}@{agent.version} {outcome}", flush=True)
    if args.as_json:
        print_json({"agents": results})
    return OK


def _list(deck: FerrumDeck, args: argparse.Namespace) -> int:
    agents, cursor = paging.collect(
        lambda limit, cursor: deck.agents(limit=limit, cursor=cursor), args.limit, args.cursor
    )
    if args.as_json:
        print_json({"items": agents, "next_cursor": cursor})
        return OK
    rows = [
        (a.name, a.version, a.model, ", ".join(a.tools), a.created_at.isoformat(timespec="seconds"))
        for a in agents
    ]
    print(table(["name", "version", "model", "tools", "created"], rows))
    if hint := paging.more("agents", cursor):
        print(hint)
    return OK


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add `agents` and its actions to the `ferrumdeck` parser's subcommands."""
    agents = commands.add_parser("agents", help="register agents from a file, list them")
    actions = agents.add_subparsers(dest="agents_command", required=True, metavar="ACTION")
    apply = actions.add_parser(
        "apply", parents=[common], help="register the agents of a YAML file that changed"
    )
    apply.add_argument("-f", "--file", required=True, help="a YAML list of agent definitions")
    apply.set_defaults(func=api_command("agents apply", _apply))
    listing = actions.add_parser("list", parents=[common], help="the latest version of each")
    paging.add_options(listing, "agents")
    listing.set_defaults(func=api_command("agents list", _list))
