"""Regenerate each backend's CLI spec and options struct from its pinned help text.

    python tools/generate_cli_specs.py

Reads the pinned help texts in ``tools/cli_help/`` and the Go llamactl's JSON
keys (``go-llamactl-option-keys.tsv``, so existing configs keep their key
names and types), and writes for each backend package:

- ``cli_spec.json``: every flag with its spellings, value kind and arity;
- ``options.py``: the msgspec options struct with one optional field per flag.

The help texts say little about value types, so types come, in order, from
vLLM's own parser dump (``vllm-serve-flags-*.txt``), from the Go llamactl's
struct types, from the few overrides below (each with its reason), and from the
metavar (``N`` is an integer, no metavar is a switch).
"""

from __future__ import annotations

import keyword
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import msgspec

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from llamactl.backends.cli_spec import HELP_CHARS, Arity, CliSpec, FlagSpec, ValueKind  # noqa: E402

HELP_DIR = ROOT / "tools" / "cli_help"
BACKENDS_DIR = ROOT / "llamactl" / "backends"

# Flags that print something and exit: they never belong to a served instance.
INFO_FLAGS = frozenset(
    {"-h", "--help", "--usage", "--version", "--completion-bash", "--list-devices", "-cl", "--cache-list"}
)

# Flags whose value is a credential, by backend package and long spelling: their values are
# never logged nor shown. Paths to key files (--api-key-file, --ssl-key-file) are not secrets.
SECRET_FLAGS: dict[str, frozenset[str]] = {
    "llama_cpp": frozenset({"--api-key", "--hf-token"}),
    "vllm": frozenset({"--api-key", "--hf-token"}),
    "mlx_lm": frozenset(),  # mlx_lm.server 0.32.2 takes no credential
}

GO_TYPE_KIND: dict[str, ValueKind] = {
    "int": "int",
    "float64": "float",
    "string": "str",
    "bool": "switch",
    "[]string": "str",
}


@dataclass
class Draft:
    """A flag while its facts are gathered from the different sources."""

    spellings: list[str]
    negations: list[str] = field(default_factory=list)
    metavar: str = ""
    description: str = ""
    kind: ValueKind | None = None
    choices: list[str] = field(default_factory=list)
    arity: Arity = "one"
    repeated: bool = False
    positional: bool = False
    implied: str | None = None

    @property
    def main_long(self) -> str:
        return next((s for s in self.spellings if s.startswith("--")), self.spellings[0])


def read_go_keys(backend: str) -> dict[str, tuple[str, str]]:
    """Go llamactl JSON key -> (Go type, flag spellings noted in its source)."""
    keys: dict[str, tuple[str, str]] = {}
    for line in (HELP_DIR / "go-llamactl-option-keys.tsv").read_text().splitlines():
        if line.startswith("#"):
            continue
        name, key, go_type, spellings = [*line.split("\t"), ""][:4]
        if name == backend and key != "extra_args":
            keys[key] = (go_type, spellings)
    return keys


def snake(spelling: str) -> str:
    return re.sub(r"[^0-9A-Za-z]+", "_", spelling.lstrip("-")).strip("_")


def go_key_for(draft: Draft, go_keys: dict[str, tuple[str, str]]) -> str | None:
    """The Go llamactl's key for this flag, if it has one (positive spellings only)."""
    positives = set(draft.spellings)
    for key, (_, noted) in go_keys.items():
        # the key as a long flag, or a spelling the Go source notes beside the field
        spellings = {"--" + key.replace("_", "-"), *re.findall(r"-{1,2}[\w.-]+", noted)}
        if positives & spellings:
            return key
    return None


def split_paired(spellings: list[str]) -> tuple[list[str], list[str]]:
    """Split llama-server's ``--mmap, --no-mmap`` style lists into positive and negative spellings.

    Once a positive long spelling has been seen, the first spelling that starts
    with ``--no-``, ``-no-`` or is a short ``-n…`` opens the negative half.
    """
    if not any(s.startswith(("--no-", "-no-")) for s in spellings[1:]):
        return spellings, []
    seen_long = False
    for index, spelling in enumerate(spellings):
        negative = spelling.startswith(("--no-", "-no-")) or (
            seen_long and not spelling.startswith("--") and spelling.startswith("-n")
        )
        if negative and index > 0:
            return spellings[:index], spellings[index:]
        seen_long = seen_long or spelling.startswith("--")
    return spellings, []


# ---------------------------------------------------------------- llama-server

LLAMA_DESCRIPTION_COLUMN = 40

# Overrides for llama-server, where neither the Go types nor the metavar say enough.
LLAMA_OVERRIDES: dict[str, dict[str, object]] = {
    # 'auto' and 'all' are accepted besides a layer count.
    "--gpu-layers": {"kind": "int_or_str"},
    "--spec-draft-ngl": {"kind": "int_or_str"},
    # JSON documents: kept as the exact string, objects accepted on JSON input.
    "--chat-template-kwargs": {"kind": "json"},
    "--json-schema": {"kind": "json"},
    "--ui-config": {"kind": "json"},
    "--mcp-servers-json": {"kind": "json"},
    # llama.cpp appends each occurrence to a list.
    "--reverse-prompt": {"repeated": True},
    "--api-key": {"repeated": True},
    "--control-vector-layer-range": {"arity": "two", "kind": "int"},
    # A switch before b6325; commands written for it still say a bare -fa.
    "--flash-attn": {"implied": "on"},
    # Fractions, though the metavar is N or P and the Go version lacks them.
    "--spec-draft-p-split": {"kind": "float"},
    "--spec-draft-p-min": {"kind": "float"},
}


def llama_drafts(text: str) -> list[Draft]:
    drafts: list[Draft] = []
    for line in text.splitlines():
        if line.startswith("-----") or line.startswith("#"):
            continue
        if line.startswith("-"):
            flags_part, description = line, ""
            if len(line) > LLAMA_DESCRIPTION_COLUMN and line[LLAMA_DESCRIPTION_COLUMN - 1] == " ":
                flags_part = line[:LLAMA_DESCRIPTION_COLUMN]
                description = line[LLAMA_DESCRIPTION_COLUMN:]
            items = [item.strip() for item in flags_part.strip().split(", ")]
            spellings: list[str] = []
            metavar = ""
            for item in items:
                word, _, rest = item.partition(" ")
                spellings.append(word)
                metavar = rest.strip() or metavar
            drafts.append(Draft(spellings=spellings, metavar=metavar, description=description.strip()))
        elif drafts and line.strip():
            drafts[-1].description += " " + line.strip()
    return drafts


def llama_kind(draft: Draft, go_type: str | None) -> None:
    metavar = draft.metavar
    choice_match = re.fullmatch(r"\{([\w,.-]+)\}|\[([\w|]+)\]", metavar)
    allowed = re.search(r"allowed values: ([\w, ]+?)\s*\(", draft.description)
    if not metavar:
        draft.kind = "switch"
    elif choice_match:
        draft.kind = "str"
        draft.choices = re.split(r"[,|]", choice_match.group(1) or choice_match.group(2))
    elif allowed:
        draft.kind = "str"
        draft.choices = [c.strip() for c in allowed.group(1).split(",")]
    elif go_type in GO_TYPE_KIND and go_type != "bool":  # Go types some valued flags as bool
        draft.kind = GO_TYPE_KIND[go_type]
        draft.repeated = go_type == "[]string"
    elif re.fullmatch(r"N|<0\|1>|<0\.\.\.100>|INDEX|SECONDS", metavar):
        default = re.search(r"default: (-?[\d.]+)", draft.description)
        draft.kind = "float" if default and "." in default.group(1) else "int"
    else:
        draft.kind = "str"
    for key, value in LLAMA_OVERRIDES.get(draft.main_long, {}).items():
        setattr(draft, key, value)


def llama_specs() -> tuple[str, str, list[Draft], dict[str, tuple[str, str]]]:
    path = HELP_DIR / "llama-server-help-b10434.txt"
    go_keys = read_go_keys("llama_cpp")
    drafts = [d for d in llama_drafts(path.read_text()) if not INFO_FLAGS & set(d.spellings)]
    for draft in drafts:
        draft.spellings, draft.negations = split_paired(draft.spellings)
        key = go_key_for(draft, go_keys)
        llama_kind(draft, go_keys[key][0] if key else None)
    return "llama-server", "b10434", drafts, go_keys


# ---------------------------------------------------------------- vLLM

VLLM_TYPE_KIND: dict[str, ValueKind] = {
    "int": "int",
    "float": "float",
    "str": "str",
    "None": "str",
    "loads": "json",
    "parse_dataclass": "json",
    "union_dict_and_str": "json",
    "_parse_type": "json",
    "human_readable_int": "int_or_str",
    "human_readable_int_or_auto": "int_or_str",
    "parse_reasoning_parser": "str",
    "<lambda>": "str",
}
VLLM_CHOICES_COLUMN_LIMIT = 300  # the parser dump cuts the choices column at this length


ARGPARSE_OPTION = re.compile(r"^  (-\S.*?)(?: {2,}(\S.*))?$")
ARGPARSE_CONTINUATION = " " * 8


def argparse_descriptions(help_text: str) -> dict[str, str]:
    """Each spelling's description in an argparse ``--help``: the text beside the option and the
    lines indented under it, up to the next option, section or blank line."""
    descriptions: dict[str, str] = {}
    current: list[str] | None = None
    spellings: list[str] = []
    for line in [*help_text.splitlines(), ""]:
        option = ARGPARSE_OPTION.match(line)
        if current is not None and (option or not line.startswith(ARGPARSE_CONTINUATION)):
            descriptions.update(dict.fromkeys(spellings, " ".join(current)))
            current = None
        if option:
            spellings = re.findall(r"(?:^|, )(-[\w-]+)", option.group(1))
            current = [option.group(2) or ""]
        elif current is not None:
            current.append(line.strip())
    return descriptions


def vllm_help_choices(help_text: str, spelling: str) -> list[str]:
    match = re.search(re.escape(spelling) + r" \{([^}]*)\}", help_text)
    return match.group(1).split(",") if match else []


def vllm_specs() -> tuple[str, str, list[Draft], dict[str, tuple[str, str]]]:
    dump = (HELP_DIR / "vllm-serve-flags-0.33.0.txt").read_text()
    help_text = (HELP_DIR / "vllm-serve-help-0.33.0.txt").read_text()
    go_keys = read_go_keys("vllm")
    descriptions = argparse_descriptions(help_text)
    drafts: list[Draft] = []
    for line in dump.splitlines():
        if line.startswith(("#", " ")) or not line.strip():
            continue
        flags, action, type_name, nargs, _default, choices, _group = (c.strip() for c in line.split(" | "))
        spellings = flags.split()
        if spellings == ["model_tag"]:
            continue  # the positional model is the --model flag's other spelling
        draft = Draft(spellings=spellings)
        if action in ("_StoreTrueAction", "EnableDisableAction"):
            draft.kind = "switch"
            positive = spellings[0]
            negative = {"--no-" + positive[2:]}
            for on, off in (("--enable-", "--disable-"), ("--disable-", "--enable-")):
                if positive.startswith(on):
                    negative.add(off + positive.removeprefix(on))
            draft.negations = [s for s in spellings[1:] if s in negative]
            draft.spellings = [s for s in spellings if s not in draft.negations]
        elif type_name == "_optional_type":
            key = go_key_for(draft, go_keys)
            go_type = go_keys[key][0] if key else "string"
            draft.kind = GO_TYPE_KIND.get(go_type, "str")
            if draft.kind == "switch":
                draft.kind = "str"
        else:
            draft.kind = VLLM_TYPE_KIND.get(type_name, "str")
        draft.repeated = action == "_AppendAction"
        draft.arity = "many" if nargs == "+" else "optional" if nargs == "?" else "one"
        if choices:
            if len(choices) >= VLLM_CHOICES_COLUMN_LIMIT:
                choices = ",".join(vllm_help_choices(help_text, spellings[0]))
            draft.choices = [c for c in choices.split(",") if c and c != "None"]
        draft.positional = spellings[0] == "--model"
        draft.description = descriptions.get(spellings[0], "")
        drafts.append(draft)
    return "vllm serve", "0.33.0", drafts, go_keys


# ---------------------------------------------------------------- mlx_lm.server

# Types from mlx_lm/server.py 0.32.2 for the flags the Go llamactl lacks.
MLX_KINDS: dict[str, ValueKind] = {
    "--allowed-origins": "str",
    "--chat-template-args": "json",
    "--decode-concurrency": "int",
    "--prompt-concurrency": "int",
    "--prefill-step-size": "int",
    "--prompt-cache-size": "int",
    "--prompt-cache-bytes": "int_or_str",
    "--kv-bits": "int",
    "--kv-group-size": "int",
    "--quantized-kv-start": "int",
}


def mlx_specs() -> tuple[str, str, list[Draft], dict[str, tuple[str, str]]]:
    text = (HELP_DIR / "mlx-lm-server-help-0.32.2.txt").read_text()
    go_keys = read_go_keys("mlx_lm")
    descriptions = argparse_descriptions(text)
    drafts: list[Draft] = []
    options = text.split("\noptions:\n", 1)[1]
    for match in re.finditer(r"^  (-[^\s,]+(?:, -[^\s,]+)*)(?: (\S+))?", options, re.MULTILINE):
        spellings = match.group(1).split(", ")
        if INFO_FLAGS & set(spellings):
            continue
        draft = Draft(spellings=spellings, metavar=match.group(2) or "")
        draft.description = descriptions.get(spellings[0], "")
        key = go_key_for(draft, go_keys)
        choice_match = re.fullmatch(r"\{([\w,]+)\}", draft.metavar)
        if not draft.metavar:
            draft.kind = "switch"
        elif choice_match:
            draft.kind = "str"
            draft.choices = choice_match.group(1).split(",")
        elif draft.main_long in MLX_KINDS:
            draft.kind = MLX_KINDS[draft.main_long]
        elif key:
            draft.kind = GO_TYPE_KIND[go_keys[key][0]]
        else:
            raise SystemExit(f"mlx_lm.server: no type known for {draft.main_long}; add it to MLX_KINDS")
        drafts.append(draft)
    return "mlx_lm.server", "0.32.2", drafts, go_keys


# ---------------------------------------------------------------- output

PYTHON_TYPES: dict[str, str] = {
    "switch": "bool",
    "int": "int",
    "float": "float",
    "str": "str",
    "json": "str",
    "int_or_str": "int | str",
}


# Options whose values are narrower than their kind, as a constrained type of options_base.
CONSTRAINED_TYPES: dict[str, str] = {"port": "Port", "host": "Host"}


def finish(
    drafts: list[Draft], go_keys: dict[str, tuple[str, str]], secrets: frozenset[str]
) -> list[FlagSpec]:
    unknown = secrets - {draft.main_long for draft in drafts}
    if unknown:
        raise SystemExit(f"secret flags not in the help text: {sorted(unknown)}")
    specs: list[FlagSpec] = []
    seen_keys: set[str] = set()
    seen_spellings: set[str] = set()
    for draft in drafts:
        assert draft.kind is not None
        ordered = sorted(draft.spellings, key=lambda s: s != draft.main_long)
        key = go_key_for(draft, go_keys) or snake(draft.main_long)
        if key in seen_keys:
            raise SystemExit(f"two flags share the key {key}")
        clash = seen_spellings & set(ordered + draft.negations)
        if clash:
            raise SystemExit(f"spelling used twice: {clash}")
        seen_keys.add(key)
        seen_spellings |= set(ordered + draft.negations)
        specs.append(
            FlagSpec(
                key=key,
                spellings=tuple(ordered),
                kind=draft.kind,
                negations=tuple(draft.negations),
                choices=tuple(draft.choices),
                arity=draft.arity,
                repeated=draft.repeated,
                positional=draft.positional,
                implied=draft.implied,
                secret=draft.main_long in secrets,
                help=one_line(draft.description),
            )
        )
    return specs


def one_line(description: str) -> str:
    text = " ".join(description.split())
    return text if len(text) <= HELP_CHARS else text[: HELP_CHARS - 1].rstrip() + "…"


def field_type(flag: FlagSpec) -> str:
    if flag.choices and flag.kind in ("str", "int"):
        convert = int if flag.kind == "int" else str
        base = "Literal[" + ", ".join(repr(convert(c)) for c in flag.choices) + "]"
    elif flag.key in CONSTRAINED_TYPES and flag.arity == "one" and not flag.repeated:
        base = CONSTRAINED_TYPES[flag.key]
    else:
        base = PYTHON_TYPES[flag.kind]
    if flag.is_list:
        return f"list[{base}]"
    if flag.arity == "two":
        return f"tuple[{base}, {base}]"
    if flag.arity == "optional":
        return f"bool | {base}"
    return base


def options_module(class_name: str, spec: CliSpec, source: str) -> str:
    fields: list[str] = []
    for flag in spec.flags:
        annotation = f"{field_type(flag)} | None"
        if flag.key.isidentifier() and not keyword.iskeyword(flag.key):
            fields.append(f"    {flag.key}: {annotation} = None")
        else:
            attribute = snake(flag.key) + "_"
            fields.append(f"    {attribute}: {annotation} = msgspec.field(default=None, name={flag.key!r})")
    body = "\n".join(fields)
    imports = ["from typing import Literal", ""] if "Literal[" in body else []
    imports += ["import msgspec", ""] if "msgspec.field" in body else []
    used = sorted(name for name in set(CONSTRAINED_TYPES.values()) if f": {name} | None" in body)
    base_names = ["BackendOptions", *used]
    header = [
        f'"""Options of {spec.program} {spec.version}: one optional field per flag.',
        "",
        f"Generated by tools/generate_cli_specs.py from tools/cli_help/{source}; do not edit.",
        '"""',
        "",
        *imports,
        f"from llamactl.backends.options_base import {', '.join(base_names)}",
        "",
        "",
        f"class {class_name}(BackendOptions, kw_only=True, omit_defaults=True, forbid_unknown_fields=True):",
    ]
    return "\n".join(header) + "\n" + body + "\n"


def write_backend(
    package: str,
    class_name: str,
    source: str,
    program: str,
    version: str,
    drafts: list[Draft],
    go_keys: dict[str, tuple[str, str]],
) -> None:
    flags = finish(drafts, go_keys, SECRET_FLAGS[package])
    spec = CliSpec(program=program, version=version, flags=tuple(flags))
    target = BACKENDS_DIR / package
    (target / "cli_spec.json").write_bytes(msgspec.json.format(msgspec.json.encode(spec), indent=1) + b"\n")
    (target / "options.py").write_text(options_module(class_name, spec, source))
    # The project's formatter lays out the generated module like the code written by hand.
    subprocess.run(
        [sys.executable, "-m", "ruff", "format", "--quiet", str(target / "options.py")], check=True
    )
    print(f"{package}: {len(spec.flags)} flags")


def main() -> None:
    write_backend("llama_cpp", "LlamaCppOptions", "llama-server-help-b10434.txt", *llama_specs())
    write_backend("vllm", "VllmOptions", "vllm-serve-flags-0.33.0.txt", *vllm_specs())
    write_backend("mlx_lm", "MlxLmOptions", "mlx-lm-server-help-0.32.2.txt", *mlx_specs())


if __name__ == "__main__":
    main()
