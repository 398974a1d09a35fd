# ruff: noqa: E501 -- the captured log lines are kept whole
"""Reading llama-server's buffer sizes from its log: captured lines, rendered ones, and the real server.

The captured lines are llama-server b11434 (the AVX2 build of scripts/install-test-backends.sh)
on a random-weight f16 llama, E=1024 F=2816 H=16 Hkv=4, 8 layers, a 108-token vocabulary, at
``--log-verbosity 4``. b10434 (the skulk wheel) needs AVX-512 to load a model, so its lines are
rendered from the format strings in that wheel's ``libllama.so``, which are the same as b11434's,
with the sizes it reported for that shape with a 32,141-token vocabulary. So are the GPU lines:
no GPU here.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from llamactl.backends.llama_cpp.memory_report import (
    HOST,
    BufferBytes,
    MemoryReportParser,
    ReportedMemory,
    parse_memory_report,
)
from tests.e2e.tiny_models import write_llama_gguf_weights
from tests.models.gguf_files import LlamaShape
from tests.serve_process import free_port

MIB = 1024 * 1024
LLAMA_SERVER = Path(sys.prefix) / "bin" / "llama-server"

# b11434, default prefix and timestamps, -c 4096 (flash attention auto: on). Abridged: the buffer lines,
# and the lines around them that mention sizes and must not count.
B11434_DEFAULT = """\
0.00.016.388 I common_params_fit_impl: getting device memory data for initial parameters:
0.00.024.218 I common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model   context   compute    unaccounted |
0.00.024.242 I common_memory_breakdown_print: |   - Host               |                  235 =   172 +      32 +      30                |
0.00.024.532 I common_params_fit_impl: projected to use 235 MiB of host memory vs. 24105 MiB of total host memory
0.00.025.438 I print_info: file size   = 172.49 MiB (16.00 BPW)
0.00.026.405 I load_tensors: loading model tensors, this can take a while... (load_mode = mmap)
0.00.036.461 I load_tensors:   CPU_Mapped model buffer size =   172.49 MiB
0.00.036.986 I llama_context:        CPU  output buffer size =     0.00 MiB
0.00.037.079 I llama_kv_cache:        CPU KV buffer size =    32.00 MiB
0.00.061.788 I llama_kv_cache: size =   32.00 MiB (  4096 cells,   8 layers,  4/1 seqs), K (f16):   16.00 MiB, V (f16):   16.00 MiB
0.00.061.836 I sched_reserve: reserving ...
0.00.064.794 I sched_reserve:        CPU compute buffer size =    30.52 MiB
0.00.064.822 I sched_reserve: graph: nodes = 257, splits = 1, input objects = 4, input tensors = 9
0.00.094.655 I srv    load_model: prompt cache is enabled, size limit: 8192 MiB
0.00.099.274 I srv  llama_server: listening on http://127.0.0.1:38112
0.00.564.521 I srv        update:  - cache state: 0 prompts, 0.000 MiB (limits: 8192.000 MiB, 4096 tokens, 8589934592 est)
0.00.774.153 I common_memory_breakdown_print: | memory breakdown [MiB] | total   free    self   model   context   compute    unaccounted |
0.00.774.281 I common_memory_breakdown_print: |   - Host               |                  235 =   172 +      32 +      30                |
"""
# b11434 --no-log-prefix --no-log-timestamps -fa off -np 1 (Ollama's way of starting it).
B11434_NO_PREFIX = """\
load_tensors:   CPU_Mapped model buffer size =   172.49 MiB
llama_context: flash_attn            = disabled
llama_context:        CPU  output buffer size =     0.00 MiB
llama_kv_cache:        CPU KV buffer size =    32.00 MiB
llama_kv_cache: size =   32.00 MiB (  4096 cells,   8 layers,  1/1 seqs), K (f16):   16.00 MiB, V (f16):   16.00 MiB
sched_reserve:        CPU compute buffer size =   149.01 MiB
"""
# b11434 --log-colors on -ub 256 -fa off.
B11434_COLOURS = """\
\x1b[34m0.00.036.009\x1b[0m \x1b[32mI \x1b[0mload_tensors:   CPU_Mapped model buffer size =   172.49 MiB
\x1b[34m0.00.036.879\x1b[0m \x1b[32mI \x1b[0mllama_context:        CPU  output buffer size =     0.00 MiB
\x1b[34m0.00.037.058\x1b[0m \x1b[32mI \x1b[0mllama_kv_cache:        CPU KV buffer size =    32.00 MiB
\x1b[34m0.00.073.381\x1b[0m \x1b[32mI \x1b[0msched_reserve:        CPU compute buffer size =    74.51 MiB
"""
# b11434 --load-mode none (no mmap: a plain CPU buffer) -c 8192 -fa on.
B11434_NO_MMAP = """\
0.00.014.542 I load_tensors:          CPU model buffer size =   172.49 MiB
0.00.154.229 I llama_context:        CPU  output buffer size =     0.00 MiB
0.00.154.393 I llama_kv_cache:        CPU KV buffer size =    64.00 MiB
0.00.255.582 I sched_reserve:        CPU compute buffer size =    34.52 MiB
"""
# b11434 on the same shape with Q4_0 matrices: the CPU backend repacks them into a buffer of its own
# for its AVX2 kernels, and the mapped buffer still spans the whole file.
B11434_REPACK = """\
0.00.013.519 I common_memory_breakdown_print: |   - Host               |                   63 =     0 +      32 +      30                |
0.00.013.543 I common_memory_breakdown_print: |   - CPU_REPACK         |                   48 =    48 +       0 +       0                |
0.00.020.059 I load_tensors:   CPU_Mapped model buffer size =    48.86 MiB
0.00.020.110 I load_tensors:   CPU_REPACK model buffer size =    48.38 MiB
0.00.064.189 I llama_context:        CPU  output buffer size =     0.00 MiB
0.00.064.331 I llama_kv_cache:        CPU KV buffer size =    32.00 MiB
0.00.089.301 I sched_reserve:        CPU compute buffer size =    30.52 MiB
"""

# The format strings of b10434 and b11434 (strings libllama.so), as llama.cpp fills them in.
MODEL = "%s: %12s model buffer size = %8.2f MiB"
OUTPUT = "%s: %10s  output buffer size = %8.2f MiB"
KV = "%s: %10s KV buffer size = %8.2f MiB"
RS = "%s: %10s RS buffer size = %8.2f MiB"
LORA = "%s: %10s LoRA buffer size = %8.2f MiB"
COMPUTE = "%s: %10s compute buffer size = %8.2f MiB"
B10434_PREFIX = "0.00.036.461 I "  # the prefix b10434 writes, as in its captured lines before loading

B10434_VOCAB_32141 = [
    B10434_PREFIX + MODEL % ("load_tensors", "CPU_Mapped", 297.62),
    B10434_PREFIX + OUTPUT % ("llama_context", "CPU", 0.49),
    B10434_PREFIX + KV % ("llama_kv_cache", "CPU", 32.00),
    B10434_PREFIX + COMPUTE % ("sched_reserve", "CPU", 28.51),
]
# Part of the layers on a CUDA GPU: weights, KV and compute on both sides, pinned host buffers.
CUDA_OFFLOAD = [
    MODEL % ("load_tensors", "CPU_Mapped", 281.81),
    MODEL % ("load_tensors", "CUDA0", 4403.49),
    OUTPUT % ("llama_context", "CUDA_Host", 0.49),
    KV % ("llama_kv_cache", "CUDA0", 448.00),
    KV % ("llama_kv_cache", "CPU", 64.00),
    COMPUTE % ("sched_reserve", "CUDA0", 304.00),
    COMPUTE % ("sched_reserve", "CUDA_Host", 16.01),
]


def mib(value: float) -> int:
    return round(value * MIB)


def parsed(text: str | list[str]) -> ReportedMemory:
    report = parse_memory_report(text.splitlines() if isinstance(text, str) else text)
    assert report is not None
    return report


@pytest.mark.parametrize(
    ("log", "model", "kv", "compute", "output"),
    [
        (B11434_DEFAULT, 172.49, 32.00, 30.52, 0.00),
        (B11434_NO_PREFIX, 172.49, 32.00, 149.01, 0.00),
        (B11434_COLOURS, 172.49, 32.00, 74.51, 0.00),
        (B11434_NO_MMAP, 172.49, 64.00, 34.52, 0.00),
        (B11434_REPACK, 48.86 + 48.38, 32.00, 30.52, 0.00),
        (B10434_VOCAB_32141, 297.62, 32.00, 28.51, 0.49),
    ],
    ids=["b11434", "b11434-no-prefix", "b11434-colours", "b11434-no-mmap", "b11434-repack", "b10434"],
)
def test_a_host_only_start_gives_each_buffer(
    log: str | list[str], model: float, kv: float, compute: float, output: float
) -> None:
    expected = BufferBytes(
        model_bytes=mib(model), kv_cache_bytes=mib(kv), compute_bytes=mib(compute), output_bytes=mib(output)
    )
    assert parsed(log) == ReportedMemory(
        model_bytes=expected.model_bytes,
        kv_cache_bytes=expected.kv_cache_bytes,
        compute_bytes=expected.compute_bytes,
        output_bytes=expected.output_bytes,
        total_bytes=expected.total_bytes,
        devices={HOST: expected},
    )


def test_devices_are_kept_apart_and_summed_with_host_buffers_under_the_host() -> None:
    report = parsed(CUDA_OFFLOAD)
    assert report.devices == {
        HOST: BufferBytes(
            model_bytes=mib(281.81),
            kv_cache_bytes=mib(64.00),
            compute_bytes=mib(16.01),
            output_bytes=mib(0.49),
        ),
        "CUDA0": BufferBytes(model_bytes=mib(4403.49), kv_cache_bytes=mib(448.00), compute_bytes=mib(304.00)),
    }
    assert report.model_bytes == mib(281.81) + mib(4403.49)
    assert report.total_bytes == sum(device.total_bytes for device in report.devices.values())


def test_a_mapped_metal_buffer_is_the_metal_device() -> None:
    report = parsed([MODEL % ("load_tensors", "MTL0_Mapped", 4096.0), KV % ("llama_kv_cache", "MTL0", 512.0)])
    assert report.devices == {"MTL0": BufferBytes(model_bytes=mib(4096.0), kv_cache_bytes=mib(512.0))}


def test_the_report_grows_as_lines_arrive() -> None:
    parser = MemoryReportParser()
    lines = B11434_DEFAULT.splitlines()
    first_buffer = next(index for index, line in enumerate(lines) if "model buffer size" in line)
    for line in lines[:first_buffer]:
        parser.feed(line)
    assert parser.report is None  # the --fit projection and the file size are not buffers
    parser.feed(lines[first_buffer])
    assert parser.report is not None and parser.report.total_bytes == mib(172.49)
    for line in lines[first_buffer + 1 :]:
        parser.feed(line)
    assert parser.report.total_bytes == mib(172.49) + mib(32.00) + mib(30.52)


def test_a_log_without_buffer_lines_reports_nothing() -> None:
    # What the default verbosity (3) prints at start: not one buffer line.
    default_verbosity = [
        "0.00.017.571 I srv    load_model: loading model '/tmp/mid.gguf'",
        "0.00.189.588 I srv    load_model: initializing, n_slots = 4, n_ctx_slot = 4096, kv_unified = 'true'",
        "0.00.192.952 I srv  llama_server: model loaded",
    ]
    assert parse_memory_report(default_verbosity) is None


def test_sharded_weights_and_two_kv_caches_add_up() -> None:
    report = parsed(
        [
            MODEL % ("load_tensors", "CPU_Mapped", 1000.0),  # one mapped buffer per shard file
            MODEL % ("load_tensors", "CPU_Mapped", 500.0),
            KV % ("llama_kv_cache", "CPU", 40.0),  # sliding-window models: the full cache and the window's
            KV % ("llama_kv_cache", "CPU", 8.0),
            RS % ("llama_memory_recurrent", "CPU", 2.0),
            COMPUTE % ("sched_reserve", "CPU", 30.0),
        ]
    )
    assert (report.model_bytes, report.kv_cache_bytes) == (mib(1500.0), mib(50.0))


def test_a_compute_buffer_reserved_again_replaces_the_first() -> None:
    report = parsed(
        [
            *B11434_NO_PREFIX.splitlines(),
            LORA % ("llama_adapter_lora_init_impl", "CPU", 3.0),
            "sched_reserve: reserving ...",
            COMPUTE % ("sched_reserve", "CPU", 150.5),
        ]
    )
    assert report.compute_bytes == mib(150.5)
    assert report.model_bytes == mib(172.49) + mib(3.0)  # the adapter's weights count with the model's


def test_a_second_model_adds_its_buffers_and_a_projector_its_compute() -> None:
    main = B11434_NO_PREFIX.splitlines()
    draft = [
        MODEL % ("load_tensors", "CPU_Mapped", 20.0),
        KV % ("llama_kv_cache", "CPU", 4.0),
        COMPUTE % ("sched_reserve", "CPU", 10.0),
    ]
    projector = [COMPUTE % ("alloc_compute_meta", "CPU", 12.0)]
    report = parsed([*main, *draft, *projector])
    assert report.model_bytes == mib(172.49) + mib(20.0)
    assert report.kv_cache_bytes == mib(32.0) + mib(4.0)
    assert report.compute_bytes == mib(149.01) + mib(10.0) + mib(12.0)


# The real server.


def write_random_llama_gguf(path: Path, shape: LlamaShape) -> int:
    """A llama GGUF of ``shape`` that llama-server loads and chats with (f16 or f32 matrices).

    The vocabulary is tests/e2e/tiny_models' (``shape.vocab`` is not used), so prompts tokenize and
    answers stay printable. Returns the bytes of the tensor data: what llama.cpp's model buffer holds.
    """
    if not isinstance(shape.kv_heads, int):
        raise ValueError("one KV head count for every layer")
    return write_llama_gguf_weights(
        path,
        embedding=shape.embedding,
        heads=shape.heads,
        kv_heads=shape.kv_heads,
        layers=shape.layers,
        feed_forward=shape.feed_forward,
        context=shape.context,
        f16=int(shape.matrix_type) == 1,
        name="random-llama",
    )


@dataclass
class RunningServer:
    process: subprocess.Popen[str]
    base_url: str
    parser: MemoryReportParser
    """Fed every line of the server's stderr as it arrives, by a thread."""


@contextmanager
def running_llama_server(model: Path, *arguments: str, timeout: float = 60.0) -> Iterator[RunningServer]:
    """llama-server on ``model`` at ``--log-verbosity 4``, once /health answers 200 and the parser has
    read up to the line saying so; stopped on exit.

    Its stderr is read all the time: a pipe nobody reads fills up and blocks the server.
    """
    port = free_port()
    process = subprocess.Popen(
        [str(LLAMA_SERVER), "-m", str(model), "--port", str(port), "--log-verbosity", "4", *arguments],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        errors="replace",
    )
    parser, lines, listening = MemoryReportParser(), [], threading.Event()

    def read_stderr() -> None:
        assert process.stderr is not None
        for line in process.stderr:
            lines.append(line)
            parser.feed(line)
            if "listening on" in line:  # after every buffer line of the start
                listening.set()

    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    try:
        base_url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"llama-server exited with {process.returncode}:\n{''.join(lines[-20:])}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"llama-server not healthy in {timeout} s:\n{''.join(lines[-20:])}")
            try:
                if listening.is_set() and httpx.get(f"{base_url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        yield RunningServer(process, base_url, parser)
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=15)
        reader.join(timeout=15)


def test_the_real_server_reports_its_weights_and_the_kv_cache_the_formula_gives(tmp_path: Path) -> None:
    shape = LlamaShape(embedding=256, feed_forward=704, heads=4, kv_heads=2, layers=4)
    tensor_bytes = write_random_llama_gguf(tmp_path / "small.gguf", shape)
    context = 1024
    with running_llama_server(tmp_path / "small.gguf", "-c", str(context), "-t", "2") as server:
        report = server.parser.report
    assert report is not None
    # The log gives MiB to two decimals: a figure is within half a hundredth of a MiB.
    rounding = MIB // 200
    assert abs(report.model_bytes - tensor_bytes) <= rounding
    assert isinstance(shape.kv_heads, int)
    head_dim = shape.embedding // shape.heads
    kv_formula = shape.layers * context * (shape.kv_heads * head_dim * 2) * 2  # K and V rows, f16
    assert abs(report.kv_cache_bytes - kv_formula) <= rounding
    assert report.compute_bytes > 0
    assert list(report.devices) == [HOST]
