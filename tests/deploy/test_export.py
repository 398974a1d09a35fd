"""``deploy/export``: the files that reproduce an instance, checked by running the launch scripts.

Each script is run with bash against a stand-in executable that prints the
arguments and variables it was given, so what is asserted is what the backend
would receive, from wherever the export dir was moved to.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import msgspec
import pytest

from llamactl.backends import BackendOptions
from llamactl.deploy.export import (
    MANIFEST,
    ExportCommand,
    ExportFiles,
    ExportRefused,
    ExportSource,
    build_export,
)
from llamactl.deploy.export_archive import BadArchive, ExportDirTaken, unpack_archive, write_archive
from llamactl.errors import HttpError
from llamactl.instance.launch import BackendSettings, launch_command
from llamactl.instance.options import InstanceOptions, instance_options_from_json
from tests.e2e.tiny_models import write_tiny_peft_lora
from tests.models.gguf_files import LlamaShape, write_llama_gguf, write_lora_gguf

API_KEY = "sk-very-secret-key"
HF_TOKEN = "hf_secrettoken"
NOW = datetime.datetime(2026, 12, 2, 6, 30, 15, 123456, tzinfo=datetime.UTC)
ECHO = """#!{python}
import json, os, sys
print(json.dumps({{"argv": sys.argv[1:], "env": {{k: v for k, v in os.environ.items() if k in {names!r}}}}}))
"""
"""A backend stand-in: its arguments and the variables a script may set, as JSON."""


def _echo_backend(directory: Path) -> Path:
    path = directory / "bin" / "backend"
    path.parent.mkdir(parents=True)
    names = ["HF_TOKEN", "BACKEND_THREADS", "INSTANCE_NOTE", "HOME_GUESS", "OLLAMA_HOST"]
    path.write_text(ECHO.format(python=sys.executable, names=names))
    path.chmod(0o755)
    return path


def _export(
    tmp_path: Path, document: dict[str, Any], target: str, port: int | None = 18455
) -> tuple[ExportFiles, Path]:
    """The export of an instance with ``document``'s options, its backend the echo stand-in."""
    options = instance_options_from_json(document)
    settings = BackendSettings(command=str(_echo_backend(tmp_path)), environment={"BACKEND_THREADS": "4"})
    files = build_export(_source(options, port), target, _command_of(options, settings), now=NOW)
    return files, _unpacked(files, tmp_path / "moved" / "export")


def _source(options: InstanceOptions, port: int | None) -> ExportSource:
    return ExportSource(
        name="tuned",
        backend_type=options.backend_type.value,
        options=options.backend_options,
        port=port,
        backend_version="version: 10434 (abc)",
    )


def _command_of(options: InstanceOptions, settings: BackendSettings) -> Any:
    def command_of(backend_options: BackendOptions, port: int) -> ExportCommand:
        with_options = msgspec.structs.replace(options, backend_options=backend_options)
        command = launch_command("tuned", with_options, settings, "127.0.0.1", port, {})
        return ExportCommand(argv=command.argv, environment=command.environment)

    return command_of


def _unpacked(files: ExportFiles, directory: Path) -> Path:
    archive = io.BytesIO()
    write_archive(files, archive)
    archive.seek(0)
    unpack_archive(archive, directory)
    return directory


def _run(script: Path, **variables: str) -> subprocess.CompletedProcess[str]:
    environment = {"PATH": os.environ["PATH"], **variables}
    return subprocess.run(
        ["bash", str(script), "--extra"], capture_output=True, text=True, env=environment, timeout=30, cwd="/"
    )


def _received(script: Path, **variables: str) -> dict[str, Any]:
    ran = _run(script, **variables)
    assert ran.returncode == 0, ran.stderr
    received: dict[str, Any] = json.loads(ran.stdout)
    return received


def _flag(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def _every_byte(directory: Path) -> bytes:
    return b"".join(path.read_bytes() for path in sorted(directory.rglob("*")) if path.is_file())


def _llama(tmp_path: Path, **backend_options: Any) -> dict[str, Any]:
    (tmp_path / "m").mkdir(exist_ok=True)
    (tmp_path / "a").mkdir(exist_ok=True)
    model = write_llama_gguf(tmp_path / "m" / "tiny.Q8_0.gguf", LlamaShape(file_type=7))
    adapter = write_lora_gguf(tmp_path / "a" / "my-lora.gguf", rank=4, alpha=8.0)
    options = {"model": str(model), "lora_scaled": [f"{adapter}:0"], "ctx_size": 1024, **backend_options}
    return {
        "backend_type": "llama_cpp",
        "backend_options": options,
        "environment": {"INSTANCE_NOTE": "a b 'c' $HOME", "HF_TOKEN": HF_TOKEN},
    }


def test_the_llama_server_script_runs_the_exact_command_on_loopback_with_the_adapter_beside_it(
    tmp_path: Path,
) -> None:
    _, export = _export(tmp_path, _llama(tmp_path), "llama-server")
    script = export / "llama-server_launch.sh"
    assert script.stat().st_mode & stat.S_IXUSR
    received = _received(script, HF_TOKEN="from-the-caller")
    argv = received["argv"]
    assert _flag(argv, "--host") == "127.0.0.1" and _flag(argv, "--port") == "18455"
    assert _flag(argv, "--lora-scaled") == f"{export}/adapters/my-lora.gguf:0"
    assert (export / "adapters" / "my-lora.gguf").read_bytes() == (tmp_path / "a/my-lora.gguf").read_bytes()
    assert _flag(argv, "--model") == str(tmp_path / "m" / "tiny.Q8_0.gguf")  # the weights stay where they are
    assert _flag(argv, "--ctx-size") == "1024" and argv[-1] == "--extra"
    # The backend's and the instance's variables, exactly; nothing of llamactl's own environment.
    assert received["env"] == {
        "BACKEND_THREADS": "4",
        "INSTANCE_NOTE": "a b 'c' $HOME",
        "HF_TOKEN": "from-the-caller",
    }
    assert _flag(_received(script, PORT="18999", HF_TOKEN="x")["argv"], "--port") == "18999"


def test_secrets_are_variables_the_script_asks_for_never_values(tmp_path: Path) -> None:
    document = _llama(tmp_path, api_key=[API_KEY])
    _, export = _export(tmp_path, document, "llama-server")
    every_byte = _every_byte(export)
    assert API_KEY.encode() not in every_byte and HF_TOKEN.encode() not in every_byte
    script = export / "llama-server_launch.sh"
    refused = _run(script, HF_TOKEN="t")
    assert refused.returncode != 0 and "set API_KEY: the value of --api-key" in refused.stderr
    received = _received(script, HF_TOKEN="t", API_KEY="the-callers-key")
    assert _flag(received["argv"], "--api-key") == "the-callers-key"
    manifest = json.loads((export / MANIFEST).read_text())
    assert _flag(manifest["argv"], "--api-key") == "$API_KEY" and _flag(manifest["argv"], "--port") == "$PORT"


def test_the_manifest_has_dlms_fields_and_the_sha256_of_every_file_in_the_dir(tmp_path: Path) -> None:
    _, export = _export(tmp_path, _llama(tmp_path), "llama-server")
    manifest = json.loads((export / MANIFEST).read_text())
    assert manifest["target"] == "llama-server" and manifest["quant"] == "Q8_0"
    assert manifest["adapter_version"] == 1 and manifest["created_by"].startswith("llamactl-")
    assert manifest["created_at"] == "2026-12-02T06:30:15Z"
    assert manifest["base_model_hf_id"] is None and manifest["base_model_revision"] is None
    assert manifest["backend_version"] == "version: 10434 (abc)"
    on_disk = sorted(
        str(p.relative_to(export)) for p in export.rglob("*") if p.is_file() and p.name != MANIFEST
    )
    assert [entry["path"] for entry in manifest["artifacts"]] == on_disk
    for entry in manifest["artifacts"]:
        content = (export / entry["path"]).read_bytes()
        assert entry["sha256"] == hashlib.sha256(content).hexdigest() and entry["size_bytes"] == len(content)
    by_path = {entry["path"]: entry for entry in manifest["artifacts"]}
    assert by_path["adapters/my-lora.gguf"]["file_type"] == "F32"
    assert manifest["adapters"] == [
        {
            "path": "adapters/my-lora.gguf",
            "source": str(tmp_path / "a" / "my-lora.gguf"),
            "r": 4,
            "lora_alpha": 8.0,
            "target_modules": ["attn_q", "attn_v"],
        }
    ]
    assert list(manifest) == sorted(manifest)  # dlm's sort_keys


def test_a_model_in_the_hub_cache_names_its_repo_and_revision(tmp_path: Path) -> None:
    snapshot = tmp_path / "hub" / "models--org--tiny-GGUF" / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    write_llama_gguf(snapshot / "tiny.gguf")
    document = {"backend_type": "llama_cpp", "backend_options": {"model": str(snapshot / "tiny.gguf")}}
    files, _ = _export(tmp_path, document, "llama-server", port=None)
    manifest = json.loads(files.written[MANIFEST])
    assert (manifest["base_model_hf_id"], manifest["base_model_revision"]) == ("org/tiny-GGUF", "0123abcd")
    assert "PORT:-8080" in files.written["llama-server_launch.sh"].decode()  # no port: llama-server's own


def test_the_ollama_modelfile_has_from_adapter_and_parameter_lines_and_no_template(tmp_path: Path) -> None:
    document = _llama(tmp_path, temp=0.2, top_k=20, seed=7, reverse_prompt=["<|im_end|>"])
    _, export = _export(tmp_path, document, "ollama")
    lines = (export / "Modelfile").read_text().splitlines()
    instructions = [line for line in lines if not line.startswith("#")]
    assert instructions == [
        f"FROM {tmp_path / 'm' / 'tiny.Q8_0.gguf'}",
        "ADAPTER ./adapters/my-lora.gguf",
        "PARAMETER num_ctx 1024",
        "PARAMETER seed 7",
        "PARAMETER temperature 0.2",
        "PARAMETER top_k 20",
        'PARAMETER stop "<|im_end|>"',
    ]
    assert any("No TEMPLATE" in line for line in lines)
    script = (export / "ollama_create.sh").read_text()
    assert 'OLLAMA_HOST="127.0.0.1:${PORT}"' in script and '"${SCRIPT_DIR}/Modelfile"' in script


def test_vllm_gets_its_adapter_dirs_copied_and_its_engine_arguments_as_json(tmp_path: Path) -> None:
    adapter = write_tiny_peft_lora(tmp_path / "loras" / "my-lora", base_model="/models/base")
    second = write_tiny_peft_lora(tmp_path / "other" / "my-lora", base_model="/models/base")
    modules = [f"my-lora={adapter}", json.dumps({"name": "second", "path": str(second)})]
    options = {"model": "/models/base", "lora_modules": modules, "enable_lora": True, "api_key": [API_KEY]}
    _, export = _export(tmp_path, {"backend_type": "vllm", "backend_options": options}, "vllm")
    received = _received(export / "vllm_launch.sh", API_KEY="k")
    entries = received["argv"][received["argv"].index("--lora-modules") + 1 :][:2]
    # Two adapters named alike on disk are kept apart; each entry keeps its form.
    assert entries[0] == f"my-lora={export}/adapters/my-lora"
    assert json.loads(entries[1]) == {"name": "second", "path": f"{export}/adapters/my-lora-2"}
    assert (export / "adapters/my-lora-2/adapter_config.json").read_bytes() == (
        second / "adapter_config.json"
    ).read_bytes()
    config = json.loads((export / "vllm_config.json").read_text())
    assert config["model"] == "/models/base" and config["enable_lora"] is True
    assert config["lora_modules"][0] == "my-lora=adapters/my-lora"
    assert config["host"] == "127.0.0.1" and "api_key" not in config
    manifest = json.loads((export / MANIFEST).read_text())
    assert manifest["quant"] == "hf"
    assert [(a["path"], a["r"], a["lora_alpha"], a["target_modules"]) for a in manifest["adapters"]] == [
        ("adapters/my-lora", 8, 16.0, ["q_proj", "v_proj"]),
        ("adapters/my-lora-2", 8, 16.0, ["q_proj", "v_proj"]),
    ]


def test_mlx_serve_runs_with_its_adapter_dir_beside_the_script(tmp_path: Path) -> None:
    adapter = tmp_path / "mlx-adapter"
    (adapter / "nested").mkdir(parents=True)
    (adapter / "adapters.safetensors").write_bytes(b"weights")
    (adapter / "nested" / "note.txt").write_text("kept")
    config = {
        "fine_tune_type": "lora",
        "lora_parameters": {"rank": 4, "scale": 2.0, "keys": ["self_attn.q_proj"]},
    }
    (adapter / "adapter_config.json").write_text(json.dumps(config))
    options = {"model": "/models/mlx-tiny", "adapter_path": str(adapter)}
    _, export = _export(tmp_path, {"backend_type": "mlx_lm", "backend_options": options}, "mlx-serve")
    received = _received(export / "mlx-serve_launch.sh")
    assert _flag(received["argv"], "--adapter-path") == f"{export}/adapters/mlx-adapter"
    assert (export / "adapters/mlx-adapter/nested/note.txt").read_text() == "kept"
    facts = json.loads((export / MANIFEST).read_text())["adapters"][0]
    assert (facts["r"], facts["lora_alpha"], facts["target_modules"]) == (4, None, ["self_attn.q_proj"])


@pytest.mark.parametrize(
    ("backend_type", "target", "fitting"),
    [
        ("llama_cpp", "vllm", "llama-server, ollama"),
        ("vllm", "llama-server", "vllm"),
        ("mlx_lm", "ollama", "mlx-serve"),
        ("llama_cpp", "docker", "llama-server, ollama"),
    ],
)
def test_a_target_that_does_not_run_the_backend_is_a_400_naming_those_that_do(
    tmp_path: Path, backend_type: str, target: str, fitting: str
) -> None:
    with pytest.raises(HttpError) as refused:
        _export(tmp_path, {"backend_type": backend_type, "backend_options": {"model": "/m"}}, target)
    assert refused.value.status == 400 and refused.value.field == "target"
    assert fitting in refused.value.message


def test_a_missing_adapter_is_refused(tmp_path: Path) -> None:
    document = {"backend_type": "llama_cpp", "backend_options": {"model": "/m.gguf", "lora": ["/gone.gguf"]}}
    with pytest.raises(ExportRefused, match=r"/gone\.gguf does not exist"):
        _export(tmp_path, document, "llama-server")


def test_an_export_goes_only_into_a_new_or_empty_dir(tmp_path: Path) -> None:
    files, _ = _export(tmp_path, _llama(tmp_path), "llama-server")
    taken = tmp_path / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    with pytest.raises(ExportDirTaken) as refused:
        _unpacked(files, taken)
    assert refused.value.status == 409
    assert [p.name for p in taken.iterdir()] == ["notes.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    assert (_unpacked(files, empty) / "llama-server_launch.sh").is_file()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []  # no temp dir left


@pytest.mark.parametrize("member", ["../escaped.sh", "/etc/escaped.sh", "adapters/../../escaped.sh"])
def test_an_archive_member_outside_the_dir_is_refused_and_nothing_is_written(
    tmp_path: Path, member: str
) -> None:
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w:gz") as tar:
        for name in ("ok.sh", member):
            info = tarfile.TarInfo(name)
            info.size = 2
            tar.addfile(info, io.BytesIO(b"hi"))
    archive.seek(0)
    with pytest.raises(BadArchive, match="not a file inside it"):
        unpack_archive(archive, tmp_path / "out" / "export")
    assert list((tmp_path / "out").iterdir()) == []
    assert not (tmp_path / "escaped.sh").exists() and not (tmp_path / "out" / "escaped.sh").exists()


def test_a_cut_archive_leaves_nothing(tmp_path: Path) -> None:
    files, _ = _export(tmp_path, _llama(tmp_path), "llama-server")
    archive = io.BytesIO()
    write_archive(files, archive)
    with pytest.raises(BadArchive, match="not a whole gzipped tar"):
        unpack_archive(io.BytesIO(archive.getvalue()[:-40]), tmp_path / "out" / "export")
    assert list((tmp_path / "out").iterdir()) == []
