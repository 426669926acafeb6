"""The web dashboard at ``/`` and its files under ``/static/`` (this package's ``static/`` folder).

The page is plain ES modules: the sources in ``static/`` and what ``scripts/build-web`` vendors into
``static/build/`` (uPlot and the JavaScript client of clients/js), so nothing is fetched from elsewhere. The
Content-Security-Policy allows scripts, styles and connections to this origin only (and its WebSocket URLs).
Without the build, ``/`` answers 503 saying to run ``scripts/setup``. The routes need no credential (the page
logs in through the API) and are left out of the OpenAPI document, like the API docs pages.
"""

from __future__ import annotations

import re
from pathlib import Path, PurePosixPath

from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Scope

from hub.api.openapi import undocumented

__all__ = ["BUILD_DIR", "BUILT_FILES", "PAGE_PATH", "STATIC_DIR", "STATIC_PATH", "is_built", "routes"]

PAGE_PATH = "/"
STATIC_PATH = "/static"
STATIC_DIR = Path(__file__).parent / "static"
BUILD_DIR = STATIC_DIR / "build"
# What the page loads from the build.
BUILT_FILES = ("telehub.js", "uPlot.esm.js", "uPlot.min.css")

# A Host header that may go into the policy as is: a name or an IP literal, and a port.
_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?")

NOT_BUILT_PAGE = """<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>telehub: dashboard not built</title></head>
<body>
<h1>The web dashboard is not built</h1>
<p>Its browser files (uPlot and the JavaScript client) are vendored at build time into
<code>hub/web/static/build/</code>. Run <code>scripts/setup</code> (or <code>scripts/build-web</code>; both need
Node.js with npm) and reload this page.</p>
<p>The API is up regardless: <a href="api/docs">API docs</a>.</p>
</body>
</html>
"""


def content_security_policy(host: str | None) -> str:
    """Everything from this origin only; WebSockets to it too (``'self'`` covers ws: only in newer browsers)."""
    connect = "'self'"
    if host and _HOST.fullmatch(host):
        connect += f" ws://{host} wss://{host}"
    return (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
        f"connect-src {connect}; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"
    )


def security_headers(host: str | None) -> dict[str, str]:
    return {
        "Content-Security-Policy": content_security_policy(host),
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Referrer-Policy": "no-referrer",
        "Cross-Origin-Opener-Policy": "same-origin",
        # Revalidated on every load (ETag / Last-Modified): a rebuilt dashboard is seen at once.
        "Cache-Control": "no-cache",
    }


def is_built() -> bool:
    return all((BUILD_DIR / name).is_file() for name in BUILT_FILES)


async def dashboard_page(request: Request) -> Response:
    headers = security_headers(request.headers.get("host"))
    if not is_built():
        return Response(NOT_BUILT_PAGE, status_code=503, media_type="text/html", headers=headers)
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html", headers=headers)


class DashboardFiles(StaticFiles):
    """``static/`` with the dashboard's headers. Not served: hidden files (the build's stamp) and type
    declarations (for the type check only)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        if any(part.startswith(".") for part in PurePosixPath(path).parts) or path.endswith(".d.ts"):
            raise HTTPException(404)
        response = await super().get_response(path, scope)
        response.headers.update(security_headers(Headers(scope=scope).get("host")))
        if path.endswith(".js"):  # module scripts need a JavaScript type, whatever the system's mime.types says
            response.headers["content-type"] = "text/javascript; charset=utf-8"
        return response


routes: list[BaseRoute] = [
    undocumented(Route(PAGE_PATH, dashboard_page, methods=["GET"])),
    undocumented(Mount(STATIC_PATH, app=DashboardFiles(directory=STATIC_DIR), name="dashboard_static")),
]
