"""`ferrumdeck <command>`: run the platform's processes and administer it."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from pydantic import ValidationError
from pydantic_settings import BaseSettings

from services.cli import (
    agent_commands,
    api_session,
    approval_commands,
    audit_subcommands,
    env_file,
    key_commands,
    migrate_command,
    policy_commands,
    project_commands,
    run_commands,
    thread_commands,
)


def _configure_logging(level: str, service: str, settings: BaseSettings | None = None) -> None:
    """JSON lines on stderr, with every secret `settings` holds scrubbed from them."""
    from services.telemetry import logs
    from services.telemetry.settings_secrets import secrets_of

    if settings is not None:
        for secret in secrets_of(settings):
            logs.register_secret(secret)
    logs.configure_logging(level, service)


def _cmd_gateway(_: argparse.Namespace) -> int:
    from services.contract.audit_checkpoint import CheckpointError
    from services.contract.audit_keys import AuditKeyError
    from services.contract.model_catalog import ModelCatalogError
    from services.gateway.serve import serve
    from services.gateway.settings import GatewaySettings

    settings = GatewaySettings()
    _configure_logging(settings.log_level, "gateway", settings)
    try:
        asyncio.run(serve(settings))
    except (AuditKeyError, CheckpointError, ModelCatalogError) as exc:
        print(f"ferrumdeck gateway: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_worker(_: argparse.Namespace) -> int:
    from services.contract.model_catalog import ModelCatalogError
    from services.worker.main import run_worker
    from services.worker.mcp_config import McpConfigError
    from services.worker.settings import WorkerSettings

    settings = WorkerSettings()
    _configure_logging(settings.log_level, "worker", settings)
    try:
        asyncio.run(run_worker(settings))
    except (McpConfigError, ModelCatalogError) as exc:
        # A configuration file the operator wrote: its own message, not a traceback
        # whose useful line is the last.
        print(f"ferrumdeck worker: {exc}", file=sys.stderr)
        return 2
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    from services.cli import dev_settings
    from services.gateway.settings import GatewaySettings
    from services.telemetry.settings_secrets import masked
    from services.worker.settings import WorkerSettings

    planes: dict[str, type[BaseSettings]] = {"gateway": GatewaySettings, "worker": WorkerSettings}
    print(f"# env file: {args.env_file or 'none'}")
    stack = dev_settings.apply()
    print(f"# dev stack: {stack or 'none'}")
    for plane in [args.plane] if args.plane else list(planes):
        print(f"# {plane}")
        for variable, value in masked(planes[plane]()).items():
            print(f"{variable}={value}")
    return 0


def _cmd_keys_create(args: argparse.Namespace) -> int:
    from services.cli.database import database_url, event_seal
    from services.contract.api import Role
    from services.gateway.audit import Actor
    from services.gateway.db.connections import connect
    from services.gateway.store.keys import create_key

    async def run() -> None:
        conn = await connect(database_url(), seal=event_seal())
        try:
            info, secret = await create_key(
                conn,
                args.name,
                Role(args.role),
                args.project,
                Actor.system("ferrumdeck keys create"),
            )
        finally:
            await conn.close()
        scope = f" of project {info.project!r}" if info.project else ""
        print(f"created {args.role} key {args.name!r}{scope} ({info.id}); shown only now:")
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

    _configure_logging(os.environ.get("FERRUMDECK_LOG_LEVEL", "INFO"), "dev")
    return run_dev(Path(args.home), args.host, args.port)


def _cmd_tui(args: argparse.Namespace) -> int:
    from services.client import AsyncFerrumDeck, ConfigError
    from tui.app import FerrumDeckApp, settle_heap

    try:
        client = AsyncFerrumDeck(args.url, args.key)
    except ConfigError as exc:
        print(f"ferrumdeck tui: {exc}", file=sys.stderr)
        return 2
    settle_heap()
    FerrumDeckApp(client).run()
    return 0


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
    migrate_command.register(commands)
    config = commands.add_parser("config", help="print the effective settings, secrets masked")
    config.add_argument("plane", nargs="?", choices=["gateway", "worker"])
    config.set_defaults(func=_cmd_config)

    keys = commands.add_parser("keys", help="manage API keys").add_subparsers(
        dest="keys_command", required=True, metavar="ACTION"
    )
    create = keys.add_parser("create", help="create a key and print its secret once")
    create.add_argument("--name", required=True)
    create.add_argument(
        "--role", required=True, choices=["admin", "operator", "integration", "viewer", "worker"]
    )
    create.add_argument("--project", default="default", help="created if new (not for worker keys)")
    create.set_defaults(func=_cmd_keys_create)

    audit_subcommands.register(commands)
    project_commands.register(commands)

    tui = commands.add_parser("tui", help="watch and steer runs from the terminal")
    tui.add_argument("--url", help="the gateway (else FERRUMDECK_URL, else .ferrumdeck/dev.env)")
    tui.add_argument("--key", help="an API key (else FERRUMDECK_API_KEY, else dev.env)")
    tui.set_defaults(func=_cmd_tui)

    common = api_session.options()
    key_commands.register(keys, common)
    for api_commands in (
        run_commands,
        thread_commands,
        agent_commands,
        policy_commands,
        approval_commands,
    ):
        api_commands.register(commands, common)

    llm = commands.add_parser("demo-llm", help="serve the local OpenAI-compatible demo model")
    llm.add_argument("--host", default="127.0.0.1")
    llm.add_argument("--port", type=int, required=True)
    llm.set_defaults(func=_cmd_demo_llm)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.env_file = env_file.apply()
        code: int = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
    except env_file.EnvFileError as exc:
        print(f"ferrumdeck: {exc}", file=sys.stderr)
        return 2
    except ValidationError as exc:
        print("ferrumdeck: invalid configuration:", file=sys.stderr)
        for error in exc.errors(include_url=False, include_input=False):
            variable = "FERRUMDECK_" + "_".join(str(part) for part in error["loc"]).upper()
            print(f"  {variable}: {error['msg']}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # The reader went away (`ferrumdeck runs list | head`): what it wanted it has.
        # Python would print a traceback flushing stdout at exit; point it at nothing.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return code


if __name__ == "__main__":
    sys.exit(main())
