"""Policy rules as operators write them, and the decisions the gateway hands back.

Shared by the gateway and its clients, so a rule file is checked the same way on an
operator's machine as on the server. Validation is strict on purpose: a rule that quietly
means something other than what its author wrote is a hole in the policy, not a typo.
Unknown fields, empty conditions, regexes RE2 cannot run and duplicate rule ids are
refused, each with an error that names the field. What rules *mean* is documented with
the evaluator, in `services/gateway/policy.py`.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    FiniteFloat,
    SerializerFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from services.contract.linear_regex import MAX_PATTERN_CHARS, compile_linear

RULE_ID = r"^[A-Za-z0-9_.-]{1,64}$"
AGENT_GLOB = r"^[a-z0-9_*?-]{1,64}$"
TOOL_GLOB = r"^[A-Za-z0-9_*?-]+\.[A-Za-z0-9_.*?-]+$|^\*$"
MAX_APPROVAL_TTL_SECONDS = 30 * 24 * 3600
# Evaluation is budgeted at 1 ms p99 for 1,000 rules (bench/policy_eval.py); twice that
# is the most a policy may hold, so a tenant cannot buy everyone else's latency.
MAX_RULES = 2000
_NULLABLE_TESTS = frozenset({"eq", "ne"})


class Effect(StrEnum):
    ALLOW = "allow"
    DENY = "deny"
    REQUIRE_APPROVAL = "require_approval"


class ArgCondition(BaseModel):
    """Tests on one argument of the call; every test given must hold.

    `eq: null` is a real test ("the argument is null"), so for `eq` and `ne` *given* means
    present in the document rather than not None. Serialising leaves out every test that
    was not given, so a stored rule reads back meaning exactly what it meant.
    """

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    eq: Any = None
    ne: Any = None
    glob: str | None = Field(default=None, max_length=500, description="fnmatch-style")
    regex: str | None = Field(
        default=None,
        max_length=MAX_PATTERN_CHARS,
        description="searched anywhere in the value, RE2 syntax (linear time: no "
        "backreferences or lookaround)",
    )
    gt: FiniteFloat | None = None
    gte: FiniteFloat | None = None
    lt: FiniteFloat | None = None
    lte: FiniteFloat | None = None

    @field_validator("regex")
    @classmethod
    def _compiles(cls, regex: str | None) -> str | None:
        if regex is not None:
            compile_linear(regex)
        return regex

    @model_validator(mode="after")
    def _not_empty(self) -> ArgCondition:
        if not self.given():
            raise ValueError(
                "an argument condition needs at least one of eq, ne, glob, regex, gt, gte, lt, lte"
            )
        return self

    @model_serializer(mode="wrap")
    def _only_given(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        given = self.given()
        data = handler(self)
        # Even under `exclude_none`: `eq: null` is a test, not an absence.
        return {name: data.get(name) for name in given if name in data or given[name] is None}

    def given(self) -> dict[str, Any]:
        """The tests this condition sets, by name, in declaration order."""
        return {
            name: getattr(self, name)
            for name in type(self).model_fields
            if (name in self.model_fields_set and name in _NULLABLE_TESTS)
            or (name not in _NULLABLE_TESTS and getattr(self, name) is not None)
        }


class CountCondition(BaseModel):
    """Bounds on a counter of the run; every bound given must hold."""

    model_config = ConfigDict(extra="forbid", json_schema_extra={"minProperties": 1})

    gt: int | None = Field(default=None, ge=0)
    gte: int | None = Field(default=None, ge=0)
    lt: int | None = Field(default=None, ge=0)
    lte: int | None = Field(default=None, ge=0)
    eq: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _not_empty(self) -> CountCondition:
        if not self.given():
            raise ValueError("a count condition needs at least one of gt, gte, lt, lte, eq")
        return self

    def given(self) -> dict[str, int]:
        """The bounds this condition sets, by name, in declaration order."""
        return {
            name: value
            for name in type(self).model_fields
            if (value := getattr(self, name)) is not None
        }


class When(BaseModel):
    model_config = ConfigDict(extra="forbid")

    args: dict[str, ArgCondition] = Field(
        default_factory=dict,
        max_length=50,
        description="Conditions on the call's arguments, by top-level argument name.",
    )
    calls_in_run: CountCondition | None = Field(
        default=None, description="Calls of this tool in the run, this one included."
    )
    identical_in_a_row: CountCondition | None = Field(
        default=None,
        description="Consecutive identical calls (same tool, same arguments) ending with this "
        "one, this one included: the loop guard.",
    )


class PolicyRule(BaseModel):
    model_config = ConfigDict(
        extra="forbid",
        # `approval_ttl_seconds` only with `require_approval`, said so to schema readers.
        json_schema_extra={
            "anyOf": [
                {"properties": {"effect": {"const": "require_approval"}}},
                {"properties": {"approval_ttl_seconds": {"type": "null"}}},
            ]
        },
    )

    id: str = Field(pattern=RULE_ID)
    agent: str = Field(default="*", pattern=AGENT_GLOB, description="Glob on the agent name.")
    tool: str = Field(
        default="*",
        pattern=TOOL_GLOB,
        max_length=200,
        description="Glob on the `<server>.<tool>` name.",
    )
    when: When | None = None
    effect: Effect
    description: str | None = Field(default=None, max_length=500)
    approval_ttl_seconds: int | None = Field(
        default=None,
        ge=1,
        le=MAX_APPROVAL_TTL_SECONDS,
        description="How long an approval request waits; require_approval rules only.",
    )

    @model_validator(mode="after")
    def _ttl_only_for_approvals(self) -> PolicyRule:
        if self.approval_ttl_seconds is not None and self.effect is not Effect.REQUIRE_APPROVAL:
            raise ValueError(
                f"approval_ttl_seconds only applies to require_approval rules, and rule "
                f"{self.id!r} has effect {self.effect.value}"
            )
        return self


class DistinctApprover(StrEnum):
    """Who may not approve a run's tool calls: the key that started the run, or any key
    of that key's role (and so that key too)."""

    KEY = "key"
    ROLE = "role"


class ApprovalSettings(BaseModel):
    """How approvals are decided under this policy version; off by default."""

    model_config = ConfigDict(extra="forbid")

    distinct_approver: DistinctApprover | None = Field(
        default=None,
        description="Separation of duties: `key`, the approver must be another key than "
        "the run's creator; `role`, a key of another role; null, anyone who may decide. "
        "Rejecting is never restricted.",
    )


class PolicySet(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rules: list[PolicyRule] = Field(max_length=MAX_RULES)
    approvals: ApprovalSettings = Field(default_factory=ApprovalSettings)

    @model_validator(mode="after")
    def _unique_ids(self) -> PolicySet:
        first: dict[str, int] = {}
        for index, rule in enumerate(self.rules):
            if rule.id in first:
                raise ValueError(
                    f"rules[{index}].id {rule.id!r} is used twice "
                    f"(first by rules[{first[rule.id]}])"
                )
            first[rule.id] = index
        return self


class PolicyDecision(BaseModel):
    effect: Effect
    rule: str | None = Field(
        description="The deciding rule's id; null when no rule matched (denied by default)."
    )
    policy_version: int
    explanation: str


def _also_args(schema: dict[str, Any]) -> None:
    """`args` in the schema as what it is: `arguments` by the name rules use, not both."""
    schema["properties"]["args"] = {
        **schema["properties"]["arguments"],
        "title": "Args",
        "description": "The same as `arguments`, by the name rules (`when.args`) and the "
        "CLI (`--args`) use; give one of the two.",
    }
    schema["not"] = {"required": ["arguments", "args"]}


class EvaluateRequest(BaseModel):
    """A hypothetical tool call, to ask what the current policy would decide."""

    model_config = ConfigDict(extra="forbid", json_schema_extra=_also_args)

    agent: str = Field(min_length=1, max_length=200)
    tool: str = Field(min_length=1, max_length=200)
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="The call's arguments (or `args`)."
    )
    calls_in_run: int = Field(default=1, ge=1)
    identical_in_a_row: int = Field(default=1, ge=1)

    @model_validator(mode="before")
    @classmethod
    def _args_are_arguments(cls, data: Any) -> Any:
        if isinstance(data, dict) and "args" in data:
            if "arguments" in data:
                raise ValueError("give the call's arguments once: as arguments or as args")
            data = {("arguments" if name == "args" else name): v for name, v in data.items()}
        return data

    @model_validator(mode="after")
    def _identical_calls_are_calls(self) -> EvaluateRequest:
        if self.identical_in_a_row > self.calls_in_run:
            raise ValueError(
                f"identical_in_a_row ({self.identical_in_a_row}) cannot exceed calls_in_run "
                f"({self.calls_in_run}): identical calls are calls of the same tool"
            )
        return self
