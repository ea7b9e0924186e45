"""`ferrumdeck keys list` and `keys revoke ID`: a project's keys through the API, with
an admin key of that project — from anywhere the gateway is reachable, unlike
`keys create`, which writes to the database from the server's shell (it makes worker
keys and the first admin key, which no key can be asked for yet).
"""

from __future__ import annotations

import argparse

from services.cli import paging
from services.cli.api_session import OK, Subcommands, api_command
from services.cli.output import print_json, table
from services.client import FerrumDeck


def _list(deck: FerrumDeck, args: argparse.Namespace) -> int:
    keys, cursor = paging.collect(
        lambda limit, cursor: deck.keys(limit=limit, cursor=cursor), args.limit, args.cursor
    )
    if args.as_json:
        print_json({"items": keys, "next_cursor": cursor})
        return OK
    rows = [
        (k.id, k.name, k.role, f"{k.created_at:%Y-%m-%d %H:%M}", k.revoked_at and "revoked")
        for k in keys
    ]
    print(table(["id", "name", "role", "created", "revoked"], rows))
    if hint := paging.more("keys", cursor):
        print(hint)
    return OK


def _revoke(deck: FerrumDeck, args: argparse.Namespace) -> int:
    deck.revoke_key(args.id)
    if args.as_json:
        print_json({"id": args.id, "revoked": True})
    else:
        print(f"revoked key {args.id}: its next request is refused")
    return OK


def register(keys: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add `list` and `revoke` to the `ferrumdeck keys` actions."""
    listing = keys.add_parser("list", parents=[common], help="the project's keys, oldest first")
    paging.add_options(listing, "keys")
    listing.set_defaults(func=api_command("keys list", _list))
    revoke = keys.add_parser("revoke", parents=[common], help="revoke a key at once")
    revoke.add_argument("id", metavar="ID")
    revoke.set_defaults(func=api_command("keys revoke", _revoke))
