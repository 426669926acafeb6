"""``GET /api/openapi.json`` and the Swagger UI at ``GET /api/docs``, its assets served from this process.

The page loads Swagger UI 5 from the installed ``swagger-ui-py`` package (no CDN) and starts it from a small
served script, so the Content-Security-Policy can allow scripts and styles from ``'self'`` only. These routes
describe the API rather than being part of it: they are marked ``undocumented`` and are the only routes the
document leaves out. They need no credential.
"""

from __future__ import annotations

import html
import importlib.util
from pathlib import Path

import orjson
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from hub.api.openapi import document_of, undocumented

__all__ = ["ASSETS_PATH", "DOCS_PATH", "OPENAPI_PATH", "routes"]

OPENAPI_PATH = "/api/openapi.json"
DOCS_PATH = "/api/docs"
ASSETS_PATH = "/api/docs/assets"
INIT_PATH = "/api/docs/init.js"


def _asset_dir() -> Path:
    """``swagger_ui/static`` of the installed swagger-ui-py (found, not imported: its __init__ pulls in
    integrations for other web frameworks)."""
    spec = importlib.util.find_spec("swagger_ui")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the swagger-ui-py package is missing; run scripts/setup")
    return Path(next(iter(spec.submodule_search_locations))) / "static"


ASSET_DIR = _asset_dir()
# The bundle's files the page uses (not its demo index.html, which points at the petstore).
ASSET_NAMES = frozenset(
    {
        "swagger-ui.css",
        "swagger-ui-bundle.js",
        "index.css",
        "favicon-16x16.png",
        "favicon-32x32.png",
    }
)

CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
)
PAGE_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff"}

PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>telehub API</title>
<link rel="stylesheet" href="{assets}/swagger-ui.css">
<link rel="stylesheet" href="{assets}/index.css">
<link rel="icon" type="image/png" sizes="32x32" href="{assets}/favicon-32x32.png">
<link rel="icon" type="image/png" sizes="16x16" href="{assets}/favicon-16x16.png">
</head>
<body>
<div id="swagger-ui" data-openapi-url="{spec}"></div>
<script src="{assets}/swagger-ui-bundle.js"></script>
<script src="{init}"></script>
</body>
</html>
"""

# validatorUrl null: Swagger UI would otherwise send the document to an outside validator.
INIT_SCRIPT = b"""window.addEventListener("load", function () {
  var root = document.getElementById("swagger-ui");
  window.ui = SwaggerUIBundle({
    url: root.dataset.openapiUrl,
    dom_id: "#swagger-ui",
    deepLinking: true,
    validatorUrl: null,
    presets: [SwaggerUIBundle.presets.apis],
    layout: "BaseLayout"
  });
});
"""


async def openapi_json(request: Request) -> Response:
    body: bytes | None = getattr(request.app.state, "openapi_json", None)
    if body is None:
        body = request.app.state.openapi_json = orjson.dumps(document_of(request.app))
    return Response(body, media_type="application/json")


async def docs_page(request: Request) -> Response:
    root = html.escape(request.scope.get("root_path", ""))
    page = PAGE.format(assets=root + ASSETS_PATH, spec=root + OPENAPI_PATH, init=root + INIT_PATH)
    return Response(page, media_type="text/html", headers=PAGE_HEADERS)


async def init_script(request: Request) -> Response:
    return Response(INIT_SCRIPT, media_type="text/javascript")


class SwaggerAssets(StaticFiles):
    """The bundle's directory, limited to :data:`ASSET_NAMES`."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if path not in ASSET_NAMES:
            raise HTTPException(404)
        return await super().get_response(path, scope)


routes: list[BaseRoute] = [
    undocumented(Route(OPENAPI_PATH, openapi_json, methods=["GET"])),
    undocumented(Route(DOCS_PATH, docs_page, methods=["GET"])),
    undocumented(Route(INIT_PATH, init_script, methods=["GET"])),
    undocumented(Mount(ASSETS_PATH, app=SwaggerAssets(directory=ASSET_DIR), name="docs_assets")),
]
