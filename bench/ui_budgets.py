"""The web UI's budgets, measured in Debian's Chromium against a real `llamactl serve`.

    .venv/bin/python -m bench.ui_budgets [--runs N]

Prints each figure's median against its budget (issue 11) and, where one
exists, against a baseline measured in the same run:

- interactive: from navigation to a usable page (the sign-in form; signed in,
  the instance table), against the API docs page, static HTML from the same server;
- a status change: from the manager publishing it (the event's own time) until
  the row shows it, as a MutationObserver in the page sees it;
- the table of 200 instances: from the last byte of the instance list until the
  200 rows are in the DOM;
- the bytes of the page's own JS and CSS, and with the vendored libraries.

The stand-in backend serves the instances; Chromium, llamactl and the stand-ins
share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
from playwright.sync_api import Page, sync_playwright

from llamactl.server.web_ui import UI_DIR
from tests.serve_process import MANAGEMENT_KEY, standin_backends, start_serve

CHROMIUM = "/usr/bin/chromium"
LAUNCH_ARGS = ["--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1"]
TABLE_ROWS = 200

# Runs in the page before its own scripts (Playwright's init script, outside the page's CSP):
# the time each row first shows each status, and when the table first holds every row.
OBSERVER = """
window.__shown = {};
const rowsWanted = ROWS;
new MutationObserver(() => {
  const rows = document.querySelectorAll('tr[data-instance]');
  if (rows.length >= rowsWanted && window.__tableAt === undefined) window.__tableAt = performance.now();
  for (const row of rows) {
    const status = row.querySelector('span.status');
    const key = row.dataset.instance + ':' + (status ? status.textContent : '');
    if (!(key in window.__shown)) window.__shown[key] = Date.now();
  }
}).observe(document, { subtree: true, childList: true, characterData: true });
""".replace("ROWS", str(TABLE_ROWS))


def poll(page: Page, expression: str, timeout: float = 30) -> object:
    """``expression``'s value once it is not undefined. Evaluated through the browser's protocol:
    Playwright's wait_for_function would eval() in the page, which its CSP forbids."""
    deadline = time.monotonic() + timeout
    while (value := page.evaluate(expression)) is None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{expression} stayed undefined for {timeout} s")
        time.sleep(0.005)
    return value


def sign_in(page: Page, base: str) -> None:
    page.goto(base + "/")
    page.get_by_label("API key").fill(MANAGEMENT_KEY)
    page.get_by_role("button", name="Sign in").click()
    page.get_by_role("button", name="Sign out").wait_for()


def until_visible(page: Page, url: str, selector: str) -> float:
    began = time.perf_counter()
    page.goto(url)
    page.locator(selector).first.wait_for()
    return (time.perf_counter() - began) * 1000


def status_change_ms(page: Page, client: httpx.Client, name: str) -> float:
    """Start ``name``; from the event saying ``running`` to its row saying so."""
    key = f"{name}:running"
    page.evaluate(f"delete window.__shown[{key!r}]")  # seen in an earlier run
    with client.stream("GET", "/api/v1/events") as events:
        assert client.post(f"/api/v1/instances/{name}/start").status_code == 200
        published: float = next(
            event["time"]
            for event in (json.loads(line[6:]) for line in events.iter_lines() if line.startswith("data: "))
            if event["instance"] == name and event.get("status") == "running"
        )
    shown = float(str(poll(page, f"window.__shown[{key!r}]")))
    assert client.post(f"/api/v1/instances/{name}/stop").status_code == 200
    return shown - published * 1000


def table_ms(page: Page, base: str) -> float:
    """A fresh load of a signed-in tab: from the instance list's last byte to all its rows drawn."""
    page.goto(base + "/#/instances")
    page.reload()
    poll(page, "window.__tableAt")
    drawn: float = page.evaluate(
        """() => window.__tableAt - performance.getEntriesByType('resource')
             .filter((entry) => new URL(entry.name).pathname === '/api/v1/instances').pop().responseEnd"""
    )
    return drawn


def script_bytes() -> tuple[int, int]:
    """The UI's JS and CSS: its own, and with the vendored libraries."""
    files = [path for path in UI_DIR.rglob("*") if path.suffix in (".js", ".css")]
    own = sum(path.stat().st_size for path in files if "vendor" not in path.parts)
    return own, sum(path.stat().st_size for path in files)


def median_of(runs: int, measure: Callable[[], float]) -> float:
    return statistics.median(measure() for _ in range(runs))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=7)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        tail = standin_backends((18400, 18499), f"max_instances: {TABLE_ROWS + 10}")
        with start_serve(Path(scratch), tail) as server, sync_playwright() as playwright:
            base = server.base_url
            headers = {"Authorization": f"Bearer {MANAGEMENT_KEY}"}
            client = httpx.Client(base_url=base, headers=headers, timeout=30)
            body = {"backend_type": "llama_cpp", "backend_options": {"model": "/m/tiny.gguf"}}
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
            page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            page.add_init_script(OBSERVER)

            docs = median_of(args.runs, lambda: until_visible(page, base + "/api/v1/docs", "h1"))
            sign_in_page = median_of(args.runs, lambda: until_visible(page, base + "/", "#key"))
            assert client.post("/api/v1/instances/watched", json=body).status_code == 201
            sign_in(page, base)
            table_page = median_of(args.runs, lambda: until_visible(page, base + "/", "tr[data-instance]"))
            status = median_of(args.runs, lambda: status_change_ms(page, client, "watched"))
            for index in range(TABLE_ROWS - 1):
                assert client.post(f"/api/v1/instances/many-{index:03d}", json=body).status_code == 201
            table = median_of(args.runs, lambda: table_ms(page, base))
            browser.close()
            server.stop()
    own, everything = script_bytes()
    print(f"web UI budgets, median of {args.runs} runs, Chromium {CHROMIUM}")
    print(f"{'figure':44} {'ms or KB':>9} {'budget':>8}  vs baseline")
    print(f"{'interactive: API docs page (baseline)':44} {docs:9.1f} {'':>8}")
    for label, figure in (("sign-in form", sign_in_page), ("signed in, instance table", table_page)):
        print(f"{'interactive: ' + label:44} {figure:9.1f} {1000:8}  {figure / docs:.2f}x docs")
    print(f"{'status change: event to row':44} {status:9.1f} {500:8}")
    print(f"{'200 instances: list received to rows drawn':44} {table:9.1f} {300:8}")
    print(f"{'own JS and CSS (KB)':44} {own / 1024:9.1f} {150:8}")
    print(f"{'with the vendored Preact and htm (KB)':44} {everything / 1024:9.1f}")


if __name__ == "__main__":
    main()
