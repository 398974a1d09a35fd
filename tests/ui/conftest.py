"""The web UI's tests: a real `llamactl serve` per test, and a browser context on it.

Each test that takes ``page`` (or ``context``) gets a fresh `llamactl serve` with
the stand-in backend (``ui_server``), and a browser context whose base URL is
that server, so ``page.goto("/api/v1/docs")`` works. The browser itself, and
the waits' deadline, are tests/browser.py's.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext
from pytest_playwright import CreateContextCallback

from tests.browser import TIMEOUT_MS
from tests.serve_process import MANAGEMENT_KEY, Serve, serve_process


@dataclass(frozen=True)
class UiServer:
    """A serving llamactl for a browser: its URL, its management key, and the test-side handle."""

    base_url: str
    management_key: str
    serve: Serve
    """The process (``serve.serving.stderr_text()``), a management client (``serve.client``), ``create()``."""


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[UiServer]:
    """A real `llamactl serve` on 127.0.0.1 with the stand-in as llama-cpp backend; checked on exit."""
    with serve_process(tmp_path) as running:
        yield UiServer(base_url=running.base_url, management_key=MANAGEMENT_KEY, serve=running)


@pytest.fixture
def context(ui_server: UiServer, new_context: CreateContextCallback) -> BrowserContext:
    """pytest-playwright's context, on ``ui_server`` (relative URLs) and with ``TIMEOUT_MS`` waits.

    ``ui_server`` first: torn down last, so the browser has gone when llamactl stops."""
    browser_context = new_context(base_url=ui_server.base_url)
    browser_context.set_default_timeout(TIMEOUT_MS)
    browser_context.set_default_navigation_timeout(TIMEOUT_MS)
    return browser_context
