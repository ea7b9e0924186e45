"""Swagger UI's script and stylesheet for `/docs`, vendored from the npm package
`swagger-ui-dist` (README.md here says which tarball and how to refresh it).

Vendored rather than taken from PyPI: the `swagger-ui-bundle` package there ships Swagger
UI 4, which cannot render the OpenAPI 3.1 document quart-schema writes, and a CDN is out
of reach wherever the gateway's users have no internet. Only the files the page loads are
kept, with the licence texts; the source maps are left out."""

from __future__ import annotations

from pathlib import Path

# The one place the vendored version is spelled for code: `/docs` names the files with it
# (`?v=`), so a browser's year-long copy is never of another release. A test checks that
# the bundle itself and README.md say the same.
VERSION = "5.35.0"
DIRECTORY = Path(__file__).parent
