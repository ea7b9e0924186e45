"""The OpenAPI document the gateway serves at `/openapi.json`: quart-schema's, plus what
its decorators cannot say — the errors every operation really answers, the headers it
reads and sends, and the responses of the routes that are not JSON.

Built in one place rather than by a decorator on every route, from what a route already
declares: a key-guarded route (`/v1/*`) answers 401, 429 and 503; one whose roles do not
admit every human role answers 403 (`auth.roles_admitted`); one with a body answers 413
and 415; one with a path parameter answers 404; and every route 400, since any address
may hold a NUL. What only the code behind a route decides (a 409 of a run's state, a 422
of a name that does not exist) is listed per operation in `_ERRORS`, whose entries must
name routes that exist, so a renamed route cannot silently lose them. Every error has
the one shape `ErrorBody`, `{"error": {"code", "message", "details"}}`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel
from quart_schema import DataSource, OpenAPIProvider
from quart_schema.typing import Model
from quart_schema.validation import QUART_SCHEMA_REQUEST_ATTRIBUTE
from werkzeug.routing import Rule

from services.contract.api import ErrorBody, Role, Run, Step
from services.contract.events import PAYLOADS, EventName
from services.contract.run_stream import RunStreamEvent, TokenDelta
from services.gateway.auth import roles_admitted

_HUMAN_ROLES = frozenset(Role) - {Role.WORKER}
_REF = "#/components/schemas/{model}"

# The shared response of each status; an operation refers to them by name.
_STANDARD: dict[int, tuple[str, str]] = {
    400: ("BadRequest", "The request is malformed: a field, the JSON, a cursor, a NUL."),
    401: ("Unauthorized", "No API key, or one unknown, revoked or of the wrong kind."),
    403: ("Forbidden", "The key's role may not do this."),
    404: ("NotFound", "No such resource in the key's project (or the id is not a UUID)."),
    409: ("Conflict", "The resource's state forbids this now."),
    413: ("ContentTooLarge", "The body is larger than this gateway or route accepts."),
    415: ("UnsupportedMediaType", "The body is not sent as `Content-Type: application/json`."),
    422: ("UnprocessableEntity", "Well-formed, but names what does not exist or is too much."),
    429: ("TooManyRequests", "Too many failed authentications, or a backlog past its bound."),
    503: ("ServiceUnavailable", "PostgreSQL or Redis is away, or the gateway is stopping."),
}
_RETRY_AFTER = {
    "description": "Seconds to wait before retrying.",
    "required": True,
    "schema": {"type": "integer", "minimum": 0},
}
_HEADERS_OF: dict[int, dict[str, Any]] = {
    401: {
        "WWW-Authenticate": {
            "description": "The scheme to authenticate with: `Bearer`.",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    429: {"Retry-After": _RETRY_AFTER},
    503: {"Retry-After": _RETRY_AFTER},
}

# What only the code behind a route decides, by endpoint, with why.
_ERRORS: dict[str, dict[int, str]] = {
    "agents.create_agent": {422: "`unknown_model`: no such model, or not for this project."},
    "agents.agent_versions": {404: "No agent of that name."},
    "runs.create_run": {
        400: "`invalid_idempotency_key`: `Idempotency-Key` is not 1 to 200 characters.",
        409: "`idempotency_key_reused`: the key was used for a different request; "
        "`thread_busy`: the thread has a run in progress.",
        422: "`unknown_agent`: no such agent or version; `unknown_thread`: no such thread.",
        429: "Also: not accepting runs now (backlog or project quota); see `Retry-After`.",
    },
    "runs.cancel_run": {409: "`run_finished`: the run already ended."},
    "runs.requeue_run": {
        409: "`not_dead_lettered`, `deliveries_unproven`: not requeueable; `thread_busy`: "
        "its thread has another run in progress."
    },
    "runs.stream_run": {
        400: "`invalid_last_event_id`: `Last-Event-ID` is not an id this stream sent.",
        503: "Also `too_many_streams`: this gateway holds its most run streams open.",
    },
    "runs.summary": {422: "`until` is before 1970-01-02 or after 9999-12-31."},
    "approvals.approve": {
        403: "Also `separation_of_duties`: policy requires another approver.",
        409: "`approval_decided`: already decided, expired or cancelled.",
    },
    "approvals.reject": {409: "`approval_decided`: already decided, expired or cancelled."},
    "approvals.decide_many": {
        403: "Also `separation_of_duties`, naming the approval (`details.approval_id`).",
        404: "An approval is not found (`details.approval_id`); none is decided.",
        409: "`approval_decided`: one is already decided (`details.approval_id`).",
    },
    "policies.put_policies": {
        413: "`policy_too_large`: past `policy_max_bytes` (`details.limit`).",
        422: "`too_many_rules`: past the rule limit (`details.limit`).",
    },
    "keys.create_key": {400: "`bad_role`: worker keys are made from the server's shell."},
    "audit.verify": {
        422: "`since_checkpoint` is not a checkpoint of this project signed with this "
        "gateway's checkpoint key (or the gateway has none)."
    },
    "webhooks.create_webhook": {
        422: "`webhook_url_refused`: the host does not resolve, or to a private address."
    },
}

# Responses of routes that answer no JSON body, by endpoint.
_SUCCESS: dict[str, dict[int, Any]] = {
    "keys.revoke_key": {204: {"description": "Revoked."}},
    "webhooks.delete_webhook": {204: {"description": "Deleted; nothing more is sent to it."}},
}


def _component(model: type[BaseModel], components: dict[str, Any]) -> dict[str, Any]:
    """A reference to `model`, its schema (and those it refers to) added to `components`."""
    schema = model.model_json_schema(ref_template=_REF, mode="serialization")
    components.update(schema.pop("$defs", {}))
    components[model.__name__] = schema
    return {"$ref": _REF.format(model=model.__name__)}


def _event_stream(components: dict[str, Any]) -> dict[int, Any]:
    """`/v1/events`' 200: Server-Sent Events, each `data:` line one of the payloads."""
    variants = [
        {
            "type": "object",
            "properties": {"event": {"const": name.value}, "data": _component(model, components)},
            "required": ["event", "data"],
        }
        for name, model in PAYLOADS.items()
    ]
    variants += [
        {
            "type": "object",
            "properties": {"event": {"const": name.value}},
            "required": ["event"],
            "description": "Refetch the state you show; carries no data.",
        }
        for name in EventName
        if name not in PAYLOADS
    ]
    components["LiveEvent"] = {
        "description": "One event of the stream: its `event:` name and its `data:` line "
        "(JSON). The stream opens with `ready`; a comment line comes every 15 s of silence.",
        "oneOf": variants,
    }
    return {
        200: {
            "description": "A `text/event-stream` that stays open; each event is a "
            "`LiveEvent` (OpenAPI 3.2's `itemSchema`, given as `x-item-schema`).",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "x-item-schema": {"$ref": _REF.format(model="LiveEvent")},
                }
            },
        }
    }


def _run_stream(components: dict[str, Any]) -> dict[int, Any]:
    """`/v1/runs/{id}/stream`'s 200 (Server-Sent Events ending with `end`) and 204."""
    variants = [
        {
            "type": "object",
            "properties": {
                "event": {"const": name.value},
                "id": {"type": "string"},
                "data": _component(model, components),
            },
            "required": ["event", "id", "data"],
        }
        for name, model in (
            (RunStreamEvent.TOKEN, TokenDelta),
            (RunStreamEvent.STEP, Step),
            (RunStreamEvent.END, Run),
        )
    ]
    components["RunStreamEvent"] = {
        "description": "One event of a run's stream: its `event:` name, its `id:` (send it "
        "back as `Last-Event-ID` to resume after it) and its `data:` line (JSON).",
        "oneOf": variants,
    }
    return {
        200: {
            "description": "A `text/event-stream` that ends after `end`; each event is a "
            "`RunStreamEvent` (OpenAPI 3.2's `itemSchema`, given as `x-item-schema`).",
            "content": {
                "text/event-stream": {
                    "schema": {"type": "string"},
                    "x-item-schema": {"$ref": _REF.format(model="RunStreamEvent")},
                }
            },
        },
        204: {"description": "`Last-Event-ID` was `end`: the stream has nothing more."},
    }


_LAST_EVENT_ID = {
    "name": "Last-Event-ID",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "maxLength": 100},
    "description": "The id of the last event received: the stream resumes after it.",
}

_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes retries safe: a repeat with the same key and body returns the "
    "run the first request created (with `Idempotent-Replayed: true`).",
    "schema": {"type": "string", "minLength": 1, "maxLength": 200},
}
_CREATED_RUN_HEADERS = {
    "Location": {
        "description": "The run's address.",
        "required": True,
        "schema": {"type": "string"},
    },
    "Idempotent-Replayed": {
        "description": "`true` when an earlier request with this `Idempotency-Key` made it.",
        "required": False,
        "schema": {"type": "string", "enum": ["true"]},
    },
}


class ContractProvider(OpenAPIProvider):
    """quart-schema's document, with every operation's errors, headers and non-JSON
    responses."""

    def schema(self) -> dict[str, Any]:
        unknown = set(_ERRORS) | set(_SUCCESS)
        unknown -= {rule.endpoint for rule in self.generate_rules()}
        if unknown:
            raise LookupError(f"the OpenAPI error table names no route: {sorted(unknown)}")
        document = super().schema()
        components = document["components"]
        _component(ErrorBody, components["schemas"])
        components["responses"] = {
            name: _error_response(status, description)
            for status, (name, description) in _STANDARD.items()
        }
        return document

    def build_querystring_parameters(
        self, model: type[Model]
    ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
        """quart-schema's, with the parameters the model requires marked `required`."""
        parameters, components = super().build_querystring_parameters(model)
        fields = (
            model.model_fields if isinstance(model, type) and issubclass(model, BaseModel) else {}
        )
        required = {name for name, field in fields.items() if field.is_required()}
        return [
            {**parameter, "required": True} if parameter["name"] in required else parameter
            for parameter in parameters
        ], components

    def build_request_body(
        self, model: type[Model], source: DataSource
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """quart-schema's, marked `required`: a route that validates a body needs one."""
        body, components = super().build_request_body(model, source)
        return {**body, "required": True}, components

    def build_paths(self, rule: Rule) -> tuple[dict[str, Any], dict[str, Any]]:
        paths, components = super().build_paths(rule)
        view = self._app.view_functions[rule.endpoint]
        for operations in paths.values():
            for method, operation in operations.items():
                errors = self._errors(rule, method, view)
                operations[method] = _completed(rule, operation, errors, components)
        return paths, components

    def _errors(self, rule: Rule, method: str, view: Callable[..., Any]) -> dict[int, str]:
        """The statuses `rule` answers besides its own, each with what is particular to it."""
        found = dict.fromkeys([400], "")
        if rule.rule.startswith("/v1/"):
            found |= dict.fromkeys([401, 429, 503], "")
            blueprint = self._app.blueprints.get(rule.endpoint.rpartition(".")[0])
            if not roles_admitted(blueprint, view) >= _HUMAN_ROLES:
                found[403] = ""
        if rule.arguments:
            found[404] = ""
        if method in {"post", "put", "patch"} and hasattr(view, QUART_SCHEMA_REQUEST_ATTRIBUTE):
            found |= dict.fromkeys([413, 415], "")
        return found | _ERRORS.get(rule.endpoint, {})


def _error_response(status: int, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": _REF.format(model="ErrorBody")}}},
        **({"headers": _HEADERS_OF[status]} if status in _HEADERS_OF else {}),
    }


def _completed(
    rule: Rule, operation: dict[str, Any], errors: dict[int, str], components: dict[str, Any]
) -> dict[str, Any]:
    responses = dict(operation["responses"])
    parameters = list(operation["parameters"])
    if rule.endpoint == "events.stream_events":
        responses |= _event_stream(components)
    if rule.endpoint == "runs.stream_run":
        responses |= _run_stream(components)
        parameters.append(_LAST_EVENT_ID)
    responses |= _SUCCESS.get(rule.endpoint, {})
    if rule.endpoint == "runs.create_run":
        parameters.append(_IDEMPOTENCY_KEY)
        responses[202] = {**responses[202], "headers": _CREATED_RUN_HEADERS}
    for status, particular in sorted(errors.items()):
        name, description = _STANDARD[status]
        if status in responses:  # /readyz's 503 is its own Readiness body
            continue
        responses[status] = (
            _error_response(status, f"{description} {particular}")
            if particular
            else {"$ref": f"#/components/responses/{name}"}
        )
    completed = {**operation, "responses": responses, "parameters": parameters}
    if not rule.rule.startswith("/v1/"):
        completed["security"] = []  # the health probes answer anyone
    return completed
