"""What each backend's options say about memory: the flags the estimate depends on, read by the adapter."""

from llamactl.backends import MemoryInputs, get_backend


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
        extra_files=("/m/p.gguf", "/m/a.gguf", "/m/b.gguf", "/m/c.gguf"),
    )


def test_llama_server_defaults_are_the_models_context_and_flash_attention_on() -> None:
    assert inputs("llama_cpp", ["-m", "/m/q.gguf", "-np", "4"]) == MemoryInputs(model_path="/m/q.gguf")


def test_a_model_fetched_at_start_has_nothing_to_estimate_from() -> None:
    assert inputs("llama_cpp", ["-hf", "org/repo"]) is None


def test_mlx_counts_its_adapter_and_vllm_its_context_and_kv_cache_size() -> None:
    mlx = inputs("mlx_lm", ["--model", "/m/dir", "--adapter-path", "/m/adapter"])
    assert mlx == MemoryInputs(model_path="/m/dir", extra_files=("/m/adapter",))
    vllm = inputs("vllm", ["/m/dir", "--max-model-len", "2048", "--kv-cache-memory-bytes", "1073741824"])
    assert vllm == MemoryInputs(model_path="/m/dir", context=2048, kv_cache_bytes=1073741824)
