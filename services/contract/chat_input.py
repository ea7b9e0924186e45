"""A run's input as chat messages (`messages` on `POST /v1/runs`), in the OpenAI format.

The caller is not the agent's author, so it may speak only as the user or as earlier
assistant turns: no `system` message (the agent's system prompt is its admin's), no
tool calls or tool results (those are the platform's record, never the caller's word).
Images come inline as `data:` URLs only: a URL to fetch would be fetched by the worker,
or by LiteLLM inside it, from the operator's network, for whoever wrote the request.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

MAX_MESSAGES = 100
MAX_PARTS = 50
_DATA_IMAGE = r"^data:image/(png|jpeg|gif|webp);base64,[A-Za-z0-9+/]+={0,2}$"


class TextPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["text"]
    text: str = Field(min_length=1, max_length=200_000)


class ImageUrl(BaseModel):
    model_config = ConfigDict(extra="forbid")

    url: str = Field(
        pattern=_DATA_IMAGE,
        description="A `data:image/png|jpeg|gif|webp;base64,…` URL; links to fetch are refused.",
    )
    detail: Literal["auto", "low", "high"] | None = None


class ImagePart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["image_url"]
    image_url: ImageUrl


Part = Annotated[TextPart | ImagePart, Field(discriminator="type")]


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="forbid")

    role: Literal["user", "assistant"]
    # Each branch bounded itself: a bound on the union is checked, but the schema would
    # not show it on the list.
    content: (
        Annotated[str, Field(min_length=1)]
        | Annotated[list[Part], Field(min_length=1, max_length=MAX_PARTS)]
    )

    def text(self) -> str:
        if isinstance(self.content, str):
            return self.content
        return "\n".join(p.text for p in self.content if isinstance(p, TextPart))

    def wire(self) -> dict[str, Any]:
        """As the model is sent it (and as the run stores it)."""
        return self.model_dump(mode="json", exclude_none=True)


Messages = Annotated[list[ChatMessage], Field(min_length=1, max_length=MAX_MESSAGES)]
