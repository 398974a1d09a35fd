"""Every page of the web UI, checked by axe-core in Chromium: no serious or critical violation.

axe is injected as a script, which the UI's CSP forbids, so these pages run in a
context that bypasses the CSP; every other browser test keeps it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import pytest
from playwright.sync_api import Page, expect
from pytest_playwright import CreateContextCallback

from tests.browser import TIMEOUT_MS
from tests.ui.conftest import UiServer
from tests.ui.test_instances_page import sign_in

AXE = Path(__file__).parent / "vendor" / "axe.min.js"
PAGES = ["instances", "create", "logs/checked", "models", "playground", "keys", "system"]


def violations(page: Page) -> list[dict[str, Any]]:
    page.add_script_tag(path=str(AXE))
    found: list[dict[str, Any]] = page.evaluate(
        """async () => (await axe.run(document, { resultTypes: ['violations'] })).violations
            .filter((v) => v.impact === 'serious' || v.impact === 'critical')
            .map((v) => ({ id: v.id, impact: v.impact, help: v.help,
                           nodes: v.nodes.slice(0, 3).map((n) => n.target.join(' ')) }))"""
    )
    return found


@pytest.fixture
def axe_page(new_context: CreateContextCallback, ui_server: UiServer) -> Page:
    context = new_context(base_url=ui_server.base_url, bypass_csp=True)
    context.set_default_timeout(TIMEOUT_MS)
    return context.new_page()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_no_page_has_a_serious_accessibility_violation(
    axe_page: Page, ui_server: UiServer, scheme: Literal["light", "dark"]
) -> None:
    page = axe_page
    page.emulate_media(color_scheme=scheme)  # contrast is checked in both themes
    ui_server.serve.create("checked")
    page.goto("/")
    expect(page.get_by_label("API key")).to_be_visible()
    found = {"sign-in": violations(page)}
    sign_in(page, ui_server.management_key)
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    for view in PAGES:
        page.goto(f"/#/{view}")
        page.wait_for_load_state()
        expect(page.locator("main")).not_to_be_empty()
        if view == "create":
            page.get_by_label("Command").fill("llama-server -m /m/tiny.gguf -c 512")
            page.get_by_role("button", name="Parse").click()
            expect(page.get_by_role("button", name="Create")).to_be_visible()
        found[view] = violations(page)
    assert {view: problems for view, problems in found.items() if problems} == {}
