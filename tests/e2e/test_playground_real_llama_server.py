"""The playground in Chromium against the real llama-server: stream a chat, stop one half-way,
see the time to first token and the tokens a second.

The tiny random-weight model says its end-of-text within a few tokens, so the
instance runs with ``--ignore-eos``: every answer is ``max_tokens`` long. On
two cores it writes about a thousand tokens a second, so an answer of 3000
tokens is still being written when Stop lands.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import BrowserContext, Page, expect
from pytest_playwright import CreateContextCallback

# The browser harness of tests/ui (Debian's Chromium, no session-wide base URL), shared as it is.
from tests.browser import TIMEOUT_MS
from tests.e2e.test_serve_real_backends import Server, real_server, remember_group
from tests.e2e.tiny_models import write_tiny_gguf
from tests.serve_process import MANAGEMENT_KEY
from tests.ui.test_instances_page import sign_in

CONTEXT = 4096
"""Tokens of the model's context: write_tiny_gguf's 512 would end the long answer early, since
llama-server holds ``-c`` to the context the model was made with."""
LONG_ANSWER = 3000
STATS = re.compile(r"TTFT \d+(\.\d+)? m?s\s*\d+\.\d tokens/s")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """`llamactl serve` over the real backends, with a running llama-server instance "tiny"."""
    with real_server(tmp_path_factory.mktemp("serve")) as running:
        model = tmp_path_factory.mktemp("gguf") / "tiny.gguf"
        write_tiny_gguf(model, context=CONTEXT)
        command = f"llama-server -m {model} --alias tiny -c {CONTEXT} -np 1 -t 2 --ignore-eos"
        running.paste("tiny", "llama-cpp", command)
        started = running.api.post("/api/v1/instances/tiny/start")
        assert started.status_code == 200, started.text
        remember_group(running, "tiny")
        yield running


@pytest.fixture
def context(server: Server, new_context: CreateContextCallback) -> BrowserContext:
    """A browser context on ``server``; made after it, so it closes before llamactl stops."""
    browser_context = new_context(base_url=server.base_url)
    browser_context.set_default_timeout(TIMEOUT_MS)
    browser_context.set_default_navigation_timeout(TIMEOUT_MS)
    return browser_context


def test_the_playground_streams_stops_and_times_a_real_llama_server(page: Page, server: Server) -> None:
    errors: list[str] = []
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: errors.append(f"uncaught: {error.message}"))
    sign_in(page, MANAGEMENT_KEY)
    page.get_by_role("link", name="Playground").click()
    expect(page.get_by_label("Model")).to_have_value("tiny")
    conversation = page.get_by_role("region", name="Conversation with tiny")
    answers = conversation.locator("li.pg-turn.assistant")

    # A whole answer: streamed to its max_tokens, with its timings.
    page.get_by_label("Max tokens").fill("64")
    page.get_by_label("Prompt", exact=True).fill("hi")
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    expect(answers.first).to_have_attribute("data-state", "done")
    expect(answers.first.locator(".pg-stats")).to_contain_text(STATS)
    expect(answers.first.locator(".pg-stats")).to_contain_text("64 tokens")  # llama-server's usage
    expect(answers.first.locator(".pg-ending")).to_have_text("max_tokens reached")
    assert answers.first.locator(".pg-answer").inner_text()

    # A long one, stopped as soon as its first words are in.
    page.get_by_label("Max tokens").fill(str(LONG_ANSWER))
    page.get_by_label("Prompt", exact=True).fill("tell me more")
    page.get_by_role("button", name="Send").click()
    expect(answers.nth(1)).to_have_attribute("data-state", "streaming")
    page.get_by_role("button", name="Stop tiny").click()
    expect(answers.nth(1)).to_have_attribute("data-state", "stopped")
    expect(answers.nth(1).locator(".pg-stats")).to_contain_text(STATS)
    tokens = int(answers.nth(1).locator(".pg-tokens").inner_text().split()[0])
    assert 1 < tokens < LONG_ANSWER
    assert answers.nth(1).locator(".pg-answer").inner_text()  # what came is kept

    # llamactl saw the client leave, and llama-server stopped writing: its one slot is idle at once,
    # not busy for the seconds the thousands of tokens left would take.
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        records = server.api.get("/api/v1/activity?instance=tiny").json()["activity"]
        if records[-1]["status"] == 499:
            break
        time.sleep(0.1)
    assert [record["status"] for record in records] == [200, 499]
    idle_by = time.monotonic() + 1
    while server.api.get("/llama-cpp/tiny/slots").json()[0]["is_processing"]:
        assert time.monotonic() < idle_by, "llama-server still writes the stopped answer"
        time.sleep(0.05)

    # The conversation goes on, the stopped answer in it.
    page.get_by_label("Max tokens").fill("16")
    page.get_by_label("Prompt", exact=True).fill("and now?")
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    expect(answers.nth(2)).to_have_attribute("data-state", "done")
    expect(answers.nth(2).locator(".pg-stats")).to_contain_text("16 tokens")
    assert errors == []
