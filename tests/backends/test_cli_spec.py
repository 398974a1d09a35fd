"""The checked-in CLI specs cover every flag of the pinned backend versions."""

import re
from pathlib import Path

import msgspec
import pytest

from llamactl.backends import BACKENDS, BackendType
from tools import generate_cli_specs

HELP_DIR = Path(__file__).resolve().parents[2] / "tools" / "cli_help"


def llama_server_help_spellings() -> set[str]:
    spellings: set[str] = set()
    for line in (HELP_DIR / "llama-server-help-b10434.txt").read_text().splitlines():
        if line.startswith("-") and not line.startswith("-----"):
            # The flags end where a run of blanks not following a comma starts the description.
            flags_part = re.split(r"(?<!,)\s{2,}", line)[0]
            spellings |= set(re.findall(r"(?:^|,\s*)(-{1,2}[\w.-]+)", flags_part))
    return spellings


def vllm_dump_spellings() -> set[str]:
    spellings: set[str] = set()
    for line in (HELP_DIR / "vllm-serve-flags-0.33.0.txt").read_text().splitlines():
        if line.startswith("-"):
            spellings |= set(line.split(" | ")[0].split())
    return spellings


def mlx_help_spellings() -> set[str]:
    text = (HELP_DIR / "mlx-lm-server-help-0.32.2.txt").read_text().split("\noptions:\n")[1]
    return set(re.findall(r"^  (-{1,2}[\w.-]+)", text, re.MULTILINE)) | set(
        re.findall(r"^  -\w, (--[\w.-]+)", text, re.MULTILINE)
    )


PINNED = {
    BackendType.LLAMA_CPP: llama_server_help_spellings,
    BackendType.VLLM: vllm_dump_spellings,
    BackendType.MLX_LM: mlx_help_spellings,
}


@pytest.mark.parametrize("backend_type", list(BackendType))
def test_every_pinned_flag_is_in_the_spec(backend_type: BackendType) -> None:
    spec = BACKENDS[backend_type].spec
    pinned = PINNED[backend_type]() - generate_cli_specs.INFO_FLAGS
    missing = sorted(spelling for spelling in pinned if spelling not in spec.by_spelling)
    assert missing == []


def test_pinned_help_parsers_find_the_flags() -> None:
    # Guards the test above against a help reader that silently finds nothing.
    assert {
        "-ngl",
        "--n-gpu-layers",
        "--no-mmap",
        "-nkvo",
        "--spec-draft-model",
    } <= llama_server_help_spellings()
    assert {"-tp", "--disable-prefix-caching", "--enforce-eager"} <= vllm_dump_spellings()
    assert {"--model", "--chat-template-args", "--pipeline"} <= mlx_help_spellings()


def test_vllm_spec_has_every_parser_argument() -> None:
    # The dump's header counts vLLM's arguments; the positional model is folded into --model.
    header = (HELP_DIR / "vllm-serve-flags-0.33.0.txt").read_text().splitlines()[0]
    count = int(re.search(r"(\d+) arguments", header).group(1))  # type: ignore[union-attr]
    assert len(BACKENDS[BackendType.VLLM].spec.flags) == count - 1


@pytest.mark.parametrize(
    ("backend_type", "build"),
    [
        (BackendType.LLAMA_CPP, generate_cli_specs.llama_specs),
        (BackendType.VLLM, generate_cli_specs.vllm_specs),
        (BackendType.MLX_LM, generate_cli_specs.mlx_specs),
    ],
)
def test_checked_in_spec_matches_the_generator(backend_type: BackendType, build) -> None:  # type: ignore[no-untyped-def]
    program, version, drafts, go_keys = build()
    regenerated = generate_cli_specs.finish(
        drafts, go_keys, generate_cli_specs.SECRET_FLAGS[backend_type.value]
    )
    spec = BACKENDS[backend_type].spec
    assert (program, version) == (spec.program, spec.version)
    assert msgspec.to_builtins(regenerated) == msgspec.to_builtins(list(spec.flags))


@pytest.mark.parametrize("backend_type", list(BackendType))
def test_options_struct_has_a_field_per_flag(backend_type: BackendType) -> None:
    backend = BACKENDS[backend_type]
    field_names = {
        info.encode_name
        for info in msgspec.inspect.type_info(backend.options_type).fields  # type: ignore[attr-defined]
    }
    assert field_names == {flag.key for flag in backend.spec.flags} | {"extra_args"}


@pytest.mark.parametrize(
    ("backend_type", "key"),
    [
        (BackendType.LLAMA_CPP, "gpu_layers"),
        (BackendType.LLAMA_CPP, "ctx_size"),
        (BackendType.LLAMA_CPP, "temp"),
        (BackendType.LLAMA_CPP, "hf_repo"),
        (BackendType.LLAMA_CPP, "flash_attn"),
        (BackendType.VLLM, "tensor_parallel_size"),
        (BackendType.VLLM, "gpu_memory_utilization"),
        (BackendType.VLLM, "enable_prefix_caching"),
        (BackendType.MLX_LM, "adapter_path"),
    ],
)
def test_keys_follow_the_go_llamactl(backend_type: BackendType, key: str) -> None:
    assert key in BACKENDS[backend_type].spec.by_key


def test_the_flags_that_take_a_credential_are_marked_secret() -> None:
    secret = {
        backend_type: sorted(flag.canonical for flag in backend.spec.flags if flag.secret)
        for backend_type, backend in BACKENDS.items()
    }
    assert secret == {
        BackendType.LLAMA_CPP: ["--api-key", "--hf-token"],
        BackendType.VLLM: ["--api-key", "--hf-token"],
        BackendType.MLX_LM: [],
    }
    llama = BACKENDS[BackendType.LLAMA_CPP]
    assert llama.redacted_arguments(["-hft", "hf_x", "--api-key=a", "--api-key", "-b"], "***") == [
        "-hft",
        "***",
        "--api-key=***",
        "--api-key",
        "***",  # llama-server takes the next token whatever it looks like
    ]
