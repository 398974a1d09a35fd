"""Screenshots of every page of the web UI, light and dark, for docs/screenshots/.

    .venv/bin/python -m tools.ui_screenshots

Starts `llamactl serve` with the stand-in backend, a catalogue of two small GGUF
files and a few instances, requests and a key, then captures each page at
1280x800 in Debian's Chromium in both colour schemes.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Literal

import httpx
from playwright.sync_api import Page, sync_playwright

from tests.models.gguf_files import LlamaShape, write_llama_gguf
from tests.serve_process import MANAGEMENT_KEY, ServeProcess, standin_backends, start_serve

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
Scheme = Literal["light", "dark"]
SCHEMES: tuple[Scheme, ...] = ("light", "dark")
LAUNCH_ARGS = ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]


def stage(server: ServeProcess, models: Path) -> None:
    """Instances in several states, some traffic, a key: what a page looks like in use."""
    client = httpx.Client(
        base_url=server.base_url, headers={"Authorization": f"Bearer {MANAGEMENT_KEY}"}, timeout=30
    )
    for name, model, start in (
        ("qwen-chat", "Qwen2.5-7B-Instruct-Q4_K_M.gguf", True),
        ("llama-3-8b", "Meta-Llama-3-8B-Instruct-Q8_0.gguf", False),
        ("coder", "qwen2.5-coder-1.5b-q8_0.gguf", True),
    ):
        body = {
            "backend_type": "llama_cpp",
            "backend_options": {"model": str(models / model), "alias": name, "ctx_size": 4096},
        }
        client.post(f"/api/v1/instances/{name}", json=body).raise_for_status()
        if start:
            client.post(f"/api/v1/instances/{name}/start").raise_for_status()
    for _ in range(5):
        chat = {"model": "qwen-chat", "messages": [{"role": "user", "content": "hi"}]}
        client.post("/v1/chat/completions", json=chat).raise_for_status()
    client.post("/api/v1/auth/keys", json={"name": "notebook"}).raise_for_status()


def capture(page: Page, name: str, scheme: Scheme) -> None:
    page.emulate_media(color_scheme=scheme)
    page.wait_for_timeout(300)
    page.screenshot(path=str(OUT / f"{name}-{scheme}.png"))
    print(f"docs/screenshots/{name}-{scheme}.png")


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(scratch)
        models = work / "models"
        models.mkdir()
        write_llama_gguf(models / "Qwen2.5-7B-Instruct-Q4_K_M.gguf", LlamaShape(name="Qwen2.5 7B Instruct"))
        write_llama_gguf(models / "Meta-Llama-3-8B-Instruct-Q8_0.gguf", LlamaShape(name="Llama 3 8B"))
        write_llama_gguf(models / "qwen2.5-coder-1.5b-q8_0.gguf", LlamaShape(name="Qwen2.5 Coder 1.5B"))
        (work / "home").mkdir()
        environment = {
            "HOME": str(work / "home"),
            "HF_HUB_CACHE": str(work / "hub"),
            "OLLAMA_MODELS": str(work / "ollama"),
        }
        tail = standin_backends((18400, 18499)) + f"discovery: {{paths: [{models}], ollama: false}}\n"
        with start_serve(work, tail, environment) as server, sync_playwright() as playwright:
            stage(server, models)
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            base = server.base_url
            page.goto(base + "/")
            for scheme in SCHEMES:
                capture(page, "sign-in", scheme)
            page.get_by_label("API key").fill(MANAGEMENT_KEY)
            page.get_by_role("button", name="Sign in").click()
            page.locator('tr[data-instance="qwen-chat"]').wait_for()
            for scheme in SCHEMES:
                capture(page, "instances", scheme)
            page.goto(base + "/#/create")
            page.get_by_label("Command").fill(
                "llama-server -m ~/models/Qwen2.5-7B-Instruct-Q4_K_M.gguf -c 8192 -ngl 99 --jinja"
            )
            page.get_by_role("button", name="Parse").click()
            page.get_by_label("Add an option").fill("ctx")
            page.get_by_role("list", name="Matching options").wait_for()
            for scheme in SCHEMES:
                capture(page, "create", scheme)
            page.goto(f"{base}/#/playground")
            page.get_by_label("Model").select_option("qwen-chat")
            page.get_by_label("Compare with").select_option("coder")
            page.get_by_label("Prompt", exact=True).fill("Say hello in three languages.")
            page.get_by_role("button", name="Send").click()
            page.locator('[data-state="done"]').nth(1).wait_for()
            for scheme in SCHEMES:
                capture(page, "playground", scheme)
            for view, ready in (
                ("logs/qwen-chat", "pre.log"),
                ("models", "main table"),
                ("keys", "main table"),
                ("system", "pre.config"),
            ):
                page.goto(f"{base}/#/{view}")
                page.locator(ready).first.wait_for()
                page.wait_for_timeout(700)
                for scheme in SCHEMES:
                    capture(page, view.split("/")[0], scheme)
            browser.close()
            server.stop()


if __name__ == "__main__":
    main()
