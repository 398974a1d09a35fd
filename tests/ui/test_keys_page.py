"""The web UI's keys page in Chromium, against a real `llamactl serve` with the stand-in backend.

What a user does: create an inference key for one instance, see it once and
copy it, use it (it reaches that instance and no other, and signs in to a
read-only view), revoke it; see llamactl's validation errors beside their
fields; and find the key gone from the page once the page is left.
"""

from __future__ import annotations

import re
from typing import Any

import httpx
from playwright.sync_api import BrowserContext, Locator, Page, expect
from pytest_playwright import CreateContextCallback

from tests.browser import TIMEOUT_MS
from tests.ui.conftest import UiServer
from tests.ui.test_instances_page import sign_in

ANY_TIME = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d$")
"""How the page shows an instant: local time to the minute."""


def chat(model: str) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": "hi"}]}


def chat_status(ui_server: UiServer, key: str, model: str) -> int:
    headers = {"Authorization": f"Bearer {key}"}
    answer = httpx.post(
        f"{ui_server.base_url}/v1/chat/completions", json=chat(model), headers=headers, timeout=10
    )
    return answer.status_code


def key_row(page: Page, name: str) -> Locator:
    return page.locator("table.keys tbody tr").filter(
        has=page.get_by_role("rowheader", name=name, exact=True)
    )


def open_keys(page: Page, key: str) -> None:
    sign_in(page, key)
    page.get_by_role("link", name="Keys").click()
    expect(page.get_by_role("heading", name="Keys")).to_be_visible()


def create_for(page: Page, name: str, *instances: str) -> None:
    page.get_by_label("Name", exact=True).fill(name)
    if instances:
        page.get_by_label("Only the chosen instances").check()
        for instance in instances:
            page.get_by_role("list", name="Chosen instances").get_by_label(instance, exact=True).check()
    page.get_by_role("button", name="Create key").click()


def test_a_key_for_one_instance_is_shown_once_copied_used_and_revoked(
    page: Page,
    context: BrowserContext,
    new_context: CreateContextCallback,
    ui_server: UiServer,
    console_errors: list[str],
) -> None:
    ui_server.serve.create("alpha")
    ui_server.serve.create("beta")
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=ui_server.base_url)
    open_keys(page, ui_server.management_key)
    expect(page.get_by_text("No inference keys yet.")).to_be_visible()

    create_for(page, "notebook", "alpha")
    shown = page.get_by_role("region", name="The key notebook")
    expect(shown).to_contain_text("it will not be shown again")
    key = page.get_by_label("New key").input_value()
    assert key.startswith("llamactl-")
    shown.get_by_role("button", name="Copy").click()
    expect(shown.get_by_role("status")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == key
    row = key_row(page, "notebook")
    expect(row.locator("td")).to_have_text(
        ["chosen instances", "alpha", ANY_TIME, "never", "never", "Revoke"]
    )
    listed = ui_server.serve.client.get("/api/v1/auth/keys").json()
    assert [(each["name"], each["instances"], "key" in each) for each in listed] == [
        ("notebook", ["alpha"], False)
    ]
    expect(page.get_by_label("Name", exact=True)).to_have_value("")  # the form is ready for another

    # The key reaches the instance it was made for, and no other.
    assert chat_status(ui_server, key, "alpha") == 200
    assert chat_status(ui_server, key, "beta") == 403

    # Signed in with it elsewhere, it gets the read-only view of what it may use.
    reader = new_context(base_url=ui_server.base_url).new_page()
    reader.set_default_timeout(TIMEOUT_MS)
    sign_in(reader, key)
    models = reader.get_by_role("table", name="Models this key may use")
    expect(models.locator("tbody tr td").first).to_have_text("alpha")
    expect(models.locator("tbody tr")).to_have_count(1)
    navigation = reader.get_by_role("navigation", name="Main")
    expect(navigation.get_by_role("link", name="Playground")).to_be_visible()
    expect(navigation.get_by_role("link", name="Create")).to_have_count(0)
    expect(navigation.get_by_role("link", name="Keys")).to_have_count(0)
    reader.context.close()

    # A reload forgets the key; the list now says when it was last used.
    page.reload()
    expect(key_row(page, "notebook").locator("td").nth(3)).to_have_text(ANY_TIME)
    expect(page.get_by_label("New key")).to_have_count(0)
    assert key not in page.content()

    page.once("dialog", lambda dialog: dialog.accept())
    key_row(page, "notebook").get_by_role("button", name="Revoke notebook").click()
    expect(key_row(page, "notebook")).to_have_count(0)
    expect(page.get_by_text("No inference keys yet.")).to_be_visible()
    assert chat_status(ui_server, key, "alpha") == 401
    assert console_errors == []


def test_llamactl_s_validation_errors_land_beside_the_fields_they_name(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    ui_server.serve.create("alpha", start=False)
    open_keys(page, ui_server.management_key)
    create_for(page, "   ")
    invalid = page.locator(".field.invalid")
    expect(invalid).to_have_count(1)
    expect(invalid.locator("label")).to_have_text("Name")
    expect(invalid.get_by_role("alert")).to_have_text("name: must not be empty")
    expect(page.get_by_label("Name", exact=True)).to_have_accessible_description(
        "Who or what will use it, e.g. notebook name: must not be empty"
    )

    # A per-instance key with no instance chosen: the error is on the list of them.
    page.get_by_label("Name", exact=True).fill("nothing-chosen")
    page.get_by_label("Only the chosen instances").check()
    page.get_by_role("button", name="Create key").click()
    choice = page.get_by_role("group", name="Instances it may use")
    expect(choice.get_by_role("alert")).to_have_text(
        "instances: a per_instance key needs at least one instance"
    )
    expect(page.locator(".field.invalid")).to_have_count(0)

    # An expiry in the past, beside the expiry.
    page.get_by_role("list", name="Chosen instances").get_by_label("alpha").check()
    page.get_by_label("Expires (optional)").fill("2020-01-01T12:00")
    page.get_by_role("button", name="Create key").click()
    expect(page.locator(".field.invalid label")).to_have_text("Expires (optional)")
    expect(page.locator("#key-expires-error")).to_have_text(
        "expires_at: must be in the future (unix seconds)"
    )
    expect(choice.get_by_role("alert")).to_have_count(0)

    assert ui_server.serve.client.get("/api/v1/auth/keys").json() == []
    expect(page.get_by_text("No inference keys yet.")).to_be_visible()
    assert [error for error in console_errors if "status of 400" not in error] == []


def test_a_refused_clipboard_says_so_and_leaving_the_page_forgets_the_key(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    page.add_init_script(
        """Object.defineProperty(navigator.clipboard, 'writeText', {
             value: () => Promise.reject(new DOMException('Write permission denied.', 'NotAllowedError')),
           });"""
    )
    hostile = "<img src=x onerror=alert(1)>"
    open_keys(page, ui_server.management_key)
    page.get_by_label("Expires (optional)").fill("2099-06-30T18:45")
    create_for(page, hostile)
    shown = page.get_by_role("region", name=f"The key {hostile}")
    key = shown.get_by_label("New key").input_value()
    shown.get_by_role("button", name="Copy").click()
    expect(shown.get_by_role("alert")).to_have_text(
        "Could not copy the key (Write permission denied.): select it and copy it by hand."
    )
    expect(shown.get_by_role("status")).to_have_text("")
    # The name is shown as the characters it is, and an all-instances key lists no instances.
    expect(key_row(page, hostile).locator("td")).to_have_text(
        ["all instances", "all", ANY_TIME, "never", "2099-06-30 18:45", "Revoke"]
    )
    assert page.locator("main img").count() == 0
    info = ui_server.serve.client.get("/api/v1/auth/keys").json()[0]
    assert (info["permission_mode"], info["expires_at"]) == (
        "allow_all",
        page.evaluate("new Date('2099-06-30T18:45').getTime() / 1000"),
    )

    page.get_by_role("link", name="Instances").click()
    expect(page.get_by_text("No instances yet.")).to_be_visible()
    page.get_by_role("link", name="Keys").click()
    expect(key_row(page, hostile)).to_have_count(1)
    expect(page.get_by_label("New key")).to_have_count(0)
    assert key not in page.content()
    assert page.evaluate("JSON.stringify(sessionStorage)").count("llamactl-") == 0
    assert console_errors == []
