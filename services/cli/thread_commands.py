"""`ferrumdeck threads …`: start a conversation and read it back, so a script can hold
one from the shell (`runs create --thread ID [--enqueue]` adds its turns)."""

from __future__ import annotations

import argparse
import json

from services.cli import paging
from services.cli.api_session import OK, Subcommands, api_command
from services.cli.output import print_json, short, table
from services.cli.user_input import json_object
from services.client import FerrumDeck
from services.contract.threads import Thread


def _print_thread(thread: Thread) -> None:
    print(f"thread    {thread.id}")
    print(f"runs      {thread.runs}")
    print(f"open run  {thread.open_run_id or '-'}")
    print(f"created   {thread.created_at.isoformat(timespec='seconds')}")


def _create(deck: FerrumDeck, args: argparse.Namespace) -> int:
    thread = deck.create_thread(json_object("--metadata", args.metadata))
    if args.as_json:
        print_json(thread)
    else:
        _print_thread(thread)
    return OK


def _show(deck: FerrumDeck, args: argparse.Namespace) -> int:
    thread = deck.thread(args.id)
    if args.as_json:
        print_json(thread)
    else:
        _print_thread(thread)
    return OK


def _messages(deck: FerrumDeck, args: argparse.Namespace) -> int:
    messages, cursor = paging.collect(
        lambda limit, cursor: deck.thread_messages(args.id, limit=limit, cursor=cursor),
        args.limit,
        args.cursor,
    )
    if args.as_json:
        print_json({"items": messages, "next_cursor": cursor})
        return OK
    rows = [
        (
            m.run_id,
            m.run_status,
            m.message.get("role"),
            short(
                m.message.get("content")
                if isinstance(m.message.get("content"), str)
                else json.dumps(m.message.get("content") or m.message.get("tool_calls")),
                70,
            ),
        )
        for m in messages
    ]
    print(table(["run", "run status", "role", "content"], rows))
    if hint := paging.more("messages", cursor):
        print(hint)
    return OK


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add `threads` and its actions to the `ferrumdeck` parser's subcommands."""
    threads = commands.add_parser("threads", help="start and read conversations")
    actions = threads.add_subparsers(dest="threads_command", required=True, metavar="ACTION")

    create = actions.add_parser("create", parents=[common], help="start a thread, print its id")
    create.add_argument("--metadata", metavar="JSON", help="a JSON object kept with it")
    create.set_defaults(func=api_command("threads create", _create))

    show = actions.add_parser("show", parents=[common], help="a thread: its runs, its open run")
    show.add_argument("id", metavar="ID")
    show.set_defaults(func=api_command("threads show", _show))

    listing = actions.add_parser(
        "messages", parents=[common], help="the conversation, oldest message first"
    )
    listing.add_argument("id", metavar="ID")
    paging.add_options(listing, "messages")
    listing.set_defaults(func=api_command("threads messages", _messages))
