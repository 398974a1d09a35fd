"""What each backend's options say about memory: the flags the estimate depends on, read by the adapter."""

from llamactl.backends import MemoryInputs, ModelFiles, get_backend


def inputs(backend: str, command: list[str]) -> MemoryInputs | None:
    adapter = get_backend(backend)
    return adapter.memory_inputs(adapter.options_from_arguments(command))


def test_llama_server_flags_become_the_estimate_inputs() -> None:
    command = [
        "-m",
        "/m/q.gguf",
        "-c",
        "8192",
        "-ctk",
        "q8_0",
        "-fa",
        "off",
        "-ub",
        "256",
        "--mmproj",
        "/m/p.gguf",
    ]
    command += ["--lora", "/m/a.gguf,/m/b.gguf", "--lora-scaled", "/m/c.gguf:0.5"]
    assert inputs("llama_cpp", command) == MemoryInputs(
        model_path="/m/q.gguf",
        context=8192,
        cache_type_k="q8_0",
        cache_type_v="f16",
        flash_attention=False,
        ubatch=256,
        parallel=4,
        extra_files=("/m/p.gguf", "/m/a.gguf", "/m/b.gguf", "/m/c.gguf"),
    )


def test_llama_server_defaults_are_the_models_context_and_flash_attention_on() -> None:
    assert inputs("llama_cpp", ["-m", "/m/q.gguf"]) == MemoryInputs(model_path="/m/q.gguf", parallel=4)
    assert inputs("llama_cpp", ["-m", "/m/q.gguf", "-np", "2"]) == MemoryInputs(
        model_path="/m/q.gguf", parallel=2
    )


def test_a_model_fetched_at_start_has_nothing_to_estimate_from() -> None:
    assert inputs("llama_cpp", ["-hf", "org/repo"]) is None


def test_mlx_counts_its_adapter_and_vllm_its_context_and_kv_cache_size() -> None:
    mlx = inputs("mlx_lm", ["--model", "/m/dir", "--adapter-path", "/m/adapter"])
    assert mlx == MemoryInputs(model_path="/m/dir", extra_files=("/m/adapter",))
    vllm = inputs("vllm", ["/m/dir", "--max-model-len", "2048", "--kv-cache-memory-bytes", "1073741824"])
    assert vllm == MemoryInputs(model_path="/m/dir", context=2048, kv_cache_bytes=1073741824)


def test_an_ollama_model_becomes_llama_server_options_with_its_adapters_projector_and_params() -> None:
    files = ModelFiles(
        model_path="/store/blobs/sha256-aa",
        projector_path="/store/blobs/sha256-bb",
        adapter_paths=("/store/blobs/sha256-cc",),
        defaults={"num_ctx": 8192, "temperature": 0.2, "stop": ["<|im_end|>"], "mirostat_tau": 4.0},
    )
    adapter = get_backend("llama_cpp")
    command = adapter.build_arguments(adapter.options_for_model(files))
    assert command == [
        "--ctx-size",
        "8192",
        "--lora",
        "/store/blobs/sha256-cc",
        "--model",
        "/store/blobs/sha256-aa",
        "--temp",
        "0.2",
        "--mirostat-ent",
        "4.0",
        "--mmproj",
        "/store/blobs/sha256-bb",
        "--jinja",
    ]  # fmt: skip; "stop" has no llama-server flag and is left out


def test_the_context_a_backend_runs_with_is_read_from_its_own_answer() -> None:
    llama, vllm = get_backend("llama_cpp"), get_backend("vllm")
    assert llama.context_probe == "/props" and vllm.context_probe == "/v1/models"
    assert llama.served_context({"default_generation_settings": {"n_ctx": 4096}}) == 4096
    assert vllm.served_context({"data": [{"id": "m", "max_model_len": 2048}]}) == 2048
    nonsenses: list[object] = [None, [], {"default_generation_settings": {"n_ctx": "4096"}}, {"data": []}]
    for nonsense in nonsenses:
        assert llama.served_context(nonsense) is None and vllm.served_context(nonsense) is None
    assert get_backend("mlx_lm").context_probe is None
