"""The browser-test harness: Debian's Chromium, driven by pytest-playwright, on a real `llamactl serve`.

Each test that takes ``page`` (or ``context``) gets a fresh `llamactl serve` with
the stand-in backend (``ui_server``), and a browser context whose base URL is
that server, so ``page.goto("/api/v1/docs")`` works. Every Playwright wait,
``page`` actions and navigations as well as ``expect``, gives up after
``TIMEOUT_MS``. Without /usr/bin/chromium (scripts/install-test-tools.sh
installs it) the browser tests are skipped; never `playwright install`.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, ConsoleMessage, Error, Page, expect
from pytest_playwright import CreateContextCallback

from tests.serve_process import MANAGEMENT_KEY, Serve, serve_process

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 5000
"""Milliseconds any Playwright wait may take: a page action, a navigation, an ``expect``."""

expect.set_options(timeout=TIMEOUT_MS)


@dataclass(frozen=True)
class UiServer:
    """A serving llamactl for a browser: its URL, its management key, and the test-side handle."""

    base_url: str
    management_key: str
    serve: Serve
    """The process (``serve.serving.stderr_text()``), a management client (``serve.client``), ``create()``."""


@pytest.fixture(scope="session")
def browser_type_launch_args(browser_type_launch_args: dict[str, object]) -> dict[str, object]:
    """pytest-playwright's launch options (``--headed``, ``--slowmo``) with Debian's Chromium."""
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is not installed (the CI machines have it: scripts/install-test-tools.sh)")
    return {
        "headless": True,
        **browser_type_launch_args,
        "executable_path": str(CHROMIUM),
        # No lookups of Google's hosts (Chromium still tries a few); the test server's stay.
        "args": ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"],
    }


@pytest.fixture
def ui_server(tmp_path: Path) -> Iterator[UiServer]:
    """A real `llamactl serve` on 127.0.0.1 with the stand-in as llama-cpp backend; checked on exit."""
    with serve_process(tmp_path) as running:
        yield UiServer(base_url=running.base_url, management_key=MANAGEMENT_KEY, serve=running)


@pytest.fixture(scope="session")
def base_url() -> None:
    """None: the base URL is each test's ``ui_server``, which ``context`` sets.

    pytest-playwright's ``base_url`` (``--base-url``) is session-scoped, so it cannot be a
    per-test server; its own fixture also warns under pytest 9 (an instance method).
    """


@pytest.fixture
def context(ui_server: UiServer, new_context: CreateContextCallback) -> BrowserContext:
    """pytest-playwright's context, on ``ui_server`` (relative URLs) and with ``TIMEOUT_MS`` waits.

    ``ui_server`` first: torn down last, so the browser has gone when llamactl stops."""
    browser_context = new_context(base_url=ui_server.base_url)
    browser_context.set_default_timeout(TIMEOUT_MS)
    browser_context.set_default_navigation_timeout(TIMEOUT_MS)
    return browser_context


@pytest.fixture
def console_errors(page: Page) -> list[str]:
    """What ``page`` reports as errors from now on: console errors and uncaught exceptions.

    Kept up to date while the test runs: assert it is ``[]`` after the page settled.
    """
    errors: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if message.type == "error":
            where = message.location["url"]
            errors.append(f"console: {message.text}" + (f" ({where})" if where else ""))

    def on_page_error(error: Error) -> None:
        errors.append(f"uncaught: {error.name}: {error.message}")

    page.on("console", on_console)
    page.on("pageerror", on_page_error)
    return errors
