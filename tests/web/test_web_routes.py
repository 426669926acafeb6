"""The dashboard's HTTP side, in-process: ``/`` with its security headers, every file the page loads (followed
through the module imports) served from the hub with the right type, nothing from elsewhere, and the page that
says what to run when the build is missing."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import urljoin

import pytest

from hub.web import routes as web_routes
from tests.support import HubClient

# What the page references: attributes in HTML, module specifiers in JavaScript.
HTML_REFERENCE = re.compile(r"""\b(?:src|href)="([^"]+)\"""")
JS_IMPORT = re.compile(r"""(?:\bimport|\bexport)\s*(?:[^;'"]*?\bfrom\s*)?["']([^"']+)["']""")
URL = re.compile(r"(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}")
VENDORED = ("/static/build/uPlot.esm.js", "/static/build/uPlot.min.css")
CLIENT_SOURCES = Path(__file__).parents[2] / "clients" / "js"


def test_the_page_is_served_with_a_self_only_content_security_policy(client: HubClient) -> None:
    response = client.http.get("/")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    policy = dict(part.strip().split(" ", 1) for part in response.headers["content-security-policy"].split(";"))
    assert policy["default-src"] == "'none'"
    assert policy["script-src"] == "'self'"
    assert policy["style-src"] == "'self'"
    assert policy["connect-src"] == "'self' ws://testserver wss://testserver"
    assert policy["frame-ancestors"] == "'none'"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-request-id"].startswith("req_"), "the page passes the request gate"
    assert '<script type="module" src="static/app.js"></script>' in response.text
    assert 'id="login-form"' in response.text


def test_a_forged_host_header_does_not_reach_the_policy(client: HubClient) -> None:
    response = client.http.get("/", headers={"Host": "evil.example; script-src *"})
    policy = response.headers["content-security-policy"]
    assert "evil" not in policy and "connect-src 'self';" in policy


def test_every_file_the_page_loads_is_served_here_with_its_type(client: HubClient) -> None:
    index = client.http.get("/").text
    pending = [urljoin("/", ref) for ref in HTML_REFERENCE.findall(index) if not ref.startswith("data:")]
    seen: dict[str, str] = {}
    while pending:
        path = pending.pop()
        if path in seen:
            continue
        response = client.http.get(path)
        assert response.status_code == 200, f"{path}: {response.status_code}"
        seen[path] = response.headers["content-type"]
        assert response.headers["x-content-type-options"] == "nosniff"
        if path.endswith(".js"):
            pending.extend(urljoin(path, spec) for spec in JS_IMPORT.findall(response.text))
    scripts = {path for path, kind in seen.items() if kind == "text/javascript; charset=utf-8"}
    styles = {path for path, kind in seen.items() if kind == "text/css; charset=utf-8"}
    assert scripts | styles == set(seen), f"unexpected types: {seen}"
    # The vendored chart library and the JavaScript client's modules, all reached from the page.
    assert set(VENDORED) <= set(seen)
    client_modules = {f"/static/build/{name}" for name in ("telehub.js", "hub.js", "rest.js", "positions.js")}
    assert client_modules <= scripts
    assert "/static/app.js" in scripts and "/static/dashboard.css" in styles


def test_nothing_is_loaded_from_another_origin(client: HubClient) -> None:
    ours = ["/", "/static/dashboard.css"] + [
        f"/static/{path.name}" for path in sorted(web_routes.STATIC_DIR.glob("*.js"))
    ]
    ours += [f"/static/build/{path.name}" for path in sorted(CLIENT_SOURCES.glob("*.js"))]
    assert len(ours) > 10
    for path in ours:
        text = client.http.get(path).text
        assert URL.search(text) is None, f"{path} names another origin: {URL.search(text)}"
    # uPlot's sources cite web pages in comments only; no code of it names another origin.
    for path in VENDORED:
        for line in client.http.get(path).text.splitlines():
            found = URL.search(line)
            if found:
                before = line[: found.start()]
                assert "//" in before or line.lstrip().startswith(("*", "/*")), f"{path}: {line.strip()}"


def test_hidden_and_outside_files_are_not_served(client: HubClient) -> None:
    assert client.http.get("/static/build/.built").status_code == 404
    assert client.http.get("/static/build/uPlot.esm.d.ts").status_code == 404
    assert client.http.get("/static/%2e%2e/routes.py").status_code == 404
    missing = client.http.get("/static/no-such-file.js")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found", "the contract's error envelope"


def test_the_pages_stay_out_of_the_api_document(client: HubClient) -> None:
    paths = client.http.get("/api/openapi.json").json()["paths"]
    assert paths and not any(path == "/" or path.startswith("/static") for path in paths)


def test_without_the_build_the_page_says_what_to_run(
    client: HubClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(web_routes, "BUILD_DIR", tmp_path / "build")
    response = client.http.get("/")
    assert response.status_code == 503
    assert response.headers["content-type"] == "text/html; charset=utf-8"
    assert "scripts/setup" in response.text and "scripts/build-web" in response.text
    monkeypatch.undo()
    assert client.http.get("/").status_code == 200
