"""`ferrumdeck policies …`: the rules in force as a file. `apply` writes a new version
only when the file's rules (or its `approvals:` settings) differ from those in force,
so versions (and the audit trail) record real changes, not every deployment. The
gateway's warnings about a new version (conditions no call can meet) go to stderr, one
line each, and into `--json`'s `warnings`: the version is in force all the same.
"""

from __future__ import annotations

import argparse
import sys

from pydantic import ValidationError

from services.cli.api_session import OK, Subcommands, api_command
from services.cli.output import print_json, short, table
from services.cli.user_input import InputError, json_object, validation_summary, yaml_document
from services.client import FerrumDeck
from services.contract.policy import EvaluateRequest, PolicySet


def policy_file(path: str) -> PolicySet:
    """The `rules:` document of a YAML file, validated as the gateway will."""
    document = yaml_document(path)
    if not isinstance(document, dict) or "rules" not in document:
        raise InputError(f"{path}: expected a document with a `rules:` list")
    try:
        return PolicySet.model_validate(document)
    except ValidationError as exc:
        raise InputError(f"{path}: {validation_summary(exc)}") from None


def _apply(deck: FerrumDeck, args: argparse.Namespace) -> int:
    wanted = policy_file(args.file)
    state = deck.policies(limit=1)
    in_force = PolicySet(rules=state.rules, approvals=state.approvals)
    changed = in_force.model_dump(mode="json") != wanted.model_dump(mode="json")
    version = state.version
    warnings: list[str] = []
    if changed:
        written = deck.put_policies(wanted)
        version, warnings = written.version, written.warnings
    if args.as_json:
        print_json({"version": version, "changed": changed, "warnings": warnings})
    else:
        for warning in warnings:
            print(f"warning: {warning}", file=sys.stderr)
        if changed:
            print(f"policy version {version} is in force ({len(wanted.rules)} rules)")
        else:
            print(f"policy unchanged at version {version}")
    return OK


def _show(deck: FerrumDeck, args: argparse.Namespace) -> int:
    state = deck.policies()
    if args.as_json:
        print_json(state)
        return OK
    print(f"policy version {state.version}" + ("" if state.rules else ": no rules, all denied"))
    if state.approvals.distinct_approver is not None:
        print(
            f"approvals: the run's creator's {state.approvals.distinct_approver.value} "
            "may not approve its calls"
        )
    if state.rules:
        rows = [
            (
                rule.id,
                rule.agent,
                rule.tool,
                rule.effect,
                short(rule.when.model_dump(mode="json", exclude_none=True)) if rule.when else None,
            )
            for rule in state.rules
        ]
        print(table(["rule", "agent", "tool", "effect", "when"], rows))
    return OK


def _evaluate(deck: FerrumDeck, args: argparse.Namespace) -> int:
    call = EvaluateRequest(
        agent=args.agent, tool=args.tool, arguments=json_object("--args", args.args)
    )
    decision = deck.evaluate(call)
    if args.as_json:
        print_json(decision)
    else:
        rule = decision.rule or "no rule"
        print(f"{decision.effect} ({rule}, policy version {decision.policy_version})")
        print(decision.explanation)
    return OK


def register(commands: Subcommands, common: argparse.ArgumentParser) -> None:
    """Add `policies` and its actions to the `ferrumdeck` parser's subcommands."""
    policies = commands.add_parser("policies", help="apply, show and try the tool-call rules")
    actions = policies.add_subparsers(dest="policies_command", required=True, metavar="ACTION")
    apply = actions.add_parser(
        "apply", parents=[common], help="put a YAML `rules:` document in force if it differs"
    )
    apply.add_argument("-f", "--file", required=True)
    apply.set_defaults(func=api_command("policies apply", _apply))
    show = actions.add_parser("show", parents=[common], help="the rules in force")
    show.set_defaults(func=api_command("policies show", _show))
    evaluate = actions.add_parser(
        "evaluate", parents=[common], help="what the rules would decide for a tool call"
    )
    evaluate.add_argument("--agent", required=True)
    evaluate.add_argument("--tool", required=True, help="`<server>.<tool>`")
    evaluate.add_argument("--args", metavar="JSON", help="the call's arguments, a JSON object")
    evaluate.set_defaults(func=api_command("policies evaluate", _evaluate))
