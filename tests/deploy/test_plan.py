"""``plan_deploy``: which backend serves a checkpoint, with what instance options, or why not.

The checkpoints are built as ``inspect_checkpoint`` would report them
(tests/deploy/checkpoints.py): the plan reads no files. What is installed and which base
models are on the machine are plain functions.
"""

from __future__ import annotations

from typing import Any

import msgspec
import pytest

from llamactl.backends import BackendType
from llamactl.deploy.checkpoint_kinds import Checkpoint, PeftLoraDir
from llamactl.deploy.plan import DeployPlan, DeployRefused, FindBase, Runnable, plan_deploy
from llamactl.deploy.request import DeployConfig, DeployRequest, ServerType
from llamactl.instance.options import instance_options_from_json
from tests.deploy.checkpoints import (
    BASE_REPO,
    GGUF,
    GGUF_LORA,
    HF_DIR,
    MLX_ADAPTER_DIR,
    MLX_BASE_REPO,
    PEFT_DIR,
    gguf_lora,
    gguf_model,
    hf_dir,
    mlx_adapter,
    peft_lora,
)

LLAMA_CPP, MLX_LM, VLLM = BackendType.LLAMA_CPP, BackendType.MLX_LM, BackendType.VLLM

MLX_DIR = "/models/Llama-3.2-1B-Instruct-4bit"
GGUF_BASE = "/models/Llama-3.2-1B-Instruct.Q8_0.gguf"
BASE_DIR = "/hub/meta-llama--Llama-3.2-1B-Instruct"
MLX_BASE_DIR = "/hub/mlx-community--Llama-3.2-1B-Instruct-4bit"
OTHER_BASE = "/models/llama-3.2-1b-continued"
LOCAL_BASES = {BASE_REPO: BASE_DIR, MLX_BASE_REPO: MLX_BASE_DIR, OTHER_BASE: OTHER_BASE, GGUF_BASE: GGUF_BASE}
find_local_base: FindBase = LOCAL_BASES.get


def installed(*backends: BackendType) -> Runnable:
    return lambda backend: backend in backends


EVERYTHING = installed(*BackendType)


def asking(server_type: str = "auto", **config: Any) -> DeployRequest:
    return DeployRequest(
        checkpoint_path="/as/given", server_type=ServerType(server_type), config=DeployConfig(**config)
    )


class RecordingStaging:
    """Conversions that only say what they would make: ``<what>(<input>)``, named as asked."""

    def __init__(self) -> None:
        self.made: list[str] = []

    def gguf_model(self, model_dir: str, quantization: str) -> str:
        self.made.append(f"gguf_model {model_dir} {quantization}")
        return f"/cache/gguf-models/{model_dir.rpartition('/')[2]}-{quantization}.gguf"

    def gguf_lora(self, adapter: PeftLoraDir, base_dir: str, name: str) -> str:
        self.made.append(f"gguf_lora {adapter.path} over {base_dir}")
        return f"/cache/gguf-loras/h/{name}.gguf"

    def mlx_adapter(self, adapter: PeftLoraDir, base_dir: str, name: str) -> str:
        self.made.append(f"mlx_adapter {adapter.path} over {base_dir}")
        return f"/cache/mlx-adapters/h/{name}"


def plan(
    checkpoint: Checkpoint,
    request: DeployRequest | None = None,
    runnable: Runnable = EVERYTHING,
    find_base: FindBase = find_local_base,
    staging: RecordingStaging | None = None,
) -> DeployPlan:
    return plan_deploy(checkpoint, request or asking(), runnable, find_base, staging or RecordingStaging())


def refusal(
    checkpoint: Checkpoint,
    request: DeployRequest | None = None,
    runnable: Runnable = EVERYTHING,
    find_base: FindBase = find_local_base,
) -> str:
    """The message of the 422 the deploy is refused with."""
    with pytest.raises(DeployRefused) as refused:
        plan(checkpoint, request, runnable, find_base)
    assert refused.value.status == 422
    return refused.value.message


# --- HF model dirs --------------------------------------------------------------------------------


def test_an_hf_model_dir_goes_to_vllm_as_it_is() -> None:
    deployed = plan(hf_dir())
    assert deployed.backend_type is VLLM
    assert deployed.options == {"backend_type": "vllm", "backend_options": {"model": HF_DIR}}
    assert deployed.adapter is None


@pytest.mark.parametrize(
    ("server_type", "runnable", "backend"),
    [
        ("auto", installed(MLX_LM, LLAMA_CPP), MLX_LM),
        ("auto", installed(VLLM), VLLM),
        ("vllm", EVERYTHING, VLLM),
        ("mlx_lm", EVERYTHING, MLX_LM),
    ],
    ids=["auto-without-vllm-falls-back-to-mlx_lm", "auto-vllm-only", "asked-vllm", "asked-mlx_lm"],
)
def test_an_hf_model_dir_goes_to_the_backend_asked_for_or_the_one_installed(
    server_type: str, runnable: Runnable, backend: BackendType
) -> None:
    deployed = plan(hf_dir(), asking(server_type), runnable)
    assert deployed.backend_type is backend
    assert deployed.options == {"backend_type": backend.value, "backend_options": {"model": HF_DIR}}


def test_an_hf_model_dir_is_refused_when_no_backend_is_installed() -> None:
    message = refusal(hf_dir(), runnable=installed())
    assert HF_DIR in message
    assert "install vllm" in message


@pytest.mark.parametrize(
    ("server_type", "runnable"),
    [("llama_cpp", EVERYTHING), ("ollama", EVERYTHING), ("auto", installed(LLAMA_CPP))],
    ids=["asked-llama_cpp", "asked-ollama", "auto-with-only-llama-server"],
)
def test_an_hf_model_dir_for_llama_server_is_converted_to_gguf_once(
    server_type: str, runnable: Runnable
) -> None:
    staging = RecordingStaging()
    deployed = plan(hf_dir(), asking(server_type), runnable, staging=staging)
    assert deployed.backend_type is LLAMA_CPP
    assert deployed.options["backend_options"] == {
        "model": f"/cache/gguf-models/{HF_DIR.rpartition('/')[2]}-F16.gguf",
        "jinja": True,
    }
    assert staging.made == [f"gguf_model {HF_DIR} F16"]


@pytest.mark.parametrize("checkpoint", [hf_dir(), peft_lora()], ids=["hf_dir", "peft_lora"])
def test_config_quantization_is_the_type_the_hf_model_is_converted_to_for_llama_server(
    checkpoint: Checkpoint,
) -> None:
    staging = RecordingStaging()
    deployed = plan(checkpoint, asking("llama_cpp", quantization="q8_0"), staging=staging)
    assert deployed.options["backend_options"]["model"].endswith("-Q8_0.gguf")
    assert [made.rpartition(" ")[2] for made in staging.made if made.startswith("gguf_model")] == ["Q8_0"]


@pytest.mark.parametrize(
    ("checkpoint", "request_", "why"),
    [
        pytest.param(hf_dir(), asking("vllm", quantization="Q8_0"), "vllm serves", id="hf-on-vllm"),
        pytest.param(peft_lora(), asking("mlx_lm", quantization="Q8_0"), "mlx_lm serves", id="lora-on-mlx"),
        pytest.param(gguf_model(), asking(quantization="Q4_K_M"), "is a GGUF already", id="gguf"),
        pytest.param(
            peft_lora(),
            asking("llama_cpp", quantization="F32", base_model=GGUF_BASE),
            "as it is",
            id="gguf-base",
        ),
    ],
)
def test_config_quantization_is_refused_where_nothing_is_converted_to_gguf(
    checkpoint: Checkpoint, request_: DeployRequest, why: str
) -> None:
    message = refusal(checkpoint, request_)
    assert (
        message.startswith("config.quantization applies to an HF model converted to GGUF") and why in message
    )


def test_an_hf_model_dir_for_vllm_is_served_as_it_is_with_no_conversion() -> None:
    staging = RecordingStaging()
    plan(hf_dir(), staging=staging)
    assert staging.made == []


def test_an_mlx_model_dir_goes_to_mlx_lm_even_when_vllm_is_installed() -> None:
    deployed = plan(hf_dir(MLX_DIR, mlx=True))
    assert deployed.backend_type is MLX_LM
    assert deployed.options == {"backend_type": "mlx_lm", "backend_options": {"model": MLX_DIR}}


@pytest.mark.parametrize("server_type", ["vllm", "llama_cpp", "ollama"])
def test_an_mlx_model_dir_for_another_backend_is_refused_pointing_at_mlx_lm(server_type: str) -> None:
    message = refusal(hf_dir(MLX_DIR, mlx=True), asking(server_type))
    assert "an MLX model dir is served by mlx_lm only" in message
    assert "use server_type mlx_lm" in message


# --- GGUF models ----------------------------------------------------------------------------------


@pytest.mark.parametrize("server_type", ["auto", "llama_cpp", "ollama"])
def test_a_gguf_model_goes_to_llama_server_with_its_chat_template(server_type: str) -> None:
    deployed = plan(gguf_model(), asking(server_type))
    assert deployed.backend_type is LLAMA_CPP
    assert deployed.options == {
        "backend_type": "llama_cpp",
        "backend_options": {"model": GGUF, "jinja": True},
    }
    assert deployed.adapter is None


@pytest.mark.parametrize("server_type", ["vllm", "mlx_lm"])
def test_a_gguf_model_for_another_backend_is_refused_pointing_at_llama_cpp(server_type: str) -> None:
    message = refusal(gguf_model(), asking(server_type))
    assert f"a GGUF file is served by llama_cpp only, not {server_type}" in message
    assert "use server_type llama_cpp" in message


# --- PEFT LoRA adapters ---------------------------------------------------------------------------


def test_a_peft_lora_goes_to_vllm_over_its_base_as_a_model_named_after_its_dir() -> None:
    deployed = plan(peft_lora())
    assert deployed.backend_type is VLLM
    assert deployed.adapter == "lora-sft"
    assert deployed.options == {
        "backend_type": "vllm",
        "backend_options": {
            "model": BASE_DIR,
            "enable_lora": True,
            "lora_modules": [f"lora-sft={PEFT_DIR}"],
            "max_lora_rank": 8,
        },
        "allowed_models": ["lora-sft"],
    }


@pytest.mark.parametrize(
    ("r", "rank_pattern", "max_lora_rank"),
    [
        (1, {}, 1),
        (2, {}, 8),
        (8, {}, 8),
        (9, {}, 16),
        (320, {}, 320),
        (321, {}, 512),
        (512, {}, 512),
        (8, {"q_proj": 64}, 64),
        (8, {"q_proj": 16, "v_proj": 33}, 64),
        (16, {"v_proj": 4}, 16),
    ],
)
def test_a_peft_lora_gets_the_smallest_max_lora_rank_that_holds_its_largest_rank(
    r: int, rank_pattern: dict[str, int], max_lora_rank: int
) -> None:
    deployed = plan(peft_lora(r=r, rank_pattern=rank_pattern))
    assert deployed.options["backend_options"]["max_lora_rank"] == max_lora_rank


@pytest.mark.parametrize(("r", "rank_pattern", "rank"), [(513, {}, 513), (8, {"q_proj": 1024}, 1024)])
def test_a_peft_lora_over_vllms_largest_rank_is_refused(
    r: int, rank_pattern: dict[str, int], rank: int
) -> None:
    message = refusal(peft_lora(r=r, rank_pattern=rank_pattern))
    assert f"has rank {rank}," in message
    assert "--max-lora-rank of 512" in message


def test_a_peft_lora_is_refused_when_no_backend_is_installed() -> None:
    assert refusal(peft_lora(), runnable=installed()).startswith("vllm is not installed here")


def test_a_dora_adapter_is_refused() -> None:
    assert "DoRA" in refusal(peft_lora(use_dora=True))


@pytest.mark.parametrize(
    ("server_type", "runnable"),
    [("llama_cpp", EVERYTHING), ("ollama", EVERYTHING), ("auto", installed(LLAMA_CPP))],
    ids=["asked-llama_cpp", "asked-ollama", "auto-with-only-llama-server"],
)
def test_a_peft_lora_for_llama_server_is_converted_with_its_base_and_loaded_at_scale_0(
    server_type: str, runnable: Runnable
) -> None:
    staging = RecordingStaging()
    deployed = plan(peft_lora(), asking(server_type), runnable, staging=staging)
    assert deployed.backend_type is LLAMA_CPP and deployed.adapter == "lora-sft"
    assert deployed.options["backend_options"] == {
        "model": f"/cache/gguf-models/{BASE_DIR.rpartition('/')[2]}-F16.gguf",
        "lora_scaled": ["/cache/gguf-loras/h/lora-sft.gguf:0"],
        "jinja": True,
    }
    assert staging.made == [f"gguf_lora {PEFT_DIR} over {BASE_DIR}", f"gguf_model {BASE_DIR} F16"]


def test_a_peft_lora_for_llama_server_over_a_gguf_base_given_converts_only_the_adapter() -> None:
    staging = RecordingStaging()
    deployed = plan(peft_lora(), asking("llama_cpp", base_model=GGUF_BASE), staging=staging)
    assert deployed.options["backend_options"]["model"] == GGUF_BASE
    assert staging.made == [f"gguf_lora {PEFT_DIR} over {BASE_DIR}"]


@pytest.mark.parametrize(
    ("server_type", "runnable"),
    [("mlx_lm", EVERYTHING), ("auto", installed(MLX_LM, LLAMA_CPP))],
    ids=["asked-mlx_lm", "auto-without-vllm"],
)
def test_a_peft_lora_for_mlx_lm_is_converted_to_its_format(server_type: str, runnable: Runnable) -> None:
    staging = RecordingStaging()
    deployed = plan(peft_lora(), asking(server_type), runnable, staging=staging)
    assert deployed.backend_type is MLX_LM
    assert deployed.options["backend_options"] == {
        "model": BASE_DIR,
        "adapter_path": "/cache/mlx-adapters/h/lora-sft",
    }
    assert deployed.options["allowed_models"] == ["lora-sft"]
    assert staging.made == [f"mlx_adapter {PEFT_DIR} over {BASE_DIR}"]


def test_a_peft_lora_whose_base_is_not_here_is_refused_with_how_to_download_it() -> None:
    message = refusal(peft_lora(base_model="someone/not-downloaded"))
    assert "'someone/not-downloaded'" in message
    assert "llamactl models pull someone/not-downloaded" in message


@pytest.mark.parametrize("own_base", [BASE_REPO, "/home/trainer/gone", None])
def test_config_base_model_wins_over_the_base_the_adapter_names(own_base: str | None) -> None:
    asked: list[str] = []

    def find_base(base: str) -> str | None:
        asked.append(base)
        return LOCAL_BASES.get(base)

    deployed = plan(peft_lora(base_model=own_base), asking(base_model=OTHER_BASE), find_base=find_base)
    assert deployed.options["backend_options"]["model"] == OTHER_BASE
    assert asked == [OTHER_BASE]


def test_a_base_model_given_in_config_that_is_not_here_is_refused_by_its_name() -> None:
    message = refusal(peft_lora(), asking(base_model="/models/typo"))
    assert "'/models/typo' is not on this machine" in message


@pytest.mark.parametrize("checkpoint", [peft_lora(base_model=None), mlx_adapter(base_model=None)])
def test_an_adapter_that_names_no_base_is_refused_asking_for_config_base_model(
    checkpoint: Checkpoint,
) -> None:
    message = refusal(checkpoint)
    assert checkpoint.path in message
    assert "set config.base_model" in message


# --- GGUF LoRA and mlx_lm adapters ----------------------------------------------------------------


def test_a_gguf_lora_whose_base_file_is_missing_is_refused_naming_it() -> None:
    message = refusal(gguf_lora(), asking(base_model="/models/absent.gguf"))
    assert "'/models/absent.gguf' does not exist" in message


def test_a_gguf_lora_without_config_base_model_is_refused() -> None:
    message = refusal(gguf_lora())
    assert GGUF_LORA in message
    assert "set config.base_model" in message


@pytest.mark.parametrize("server_type", ["auto", "llama_cpp", "ollama"])
def test_a_gguf_lora_goes_to_llama_server_over_the_base_gguf_given(server_type: str) -> None:
    deployed = plan(gguf_lora(), asking(server_type, base_model=GGUF_BASE))
    assert deployed.backend_type is LLAMA_CPP
    assert deployed.adapter == "my-lora"
    assert deployed.options == {
        "backend_type": "llama_cpp",
        "backend_options": {"model": GGUF_BASE, "lora_scaled": [f"{GGUF_LORA}:0"], "jinja": True},
        "allowed_models": ["my-lora"],
    }


@pytest.mark.parametrize("server_type", ["vllm", "mlx_lm"])
def test_a_gguf_lora_for_another_backend_is_refused(server_type: str) -> None:
    message = refusal(gguf_lora(), asking(server_type, base_model=GGUF_BASE))
    assert "a GGUF LoRA is served by llama_cpp only" in message


def test_an_mlx_adapter_goes_to_mlx_lm_over_its_base() -> None:
    deployed = plan(mlx_adapter())
    assert deployed.backend_type is MLX_LM
    assert deployed.adapter == "mlx-adapters"
    assert deployed.options == {
        "backend_type": "mlx_lm",
        "backend_options": {"model": MLX_BASE_DIR, "adapter_path": MLX_ADAPTER_DIR},
        "allowed_models": ["mlx-adapters"],
    }


@pytest.mark.parametrize("server_type", ["vllm", "llama_cpp", "ollama"])
def test_an_mlx_adapter_for_another_backend_is_refused(server_type: str) -> None:
    assert "an mlx_lm adapter is served by mlx_lm only" in refusal(mlx_adapter(), asking(server_type))


def test_an_adapter_is_named_after_its_dir_whatever_the_trailing_slash() -> None:
    deployed = plan(peft_lora(path=PEFT_DIR + "/"))
    assert deployed.adapter == "lora-sft"
    assert deployed.options["allowed_models"] == ["lora-sft"]


# --- what config adds -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("checkpoint", "own_options", "context_option"),
    [
        pytest.param(gguf_model(), {"model": GGUF, "jinja": True}, {"ctx_size": 4096}, id="llama_cpp"),
        pytest.param(hf_dir(), {"model": HF_DIR}, {"max_model_len": 4096}, id="vllm"),
        pytest.param(peft_lora(), None, {"max_model_len": 4096}, id="vllm-lora"),
        pytest.param(hf_dir(MLX_DIR, mlx=True), {"model": MLX_DIR}, {}, id="mlx_lm"),
        pytest.param(mlx_adapter(), None, {}, id="mlx_lm-adapter"),
    ],
)
def test_context_length_becomes_the_backends_context_option(
    checkpoint: Checkpoint, own_options: dict[str, Any] | None, context_option: dict[str, Any]
) -> None:
    without = plan(checkpoint).options["backend_options"]
    if own_options is not None:
        assert without == own_options
    assert plan(checkpoint, asking(context_length=4096)).options["backend_options"] == {
        **without,
        **context_option,
    }


@pytest.mark.parametrize(
    ("checkpoint", "expected"),
    [
        pytest.param(gguf_model(), {"model": GGUF, "jinja": True}, id="llama_cpp"),
        pytest.param(hf_dir(), {"model": HF_DIR, "gpu_memory_utilization": 0.6}, id="vllm"),
        pytest.param(hf_dir(MLX_DIR, mlx=True), {"model": MLX_DIR}, id="mlx_lm"),
    ],
)
def test_gpu_memory_utilization_is_given_to_vllm_only(
    checkpoint: Checkpoint, expected: dict[str, Any]
) -> None:
    assert plan(checkpoint, asking(gpu_memory_utilization=0.6)).options["backend_options"] == expected


@pytest.mark.parametrize(
    ("checkpoint", "config", "expected"),
    [
        pytest.param(
            gguf_model(),
            {
                "context_length": 4096,
                "backend_options": {"ctx_size": 8192, "jinja": False, "gpu_layers": 99},
            },
            {"model": GGUF, "jinja": False, "ctx_size": 8192, "gpu_layers": 99},
            id="llama_cpp",
        ),
        pytest.param(
            peft_lora(),
            {
                "gpu_memory_utilization": 0.6,
                "backend_options": {"max_lora_rank": 64, "gpu_memory_utilization": 0.9},
            },
            {
                "model": BASE_DIR,
                "enable_lora": True,
                "lora_modules": [f"lora-sft={PEFT_DIR}"],
                "max_lora_rank": 64,
                "gpu_memory_utilization": 0.9,
            },
            id="vllm-lora",
        ),
        pytest.param(
            hf_dir(MLX_DIR, mlx=True),
            {"backend_options": {"model": "/models/elsewhere", "trust_remote_code": True}},
            {"model": "/models/elsewhere", "trust_remote_code": True},
            id="mlx_lm",
        ),
    ],
)
def test_config_backend_options_win_over_what_deploy_sets(
    checkpoint: Checkpoint, config: dict[str, Any], expected: dict[str, Any]
) -> None:
    assert plan(checkpoint, asking(**config)).options["backend_options"] == expected


@pytest.mark.parametrize("idle_timeout", [0, 30])
def test_idle_timeout_is_passed_to_the_instance(idle_timeout: int) -> None:
    assert plan(gguf_model(), asking(idle_timeout=idle_timeout)).options["idle_timeout"] == idle_timeout
    assert "idle_timeout" not in plan(gguf_model()).options


# --- backends that are not installed --------------------------------------------------------------


@pytest.mark.parametrize(
    ("checkpoint", "request_", "missing"),
    [
        pytest.param(gguf_model(), asking(), LLAMA_CPP, id="gguf"),
        pytest.param(gguf_lora(), asking(base_model=GGUF_BASE), LLAMA_CPP, id="gguf-lora"),
        pytest.param(hf_dir(MLX_DIR, mlx=True), asking(), MLX_LM, id="mlx-dir"),
        pytest.param(mlx_adapter(), asking(), MLX_LM, id="mlx-adapter"),
        pytest.param(peft_lora(), asking("vllm"), VLLM, id="peft-lora-asked-vllm"),
        pytest.param(hf_dir(), asking("vllm"), VLLM, id="hf-dir-asked-vllm-does-not-fall-back"),
        pytest.param(hf_dir(), asking("mlx_lm"), MLX_LM, id="hf-dir-asked-mlx_lm"),
    ],
)
def test_a_backend_that_is_not_installed_is_refused_by_name(
    checkpoint: Checkpoint, request_: DeployRequest, missing: BackendType
) -> None:
    others = installed(*(backend for backend in BackendType if backend is not missing))
    message = refusal(checkpoint, request_, runnable=others)
    assert message.startswith(f"{missing.value} is not installed here")


# --- the options are real options -----------------------------------------------------------------

EVERY_PLAN = [
    pytest.param(hf_dir(), asking(), EVERYTHING, id="hf-dir-vllm"),
    pytest.param(hf_dir(), asking(), installed(MLX_LM), id="hf-dir-mlx_lm"),
    pytest.param(hf_dir(MLX_DIR, mlx=True), asking(), EVERYTHING, id="mlx-dir"),
    pytest.param(gguf_model(), asking("ollama"), EVERYTHING, id="gguf"),
    pytest.param(gguf_lora(), asking(base_model=GGUF_BASE), EVERYTHING, id="gguf-lora"),
    pytest.param(peft_lora(r=321), asking(), EVERYTHING, id="peft-lora"),
    pytest.param(mlx_adapter(), asking(), EVERYTHING, id="mlx-adapter"),
    pytest.param(hf_dir(), asking("ollama"), EVERYTHING, id="hf-dir-to-gguf"),
    pytest.param(peft_lora(), asking("llama_cpp"), EVERYTHING, id="peft-lora-to-gguf"),
    pytest.param(peft_lora(), asking("mlx_lm"), EVERYTHING, id="peft-lora-to-mlx"),
]
FULL_CONFIG = {"context_length": 4096, "gpu_memory_utilization": 0.6, "idle_timeout": 15}


@pytest.mark.parametrize(("checkpoint", "request_", "runnable"), EVERY_PLAN)
@pytest.mark.parametrize("config", [{}, FULL_CONFIG], ids=["bare", "full-config"])
def test_every_plans_options_are_instance_options_by_their_llamactl_keys(
    checkpoint: Checkpoint, request_: DeployRequest, runnable: Runnable, config: dict[str, Any]
) -> None:
    request = msgspec.structs.replace(request_, config=msgspec.structs.replace(request_.config, **config))
    deployed = plan(checkpoint, request, runnable)
    decoded = instance_options_from_json(deployed.options)
    assert decoded.backend_type is deployed.backend_type
    # Encoded again, the options are the same dict: every key is the option's own key (not another
    # spelling of it, nor one the backend lacks) and every value is of the option's type.
    assert msgspec.to_builtins(decoded) == deployed.options
