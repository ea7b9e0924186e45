"""`/docs` works with no way out to the internet: everything the page loads comes from the
gateway, and nothing else is served from where it comes from. And what it loads can render
the document it is pointed at: Swagger UI 4 shows "Unable to render this definition" for
the OpenAPI 3.1 quart-schema writes, which a browserless test can only see in the version
the bundle declares (tests/e2e/test_docs_page.py looks at the page in a browser)."""

from __future__ import annotations

import re
import tomllib
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from quart.typing import TestClientProtocol as Client

from services.gateway import swagger_ui
from services.gateway.routes import docs_assets

CONTENT_TYPES = {".js": "text/javascript", ".css": "text/css"}
ROOT = Path(__file__).resolve().parents[2]
# The oldest Swagger UI major that renders each OpenAPI minor version: 3.0 since Swagger UI
# 3, 3.1 only since 5. A document of a version not here needs a look at Swagger UI's notes.
RENDERS_SINCE = {"3.0": 3, "3.1": 5}
# Swagger UI's build writes its version into the bundle once, as `PACKAGE_VERSION:"x.y.z"`
# (so in 4.15.5 and in 5.35.0, minified alike); the file's word, not a package's name.
_DECLARED = re.compile(rb'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"')


class _References(HTMLParser):
    """Every URL the page makes a browser fetch, whatever the tag: a favicon or an image
    from a CDN blanks nothing but still breaks the promise."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in {"src", "href"} and value]


async def _references(client: Client) -> list[str]:
    page = await client.get("/docs")
    assert page.status_code == 200
    parser = _References()
    parser.feed(await page.get_data(as_text=True))
    return parser.urls


async def test_the_docs_page_loads_only_what_the_gateway_serves(client: Client) -> None:
    urls = await _references(client)
    assert len(urls) >= 2, urls
    for url in urls:
        parts = urlsplit(url)
        assert (parts.scheme, parts.netloc) == ("", ""), f"/docs loads {url} from elsewhere"
        assert parts.path.startswith("/"), url
        served = await client.get(url)
        assert served.status_code == 200, url
        suffix = parts.path[parts.path.rfind(".") :]
        assert served.mimetype == CONTENT_TYPES[suffix], (url, served.mimetype)
        assert served.headers["Content-Type"].endswith("charset=utf-8"), url
        assert len(await served.get_data()) > 10_000, url
        assert "immutable" in served.headers["Cache-Control"], url


@pytest.mark.parametrize(
    "name",
    [
        "swagger-ui.js.map",
        "index.html",
        "swagger-initializer.js",
        "..%2F..%2F__init__.py",
        "%2e%2e%2fsettings.py",
        "",
    ],
)
async def test_only_the_pages_own_assets_are_served(client: Client, name: str) -> None:
    response = await client.get(f"/docs/assets/{name}")
    assert response.status_code == 404, name
    assert (await response.get_json())["error"]["code"] == "not_found"


async def test_a_path_out_of_the_assets_is_not_found(client: Client) -> None:
    response = await client.get("/docs/assets/../../settings.py")
    assert response.status_code == 404
    assert (await response.get_json())["error"]["code"] == "not_found"


def declared_version(bundle: bytes) -> tuple[int, int, int]:
    """The version a Swagger UI bundle says it is, failing if it says it other than once:
    a build that stopped writing it must not pass for any version."""
    found = _DECLARED.findall(bundle)
    assert len(found) == 1, f"the bundle declares {len(found)} versions: {found}"
    major, minor, patch = found[0]
    return int(major), int(minor), int(patch)


async def _served_bundle(client: Client) -> bytes:
    """The script the page really loads, found from the page, not from a name we assume."""
    (bundle_url,) = [url for url in await _references(client) if ".js" in urlsplit(url).path]
    response = await client.get(bundle_url)
    assert response.status_code == 200
    return await response.get_data(as_text=False)


async def test_the_served_swagger_ui_can_render_the_served_openapi_version(
    client: Client,
) -> None:
    document = await (await client.get("/openapi.json")).get_json()
    openapi_minor = ".".join(document["openapi"].split(".")[:2])
    assert openapi_minor in RENDERS_SINCE, (
        f"OpenAPI {document['openapi']}: which Swagger UI renders it? Add it to RENDERS_SINCE"
    )
    version = declared_version(await _served_bundle(client))
    assert version[0] >= RENDERS_SINCE[openapi_minor], (
        f"Swagger UI {'.'.join(map(str, version))} cannot render OpenAPI {document['openapi']}"
        f" (it needs {RENDERS_SINCE[openapi_minor]}.x or later): /docs would show "
        "'Unable to render this definition'"
    )


async def test_the_vendored_version_is_spelled_alike_everywhere(client: Client) -> None:
    """`VERSION` names the files in the page's URLs; the bundle and the vendoring notes
    must say the same, or a refresh left one of them behind."""
    declared = ".".join(map(str, declared_version(await _served_bundle(client))))
    assert declared == swagger_ui.VERSION
    assert all(docs_assets.url(name).endswith(f"?v={declared}") for name in docs_assets.ASSETS)
    notes = (swagger_ui.DIRECTORY / "README.md").read_text()
    assert f"swagger-ui-dist@{declared}" in notes
    assert f"version **{declared}**" in notes


def test_every_vendored_file_is_installed_with_the_project() -> None:
    """A file in the folder but not in pyproject's package-data is there in a checkout and
    missing from a wheel: `/docs` would 404 its script only once installed."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    shipped = set(config["tool"]["setuptools"]["package-data"]["services.gateway.swagger_ui"])
    present = {
        path.name
        for path in swagger_ui.DIRECTORY.iterdir()
        if path.is_file() and path.suffix not in {".py", ".pyc"}
    }
    assert shipped == present
    assert set(docs_assets.ASSETS) <= shipped
    assert {"LICENSE", "NOTICE"} <= shipped


async def test_an_unchanged_asset_is_not_sent_again(client: Client) -> None:
    """A browser past its year-long copy (or told to revalidate) asks with the ETag; the
    1.7 MB bundle must then cost it a 304, not the whole file."""
    url = docs_assets.url("swagger-ui-bundle.js")
    first = await client.get(url)
    etag = first.headers["ETag"]
    again = await client.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304
    assert await again.get_data() == b""
