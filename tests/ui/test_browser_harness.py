"""The harness itself: Chromium shows a page of a real `llamactl serve`, without a console error."""

from __future__ import annotations

from playwright.sync_api import Page, expect


def test_chromium_shows_the_api_docs_page(page: Page, console_errors: list[str]) -> None:
    page.goto("/api/v1/docs")
    expect(page).to_have_title("llamactl API")
    expect(page.get_by_role("heading", name="llamactl API")).to_be_visible()
    expect(page.get_by_role("cell", name="/api/v1/docs", exact=True)).to_be_visible()
    page.wait_for_load_state("load")
    assert console_errors == []
