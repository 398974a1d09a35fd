"""The web UI's instance flows in Chromium, against a real `llamactl serve` with the stand-in backend.

What a user does: sign in, paste a command and create from it, start and stop,
watch a change made elsewhere appear without a reload, read the log live,
see a validation error beside its field, delete.
"""

from __future__ import annotations

import re
from pathlib import Path

from playwright.sync_api import Locator, Page, Route, expect

from tests.serve_process import MANAGEMENT_KEY, serve_process, standin_backends
from tests.ui.conftest import UiServer

STATUS = "td span.status"


def sign_in(page: Page, key: str) -> None:
    page.goto("/")
    page.get_by_label("API key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def row(page: Page, name: str) -> Locator:
    return page.locator(f'tr[data-instance="{name}"]')


def test_a_refused_key_says_so_and_the_right_one_signs_in_for_this_tab_only(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    sign_in(page, "not-a-key")
    expect(page.get_by_role("alert")).to_have_text("llamactl refused this key")
    page.get_by_label("API key").fill(ui_server.management_key)
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("No instances yet.")).to_be_visible()
    expect(page.locator(".live")).to_have_text("live")
    assert ui_server.management_key not in page.url
    assert page.evaluate("sessionStorage.getItem('llamactl.key')") == ui_server.management_key
    assert page.evaluate("document.cookie") == ""
    page.reload()  # the tab keeps its session
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_label("API key")).to_be_visible()
    assert page.evaluate("sessionStorage.getItem('llamactl.key')") is None
    # Chromium logs the refused sign-in's two 401s; nothing else went wrong.
    assert [error for error in console_errors if "status of 401" not in error] == []


def test_a_pasted_command_becomes_an_instance_that_starts_and_stops_without_a_reload(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    sign_in(page, ui_server.management_key)
    page.get_by_role("link", name="Create", exact=True).click()
    page.get_by_label("Command").fill("llama-server -m /m/tiny.gguf --alias tiny -c 2048")
    page.get_by_role("button", name="Parse").click()
    expect(page.get_by_role("textbox", name="ctx_size --ctx-size, -c")).to_have_value("2048")
    expect(page.locator("#option-ctx_size-help")).to_contain_text("size of the prompt context")
    page.get_by_label("Name", exact=True).fill("pasted")
    page.get_by_label("Environment").fill(f"STANDIN_PIDS={ui_server.serve.pids}")
    page.get_by_role("button", name="Create").click()

    expect(row(page, "pasted").locator(STATUS)).to_have_text("stopped")
    created = ui_server.serve.client.get("/api/v1/instances/pasted").json()["options"]
    assert created["backend_options"] == {"model": "/m/tiny.gguf", "alias": "tiny", "ctx_size": 2048}
    row(page, "pasted").get_by_role("button", name="Start pasted").click()
    expect(row(page, "pasted").locator(STATUS)).to_have_text("running")
    expect(row(page, "pasted").locator("td.port")).to_have_text(re.compile(r"^\d+$"))  # its port
    expect(row(page, "pasted").locator("td.uptime")).to_have_text(re.compile(r"^\d+ s$"))

    # A change made elsewhere arrives through the events stream.
    ui_server.serve.create("elsewhere")
    expect(row(page, "elsewhere").locator(STATUS)).to_have_text("running")
    assert ui_server.serve.client.post("/api/v1/instances/elsewhere/stop").status_code == 200
    expect(row(page, "elsewhere").locator(STATUS)).to_have_text("stopped")

    row(page, "pasted").get_by_role("button", name="Stop pasted").click()
    expect(row(page, "pasted").locator(STATUS)).to_have_text("stopped")
    page.once("dialog", lambda dialog: dialog.accept())
    row(page, "pasted").get_by_role("button", name="Delete pasted").click()
    expect(row(page, "pasted")).to_have_count(0)
    assert ui_server.serve.client.get("/api/v1/instances/pasted").status_code == 404
    assert console_errors == []


def test_a_validation_error_from_llamactl_lands_beside_the_field_it_names(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    sign_in(page, ui_server.management_key)
    page.goto("/#/create")
    page.get_by_label("Command").fill("llama-server -m /m/tiny.gguf")
    page.get_by_role("button", name="Parse").click()
    page.get_by_label("Add an option").fill("port")
    page.get_by_role("button", name=re.compile(r"^port --port")).click()
    page.get_by_role("textbox", name="port --port").fill("70000")
    page.get_by_label("Name", exact=True).fill("wrong-port")
    page.get_by_role("button", name="Create").click()
    field = page.locator(".field.invalid")
    expect(field).to_have_count(1)
    expect(field.locator("label")).to_contain_text("port")
    expect(field.get_by_role("alert")).to_have_text("option port: Expected `int` <= 65535")
    assert ui_server.serve.client.get("/api/v1/instances/wrong-port").status_code == 404
    # A command llamactl cannot parse is refused on the command itself.
    page.goto("/#/create")
    page.get_by_label("Command").fill("llama-server ---model x.gguf")
    page.get_by_role("button", name="Parse").click()
    expect(page.locator("#command-error")).to_contain_text("---model")
    assert [error for error in console_errors if "status of 400" not in error] == []


def test_what_is_typed_while_the_sign_in_still_loads_is_kept(page: Page, ui_server: UiServer) -> None:
    """A slow instance list must not reset a form the user already opened and typed into."""
    held: list[Route] = []

    def hold(route: Route) -> None:  # the list waits until the form is filled
        held.append(route)

    page.route("**/api/v1/instances", hold)
    sign_in(page, ui_server.management_key)
    page.goto("/#/create")
    page.get_by_label("Command").fill("llama-server -m /m/tiny.gguf")
    assert len(held) == 1
    with page.expect_response("**/api/v1/instances"):
        held[0].continue_()
    page.wait_for_timeout(300)  # the list is applied within milliseconds of its answer
    expect(page.get_by_label("Command")).to_have_value("llama-server -m /m/tiny.gguf")


def test_a_page_opened_before_the_key_is_checked_asks_nothing_without_it(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    held: list[Route] = []

    def hold(route: Route) -> None:  # the key's check waits until the user has moved on
        held.append(route)

    page.route("**/api/v1/version", hold)
    sign_in(page, ui_server.management_key)
    page.goto("/#/create")
    assert len(held) == 1
    held[0].continue_()
    expect(page.get_by_label("Command")).to_be_visible()
    expect(page.get_by_text("Add an option")).to_have_count(0)  # nothing parsed yet
    assert console_errors == []  # no request went out without the key (a 401)


def test_the_flag_search_finds_options_by_a_part_of_their_name(page: Page, ui_server: UiServer) -> None:
    sign_in(page, ui_server.management_key)
    page.goto("/#/create")
    page.get_by_label("Command").fill("llama-server -m /m/tiny.gguf")
    page.get_by_role("button", name="Parse").click()
    page.get_by_label("Add an option").fill("ctx")
    found = page.get_by_role("list", name="Matching options").get_by_role("button")
    expect(found.first).to_contain_text("ctx_size")
    page.get_by_label("Add an option").fill("ctx-size")
    expect(found.first).to_contain_text("ctx_size")
    page.get_by_label("Add an option").fill("no such flag at all")
    expect(page.get_by_text("No option matches no such flag at all.")).to_be_visible()


def test_the_log_is_followed_live_as_text_with_colour_codes_stripped(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    hostile = "<img src=x onerror=alert(1)>\x1b[31mred\x1b[0m"
    body = {
        "backend_type": "llama_cpp",
        "backend_options": {"model": "/m/tiny.gguf", "alias": hostile},
        "environment": {"STANDIN_PIDS": str(ui_server.serve.pids)},
    }
    client = ui_server.serve.client
    assert client.post("/api/v1/instances/noisy", json=body).status_code == 201
    assert client.post("/api/v1/instances/noisy/start").status_code == 200
    sign_in(page, ui_server.management_key)
    row(page, "noisy").get_by_role("link", name="Logs of noisy").click()
    log = page.get_by_label("Log of noisy")
    # The stand-in says what it listens as: the alias, shown as the characters it is.
    expect(log).to_contain_text("as <img src=x onerror=alert(1)>red")
    assert page.locator("pre.log img").count() == 0
    assert client.post("/api/v1/instances/noisy/restart").status_code == 200
    expect(log).to_contain_text(re.compile(r"listening.*=== llamactl: .*listening", re.DOTALL))  # live
    page.get_by_label("Search").fill("=== llamactl")
    expect(log).not_to_contain_text("standin: listening")
    page.get_by_role("button", name="Pause").click()
    assert client.post("/api/v1/instances/noisy/restart").status_code == 200
    expect(page.get_by_role("button", name=re.compile(r"Resume \([1-9]\d* new\)"))).to_be_visible()
    assert client.post("/api/v1/instances/noisy/stop").status_code == 200
    assert console_errors == []


def test_the_pure_modules_in_the_browser(page: Page, ui_server: UiServer) -> None:
    """The SSE parser across chunk boundaries, the flag search and the ANSI stripper."""
    page.goto("/api/v1/docs")  # any page of the origin: the modules load from /ui/
    results = page.evaluate(
        """async () => {
          const { SseParser } = await import('/ui/sse.js');
          const { searchFlags, stripAnsi, applyEvent, uptime } = await import('/ui/format.js');
          const parser = new SseParser();
          const events = [
            ...parser.feed(': comment\\nid: 7\\nevent: status\\ndata: {"a"'),
            ...parser.feed(':1}\\r'),
            ...parser.feed('\\ndata: more\\r\\n\\r\\nid: 8\\ndata: x\\n'),
            ...parser.feed('\\n'),
          ];
          const flags = [
            { key: 'threads', spellings: ['--threads', '-t'], help: 'CPU threads' },
            { key: 'ctx_size', spellings: ['--ctx-size', '-c'], help: 'context' },
          ];
          const one = new Map([['a', { name: 'a', status: 'stopped', queued: 0 }]]);
          return {
            events,
            lastId: parser.lastId,
            ctx: searchFlags(flags, 'ctx').map((f) => f.key),
            dashed: searchFlags(flags, '--ctx-size').map((f) => f.key),
            byHelp: searchFlags(flags, 'cpu').map((f) => f.key),
            up: [uptime(null), uptime(100, 145000), uptime(0, 3900000), uptime(0, 200000000)],
            ansi: stripAnsi('\\x1b[1;31mred\\x1b[0m \\x1b]0;title\\x07done'),
            status: applyEvent(one, { kind: 'status', instance: 'a', status: 'running' })
              .instances.get('a').status,
            unknown: applyEvent(one, { kind: 'status', instance: 'b', status: 'stopped' }).fetch,
            deleted: applyEvent(one, { kind: 'status', instance: 'a', status: 'deleted' }).instances.size,
          };
        }"""
    )
    assert results["events"] == [
        {"id": "7", "event": "status", "data": '{"a":1}\nmore'},
        {"id": "8", "event": "message", "data": "x"},
    ]
    assert results["lastId"] == "8"
    assert (results["ctx"], results["dashed"], results["byHelp"]) == (["ctx_size"], ["ctx_size"], ["threads"])
    assert results["ansi"] == "red done"
    assert results["up"] == ["\u2013", "45 s", "1 h 5 min", "2 d 7 h"]
    assert (results["status"], results["unknown"], results["deleted"]) == ("running", True, 0)


def test_a_declared_instance_is_marked_and_its_edit_points_to_the_config_file(
    page: Page, tmp_path: Path, console_errors: list[str]
) -> None:
    tail = standin_backends() + "models:\n  declared:\n    command: llama-server -m /m/d.gguf\n"
    (tmp_path / "declared").mkdir()
    with serve_process(tmp_path / "declared", tail) as running:
        page.goto(running.base_url + "/")
        page.get_by_label("API key").fill(MANAGEMENT_KEY)
        page.get_by_role("button", name="Sign in").click()
        declared = row(page, "declared")
        expect(declared.get_by_title("Declared in the config file")).to_have_text("config")
        expect(declared.get_by_role("button", name="Delete declared")).to_have_count(0)
        declared.get_by_role("link", name="Edit declared").click()
        expect(page.get_by_role("status")).to_contain_text("declared in the config file")
        expect(page.get_by_role("status")).to_contain_text("models.declared")
        expect(page.get_by_role("button", name="Save")).to_have_count(0)
        page.close()
    assert console_errors == []
