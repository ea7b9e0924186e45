"""A tool's image, audio and blob results are described to the model and in the step by
their mime type, size and URI, never only as "omitted"."""

from __future__ import annotations

import base64

from mcp.types import (
    AudioContent,
    BlobResourceContents,
    EmbeddedResource,
    ImageContent,
    ResourceLink,
    TextContent,
    TextResourceContents,
)

from services.worker.tool_content import decoded_bytes, described

PNG = base64.b64encode(b"\x89PNG" + b"\0" * 1996).decode()


def test_an_image_is_described_by_its_type_and_size() -> None:
    block = ImageContent(type="image", data=PNG, mime_type="image/png")
    assert described(block) == "[image: image/png, 2.0 kB, not shown]"


def test_audio_is_described_like_an_image() -> None:
    wav = base64.b64encode(b"RIFF").decode()
    block = AudioContent(type="audio", data=wav, mime_type="audio/wav")
    assert described(block) == "[audio: audio/wav, 4 bytes, not shown]"


def test_a_blob_resource_names_its_uri_type_and_size() -> None:
    blob = BlobResourceContents(
        uri="test://static/resource/2", mime_type="application/octet-stream", blob=PNG
    )
    block = EmbeddedResource(type="resource", resource=blob)
    assert described(block) == (
        "[resource test://static/resource/2: application/octet-stream, 2.0 kB, not shown]"
    )


def test_a_text_resource_is_its_text_and_a_link_names_what_it_points_at() -> None:
    text = TextResourceContents(uri="test://a", mime_type="text/plain", text="hello")
    assert described(EmbeddedResource(type="resource", resource=text)) == "hello"
    link = ResourceLink(
        type="resource_link", uri="file:///r/1.txt", name="1.txt", mime_type="text/plain", size=12
    )
    assert described(link) == "[resource link file:///r/1.txt (1.txt): text/plain, 12 bytes]"
    assert described(TextContent(type="text", text="plain")) == "plain"


def test_the_size_is_that_of_the_decoded_bytes() -> None:
    for raw in (b"", b"a", b"ab", b"abc", b"abcd" * 1000):
        assert decoded_bytes(base64.b64encode(raw).decode()) == len(raw)
