"""Fixtures for the whole suite: the browser tests' (tests/browser.py)."""

from tests.browser import (  # noqa: F401  (registered as fixtures by being here)
    base_url,
    browser,
    browser_context_args,
    browser_type,
    browser_type_launch_args,
    console_errors,
    playwright,
)
