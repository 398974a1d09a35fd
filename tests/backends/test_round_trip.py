"""Parse then build is lossless: for any options, building argv and parsing it gives them back."""

import shlex
import string
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamactl.backends import BACKENDS, Backend, BackendInputError, BackendType, parse_command
from llamactl.backends.cli_spec import FlagSpec
from tests.backends.corpus import corpus_commands

# Values a user can paste: printable ASCII including quotes, $, backslashes and spaces.
PASTABLE = st.text(alphabet=string.printable.strip("\t\n\r\x0b\x0c"), min_size=1, max_size=12)
WORD = st.text(alphabet=string.ascii_letters + string.digits + "._/=:,", min_size=1, max_size=12)
UNKNOWN_FLAG = st.from_regex(r"--zz-[a-z]{1,8}", fullmatch=True)


def scalar(flag: FlagSpec, text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    if flag.choices:
        return st.sampled_from([int(c) if flag.kind == "int" else c for c in flag.choices])
    if flag.key == "port":  # options_base.Port; the host is never empty, as no generated text is
        return st.integers(1, 65535)
    if flag.kind == "int":
        return st.integers(-(2**40), 2**40)
    if flag.kind == "float":
        return st.floats(allow_nan=False, allow_infinity=False)
    if flag.kind == "int_or_str":
        return st.integers(-(2**20), 2**20) | text.filter(lambda s: not s.lstrip("+-").isdigit())
    return text


def flag_value(flag: FlagSpec, text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    if flag.kind == "switch":
        return st.sampled_from([True, False] if flag.negations else [True])
    # Values after which the parser must decide where a flag's values end cannot start with "-".
    undashed = text.filter(lambda s: not s.startswith("-"))
    if flag.positional:
        return undashed
    if flag.arity == "many":
        return st.lists(scalar(flag, undashed), min_size=1, max_size=3)
    if flag.arity == "optional":
        return st.just(True) | scalar(flag, undashed)
    if flag.arity == "two":
        return st.tuples(scalar(flag, text), scalar(flag, text))
    if flag.repeated:
        return st.lists(scalar(flag, text), min_size=1, max_size=3)
    return scalar(flag, text)


def extra_arguments() -> st.SearchStrategy[list[str]]:
    pair = st.tuples(UNKNOWN_FLAG, st.lists(WORD.filter(lambda s: not s.startswith("-")), max_size=2))
    return st.lists(pair, max_size=3).map(
        lambda pairs: [t for flag, values in pairs for t in [flag, *values]]
    )


def options_strategy(backend: Backend, text: st.SearchStrategy[str]) -> st.SearchStrategy[Any]:
    optional = {flag.key: flag_value(flag, text) for flag in backend.spec.flags}
    optional["extra_args"] = extra_arguments()
    values = st.fixed_dictionaries({}, optional=optional)
    return values.map(lambda v: msgspec.convert(v, backend.options_type))


def as_json(options: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(options))


@pytest.mark.parametrize("backend_type", list(BackendType))
def test_argv_round_trip(backend_type: BackendType) -> None:
    backend = BACKENDS[backend_type]

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(options_strategy(backend, PASTABLE))
    def round_trip(options: Any) -> None:
        arguments = backend.build_arguments(options)
        assert as_json(backend.options_from_arguments(arguments)) == as_json(options)

    round_trip()


@pytest.mark.parametrize("backend_type", list(BackendType))
def test_shell_round_trip_through_the_quoted_command(backend_type: BackendType) -> None:
    backend = BACKENDS[backend_type]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(options_strategy(backend, PASTABLE), st.dictionaries(st.sampled_from(["HF_HOME", "CUDA_X"]), WORD))
    def round_trip(options: Any, environment: dict[str, str]) -> None:
        assignments = [f"{name}={shlex.quote(value)}" for name, value in environment.items()]
        text = " ".join([*assignments, shlex.join(backend.command_line(options))])
        parsed = parse_command(backend.config_key, text)
        assert as_json(parsed.backend_options) == as_json(options)
        assert parsed.environment == environment

    round_trip()


@pytest.mark.parametrize("backend_type", list(BackendType))
def test_json_round_trip(backend_type: BackendType) -> None:
    backend = BACKENDS[backend_type]

    @settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(options_strategy(backend, PASTABLE))
    def round_trip(options: Any) -> None:
        assert as_json(backend.options_from_json(as_json(options))) == as_json(options)

    round_trip()


# Corpus commands the pinned backends reject too, with the reason llamactl gives.
REJECTED = {
    "models\\7B": "backslash before '7'",
    ".\\llama-server": "backslash before 'l'",
    "llama-server Qwen3-14B-Q5_K_M.gguf": "write --model Qwen3-14B-Q5_K_M.gguf",
    "-ctk turbo4": "-ctk takes one of f32",
}

CORPUS = corpus_commands()


@pytest.mark.parametrize(
    ("backend", "source", "command"), CORPUS, ids=[f"{b}-{i}" for i, (b, _, _) in enumerate(CORPUS)]
)
def test_corpus_command_round_trips(backend: str, source: str, command: str) -> None:
    rejection = next((reason for marker, reason in REJECTED.items() if marker in command), None)
    if rejection is not None:
        with pytest.raises(BackendInputError, match=rejection):
            parse_command(backend, command)
        return
    parsed = parse_command(backend, command)
    rebuilt = shlex.join(BACKENDS[parsed.backend_type].command_line(parsed.backend_options))
    again = parse_command(backend, rebuilt)
    assert as_json(again.backend_options) == as_json(parsed.backend_options)


def test_corpus_is_real_and_varied() -> None:
    assert {backend for backend, _, _ in CORPUS} == {"llama-cpp", "vllm", "mlx"}
    assert len(CORPUS) >= 60
    assert all(source for _, source, _ in CORPUS)
