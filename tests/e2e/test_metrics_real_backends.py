"""End to end: the real llama-server's and vLLM's own metrics in llamactl's scrape, labelled ``instance``.

With ``metrics.scrape_backends`` llamactl starts llama-server with
``--metrics`` and adds every running backend's ``/metrics`` to its own, each
series labelled with the instance; promtool accepts the whole.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.test_serve_real_backends import REAL_BACKENDS, Server, real_server, remember_group
from tests.e2e.tiny_models import write_tiny_gguf, write_tiny_vllm_model

VLLM_COMMAND = (
    "VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=1 HF_HUB_OFFLINE=1 "
    "vllm serve {model} --served-model-name tiny-vllm --enforce-eager --max-model-len 512 --dtype float32"
)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    config = REAL_BACKENDS + "metrics: {scrape_backends: true}\n"
    with real_server(tmp_path_factory.mktemp("serve"), config) as running:
        yield running


def instances_of(text: str, prefix: str) -> set[str]:
    """The ``instance`` labels of the series whose names start with ``prefix``."""
    return {
        sample.labels.get("instance", "")
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name.startswith(prefix)
    }


def test_the_backends_own_metrics_are_in_the_scrape_labelled_by_instance(
    server: Server, tmp_path_factory: pytest.TempPathFactory
) -> None:
    model = write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")
    server.paste("llama", "llama-cpp", f"llama-server -m {model} -c 512 -t 2")
    vllm_model = write_tiny_vllm_model(tmp_path_factory.mktemp("vllm") / "model")
    server.paste("vllm", "vllm", VLLM_COMMAND.format(model=vllm_model))
    client = server.openai()
    for name in ("llama", "vllm"):
        client.completions.create(model=name, prompt="hello", max_tokens=4, temperature=0)
        remember_group(server, name)
    assert (
        server.api.get("/api/v1/instances/llama").json()["options"]["backend_options"].get("metrics") is None
    )
    text = server.api.get("/metrics").text
    # llama-server's (on since llamactl asked for it) and vLLM's, with ':' as '_' (promtool wants it)
    assert instances_of(text, "llamacpp_prompt_tokens") == {"llama"}
    assert instances_of(text, "vllm_") == {"vllm"}
    assert instances_of(text, "llamactl_requests_total") == {"llama", "vllm"}
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    # It parses (exit 1 is an error in the format); lint findings (exit 3) are allowed only for the
    # backends' own names, which are theirs: vLLM has a histogram named vllm:iteration_tokens_total.
    findings = [line for line in (checked.stdout + checked.stderr).splitlines() if line.strip()]
    assert checked.returncode in (0, 3), findings
    assert all(line.startswith(("vllm_", "llamacpp_")) for line in findings), findings
