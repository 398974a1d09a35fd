"""The exact argv llamactl builds for real commands: reviewed snapshots, regenerate with --snapshot-update."""

import pytest
from syrupy.assertion import SnapshotAssertion

from llamactl.backends import BACKENDS, BackendInputError, parse_command
from tests.backends.corpus import corpus_commands

ACCEPTED = []
for backend, source, command in corpus_commands():
    try:
        ACCEPTED.append((backend, source, parse_command(backend, command)))
    except BackendInputError:
        continue


@pytest.mark.parametrize(
    ("backend", "source", "parsed"), ACCEPTED, ids=[f"{b}-{i}" for i, (b, _, _) in enumerate(ACCEPTED)]
)
def test_built_command_line(backend: str, source: str, parsed, snapshot: SnapshotAssertion) -> None:  # type: ignore[no-untyped-def]
    argv = BACKENDS[parsed.backend_type].command_line(parsed.backend_options)
    assert {"source": source, "environment": parsed.environment, "argv": argv} == snapshot
