"""End to end: models found in an Ollama store and a Hugging Face cache, served by the real llama-server.

The stores are synthetic (built by tests/models/stores.py from tiny models the
tests write) and `llamactl serve` finds them through the variables a user
sets (OLLAMA_MODELS, HF_HUB_CACHE), with a home of its own so that nothing of
this machine's real stores is listed.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from tests.e2e.test_serve_real_backends import Server, real_server, remember_group
from tests.models.stores import GGUF_REPO, build_hf_cache, build_ollama_store

OLLAMA_ID = "ollama:tiny:latest"
HF_GGUF_ID = f"hf:{GGUF_REPO}:tiny-F32"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    stores = tmp_path_factory.mktemp("stores")
    build_hf_cache(stores / "hf", stores / "work-hf", with_projector=False)
    build_ollama_store(stores / "ollama", stores / "work-ollama", with_projector=False)
    home = stores / "home"
    home.mkdir()
    environment = {
        "HOME": str(home),
        "HF_HUB_CACHE": str(stores / "hf"),
        "OLLAMA_MODELS": str(stores / "ollama"),
    }
    with real_server(tmp_path_factory.mktemp("serve"), environment=environment) as running:
        yield running


def catalogue(server: Server) -> dict[str, dict[str, Any]]:
    answer = server.api.get("/api/v1/models")
    assert answer.status_code == 200, answer.text
    return {entry["id"]: entry for entry in answer.json()}


def test_the_catalogue_lists_the_stores_models_with_their_facts_and_estimates(server: Server) -> None:
    entries = catalogue(server)
    assert {OLLAMA_ID, HF_GGUF_ID, f"hf:{GGUF_REPO}:tiny-F16", "hf:test-org/tiny-llama"} <= set(entries)
    ollama = entries[OLLAMA_ID]
    assert (ollama["source"], ollama["format"], ollama["architecture"]) == ("ollama", "gguf", "llama")
    assert ollama["context_length"] == 512 and ollama["chat_template"] is True
    assert [f["type"] for f in ollama["files"]][:2] == ["gguf", "adapter"]  # then params, template, ...
    assert ollama["estimated_bytes"] > ollama["size_bytes"]  # weights, KV cache, compute, slack
    assert entries["hf:test-org/tiny-llama"]["format"] == "safetensors"
    only = server.api.get("/api/v1/models", params={"filter": "TINY-gguf"}).json()
    assert {e["id"] for e in only} == {HF_GGUF_ID, f"hf:{GGUF_REPO}:tiny-F16"}
    details = server.api.get(f"/api/v1/models/{HF_GGUF_ID}")
    assert details.status_code == 200 and details.json()["details"]["gguf"]["block_count"] == 2
    missing = server.api.get("/api/v1/models/ollama:tiny:lates")
    assert missing.status_code == 404 and OLLAMA_ID in missing.json()["details"]


@pytest.mark.parametrize(
    ("name", "model_id", "configured"),
    # Ollama's params set num_ctx 1024; llama-server caps a slot at the model's training context, 512.
    [("from-ollama", OLLAMA_ID, 1024), ("from-hf", HF_GGUF_ID, 512)],
)
def test_an_instance_made_from_a_catalogue_entry_answers_a_chat_through_llama_server(
    server: Server, name: str, model_id: str, configured: int
) -> None:
    created = server.api.post(
        f"/api/v1/instances/{name}", json={"model": model_id, "backend_options": {"threads": 2}}
    )
    assert created.status_code == 201, created.text
    options = created.json()["options"]
    assert options["backend_type"] == "llama_cpp"
    reply = server.openai().chat.completions.create(
        model=name, messages=[{"role": "user", "content": "hi"}], max_tokens=8, temperature=0
    )
    assert reply.choices[0].message.content is not None
    remember_group(server, name)
    info = server.api.get(f"/api/v1/instances/{name}").json()
    assert info["memory"]["estimated_bytes"] > 0 and info["memory"]["measured_bytes"] > 0
    assert info["memory"]["reported_bytes"] > 0  # llama-server's buffers, at --verbosity 4
    assert info["model"]["context_length"] == configured  # from the options and the header
    assert info["served_context"] == 512  # what llama-server's /props says it runs with
    [listed] = [m for m in server.api.get("/v1/models").json()["data"] if m["id"] == name]
    assert listed["context_length"] == 512 and listed["meta"]["architecture"] == "llama"
    assert server.api.post(f"/api/v1/instances/{name}/stop").json()["status"] == "stopped"


def test_the_ollama_entry_brings_its_adapter_and_params(server: Server) -> None:
    created = server.api.post("/api/v1/instances/ollama-options", json={"model": OLLAMA_ID})
    assert created.status_code == 201, created.text
    backend_options = created.json()["options"]["backend_options"]
    assert len(backend_options["lora"]) == 1 and backend_options["lora"][0].endswith(
        catalogue(server)[OLLAMA_ID]["adapter_paths"][0].rsplit("/", 1)[1]
    )
    assert (backend_options["ctx_size"], backend_options["temp"]) == (1024, 0.7)  # its params layer
    assert server.api.delete("/api/v1/instances/ollama-options").status_code == 204


def test_a_catalogue_id_that_is_not_there_is_a_404_naming_the_model_field(server: Server) -> None:
    answer = server.api.post("/api/v1/instances/nothing", json={"model": "hf:nobody/nothing"})
    assert answer.status_code == 404
    assert "hf:nobody/nothing" in answer.json()["details"]
    assert server.api.get("/api/v1/instances/nothing").status_code == 404
