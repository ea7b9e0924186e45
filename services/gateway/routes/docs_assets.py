"""`/docs/assets/<name>`: the Swagger UI script and stylesheet `/docs` loads, served by the
gateway itself from the copy vendored in `services.gateway.swagger_ui`. From a CDN, the
page rendered blank wherever the gateway's users have no way out to the internet.

Outside key authentication like `/docs` and `/openapi.json`: a browser fetches them for a
`<script>` or `<link>` tag, which sends no key, and they are the same bytes for every
caller. Only the names in `ASSETS` are served, looked up rather than joined to a path, so
nothing a caller writes reaches the file system. The page names them with the vendored
version (`url`), which lets a browser keep them for a year and still fetch new ones after
an upgrade."""

from __future__ import annotations

from quart import Blueprint, Response, send_file
from quart_schema import hide

from services.gateway import swagger_ui
from services.gateway.errors import NotFound

blueprint = Blueprint("docs_assets", __name__, url_prefix="/docs/assets")

# What the page loads, with the content type a browser needs to run or apply it.
ASSETS = {"swagger-ui-bundle.js": "text/javascript", "swagger-ui.css": "text/css"}
A_YEAR = 365 * 24 * 3600


def url(name: str) -> str:
    """Where `/docs` loads `name` from; a new vendored version changes it, so the
    browser's year-long copy is never of an older one."""
    if name not in ASSETS:
        raise KeyError(f"{name} is not a docs asset")
    return f"{blueprint.url_prefix}/{name}?v={swagger_ui.VERSION}"


@blueprint.get("/<name>")
@hide
async def asset(name: str) -> Response:
    mimetype = ASSETS.get(name)
    if mimetype is None:
        raise NotFound(f"no docs asset {name!r}")
    response = await send_file(
        swagger_ui.DIRECTORY / name, mimetype=mimetype, cache_timeout=A_YEAR, conditional=True
    )
    response.cache_control.immutable = True
    return response
