"""``GET /`` and ``/ui/*``: the web UI's files, public, from memory, under a strict CSP."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx
import pytest

from llamactl.server.web_ui import UI_DIR
from tests.server.test_routes import running_service


def fetch(tmp_path: Path, *requests: tuple[str, str, dict[str, str]]) -> list[httpx.Response]:
    async def main() -> list[httpx.Response]:
        async with running_service(tmp_path) as client:
            return [await client.request(method, path, headers=headers) for method, path, headers in requests]

    return asyncio.run(main())


def test_the_page_and_its_modules_are_served_without_a_key_under_a_strict_policy(tmp_path: Path) -> None:
    page, module, vendored, head = fetch(
        tmp_path,
        ("GET", "/", {}),
        ("GET", "/ui/main.js", {}),
        ("GET", "/ui/vendor/preact.module.js", {}),
        ("HEAD", "/ui/app.css", {}),
    )
    assert page.status_code == 200 and page.headers["content-type"] == "text/html; charset=utf-8"
    assert page.content == (UI_DIR / "index.html").read_bytes()
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "script-src 'self';" in policy
    assert "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert module.headers["content-type"] == "text/javascript; charset=utf-8" and b"import" in module.content
    assert vendored.status_code == 200 and vendored.headers["content-security-policy"] == policy
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-type"].startswith("text/css")


def test_a_reload_with_the_etag_costs_a_304(tmp_path: Path) -> None:
    [first] = fetch(tmp_path, ("GET", "/ui/app.css", {}))
    etag = first.headers["etag"]
    again, changed = fetch(
        tmp_path,
        ("GET", "/ui/app.css", {"If-None-Match": etag}),
        ("GET", "/ui/app.css", {"If-None-Match": '"x"'}),
    )
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == etag
    assert changed.status_code == 200 and changed.content == first.content


@pytest.mark.parametrize(
    "path",
    [
        "/ui/nothing.js",
        "/ui/vendor/LICENSE-htm",  # licences and notes are committed, not served
        "/ui/vendor/README.md",
        "/ui/../web_ui.py",
        "/ui/%2e%2e/web_ui.py",
        "/ui/views",
        "/ui/",
    ],
)
def test_only_the_ui_files_are_served(tmp_path: Path, path: str) -> None:
    [answer] = fetch(tmp_path, ("GET", path, {}))
    assert answer.status_code == 404 and answer.json()["error"] == "not_found"
