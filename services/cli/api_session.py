"""What every API subcommand shares: `--url`, `--key`, `--json`, one client, and one
line on stderr instead of a traceback when something goes wrong.

Exit codes are part of the interface scripts rely on: 0 success, 1 the run did not
complete (`runs create --follow`), 2 the request could not be done — bad usage or
input, no key, gateway down, or the API refused it (401/403/404/409/422…).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from typing import TypeAlias

from services.cli.user_input import InputError
from services.client import ApiError, ConfigError, FerrumDeck, GatewayUnavailable

OK = 0
RUN_DID_NOT_COMPLETE = 1
REQUEST_FAILED = 2

Action = Callable[[FerrumDeck, argparse.Namespace], int]
Subcommands: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def options() -> argparse.ArgumentParser:
    """The parent parser of every API subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the gateway (else FERRUMDECK_URL, else .ferrumdeck/dev.env)")
    common.add_argument("--key", help="an API key (else FERRUMDECK_API_KEY, else dev.env)")
    common.add_argument(
        "--json", dest="as_json", action="store_true", help="print JSON for scripts"
    )
    return common


def describe(exc: ApiError) -> str:
    return f"{exc.message} (HTTP {exc.status} {exc.code})"


def api_command(name: str, action: Action) -> Callable[[argparse.Namespace], int]:
    """`action` run with a client from the arguments, its failures as one stderr line."""

    def command(args: argparse.Namespace) -> int:
        try:
            deck = FerrumDeck(args.url, args.key)
            with deck:
                return action(deck, args)
        except ApiError as exc:
            message = describe(exc)
        except (ConfigError, GatewayUnavailable, InputError) as exc:
            message = str(exc)
        print(f"ferrumdeck {name}: {message}", file=sys.stderr)
        return REQUEST_FAILED

    return command
