"""The playground in Chromium, against a real `llamactl serve` with the stand-in backend.

What a user does: pick a model, set the sampling, send with Ctrl+Enter and
watch the answer stream in with its time to first token and tokens a second;
stop an answer half-way (llamactl cancels the backend's request); ask two
models the same prompt side by side; use it with an inference key; see an
error in the answer's place.

The page sends OpenAI's fields only. The stand-in streams long and slowly when
its request carries ``chunks`` and ``chunk_delay``, so ``stream_slowly``
adds them to the page's request on its way out, and nothing else changes.
"""

from __future__ import annotations

import json
import re
import time
from typing import Any

from playwright.sync_api import Locator, Page, Request, Route, expect

from tests.ui.conftest import UiServer
from tests.ui.test_instances_page import sign_in

CHAT = "**/v1/chat/completions"
STATS = re.compile(r"TTFT \d+ ms\s*\d+\.\d tokens/s")


def stream_slowly(page: Page, chunks: dict[str, int], delay: float = 0.02) -> list[dict[str, Any]]:
    """Give the stand-in ``chunks[model]`` chunks ``delay`` s apart; returns the bodies the page sent."""
    sent: list[dict[str, Any]] = []

    def slow(route: Route, request: Request) -> None:
        body = json.loads(request.post_data or "{}")
        sent.append(body)
        slowed = {**body, "chunks": chunks[body["model"]], "chunk_delay": delay}
        route.continue_(post_data=json.dumps(slowed))

    page.route(CHAT, slow)
    return sent


def column(page: Page, label: str) -> Locator:
    return page.get_by_role("region", name=f"Conversation with {label}")


def answers(page: Page, label: str) -> Locator:
    return column(page, label).locator("li.pg-turn.assistant")


def expected(chunks: int) -> str:
    return "".join(f"t{index}" for index in range(chunks))


def open_playground(page: Page, key: str) -> None:
    sign_in(page, key)
    page.get_by_role("link", name="Playground").click()


def test_a_chat_streams_with_its_time_to_first_token_and_rate(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    ui_server.serve.create("tiny")
    sent = stream_slowly(page, {"tiny": 12})
    open_playground(page, ui_server.management_key)
    expect(page.get_by_label("Model")).to_have_value("tiny")
    page.get_by_label("System prompt").fill("You are terse.")
    page.get_by_label("Temperature").fill("0.2")
    page.get_by_label("Top P").fill("0.9")
    page.get_by_label("Max tokens").fill("64")
    page.get_by_label("Prompt", exact=True).fill("Say hi")
    page.get_by_label("Prompt", exact=True).press("Control+Enter")

    answer = answers(page, "tiny").first
    expect(answer.locator(".pg-answer")).to_have_text(expected(12))
    expect(answer).to_have_attribute("data-state", "done")
    expect(answer.locator(".pg-stats")).to_contain_text(STATS)
    expect(answer.locator(".pg-stats")).to_contain_text("12 tokens")  # the usage's count
    expect(page.get_by_label("Prompt", exact=True)).to_have_value("")
    assert sent == [
        {
            "model": "tiny",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Say hi"},
            ],
            "temperature": 0.2,
            "top_p": 0.9,
            "max_tokens": 64,
            "stream": True,
            "stream_options": {"include_usage": True},
        }
    ]
    # The conversation goes on: the next prompt carries the first exchange.
    page.get_by_label("Prompt", exact=True).fill("Again")
    page.get_by_role("button", name="Send").click()
    expect(answers(page, "tiny")).to_have_count(2)
    expect(answers(page, "tiny").nth(1)).to_have_attribute("data-state", "done")
    assert sent[1]["messages"] == [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Say hi"},
        {"role": "assistant", "content": expected(12)},
        {"role": "user", "content": "Again"},
    ]
    page.get_by_role("button", name="Clear").click()
    expect(answers(page, "tiny")).to_have_count(0)
    assert console_errors == []


def test_stop_ends_the_answer_half_way_and_llamactl_cancels_the_request(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    ui_server.serve.create("tiny")
    stream_slowly(page, {"tiny": 2000}, delay=0.05)
    open_playground(page, ui_server.management_key)
    page.get_by_label("Prompt", exact=True).fill("Tell me a long story")
    page.get_by_role("button", name="Send").click()
    answer = answers(page, "tiny").first
    expect(answer.locator(".pg-answer")).to_contain_text("t3")
    expect(answer).to_have_attribute("data-state", "streaming")
    page.get_by_role("button", name="Stop tiny").click()

    expect(answer).to_have_attribute("data-state", "stopped")
    expect(answer.locator(".pg-ending")).to_have_text("stopped")
    expect(answer.locator(".pg-stats")).to_contain_text(STATS)
    kept = answer.locator(".pg-answer").inner_text()
    assert kept.startswith(expected(4))
    expect(page.get_by_role("button", name="Stop tiny")).to_have_count(0)
    expect(page.get_by_label("Prompt", exact=True)).to_be_focused()
    # llamactl saw the client leave (499) and the backend's stream was cut off.
    client = ui_server.serve.client
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        records = client.get("/api/v1/activity").json()["activity"]
        if any(record["status"] == 499 for record in records):
            break
        time.sleep(0.1)
    [record] = [record for record in records if record["endpoint"] == "/v1/chat/completions"]
    assert (record["instance"], record["status"], record["key_name"]) == ("tiny", 499, "management")
    log = ""
    while "stream cancelled by the client" not in log and time.monotonic() < deadline:
        log = client.get("/api/v1/instances/tiny/logs?lines=50").text
        time.sleep(0.1)
    assert "stream cancelled by the client" in log
    assert answer.locator(".pg-answer").inner_text() == kept  # nothing more came
    assert console_errors == []


def test_two_models_answer_the_same_prompt_side_by_side(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    ui_server.serve.create("tiny")
    ui_server.serve.create("other")
    sent = stream_slowly(page, {"tiny": 2000, "other": 15})
    open_playground(page, ui_server.management_key)
    page.get_by_label("Model").select_option("tiny")
    page.get_by_label("Compare with").select_option("other")
    expect(column(page, "other")).to_be_visible()
    page.get_by_label("Prompt", exact=True).fill("Which is faster?")
    page.get_by_label("Prompt", exact=True).press("Control+Enter")

    # Both asked at once; "other" ends while "tiny" still streams, and each has its own Stop.
    expect(answers(page, "other").first.locator(".pg-answer")).to_have_text(expected(15))
    expect(answers(page, "other").first.locator(".pg-stats")).to_contain_text(STATS)
    expect(answers(page, "tiny").first).to_have_attribute("data-state", "streaming")
    expect(page.get_by_role("button", name="Stop other")).to_have_count(0)
    expect(page.get_by_role("button", name="Send")).to_be_disabled()  # until every answer ended
    page.get_by_role("button", name="Stop tiny").click()
    expect(answers(page, "tiny").first).to_have_attribute("data-state", "stopped")
    expect(answers(page, "tiny").first.locator(".pg-stats")).to_contain_text(STATS)
    assert sorted(body["model"] for body in sent) == ["other", "tiny"]
    assert [body["messages"] for body in sent] == [[{"role": "user", "content": "Which is faster?"}]] * 2

    # Each column keeps its own conversation.
    page.get_by_label("Prompt", exact=True).fill("And now?")
    page.get_by_role("button", name="Send").click()
    expect(answers(page, "other").nth(1)).to_have_attribute("data-state", "done")
    page.get_by_role("button", name="Stop tiny").click()
    by_model = {body["model"]: body["messages"] for body in sent[2:]}
    assert by_model["other"][1] == {"role": "assistant", "content": expected(15)}
    assert by_model["tiny"][1]["content"].startswith("t0")  # what came before the Stop
    page.get_by_role("button", name="Clear").click()
    expect(page.locator("li.pg-turn")).to_have_count(0)
    assert console_errors == []


def test_an_inference_key_chats_with_the_models_it_may_use(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    ui_server.serve.create("tiny")
    ui_server.serve.create("other")
    created = ui_server.serve.client.post(
        "/api/v1/auth/keys", json={"name": "app", "permission_mode": "per_instance", "instances": ["tiny"]}
    )
    assert created.status_code == 201, created.text
    open_playground(page, created.json()["key"])
    expect(page.locator(".live")).to_have_text("read-only")
    expect(page.get_by_label("Model").locator("option")).to_have_text(["tiny"])
    expect(page.get_by_label("Compare with").locator("option")).to_have_text(["No second model", "tiny"])
    page.get_by_label("Prompt", exact=True).fill("hi")
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    answer = answers(page, "tiny").first
    expect(answer.locator(".pg-answer")).to_have_text(expected(5))
    expect(answer.locator(".pg-stats")).to_contain_text("5 tokens")
    [record] = ui_server.serve.client.get("/api/v1/activity").json()["activity"]
    assert (record["key_name"], record["status"]) == ("app", 200)
    # The sign-in's probe of /api/v1 is refused for an inference key; nothing else went wrong.
    assert [error for error in console_errors if "status of 401" not in error] == []


def test_errors_are_shown_in_the_answers_place(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    ui_server.serve.create("crashy", faults="crash_mid_stream")
    ui_server.serve.create("gone")
    open_playground(page, ui_server.management_key)
    page.get_by_label("Model").select_option("crashy")
    page.get_by_label("Compare with").select_option("gone")
    assert ui_server.serve.client.post("/api/v1/instances/gone/stop").status_code == 200
    assert ui_server.serve.client.delete("/api/v1/instances/gone").status_code == 204
    page.get_by_label("Prompt", exact=True).fill("hi")
    page.get_by_role("button", name="Send").click()

    # The backend died after two chunks: llamactl ended the stream with an error event.
    crashed = answers(page, "crashy").first
    expect(crashed).to_have_attribute("data-state", "error")
    expect(crashed.locator(".pg-answer")).to_have_text("t0t1")
    expect(crashed.get_by_role("alert")).to_contain_text("the backend")
    # An HTTP error, in OpenAI's shape, says what llamactl said.
    missing = answers(page, "gone").first
    expect(missing).to_have_attribute("data-state", "error")
    expect(missing.get_by_role("alert")).to_contain_text("gone")
    expect(missing.locator(".pg-stats")).to_have_count(0)
    assert [error for error in console_errors if "status of 404" not in error] == []


def test_reasoning_is_shown_apart_and_model_output_stays_text(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    """A reasoning model's stream, answered by the test: thinking, then HTML-looking words."""
    ui_server.serve.create("tiny")

    def event(delta: dict[str, str], **more: str) -> str:
        return f"data: {json.dumps({**more, 'choices': [{'index': 0, 'delta': delta}]})}\n\n"

    hostile = "<img src=x onerror=alert(1)> **bold**"
    usage = {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 9}}
    body = (
        event({"role": "assistant"})
        # llamactl's progress while an instance starts (send_loading_state): a note, not the model's
        + event({"reasoning_content": "llamactl: starting tiny (1 s)\n"}, id="llamactl-loading")
        + event({"reasoning_content": "Let me think."})
        + event({"reasoning_content": " Done."})
        + event({"content": hostile})
        + f"data: {json.dumps(usage)}\n\ndata: [DONE]\n\n"
    )
    page.route(CHAT, lambda route: route.fulfill(status=200, content_type="text/event-stream", body=body))
    open_playground(page, ui_server.management_key)
    page.get_by_label("Prompt", exact=True).fill("think")
    page.get_by_label("Prompt", exact=True).press("Control+Enter")
    answer = answers(page, "tiny").first
    expect(answer.locator(".pg-answer")).to_have_text(hostile)
    expect(answer.locator(".pg-reasoning .pg-text")).to_have_text("Let me think. Done.")
    expect(answer.locator(".pg-stats")).to_contain_text("9 tokens")
    assert page.locator(".playground img").count() == 0
    assert console_errors == []
