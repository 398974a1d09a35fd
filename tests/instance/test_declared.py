"""Instances declared in the config file: parsed with names and keys in errors, reconciled on reload."""

import asyncio
import sys
from pathlib import Path
from typing import Any

import msgspec
import pytest

from llamactl.instance.declared import DeclarationError, declared_instances
from llamactl.instance.errors import InstanceConflict
from llamactl.instance.status import InstanceStatus
from tests.instance.helpers import alive, assert_none_alive, opened_manager, recorded_pids, standin_options


def test_a_pasted_command_is_parsed_and_its_backend_told_by_the_executable() -> None:
    declared = declared_instances(
        {
            "qwen": {
                "command": "CUDA_VISIBLE_DEVICES=0 llama-server -m /m/q.gguf -ngl 99",
                "idle_timeout": 5,
            },
            "big": {"command": "vllm serve org/m -tp 2", "environment": {"HF_HOME": "/hf"}},
            "mac": {"backend_type": "mlx_lm", "backend_options": {"model": "/m"}, "group": "apple"},
        }
    )
    assert msgspec.to_builtins(declared["qwen"].backend_options) == {"gpu_layers": 99, "model": "/m/q.gguf"}
    assert declared["qwen"].environment == {"CUDA_VISIBLE_DEVICES": "0"}
    assert declared["qwen"].idle_timeout == 5
    assert declared["big"].backend_type.value == "vllm"
    assert declared["big"].environment == {"HF_HOME": "/hf"}
    assert declared["mac"].group == "apple"


@pytest.mark.parametrize(
    ("models", "message"),
    [
        ({"q": {"command": "llama-server -c lots"}}, "models.q.command: -c takes an integer"),
        ({"q": {"command": "llama-server -m a | tee x"}}, "models.q.command: the command contains a pipe"),
        ({"q": {"command": "-m a.gguf"}}, "models.q.command: cannot tell the backend"),
        ({"q": {"command": "vllm serve m", "backend_type": "llama_cpp"}}, "models.q.command: this is a vllm"),
        ({"q": {"command": "llama-server -m a", "backend_options": {}}}, "models.q.command: give either"),
        (
            {"q": {"backend_type": "vllm", "backend_options": {"tp": "x"}}},
            "models.q.backend_options.tensor_parallel_size",
        ),
        (
            {"q": {"backend_type": "llama_cpp", "idle_timeout": -1}},
            "models.q.idle_timeout: idle_timeout: Expected `int` >= 0",
        ),
        ({"no/slash": {"backend_type": "llama_cpp"}}, "models.no/slash: invalid instance name"),
    ],
)
def test_a_bad_declaration_names_itself_and_the_key(models: dict[str, Any], message: str) -> None:
    with pytest.raises(DeclarationError) as caught:
        declared_instances(models)
    assert str(caught.value).startswith(message)


def standin_declaration(pids: Path, extra: str = "", **options: Any) -> dict[str, Any]:
    command = f"STANDIN_PIDS={pids} llama-server -m /m/tiny.gguf {extra}".strip()
    return {"command": command, "command_override": sys.executable, **options}


def test_reconcile_creates_updates_removes_and_leaves_api_instances_alone(tmp_path: Path) -> None:
    pids = tmp_path / "pids"

    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("api-made", standin_options(pids))
            first = declared_instances(
                {
                    "keep": standin_declaration(pids),
                    "tune": standin_declaration(pids),
                    "drop": standin_declaration(pids),
                }
            )
            report = await m.reconcile_declared(first)
            assert report.created == ["keep", "tune", "drop"]
            assert m.get("keep").declared and not m.get("api-made").declared
            for name in ("keep", "tune", "drop"):
                await m.start(name)
            second = declared_instances(
                {
                    "keep": standin_declaration(pids, idle_timeout=9),  # not a command change: no restart
                    "tune": standin_declaration(pids, "-c 256"),  # command change: restart
                    "new": standin_declaration(pids),
                }
            )
            report = await m.reconcile_declared(second)
            assert (report.created, report.updated, report.removed) == (["new"], ["keep", "tune"], ["drop"])
            assert len(recorded_pids(pids)) == 4  # three starts, and tune's restart
            assert [i.name for i in m.list_instances()] == ["api-made", "keep", "tune", "new"]
            assert m.get("keep").options.idle_timeout == 9
            assert m.get("tune").status is InstanceStatus.RUNNING
            assert sum(alive(pid) for pid in recorded_pids(pids)) == 2  # keep and the new tune

    asyncio.run(scenario())
    assert_none_alive(pids)


def test_a_clash_with_an_api_instance_changes_nothing(tmp_path: Path) -> None:
    pids = tmp_path / "pids"

    async def scenario() -> None:
        async with opened_manager(tmp_path) as m:
            m.create("taken", standin_options(pids))
            with pytest.raises(InstanceConflict, match="created through the API"):
                await m.reconcile_declared(
                    declared_instances(
                        {"fresh": standin_declaration(pids), "taken": standin_declaration(pids)}
                    )
                )
            assert [i.name for i in m.list_instances()] == ["taken"]

    asyncio.run(scenario())


def test_a_pasted_executable_path_is_the_binary_that_runs() -> None:
    declared = declared_instances(
        {
            "built": {"command": "/opt/llama.cpp/build/bin/llama-server -m /m/q.gguf"},
            "bare": {"command": "llama-server -m /m/q.gguf"},
        }
    )
    assert declared["built"].command_override == "/opt/llama.cpp/build/bin/llama-server"
    assert declared["bare"].command_override is None
