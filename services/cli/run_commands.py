"""`ferrumdeck runs …`: start, list, inspect, follow, cancel and requeue runs through the API.

`runs create --follow` exits 0 only when the run completed, so a script or CI job can
start an agent and act on its outcome without parsing any output.
"""

from __future__ import annotations

import argparse
from typing import Any

from services.cli import paging
from services.cli.api_session import OK, RUN_DID_NOT_COMPLETE, Subcommands, api_command
from services.cli.output import print_json, short, table
from services.cli.run_follow import all_steps, follow, step_summary
from services.cli.user_input import json_object
from services.client import FerrumDeck
from services.contract.api import Run, Step
from services.contract.runs import RunStatus


def _cost(run: Run) -> str:
    return "unknown" if run.usage.cost_usd is None else f"${run.usage.cost_usd:.6f}"


def print_run(run: Run) -> None:
    fields: list[tuple[str, Any]] = [
        ("run", run.id),
        ("agent", f"{run.agent}@{run.agent_version}"),
        ("status", run.status),
        ("input", short(run.input, 200)),
        ("output", run.output),
        ("error", run.error),
        ("tokens", f"{run.usage.total_tokens} (cost {_cost(run)})"),
        ("steps", run.steps_count),
        ("created", run.created_at.isoformat(timespec="seconds")),
        ("finished", run.finished_at and run.finished_at.isoformat(timespec="seconds")),
    ]
    width = max(len(name) for name, _ in fields)
    for name, value in fields:
        print(f"{name:<{width}}  {'-' if value is None else value}", flush=True)


def _create(deck: FerrumDeck, args: argparse.Namespace) -> int:
    metadata = json_object("--metadata", args.metadata)
    run = deck.create_run(
        args.agent,
        args.input,
        thread_id=args.thread,
        if_busy="enqueue" if args.enqueue else "reject",
        metadata=metadata,
        idempotency_key=args.idempotency_key,
    )
    if not args.follow:
        if args.as_json:
            print_json(run)
        else:
            print_run(run)
        return OK
    if not args.as_json:
        print(f"run {run.id} of {run.agent}@{run.agent_version} is {run.status}", flush=True)
    final = follow(deck, run, as_json=args.as_json)
    if args.as_json:
        print_json({"run": final}, lines=True)
    else:
        print()
        print_run(final)
    return OK if final.status is RunStatus.COMPLETED else RUN_DID_NOT_COMPLETE


def _list(deck: FerrumDeck, args: argparse.Namespace) -> int:
    runs, cursor = paging.collect(
        lambda limit, cursor: deck.runs(
            status=args.status,
            agent=args.agent,
            dead_lettered=True if args.dead_lettered else None,
            limit=limit,
            cursor=cursor,
        ),
        args.limit,
        args.cursor,
    )
    if args.as_json:
        print_json({"items": runs, "next_cursor": cursor})
        return OK
    rows = [
        (
            run.id,
            f"{run.agent}@{run.agent_version}",
            run.status,
            run.steps_count,
            run.created_at.isoformat(timespec="seconds"),
            short(run.input, 40),
        )
        for run in runs
    ]
    print(table(["id", "agent", "status", "steps", "created", "input"], rows))
    if hint := paging.more("runs", cursor):
        print(hint)
    return OK


def _decided(step: Step) -> str | None:
    """Who decided a call that waited for a human, and why."""
    decision = step.decision
    if decision is None or decision.decided_by is None:
        return None
    return short(f"{decision.decided_by}: {decision.reason}", 40)


def _show(deck: FerrumDeck, args: argparse.Namespace) -> int:
    run = deck.run(args.id)
    steps = list(all_steps(deck, run.id))
    if args.as_json:
        print_json({"run": run, "steps": steps})
        return OK
    print_run(run)
    if steps:
        print()
        rows = [(s.seq, s.kind, s.status, s.tool, _decided(s), step_summary(s)) for s in steps]
        print(table(["seq", "kind", "status", "tool", "decided", "output"], rows))
    return OK


def _cancel(deck: FerrumDeck, args: argparse.Namespace) -> int:
    run = deck.cancel_run(args.id)
    if args.as_json:
        print_json(run)
    else:
        print(f"run {run.id} is {run.status}")
    return OK


def _requeue(deck: FerrumDeck, args: argparse.Namespace) -> int:
    run = deck.requeue_run(args.id)
    if args.as_json:
        print_json(run)
    else:
        print(f"run {run.id} is {run.status} again")
    return OK


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add `runs` and its actions to the `ferrumdeck` parser's subcommands."""
    runs = commands.add_parser("runs", help="start, list, show, follow, cancel and requeue runs")
    actions = runs.add_subparsers(dest="runs_command", required=True, metavar="ACTION")

    create = actions.add_parser(
        "create", parents=[common], help="start a run (exit 1 if --follow sees it fail)"
    )
    create.add_argument("agent", metavar="AGENT", help="`name` (latest version) or `name@version`")
    create.add_argument("--input", required=True, help="what the agent is asked")
    create.add_argument("--metadata", metavar="JSON", help="a JSON object kept with the run")
    create.add_argument("--idempotency-key", help="retrying with the same key starts no new run")
    create.add_argument("--thread", metavar="ID", help="continue this thread (a conversation)")
    create.add_argument(
        "--enqueue",
        action="store_true",
        help="if the thread has a run open, wait for it rather than be refused",
    )
    create.add_argument("--follow", action="store_true", help="show steps until the run ends")
    create.set_defaults(func=api_command("runs create", _create))

    listing = actions.add_parser("list", parents=[common], help="runs, newest first")
    listing.add_argument("--status", choices=[s.value for s in RunStatus])
    listing.add_argument("--agent")
    listing.add_argument(
        "--dead-lettered",
        action="store_true",
        help="only runs that failed because their job never finished (see `runs requeue`)",
    )
    paging.add_options(listing, "runs")
    listing.set_defaults(func=api_command("runs list", _list))

    show = actions.add_parser("show", parents=[common], help="a run and its steps")
    show.add_argument("id", metavar="ID")
    show.set_defaults(func=api_command("runs show", _show))

    cancel = actions.add_parser("cancel", parents=[common], help="cancel an unfinished run")
    cancel.add_argument("id", metavar="ID")
    cancel.set_defaults(func=api_command("runs cancel", _cancel))

    requeue = actions.add_parser(
        "requeue", parents=[common], help="queue a dead-lettered run again"
    )
    requeue.add_argument("id", metavar="ID")
    requeue.set_defaults(func=api_command("runs requeue", _requeue))
