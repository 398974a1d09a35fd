"""Real server commands from the backends' docs, READMEs and issue threads (see each `# source:`)."""

from pathlib import Path

CORPUS_DIR = Path(__file__).with_name("corpus")

# corpus file -> backend name as the CLI and API spell it
CORPUS_BACKENDS = {"llama_cpp": "llama-cpp", "vllm": "vllm", "mlx_lm": "mlx"}


def corpus_commands() -> list[tuple[str, str, str]]:
    """(backend name, source, command) for every command of the corpus."""
    commands: list[tuple[str, str, str]] = []
    for stem, backend in CORPUS_BACKENDS.items():
        for block in (CORPUS_DIR / f"{stem}.txt").read_text().split("\n---\n"):
            source_line, _, command = block.strip("\n").partition("\n")
            commands.append((backend, source_line.removeprefix("# source: "), command))
    return commands
