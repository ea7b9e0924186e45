"""A run given chat messages with an image reaches the model through LiteLLM as given."""

from __future__ import annotations

from services.devstack.demo_llm import Reply
from tests.e2e.conftest import Stack
from tests.e2e.driving import register_agent, unique_prompt, wait_finished
from tests.integration.test_run_messages import PIXEL


async def test_the_model_is_sent_the_messages_and_the_image(stack: Stack) -> None:
    agent = await register_agent(stack, system_prompt="Describe images.")
    opening = unique_prompt("Here is a picture.")
    stack.llm.script(opening, Reply(content="A single red pixel."))
    messages = [
        {"role": "user", "content": opening},
        {"role": "assistant", "content": "Show me."},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "What is it?"},
                {"type": "image_url", "image_url": {"url": PIXEL}},
            ],
        },
    ]
    response = await stack.api.post("/v1/runs", json={"agent": agent, "messages": messages})
    assert response.status_code == 202, response.text
    run = await wait_finished(stack, response.json()["id"])
    assert (run["status"], run["output"]) == ("completed", "A single red pixel.")
    (sent,) = [b["messages"] for b in stack.llm.bodies if opening in str(b["messages"])]
    assert sent[0] == {"role": "system", "content": "Describe images."}
    assert sent[1:3] == messages[:2]
    parts = sent[3]["content"]
    assert parts[0] == {"type": "text", "text": "What is it?"}
    assert parts[1]["type"] == "image_url"
    assert parts[1]["image_url"]["url"] == PIXEL
