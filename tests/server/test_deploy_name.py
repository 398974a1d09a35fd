"""``default_name``: the instance a deploy creates when the request names none, named after the checkpoint."""

from __future__ import annotations

import pytest

from llamactl.deploy.checkpoint_kinds import Checkpoint
from llamactl.instance.options import check_instance_name
from llamactl.server.deploy_api import default_name
from tests.deploy.checkpoints import gguf_lora, gguf_model, hf_dir, mlx_adapter, peft_lora


@pytest.mark.parametrize(
    ("checkpoint", "name"),
    [
        pytest.param(gguf_model("/models/my-finetune.Q8_0.gguf"), "my-finetune.Q8_0", id="gguf-file"),
        pytest.param(gguf_lora("/models/my-lora.gguf"), "my-lora", id="gguf-lora-file"),
        pytest.param(gguf_model("/models/plain-file"), "plain-file", id="gguf-without-suffix"),
        pytest.param(hf_dir("/runs/llama-sft"), "llama-sft", id="model-dir"),
        pytest.param(peft_lora("/runs/lora-sft/"), "lora-sft", id="trailing-slash"),
        pytest.param(peft_lora("/runs/lora-sft/checkpoint-500"), "lora-sft", id="trainer-checkpoint"),
        pytest.param(hf_dir("/runs/sft/checkpoint-12/"), "sft", id="trainer-checkpoint-slash"),
        pytest.param(mlx_adapter("/runs/mlx run #3/checkpoint-1"), "mlx-run-3", id="trainer-odd-parent"),
        # Only a trainer's numbered checkpoint is named after its dir; other names are the checkpoint's own.
        pytest.param(
            gguf_model("/exports/checkpoint-final.gguf"), "checkpoint-final", id="file-named-checkpoint"
        ),
        pytest.param(hf_dir("/runs/sft/checkpoint-best"), "checkpoint-best", id="unnumbered-checkpoint"),
        pytest.param(hf_dir("/runs/sft/checkpoint-"), "checkpoint", id="bare-checkpoint-prefix"),
        pytest.param(hf_dir("/models/Mistral 7B (v0.3)"), "Mistral-7B-v0.3", id="spaces-and-brackets"),
        pytest.param(hf_dir("/models/Qwen2.5:7b+instruct"), "Qwen2.5-7b-instruct", id="colon-and-plus"),
        pytest.param(hf_dir("/models/~ draft ~"), "draft", id="odd-characters-at-the-ends"),
        pytest.param(hf_dir("/models/.cache-"), "cache", id="leading-dot-trailing-dash"),
        pytest.param(hf_dir("/models/" + "x" * 80), "x" * 50, id="long"),
        pytest.param(hf_dir("/models/日本語モデル"), "deployed", id="nothing-nameable"),
        pytest.param(hf_dir("/models/..."), "deployed", id="only-dots"),
    ],
)
def test_a_checkpoint_is_named_after_its_file_or_dir(checkpoint: Checkpoint, name: str) -> None:
    assert default_name(checkpoint) == name


@pytest.mark.parametrize(
    "path",
    [
        "/models/" + "ab " * 30,
        "/models/" + "a" * 49 + " tail",
        "/models/" + "é" * 60 + "z",
        "/models/" + "." * 60 + "model",
        "/runs/" + "-" * 70 + "/checkpoint-7",
    ],
)
def test_every_default_name_is_a_valid_instance_name(path: str) -> None:
    name = default_name(hf_dir(path))
    assert check_instance_name(name) == name
    assert len(name) <= 50
