"""Two real llama-servers behind one port, room for one: clients alternate and every request is served.

The swap scheduler queues what cannot be served now, swaps once the running
instance has nothing left to do (or its fairness window passed), and serves
every request queued for the other; no request gets a 5xx, no stream is cut.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import openai
import pytest

from tests.e2e.tiny_models import write_tiny_gguf
from tests.serve_process import MANAGEMENT_KEY, serve_process

BIN = Path(sys.prefix) / "bin"
CLIENTS = 4
REQUESTS = 4
"""Per client, alternating between the two instances."""


def starts(api: httpx.Client, name: str) -> int:
    log = api.get(f"/api/v1/instances/{name}/logs", params={"lines": 5000}).text
    return log.count("starting:")


def test_clients_alternating_between_two_llama_servers_with_room_for_one(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    if not (BIN / "llama-server").exists():
        pytest.fail("llama-server is not installed: run scripts/install-test-backends.sh")
    config = f"""
backends:
  llama-cpp: {{command: {BIN / "llama-server"}}}
instances:
  port_range: [18800, 18899]
  max_running_instances: 1
  on_demand_start_timeout: 240
"""
    models = tmp_path_factory.mktemp("swap-models")
    with serve_process(tmp_path_factory.mktemp("swap-serve"), config, stop_timeout=120) as serve:
        api = serve.client
        api.timeout = httpx.Timeout(120)
        for name in ("left", "right"):
            model = write_tiny_gguf(models / f"{name}.gguf")
            parsed = api.post(
                "/api/v1/backends/llama-cpp/parse-command",
                json={"command": f"llama-server -m {model} --alias {name} -c 256 -t 1"},
            )
            assert api.post(f"/api/v1/instances/{name}", json=parsed.json()).status_code == 201

        async def client_run(first: int) -> list[str]:
            client = openai.AsyncOpenAI(
                base_url=serve.base_url + "/v1", api_key=MANAGEMENT_KEY, max_retries=0, timeout=240
            )
            finishes = []
            for index in range(REQUESTS):
                model = ("left", "right")[(first + index) % 2]
                stream = await client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": "hi"}],
                    max_tokens=4,
                    stream=True,
                )
                finish = None
                async for chunk in stream:
                    if chunk.choices and chunk.choices[0].finish_reason:
                        finish = chunk.choices[0].finish_reason
                finishes.append(str(finish))
            await client.close()
            return finishes

        async def storm() -> list[list[str]]:
            return await asyncio.gather(*(client_run(i % 2) for i in range(CLIENTS)))

        # Every request answered to its end: a 5xx or a cut stream raises in the client.
        results = asyncio.run(storm())
        assert all(finish in ("length", "stop") for finishes in results for finish in finishes), results
        statuses = {i["name"]: i["status"] for i in api.get("/api/v1/instances").json()}
        assert sorted(statuses.values()) == ["running", "stopped"], statuses
        # One swap per round of the clients at most (a round: one request from each), plus the first start.
        total_starts = starts(api, "left") + starts(api, "right")
        assert total_starts <= REQUESTS + 1, total_starts
