"""`ferrumdeck audit ...`: the subcommands and their options. What they do is in
`services.cli.audit_commands`, imported only when one runs (it brings the gateway's
database code and `cryptography`, which the other commands do without)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any


def register(commands: Any) -> None:
    audit = commands.add_parser("audit", help="check or export the audit trail").add_subparsers(
        dest="audit_command", required=True, metavar="ACTION"
    )
    check = audit.add_parser("verify", help="verify a project's hash chain (exit 1 if broken)")
    check.add_argument("--project", default="default")
    check.add_argument("--file", help="verify an export offline instead of the database")
    key_help = "audit keys, one a line (else FERRUMDECK_AUDIT_KEY[_FILE], make dev's)"
    signing_help = "Ed25519 PEM key (else FERRUMDECK_AUDIT_SIGNING_KEY_FILE, make dev's)"
    check.add_argument("--key-file", help=key_help)
    check.add_argument(
        "--checkpoint", nargs="+", metavar="FILE", help="hold the chain to these checkpoints"
    )
    check.add_argument("--public-key", help="PEM public key the checkpoints are signed with")
    check.add_argument("--signing-key", help=f"or the signing key: {signing_help}")
    check.set_defaults(func=_verify)
    dump = audit.add_parser("export", help="write a project's chain as JSON Lines")
    dump.add_argument("--project", default="default")
    dump.add_argument("--output", "-o", help="file to write (default: standard output)")
    dump.set_defaults(func=_export)
    mark = audit.add_parser("checkpoint", help="sign a statement of the chain's head")
    mark.add_argument("--project", default="default")
    mark.add_argument("--output", "-o", help="file to write (default: standard output)")
    mark.add_argument("--key-file", help=key_help)
    mark.add_argument("--signing-key", help=signing_help)
    mark.set_defaults(func=_checkpoint)
    public = audit.add_parser("public-key", help="print the key that checks checkpoints")
    public.add_argument("--signing-key", help=signing_help)
    public.set_defaults(func=_public_key)


def _verify(args: argparse.Namespace) -> int:
    from services.cli import audit_commands
    from services.cli.database import audit_keys, checkpoint_public_key, database_url
    from services.contract.audit_checkpoint import CheckpointError
    from services.contract.audit_keys import AuditKeyError

    try:
        keys = audit_keys(Path(args.key_file) if args.key_file else None)
        heads = {}
        if args.checkpoint:
            public = checkpoint_public_key(
                Path(args.public_key) if args.public_key else None,
                Path(args.signing_key) if args.signing_key else None,
            )
            heads = audit_commands.checkpoint_heads(map(Path, args.checkpoint), public)
    except (AuditKeyError, CheckpointError) as exc:
        print(f"ferrumdeck audit verify: {exc}", file=sys.stderr)
        return 2
    if args.file:
        return audit_commands.verify_file(Path(args.file), keys, heads)
    return asyncio.run(audit_commands.verify_database(database_url(), args.project, keys, heads))


def _checkpoint(args: argparse.Namespace) -> int:
    from services.cli import audit_commands
    from services.cli.database import audit_keys, checkpoint_signer, database_url
    from services.contract.audit_checkpoint import CheckpointError
    from services.contract.audit_keys import AuditKeyError

    try:
        keys = audit_keys(Path(args.key_file) if args.key_file else None)
        signer = checkpoint_signer(Path(args.signing_key) if args.signing_key else None)
    except (AuditKeyError, CheckpointError) as exc:
        print(f"ferrumdeck audit checkpoint: {exc}", file=sys.stderr)
        return 2
    out = Path(args.output) if args.output else None
    return audit_commands.write_checkpoint(database_url(), args.project, keys, signer, out)


def _public_key(args: argparse.Namespace) -> int:
    from services.cli.database import checkpoint_signer
    from services.contract.audit_checkpoint import CheckpointError

    try:
        signer = checkpoint_signer(Path(args.signing_key) if args.signing_key else None)
    except CheckpointError as exc:
        print(f"ferrumdeck audit public-key: {exc}", file=sys.stderr)
        return 2
    sys.stdout.write(signer.public_pem())
    return 0


def _export(args: argparse.Namespace) -> int:
    from services.cli import audit_commands
    from services.cli.database import database_url

    out = Path(args.output) if args.output else None
    return asyncio.run(audit_commands.export(database_url(), args.project, out))
