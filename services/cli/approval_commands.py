"""`ferrumdeck approvals …`: decide the tool calls policy parked for a human, from a
shell — the same decisions, with the same mandatory reason, as the deck's `a`/`r` keys.
"""

from __future__ import annotations

import argparse

from services.cli import paging
from services.cli.api_session import OK, Subcommands, api_command
from services.cli.output import print_json, short, table
from services.client import FerrumDeck
from services.contract.api import Approval, ApprovalStatus


def _list(deck: FerrumDeck, args: argparse.Namespace) -> int:
    approvals, cursor = paging.collect(
        lambda limit, cursor: deck.approvals(status=args.status, limit=limit, cursor=cursor),
        args.limit,
        args.cursor,
    )
    if args.as_json:
        print_json({"items": approvals, "next_cursor": cursor})
        return OK
    rows = [
        (a.id, a.status, a.agent, a.tool, a.run_id, short(a.arguments, 40), a.rule)
        for a in approvals
    ]
    print(table(["id", "status", "agent", "tool", "run", "arguments", "rule"], rows))
    if hint := paging.more("approvals", cursor):
        print(hint)
    return OK


def _print_decision(approval: Approval, as_json: bool) -> None:
    if as_json:
        print_json(approval)
    else:
        print(f"{approval.status} {approval.tool} for run {approval.run_id}: {approval.reason}")


def _approve(deck: FerrumDeck, args: argparse.Namespace) -> int:
    _print_decision(deck.approve(args.id, args.reason), args.as_json)
    return OK


def _reject(deck: FerrumDeck, args: argparse.Namespace) -> int:
    _print_decision(deck.reject(args.id, args.reason), args.as_json)
    return OK


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add `approvals` and its actions to the `ferrumdeck` parser's subcommands."""
    approvals = commands.add_parser("approvals", help="list, approve and reject parked calls")
    actions = approvals.add_subparsers(dest="approvals_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", parents=[common], help="approvals, newest first")
    listing.add_argument("--status", choices=[s.value for s in ApprovalStatus])
    paging.add_options(listing, "approvals")
    listing.set_defaults(func=api_command("approvals list", _list))
    for verb, action in (("approve", _approve), ("reject", _reject)):
        decide = actions.add_parser(verb, parents=[common], help=f"{verb} a pending call")
        decide.add_argument("id", metavar="ID")
        decide.add_argument("--reason", required=True, help="recorded with the decision")
        decide.set_defaults(func=api_command(f"approvals {verb}", action))
