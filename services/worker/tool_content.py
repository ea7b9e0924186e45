"""What the model (and the step) is told about each block of a tool's result.

Text is passed on as it is. The model cannot see an image, a sound or a blob through a
text conversation, and inlining their base64 would spend its context on noise, so each
is described instead: its kind, mime type, size and, for resources, its URI, which is
what a person reading the step (or a model choosing its next call) can act on.
"""

from __future__ import annotations

from mcp.types import (
    AudioContent,
    BlobResourceContents,
    ContentBlock,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)


def described(block: ContentBlock) -> str:
    if isinstance(block, TextContent):
        return block.text
    if isinstance(block, ImageContent | AudioContent):
        kind = "image" if isinstance(block, ImageContent) else "audio"
        return f"[{kind}: {block.mime_type}, {size(decoded_bytes(block.data))}, not shown]"
    if isinstance(block, EmbeddedResource):
        resource = block.resource
        if isinstance(resource, TextResourceContents):
            return resource.text
        assert isinstance(resource, BlobResourceContents)
        mime = resource.mime_type or "unknown type"
        return f"[resource {resource.uri}: {mime}, {size(decoded_bytes(resource.blob))}, not shown]"
    if isinstance(block, ResourceLink):
        facts = [block.mime_type or "unknown type"]
        if block.size is not None:
            facts.append(size(block.size))
        return f"[resource link {block.uri} ({block.name}): {', '.join(facts)}]"
    return f"[{block.type} content, not shown]"


def decoded_bytes(base64_data: str) -> int:
    """The size of what base64 `data` encodes, without decoding it."""
    data = base64_data.strip()
    return max(0, len(data) * 3 // 4 - data[-2:].count("="))


def size(count: int) -> str:
    if count < 1000:
        return f"{count} bytes"
    if count < 1_000_000:
        return f"{count / 1000:.1f} kB"
    return f"{count / 1_000_000:.1f} MB"
