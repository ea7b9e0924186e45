"""A failed model call's error, as a project's users read it: what the provider said,
never the worker's traceback or file paths. Exceptions are made by LiteLLM's own
exception mapping, as a real call raises them."""

from __future__ import annotations

import pytest
from litellm.litellm_core_utils.exception_mapping_utils import exception_type

from services.worker.provider_errors import provider_message


def _mapped(provider: str, original: Exception) -> Exception:
    try:
        try:
            raise original
        except type(original) as raised:
            exception_type(model="m", original_exception=raised, custom_llm_provider=provider)
    except Exception as mapped:  # LiteLLM raises whatever it mapped to
        return mapped
    raise AssertionError("LiteLLM mapped nothing")


@pytest.mark.parametrize("provider", ["azure", "no_such_provider"])
def test_litellm_s_traceback_and_bug_notice_are_dropped(provider: str) -> None:
    exc = _mapped(provider, KeyError("choices"))
    assert "Traceback" in str(exc)  # what LiteLLM says, and the run used to show
    message = provider_message(exc)
    assert message.startswith("APIConnectionError: ")
    assert "'choices'" in message
    for leak in ("Traceback", 'File "', "line ", "github.com", "\n"):
        assert leak not in message


def test_the_class_name_is_said_once_and_object_addresses_are_dropped() -> None:
    exc = _mapped("openai", ValueError("the reply was not JSON"))
    assert str(exc).startswith("litellm.APIConnectionError: APIConnectionError: ")
    assert provider_message(exc) == ("APIConnectionError: OpenAIException - the reply was not JSON")
    noisy = RuntimeError("Cannot connect to host h:1 ssl:<ssl.SSLContext object at 0x7f88aa>")
    assert (
        provider_message(noisy) == "RuntimeError: Cannot connect to host h:1 ssl:<ssl.SSLContext>"
    )


def test_a_message_is_bounded_and_an_empty_one_is_the_class() -> None:
    assert len(provider_message(RuntimeError("x" * 50_000))) == 2000
    assert provider_message(TimeoutError()) == "TimeoutError"
