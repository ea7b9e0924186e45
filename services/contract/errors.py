"""Every error code the gateway answers with (`{"error": {"code", "message", "details"}}`).

One enum for the gateway that raises them, the worker and the client that act on them,
and the docs: a code is part of the API, so it is spelled once. Codes HTTP itself names
(`method_not_allowed`, `request_entity_too_large`, …) come from werkzeug's exception
names and are not listed; everything FerrumDeck decides is.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    # One per status, when nothing more precise applies.
    BAD_REQUEST = "bad_request"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNPROCESSABLE_ENTITY = "unprocessable_entity"
    TOO_MANY_REQUESTS = "too_many_requests"
    SERVICE_UNAVAILABLE = "service_unavailable"
    INTERNAL_ERROR = "internal_error"

    # 400: the request itself is unreadable or malformed.
    VALIDATION_ERROR = "validation_error"
    INVALID_JSON = "invalid_json"
    NUL_CHARACTER = "nul_character"
    INVALID_CURSOR = "invalid_cursor"
    INVALID_IDEMPOTENCY_KEY = "invalid_idempotency_key"
    INVALID_LAST_EVENT_ID = "invalid_last_event_id"
    BAD_ROLE = "bad_role"

    # 403: the key's role may do this, but not here: policy requires the approver of a
    # run's tool call to be another key (or role) than the run's creator.
    SEPARATION_OF_DUTIES = "separation_of_duties"

    # 413: the body is within the gateway's limit but past what this route takes.
    POLICY_TOO_LARGE = "policy_too_large"

    # 415: a body the route would read as JSON, sent with another (or no) Content-Type.
    UNSUPPORTED_MEDIA_TYPE = "unsupported_media_type"

    # 422: well-formed, but names what does not exist, or is past a bound.
    UNKNOWN_AGENT = "unknown_agent"
    UNKNOWN_MODEL = "unknown_model"
    UNKNOWN_THREAD = "unknown_thread"
    TOO_MANY_RULES = "too_many_rules"
    WEBHOOK_URL_REFUSED = "webhook_url_refused"

    # 409: the state forbids it. A worker that gets one of the lease codes stops working
    # on the run: it is no longer its to work on.
    STALE_EPOCH = "stale_epoch"
    RUN_NOT_RUNNING = "run_not_running"
    RUN_NOT_CLAIMABLE = "run_not_claimable"
    LEASE_HELD = "lease_held"
    RUN_FINISHED = "run_finished"
    BUDGET_EXCEEDED = "budget_exceeded"
    STEP_OUT_OF_ORDER = "step_out_of_order"
    STEP_MISMATCH = "step_mismatch"
    STEP_SETTLED = "step_settled"
    ARGUMENTS_CHANGED = "arguments_changed"
    TOOL_CALL_NOT_AUTHORIZED = "tool_call_not_authorized"
    APPROVAL_DECIDED = "approval_decided"
    NOT_DEAD_LETTERED = "not_dead_lettered"
    DELIVERIES_UNPROVEN = "deliveries_unproven"
    IDEMPOTENCY_KEY_REUSED = "idempotency_key_reused"
    THREAD_BUSY = "thread_busy"

    # 503: a backing server is away, or this gateway is stopping; retry after a while.
    DATABASE_UNAVAILABLE = "database_unavailable"
    REDIS_UNAVAILABLE = "redis_unavailable"
    SHUTTING_DOWN = "shutting_down"
    TOO_MANY_STREAMS = "too_many_streams"  # this gateway holds its most run streams open
