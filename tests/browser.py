"""The browser fixtures every browser test shares (tests/ui, and tests/e2e's playground flow).

pytest-playwright's own, with three changes:

- Debian's Chromium (/usr/bin/chromium, installed by scripts/install-test-tools.sh), never a
  downloaded one; without it the browser tests are skipped.
- Playwright, its browser type and the browser live for one test, not the session: the sync
  API runs an asyncio loop on the main thread while it is started, and every later
  ``asyncio.run()`` in the session would fail with "cannot be called from a running event loop".
  Its session-wide ``browser_context_args`` goes too (no ``--device``, ``--base-url`` or ``--video``).
- Every Playwright wait gives up after ``TIMEOUT_MS``.

``tests/conftest.py`` registers them.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import (
    Browser,
    BrowserType,
    ConsoleMessage,
    Error,
    Page,
    Playwright,
    expect,
    sync_playwright,
)

CHROMIUM = Path("/usr/bin/chromium")
TIMEOUT_MS = 5000
"""Milliseconds any Playwright wait may take: a page action, a navigation, an ``expect``."""

expect.set_options(timeout=TIMEOUT_MS)


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
def playwright() -> Iterator[Playwright]:
    """Started for one test and stopped after it (see the module's note)."""
    with sync_playwright() as started:
        yield started


@pytest.fixture
def browser_type(playwright: Playwright, browser_name: str) -> BrowserType:
    chosen: BrowserType = getattr(playwright, browser_name)
    return chosen


@pytest.fixture
def browser(browser_type: BrowserType, browser_type_launch_args: dict[str, object]) -> Iterator[Browser]:
    launched = browser_type.launch(**browser_type_launch_args)  # type: ignore[arg-type]
    yield launched
    launched.close()


@pytest.fixture
def browser_context_args() -> dict[str, object]:
    """Nothing by default (pytest-playwright's reads the session's Playwright for ``--device``):
    each test's context sets its own base URL."""
    return {}


@pytest.fixture(scope="session")
def base_url() -> None:
    """None: each test's own server is the base URL, set on its browser context.

    pytest-playwright's ``base_url`` (``--base-url``) is session-scoped, so it cannot be a
    per-test server; its own fixture also warns under pytest 9 (an instance method).
    """


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
