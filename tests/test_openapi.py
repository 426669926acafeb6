"""The OpenAPI document at /api/openapi.json and the Swagger UI at /api/docs.

The document must be valid OpenAPI 3.1, list every HTTP route of the real app, and describe the replies the
app really sends: real requests are validated against the schemas it declares.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from html.parser import HTMLParser
from typing import Any

import httpx2 as httpx
import pytest
from jsonschema import Draft202012Validator
from openapi_spec_validator import OpenAPIV31SpecValidator, validate
from referencing import Registry
from referencing.jsonschema import DRAFT202012
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.websockets import WebSocket

from hub import __version__
from hub.api import docs_routes
from hub.api.openapi import UndocumentedRouteError, build_document, document_of, undocumented
from hub.api.spec import operation, operation_of
from tests.support import API, PASSWORD, HubClient, bearer

# The routes the document leaves out on purpose: the docs themselves and the web dashboard, nothing else.
EXCLUDED = {
    "/api/openapi.json",
    "/api/docs",
    "/api/docs/init.js",
    "/api/docs/assets",
    "/",
    "/static",
}
DOC_URI = "urn:telehub:openapi"


def fetch_document(client: HubClient) -> dict[str, Any]:
    response = client.http.get("/api/openapi.json")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    document: dict[str, Any] = response.json()
    return document


def leaf_routes(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, BaseRoute]]:
    """Every route of the app with its full path, written independently of the builder's own walk."""
    for route in routes:
        path = re.sub(r"\{(\w+):\w+\}", r"{\1}", prefix + getattr(route, "path", ""))
        if isinstance(route, Mount) and route.routes and getattr(route, "include_in_schema", True):
            yield from leaf_routes(route.routes, path)
        else:
            yield path, route


def escape(segment: str) -> str:
    return segment.replace("~", "~0").replace("/", "~1")


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    """Follow a local ``$ref`` (responses, headers) to its target."""
    return lookup(document, node["$ref"].removeprefix("#"))[1] if "$ref" in node else node


def lookup(document: dict[str, Any], pointer: str) -> tuple[str, dict[str, Any]]:
    """The node at a JSON pointer, following ``$ref``s; returns the pointer where it really lives too."""
    node: Any = document
    for part in pointer.removeprefix("/").split("/"):
        node = node[part.replace("~1", "/").replace("~0", "~")]
    if "$ref" in node:
        return lookup(document, node["$ref"].removeprefix("#"))
    return pointer, node


def check_reply(document: dict[str, Any], response: httpx.Response, path: str) -> httpx.Response:
    """The reply's status, headers and body are the ones the document declares for this path and method."""
    method = response.request.method
    status = str(response.status_code)
    responses = document["paths"][path][method.lower()]["responses"]
    assert status in responses, f"{method} {path} answered undocumented {status}: {response.text}"
    pointer, declared = lookup(document, f"/paths/{escape(path)}/{method.lower()}/responses/{status}")
    for name, header in declared.get("headers", {}).items():
        if resolve(document, header).get("required"):
            assert name in response.headers, f"{method} {path} {status} lacks {name}"
    content = declared.get("content")
    if not content:
        assert response.content == b"", f"{method} {path} {status} has an undeclared body"
        return response
    media_type = response.headers["content-type"].split(";")[0]
    assert media_type in content, f"{method} {path} answered {media_type}, declared {list(content)}"
    if media_type == "application/json":
        schema_ref = f"{DOC_URI}#{pointer}/content/{escape(media_type)}/schema"
        validator_for(document, schema_ref).validate(response.json())
    return response


def validator_for(document: dict[str, Any], ref: str) -> Draft202012Validator:
    registry: Registry[Any] = Registry().with_resource(DOC_URI, DRAFT202012.create_resource(document))
    return Draft202012Validator({"$ref": ref}, registry=registry, format_checker=Draft202012Validator.FORMAT_CHECKER)


def test_document_is_valid_openapi_31(client: HubClient) -> None:
    document = fetch_document(client)
    validate(document, cls=OpenAPIV31SpecValidator)
    assert document["openapi"] == "3.1.0"
    assert document["info"]["version"] == __version__
    assert document["servers"] == [{"url": "/"}]
    assert document["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    assert "Error" in document["components"]["schemas"]
    assert fetch_document(client) == document
    assert document_of(client.http.app) is document_of(client.http.app)  # type: ignore[arg-type]


def test_every_route_is_in_the_document_with_its_schemas(client: HubClient) -> None:
    document = fetch_document(client)
    excluded: set[str] = set()
    expected: set[tuple[str, str]] = set()
    for path, route in leaf_routes(client.http.app.routes):  # type: ignore[attr-defined]
        if getattr(route, "include_in_schema", True) is False:
            excluded.add(path)
            continue
        if isinstance(route, WebSocketRoute):
            continue
        assert isinstance(route, Route), f"{path}: {route!r} cannot be documented"
        spec = operation_of(route.endpoint)
        assert spec is not None, f"{path} has no @operation"
        assert route.methods
        for method in route.methods - {"HEAD"}:
            expected.add((path, method))
            operation_object = document["paths"][path][method.lower()]
            assert operation_object["summary"]
            successes = {int(s): r for s, r in operation_object["responses"].items() if s.startswith("2")}
            assert successes, f"{method} {path} documents no 2xx"
            for status, response in successes.items():
                if spec.responses[status] is None:
                    assert "content" not in response
                else:
                    assert response["content"][spec.response_media_type]["schema"], f"{method} {path} {status}"
                assert "X-Request-ID" in response["headers"]
            if spec.body is not None:
                content = operation_object["requestBody"]["content"]
                for media_type in ("application/json", *spec.body_media_types):
                    assert content[media_type]["schema"]
            assert ("401" in operation_object["responses"]) == (spec.auth or 401 in spec.errors)
            for status in ("429", "500"):
                assert resolve(document, operation_object["responses"][status])["content"]["application/json"]
    assert excluded == EXCLUDED
    documented = {(path, method.upper()) for path, item in document["paths"].items() for method in item}
    assert documented == expected
    operation_ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(operation_ids) == len(set(operation_ids))


@operation(summary="Declared", tag="t", responses={200: {"type": "object"}}, auth=False)
async def declared(request: Request) -> Response:
    return Response()


async def forgotten(request: Request) -> Response:
    return Response()


async def socket(websocket: WebSocket) -> None:
    await websocket.close()


def test_the_builder_refuses_a_route_without_operation() -> None:
    documented = [Route("/declared", declared, methods=["GET", "POST"]), WebSocketRoute("/ws", socket)]
    document = build_document(Starlette(routes=[Mount("/api/v1", routes=documented)]).routes)
    assert set(document["paths"]) == {"/api/v1/declared"}
    assert {op["operationId"] for op in document["paths"]["/api/v1/declared"].values()} == {
        "declared_get",
        "declared_post",
    }
    forgot = Starlette(routes=[Mount("/api/v1", routes=[*documented, Route("/forgot/{id}", forgotten)])])
    with pytest.raises(UndocumentedRouteError, match=r"GET /api/v1/forgot/\{id\} \(forgotten\) has no @operation"):
        build_document(forgot.routes)
    opaque = Mount("/static", app=StaticFiles(directory=docs_routes.ASSET_DIR))
    with pytest.raises(UndocumentedRouteError, match="/static"):
        build_document([opaque])
    assert build_document([undocumented(opaque), undocumented(Route("/forgot", forgotten))])["paths"] == {}


def test_replies_match_the_documented_schemas(client: HubClient) -> None:
    document = fetch_document(client)
    tenant = client.new_tenant()

    def call(method: str, path: str, template: str | None = None, **kwargs: Any) -> httpx.Response:
        response = client.http.request(method, API + path, **kwargs)
        return check_reply(document, response, API + (template or path))

    call("POST", "/auth/login", json={"email": tenant.admin_email, "password": PASSWORD})
    call("POST", "/auth/login", json={"email": tenant.admin_email, "password": "wrong-password"})
    call("POST", "/auth/login", json={"email": 5})
    call("POST", "/auth/login", content=b"email=a", headers={"content-type": "text/plain"})
    call("GET", "/auth/me", headers=tenant.admin)
    call("GET", "/auth/me")
    viewer_body = {"email": "v@example.com", "password": PASSWORD, "role": "viewer"}
    call("POST", "/users", json=viewer_body, headers=tenant.admin)
    call("POST", "/users", json=viewer_body, headers=tenant.admin)
    users = call("GET", "/users", headers=tenant.admin).json()
    viewer = client.login("v@example.com")
    call("GET", "/users", headers=bearer(viewer))
    viewer_id = next(u["id"] for u in users["data"] if u["role"] == "viewer")
    call("DELETE", f"/users/{viewer_id}", "/users/{user_id}", headers=tenant.admin)
    call("DELETE", f"/users/{viewer_id}", "/users/{user_id}", headers=tenant.admin)
    key = call("POST", "/api-keys", json={"name": "backend", "role": "operator"}, headers=tenant.admin).json()
    call("GET", "/api-keys", headers=tenant.admin)
    call("GET", "/api-keys", params={"limit": 0}, headers=tenant.admin)
    call("GET", "/auth/me", headers=bearer(key["key"]))
    call("DELETE", f"/api-keys/{key['id']}", "/api-keys/{key_id}", headers=tenant.admin)
    call("GET", "/health")
    call("GET", "/health/redis")
    metrics = check_reply(document, client.http.get("/metrics"), "/metrics")
    assert metrics.text.startswith("#")


def test_throttled_login_is_the_documented_429(client: HubClient) -> None:
    document = fetch_document(client)
    tenant = client.new_tenant()
    login = {"email": tenant.admin_email, "password": "wrong-password"}
    for _ in range(client.services.config.login_max_failures):
        client.post("/auth/login", json=login)
    response = check_reply(document, client.post("/auth/login", json=login), API + "/auth/login")
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    assert "x-ratelimit-remaining" in response.headers


class AssetReferences(HTMLParser):
    """The src and href attributes of a page, and whether it has inline script."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.inline_script = False
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.urls += [value for name, value in attrs if name in ("src", "href") and value]
        self._in_script = tag == "script"

    def handle_data(self, data: str) -> None:
        self.inline_script = self.inline_script or (self._in_script and bool(data.strip()))

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


CONTENT_TYPES = {
    ".css": ("text/css",),
    ".js": ("text/javascript", "application/javascript"),
    ".png": ("image/png",),
}


def test_docs_page_loads_only_local_assets(client: HubClient) -> None:
    page = client.http.get("/api/docs")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text
    policy = page.headers["content-security-policy"]
    assert "script-src 'self';" in policy and "style-src 'self';" in policy and "unsafe" not in policy
    references = AssetReferences()
    references.feed(page.text)
    assert not references.inline_script
    assert len(references.urls) >= 5
    for url in references.urls:
        assert url.startswith("/api/docs/"), url
        asset = client.http.get(url)
        assert asset.status_code == 200, url
        suffix = url[url.rindex(".") :]
        assert asset.headers["content-type"].split(";")[0] in CONTENT_TYPES[suffix], url
    init = client.http.get("/api/docs/init.js").text
    assert "validatorUrl: null" in init and "http" not in init


def test_swagger_ui_reads_the_31_document_itself(client: HubClient) -> None:
    page = client.http.get("/api/docs").text
    assert 'data-openapi-url="/api/openapi.json"' in page
    bundle = client.http.get("/api/docs/assets/swagger-ui-bundle.js").text
    # Swagger UI 5 is the first major version that renders OpenAPI 3.1.
    assert "isOAS31" in bundle


def test_asset_mount_serves_only_the_page_assets(client: HubClient) -> None:
    for name in ("index.html", "swagger-initializer.js", "../__init__.py"):
        response = client.http.get(f"/api/docs/assets/{name}")
        assert response.status_code == 404, name
        assert response.json()["error"]["code"] == "not_found"
