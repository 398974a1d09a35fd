"""The system page in Chromium: memory, backends with their versions, the config without secrets, metrics."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.ui.conftest import UiServer
from tests.ui.test_instances_page import sign_in


def test_the_system_page_shows_memory_backends_config_and_request_counts(
    page: Page, ui_server: UiServer, console_errors: list[str]
) -> None:
    ui_server.serve.create("busy")
    chat = {"model": "busy", "messages": [{"role": "user", "content": "hi"}]}
    for _ in range(3):
        assert ui_server.serve.client.post("/v1/chat/completions", json=chat).status_code == 200
    sign_in(page, ui_server.management_key)
    page.get_by_role("link", name="System").click()

    expect(page.get_by_label("In use:")).to_be_visible()  # the machine's memory, as a meter
    memory_row = page.locator("table.memory tr", has_text="busy")
    expect(memory_row.locator("td").nth(3)).to_have_text(re.compile(r"^\d+(\.\d)? MiB$"))  # measured
    llama = page.locator('tr[data-backend="llama-cpp"]')
    expect(llama.locator("td").nth(0)).to_contain_text("standin_backend.py")
    expect(llama.locator("td").nth(1)).to_have_text("version: standin")
    vllm = page.locator('tr[data-backend="vllm"]')
    expect(vllm.locator("td").nth(1)).to_contain_text("is vllm serve installed?")
    config = page.locator("pre.config")
    expect(config).to_contain_text('"port_range"')
    expect(config).not_to_contain_text(ui_server.management_key)
    expect(page.locator('table.metrics tr[data-instance="busy"] td').first).to_have_text("3")
    # The failed version check of vllm is the only request that went wrong.
    assert [error for error in console_errors if "status of 503" not in error] == []


def test_the_metrics_parser_and_rates(page: Page, ui_server: UiServer) -> None:
    page.goto("/")
    results = page.evaluate(
        """async () => {
          const { parsePrometheus, requestTotals, rates } = await import('/ui/system.js');
          const text = [
            '# HELP llamactl_requests_total Requests.',
            'llamactl_requests_total{instance="a",endpoint="/v1/chat/completions",status="200"} 3.0',
            'llamactl_requests_total{instance="a",endpoint="/v1/completions",status="500"} 1.0',
            'llamactl_completion_tokens_total{instance="a",backend="llama_cpp"} 40.0',
            'llamactl_requests_total{instance="q\\\\"x",backend="vllm",endpoint="/v1/models",status="200"} 2',
            'process_open_fds 12',
          ].join('\\n');
          const samples = parsePrometheus(text);
          const totals = requestTotals(samples);
          const series = [
            { at: 0, totals: { a: { requests: 0, tokens: 0 } } },
            { at: 2000, totals: { a: { requests: 4, tokens: 10 } } },
            { at: 4000, totals: {} },
          ];
          return { count: samples.length, totals, perSecond: rates(series, 'a', 'requests') };
        }"""
    )
    assert results["count"] == 5
    assert results["totals"] == {"a": {"requests": 4, "tokens": 40}, 'q"x': {"requests": 2, "tokens": 0}}
    assert results["perSecond"] == [2, 0]  # a counter that restarts counts as no traffic, not negative
