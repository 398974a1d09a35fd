"""The web UI's models page in Chromium, against a real `llamactl serve` and a local stand-in hub.

What a user does: read the catalogue and filter it, make an instance of a
model and start it, download a model and watch its progress until it joins
the catalogue, delete it, and meet each refusal beside the field it names.
Nothing leaves the machine: the models are GGUF headers written here, the hub
is tests/models/standin_hub.py, and the stores of the real home dir are
never scanned (HOME, the hub cache and Ollama point into the test's dir).
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Dialog, Locator, Page, Request, expect

from tests.models.gguf_files import LlamaShape, write_llama_gguf
from tests.models.standin_hub import StandinHub
from tests.serve_process import MANAGEMENT_KEY, serve_process, standin_backends
from tests.ui.conftest import UiServer
from tests.ui.test_instances_page import STATUS, row, sign_in

TINY = "path:models/llama:tiny-llama-Q8_0"
OTHER = "path:models:other"
BIG_REPO = "org/big-GGUF"
BIG = f"hf:{BIG_REPO}:big-Q8_0"
BIG_SHAPE = LlamaShape(embedding=1024, feed_forward=2816, heads=16, kv_heads=4, layers=1, name="Big Llama")
"""About 22 MiB: huggingface_hub reports progress every 10 MiB, so the bar moves twice before the end."""
HUB_BYTES_PER_SECOND = 5 * 1024 * 1024
"""The whole download takes over 4 s, its middle about 2 s: two polls of the jobs at least."""
DOWNLOAD_DEADLINE_MS = 15_000


@pytest.fixture
def hub() -> Iterator[StandinHub]:
    with StandinHub() as running:
        yield running


@pytest.fixture
def ui_server(tmp_path: Path, hub: StandinHub) -> Iterator[UiServer]:
    """`llamactl serve` whose catalogue is two GGUF files in a named dir and the test's own hub cache."""
    models = tmp_path / "models"
    (models / "llama").mkdir(parents=True)
    write_llama_gguf(
        models / "llama" / "tiny-llama-Q8_0.gguf", LlamaShape(name="Tiny Llama", file_type=7, context=4096)
    )
    write_llama_gguf(models / "other.gguf", LlamaShape(name="Other", context=8192))
    home = tmp_path / "home"
    home.mkdir()
    environment = {
        "HOME": str(home),
        "HF_HUB_CACHE": str(tmp_path / "hub-cache"),
        "HF_ENDPOINT": hub.url,
        "HF_HUB_DISABLE_XET": "1",
        "OLLAMA_MODELS": str(tmp_path / "no-ollama"),
        "STANDIN_PIDS": str(tmp_path / "pids"),  # the instances made in the page are checked on exit too
    }
    tail = standin_backends() + f"discovery: {{paths: [{models}], ollama: false, lmstudio: false}}\n"
    with serve_process(tmp_path, tail, environment=environment) as running:
        yield UiServer(base_url=running.base_url, management_key=MANAGEMENT_KEY, serve=running)


def open_models(page: Page, ui_server: UiServer) -> None:
    sign_in(page, ui_server.management_key)
    page.get_by_role("link", name="Models").click()


def model_row(page: Page, model_id: str) -> Locator:
    return page.locator(f'tr[data-model="{model_id}"]')


def shown_bytes(page: Page, value: int) -> str:
    """``value`` as the page shows bytes (format.js), so the test does not repeat the rounding."""
    text: str = page.evaluate("async (value) => (await import('/ui/format.js')).bytes(value)", value)
    return text


def unexpected(errors: list[str], *statuses: int) -> list[str]:
    """The console errors besides Chromium's note of each refused request with one of ``statuses``."""
    return [error for error in errors if not any(f"status of {status}" in error for status in statuses)]


def test_the_catalogue_lists_each_model_with_its_facts_and_the_filter_narrows_it(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    open_models(page, ui_server)
    table = page.get_by_role("table", name="2 models")
    expect(table.get_by_role("row")).to_have_count(3)  # the head and two models
    facts = {entry["id"]: entry for entry in ui_server.serve.client.get("/api/v1/models").json()}
    tiny = facts[TINY]
    cells = model_row(page, TINY).get_by_role("cell")
    expect(model_row(page, TINY).get_by_role("rowheader")).to_have_text(f"Tiny Llama{TINY}")
    expect(cells).to_have_text(
        [
            "gguf",
            "llama",
            "86K",
            "Q8_0",
            "4096",
            shown_bytes(page, tiny["size_bytes"]),
            shown_bytes(page, tiny["estimated_bytes"]),
            "directory",
            re.compile("Create instance"),
        ]
    )
    assert tiny["estimated_bytes"] > tiny["size_bytes"] > 0
    expect(model_row(page, OTHER).get_by_role("cell").nth(3)).to_have_text("F16")
    expect(model_row(page, OTHER).get_by_role("cell").nth(4)).to_have_text("8192")
    # Nothing on disk of a named dir is the page's to delete.
    expect(page.get_by_role("button", name=re.compile("^Delete"))).to_have_count(0)

    page.get_by_label("Filter").fill("LLAMA")  # any case, on the id, the repo and the name
    expect(page.get_by_role("table", name="1 of 2 models")).to_be_visible()
    expect(model_row(page, TINY)).to_be_visible()
    expect(model_row(page, OTHER)).to_have_count(0)
    page.get_by_label("Filter").fill("models:oth")
    expect(model_row(page, OTHER)).to_be_visible()
    expect(model_row(page, TINY)).to_have_count(0)
    page.get_by_label("Filter").fill("no such model")
    expect(page.get_by_text("No model matches no such model.")).to_be_visible()
    page.get_by_label("Filter").fill("")
    expect(page.get_by_role("table", name="2 models")).to_be_visible()
    assert console_errors == []


def test_an_instance_made_from_a_model_is_listed_and_starts(
    page: Page, ui_server: UiServer, tmp_path: Path, console_errors: list[str]
) -> None:
    open_models(page, ui_server)
    page.get_by_role("button", name=f"Create an instance of {TINY}").click()
    name = page.get_by_label("Instance name")
    expect(name).to_be_focused()
    expect(name).to_have_value("tiny-llama")  # suggested from the model's name
    page.keyboard.press("Escape")  # closes the form without creating anything
    expect(name).to_have_count(0)
    opener = page.get_by_role("button", name=f"Create an instance of {TINY}")
    expect(opener).to_be_focused()
    page.keyboard.press("Enter")
    page.get_by_label("Instance name").fill("tiny")
    page.keyboard.press("Enter")

    expect(page).to_have_url(re.compile("#/instances$"))
    expect(row(page, "tiny").locator(STATUS)).to_have_text("stopped")
    options = ui_server.serve.client.get("/api/v1/instances/tiny").json()["options"]
    assert options["backend_type"] == "llama_cpp"
    assert options["backend_options"]["model"] == str(tmp_path / "models/llama/tiny-llama-Q8_0.gguf")
    expect(row(page, "tiny").locator("td.model")).to_have_text(re.compile("tiny-llama-Q8_0.gguf$"))
    row(page, "tiny").get_by_role("button", name="Start tiny").click()
    expect(row(page, "tiny").locator(STATUS)).to_have_text("running")
    row(page, "tiny").get_by_role("button", name="Stop tiny").click()
    expect(row(page, "tiny").locator(STATUS)).to_have_text("stopped")
    assert console_errors == []


def test_refusals_land_beside_the_field_they_name(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    ui_server.serve.create("taken", start=False)
    open_models(page, ui_server)
    page.get_by_role("button", name=f"Create an instance of {OTHER}").click()
    page.get_by_label("Instance name").fill("bad name")
    page.get_by_role("button", name="Create", exact=True).click()
    field = page.locator("form.create-from-model .field.invalid")
    expect(field.get_by_role("alert")).to_contain_text("invalid instance name 'bad name'")
    expect(page.get_by_label("Instance name")).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Instance name").fill("taken")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(field.get_by_role("alert")).to_have_text("an instance named 'taken' already exists")
    page.get_by_label("Instance name").fill("")
    page.get_by_role("button", name="Create", exact=True).click()
    expect(field.get_by_role("alert")).to_have_text("a name is required")
    assert page.url.endswith("#/models")
    assert [i["name"] for i in ui_server.serve.client.get("/api/v1/instances").json()] == ["taken"]

    page.get_by_label("Repository").fill("../../etc")
    page.get_by_role("button", name="Download", exact=True).click()
    repo_field = page.locator("form.download .field.invalid")
    expect(repo_field.locator("label")).to_have_text("Repository")
    expect(repo_field.get_by_role("alert")).to_contain_text("must be 'org/model' or 'org/model:tag'")
    assert ui_server.serve.client.get("/api/v1/models/jobs").json() == {"jobs": []}

    # A repo the hub does not have starts, then fails: the job says why.
    page.get_by_label("Repository").fill("org/missing")
    page.get_by_role("button", name="Download", exact=True).click()
    expect(repo_field).to_have_count(0)
    job = page.get_by_role("table", name="Downloads").get_by_role("row").nth(1)
    expect(job.locator(".status")).to_have_text("failed")
    expect(job).to_contain_text("org/missing: repository not found on")
    job.get_by_role("button", name="Remove the download of org/missing:main").click()
    expect(page.get_by_role("table", name="Downloads")).to_have_count(0)
    assert unexpected(console_errors, 400, 409) == []


def test_a_download_shows_its_progress_joins_the_catalogue_and_is_deleted(
    page: Page, ui_server: UiServer, hub: StandinHub, tmp_path: Path, console_errors: list[str]
) -> None:
    weights = write_llama_gguf(tmp_path / "big.gguf", BIG_SHAPE).read_bytes()
    hub.add_commit(
        BIG_REPO, {"big-Q8_0.gguf": weights, "big-Q4_K_M.gguf": b"not fetched", "README.md": b"# big"}
    )
    hub.throttle(HUB_BYTES_PER_SECOND)
    polls: list[float] = []

    def on_request(request: Request) -> None:
        if request.url.endswith("/api/v1/models/jobs"):
            polls.append(time.monotonic())

    page.on("request", on_request)
    open_models(page, ui_server)
    page.get_by_label("Repository").fill(BIG_REPO)
    page.get_by_label("Tag").fill("Q8_0")
    page.get_by_role("button", name="Download", exact=True).click()
    expect(page.get_by_label("Repository")).to_have_value("")  # the form is ready for the next one

    job = page.get_by_role("table", name="Downloads").get_by_role("row").nth(1)
    expect(job.get_by_role("rowheader")).to_have_text(f"{BIG_REPO}:Q8_0")
    expect(job.locator(".status")).to_have_text("downloading")
    bar = page.get_by_label(f"Progress of {BIG_REPO}:Q8_0")
    expect(bar).to_have_attribute("max", str(len(weights)))
    # Part of the file is in: the bar has moved, and is not full yet.
    page.wait_for_function(
        "(bar) => bar.value > 0 && bar.value < bar.max",
        arg=bar.element_handle(),
        timeout=DOWNLOAD_DEADLINE_MS,
    )
    expect(job).to_contain_text(f"of {shown_bytes(page, len(weights))}, big-Q8_0.gguf")

    # Away from the page nobody polls; back on it, the job is followed again.
    page.get_by_role("link", name="Instances").click()
    left = time.monotonic()
    page.wait_for_timeout(1500)
    assert [when for when in polls if when > left] == []
    page.get_by_role("link", name="Models").click()
    expect(job.locator(".status")).to_have_text("completed", timeout=DOWNLOAD_DEADLINE_MS)
    expect(bar).to_have_js_property("value", len(weights))
    # The finished download is in the catalogue, without a reload; the other quant was not fetched.
    expect(model_row(page, BIG)).to_contain_text("Hugging Face")
    expect(page.get_by_role("table", name="3 models")).to_be_visible()
    finished = time.monotonic()
    page.wait_for_timeout(1500)  # nothing runs: nothing is polled
    assert [when for when in polls if when > finished] == []

    dialogs: list[str] = []

    def accept(dialog: Dialog) -> None:
        dialogs.append(dialog.message)
        dialog.accept()

    page.once("dialog", accept)
    model_row(page, BIG).get_by_role("button", name=f"Delete {BIG}").click()
    expect(model_row(page, BIG)).to_have_count(0)
    assert dialogs and f"{BIG_REPO}:Q8_0" in dialogs[0]
    assert [entry["id"] for entry in ui_server.serve.client.get("/api/v1/models").json()] == [TINY, OTHER]
    assert console_errors == []
