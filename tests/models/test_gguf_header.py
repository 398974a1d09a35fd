"""The fast GGUF header reader against gguf.GGUFReader, and against damaged and hostile files."""

from __future__ import annotations

import os
import struct
from collections.abc import Callable, Sequence
from pathlib import Path

import gguf
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from llamactl.errors import LlamactlError
from llamactl.models import gguf_header
from llamactl.models.gguf_header import (
    GGML_QUANT_SIZES,
    ArraySummary,
    GgmlType,
    GgufFormatError,
    GgufHeader,
    GgufValueType,
    read_gguf_header,
)
from tests.models.gguf_files import (
    LLAMA3_8B,
    LlamaShape,
    write_every_value_type_gguf,
    write_llama_gguf,
    write_lora_gguf,
    write_mmproj_gguf,
)

# GGUFReader flattens nested arrays and types them all by their first item: not an oracle for them.
NESTED_ARRAYS = {
    "test.nested": ((1, 2), (3,), ("x", "y")),
    "test.long_nested": ArraySummary(GgufValueType.ARRAY, 70),
}
READER_FIELDS = {"GGUF.version", "GGUF.tensor_count", "GGUF.kv_count"}

FIXTURES: dict[str, Callable[[Path], Path]] = {
    "llama": write_llama_gguf,
    "llama-per-layer-kv": lambda path: write_llama_gguf(
        path, LlamaShape(layers=4, kv_heads=(4, 2, 0, 1), vocab=100, merges=70)
    ),
    "llama-q4k": lambda path: write_llama_gguf(
        path, LlamaShape(embedding=256, feed_forward=512, matrix_type=gguf.GGMLQuantizationType.Q4_K)
    ),
    "mmproj": write_mmproj_gguf,
    "lora": write_lora_gguf,
    "every-value-type": write_every_value_type_gguf,
}


def _set_version(path: Path, version: int) -> Path:
    with open(path, "r+b") as file:
        file.seek(4)
        file.write(struct.pack("<I", version))
    return path


def _assert_same_as_gguf_reader(path: Path, header: GgufHeader) -> None:
    reader = gguf.GGUFReader(path)
    assert header.version == reader.fields["GGUF.version"].contents()
    assert set(header.metadata) == set(reader.fields) - READER_FIELDS
    for key, value in header.metadata.items():
        if key in NESTED_ARRAYS:
            assert value == NESTED_ARRAYS[key]
            continue
        field = reader.fields[key]
        if isinstance(value, ArraySummary):
            assert value.item_type.name == field.types[1].name
            assert value.length == len(field.contents())
        elif isinstance(value, tuple):
            assert list(value) == field.contents(), key
        else:
            assert value == field.contents(), key
    assert [tensor.name for tensor in header.tensors] == [tensor.name for tensor in reader.tensors]
    for mine, theirs in zip(header.tensors, reader.tensors, strict=True):
        assert mine.ggml_type.value == theirs.tensor_type.value
        assert mine.shape == tuple(int(dimension) for dimension in theirs.shape)
        assert (mine.n_elements, mine.n_bytes) == (theirs.n_elements, theirs.n_bytes)
        assert header.data_offset + mine.offset == theirs.data_offset


@pytest.mark.parametrize("fixture", FIXTURES)
def test_reads_what_gguf_reader_reads(fixture: str, tmp_path: Path) -> None:
    path = FIXTURES[fixture](tmp_path / f"{fixture}.gguf")
    header = read_gguf_header(path)
    _assert_same_as_gguf_reader(path, header)
    assert header.file_size == path.stat().st_size
    padded = sum(-(-tensor.n_bytes // header.alignment) * header.alignment for tensor in header.tensors)
    assert header.data_offset + padded == header.file_size


def test_reads_version_2(tmp_path: Path) -> None:
    path = _set_version(write_llama_gguf(tmp_path / "v2.gguf"), 2)
    header = read_gguf_header(path)
    assert header.version == 2
    _assert_same_as_gguf_reader(path, header)


def test_short_arrays_are_kept_and_long_ones_summarised(tmp_path: Path) -> None:
    metadata = read_gguf_header(write_every_value_type_gguf(tmp_path / "values.gguf")).metadata
    assert metadata["test.short_strings"] == ("a", "", "ünïcode")
    assert metadata["test.short_bools"] == (True, False, True)
    assert metadata["test.per_layer"] == tuple(range(100))  # numbers are kept up to one per layer
    assert metadata["test.long_ints"] == ArraySummary(GgufValueType.INT32, 1000)
    assert metadata["test.long_strings"] == ArraySummary(GgufValueType.STRING, 300)
    assert metadata["test.after_the_long_arrays"] == "still read"


def test_reads_the_same_through_a_tiny_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every value straddles a refill of the read window, and long strings are skipped by seeking."""
    paths = [FIXTURES[name](tmp_path / f"{name}.gguf") for name in FIXTURES]
    expected = [read_gguf_header(path) for path in paths]
    monkeypatch.setattr(gguf_header, "_CHUNK_BYTES", 3)
    assert [read_gguf_header(path) for path in paths] == expected


def test_tables_match_gguf_constants() -> None:
    assert {ggml_type.name: sizes for ggml_type, sizes in GGML_QUANT_SIZES.items()} == {
        ggml_type.name: sizes for ggml_type, sizes in gguf.GGML_QUANT_SIZES.items()
    }
    assert {ggml_type.name: ggml_type.value for ggml_type in GgmlType} == {
        ggml_type.name: ggml_type.value for ggml_type in gguf.GGMLQuantizationType
    }
    assert {value_type.name: value_type.value for value_type in GgufValueType} == {
        value_type.name: value_type.value for value_type in gguf.GGUFValueType
    }


@pytest.fixture(scope="module")
def llama3_8b_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_llama_gguf(tmp_path_factory.mktemp("llama3") / "llama3-8b-q4_k_m.gguf", LLAMA3_8B)


def test_reads_an_8b_llama_header_without_its_data(llama3_8b_path: Path) -> None:
    """The header is 8.9 MB of vocabulary and merges; its speed is measured by bench/gguf_header_speed.py."""
    header = read_gguf_header(llama3_8b_path)
    assert len(header.tensors) == 291
    assert sum(tensor.n_elements for tensor in header.tensors) == 8_030_261_248
    assert header.metadata["tokenizer.ggml.tokens"] == ArraySummary(GgufValueType.STRING, 128_256)
    assert header.metadata["tokenizer.ggml.merges"] == ArraySummary(GgufValueType.STRING, 280_147)
    assert header.metadata["tokenizer.ggml.token_type"] == ArraySummary(GgufValueType.INT32, 128_256)
    assert header.metadata["general.name"] == "Meta Llama 3 8B Instruct"


# A hand-built header, for damage GGUFWriter cannot write.
def _string(text: str | bytes) -> bytes:
    raw = text.encode() if isinstance(text, str) else text
    return struct.pack("<Q", len(raw)) + raw


def _kv(key: str, value_type: int, value: bytes) -> bytes:
    return _string(key) + struct.pack("<I", value_type) + value


def _tensor(name: str, shape: tuple[int, ...], ggml_type: int = 0, offset: int = 0) -> bytes:
    return _string(name) + struct.pack(f"<I{len(shape)}QIQ", len(shape), *shape, ggml_type, offset)


def _file(
    tmp_path: Path,
    kvs: Sequence[bytes],
    tensors: Sequence[bytes] = (),
    *,
    tensor_count: int | None = None,
    kv_count: int | None = None,
    data: bytes = b"",
    magic: bytes = b"GGUF",
    version: bytes = struct.pack("<I", 3),
) -> Path:
    counts = struct.pack(
        "<QQ",
        len(tensors) if tensor_count is None else tensor_count,
        len(kvs) if kv_count is None else kv_count,
    )
    header = magic + version + counts + b"".join(kvs) + b"".join(tensors)
    path = tmp_path / "hand-built.gguf"
    path.write_bytes(header + b"\0" * (-len(header) % 32) + data)
    return path


ARCH = _kv("general.architecture", GgufValueType.STRING, _string("llama"))


def test_reads_a_hand_built_header(tmp_path: Path) -> None:
    header = read_gguf_header(_file(tmp_path, [ARCH], [_tensor("x", (8,))], data=b"\0" * 32))
    assert header.metadata == {"general.architecture": "llama"}
    assert [(tensor.name, tensor.shape, tensor.n_bytes) for tensor in header.tensors] == [("x", (8,), 32)]


@pytest.mark.parametrize(
    ("damage", "problem"),
    [
        ({"magic": b"GGML"}, "bad magic b'GGML'"),
        ({"version": struct.pack(">I", 3)}, "big-endian GGUF (version 3) is not supported"),
        ({"version": struct.pack("<I", 1)}, "version 1 is not supported"),
        ({"version": struct.pack("<I", 4)}, "version 4 is not supported"),
        ({"tensor_count": 2**40}, "tensor count 1,099,511,627,776 at byte 8 cannot fit"),
        ({"kv_count": 2**62}, "metadata count"),
        ({"kvs": [_kv("a", 13, b"")]}, "unknown value type 13 in metadata key 'a'"),
        ({"kvs": [_kv("a", GgufValueType.STRING, struct.pack("<Q", 2**60))]}, "string length 1,152,921,"),
        ({"kvs": [struct.pack("<Q", 2**60)]}, "string length"),
        (
            {"kvs": [_kv("a", GgufValueType.ARRAY, struct.pack("<IQ", GgufValueType.UINT64, 2**59))]},
            "array length",
        ),
        (
            {"kvs": [_kv("a", GgufValueType.STRING, _string(b"ok")), _kv("a", 4, b"\0" * 4)]},
            "duplicate metadata",
        ),
        ({"kvs": [_kv("general.alignment", GgufValueType.UINT32, struct.pack("<I", 24))]}, "power of two"),
        ({"kvs": [_kv("general.alignment", GgufValueType.STRING, _string("32"))]}, "power of two"),
        ({"kvs": [_string(b"\xff\xfe") + struct.pack("<IB", 0, 1)]}, "not UTF-8"),
        ({"tensors": [_tensor("x", (1, 1, 1, 1, 1))]}, "5 dimensions"),
        ({"tensors": [_tensor("x", (8,), ggml_type=4)]}, "unknown GGML type 4"),
        ({"tensors": [_tensor("x", (33,), ggml_type=8)]}, "not a multiple of Q8_0's block of 32"),
        ({"tensors": [_tensor("x", (8,), offset=4)]}, "starts at 4, not a multiple of 32"),
        ({"tensors": [_tensor("x", (2**40,))]}, "runs past the end of the file"),
        ({"tensors": [_tensor("x", (8,)), _tensor("x", (8,), offset=32)]}, "duplicate tensor name 'x'"),
    ],
)
def test_refuses_a_damaged_header(tmp_path: Path, damage: dict[str, object], problem: str) -> None:
    arguments: dict[str, object] = {"kvs": [ARCH], "data": b"\0" * 64} | damage
    kvs = arguments.pop("kvs")
    path = _file(tmp_path, kvs, **arguments)  # type: ignore[arg-type]
    with pytest.raises(GgufFormatError) as raised:
        read_gguf_header(path)
    assert str(raised.value).startswith(f"{path} is not a valid GGUF file: ")
    assert problem in str(raised.value)
    assert isinstance(raised.value, LlamactlError)
    assert (raised.value.status, raised.value.code) == (422, "invalid_gguf")


def test_refuses_arrays_nested_too_deep(tmp_path: Path) -> None:
    nested = struct.pack("<IQ", GgufValueType.ARRAY, 1) * 20 + struct.pack("<IQ", GgufValueType.UINT8, 0)
    path = _file(tmp_path, [_kv("deep", GgufValueType.ARRAY, nested)])
    with pytest.raises(GgufFormatError, match="nested more than 8 deep"):
        read_gguf_header(path)


def test_says_where_a_file_is_cut(tmp_path: Path) -> None:
    path = _file(tmp_path, [ARCH, _kv("general.name", GgufValueType.STRING, _string("a name"))])
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(GgufFormatError) as raised:
        read_gguf_header(path)
    assert "truncated at byte 100 while reading metadata key 'general.name'" in str(raised.value)


@pytest.fixture(scope="module")
def small_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """A small llama with a summarised vocabulary, so that every part of the reader is in its header."""
    shape = LlamaShape(
        embedding=32,
        feed_forward=32,
        heads=2,
        kv_heads=(1, 2),
        vocab=70,
        merges=66,
        matrix_type=gguf.GGMLQuantizationType.Q4_0,
    )
    path = write_llama_gguf(tmp_path_factory.mktemp("small") / "small.gguf", shape)
    return path.read_bytes()


def test_every_prefix_of_a_file_is_refused(small_file: bytes, tmp_path: Path) -> None:
    path = tmp_path / "prefix.gguf"
    path.write_bytes(small_file)
    header = read_gguf_header(path)
    data_end = header.data_offset + max(tensor.offset + tensor.n_bytes for tensor in header.tensors)
    for length in reversed(range(data_end)):
        os.truncate(path, length)
        with pytest.raises(GgufFormatError):
            read_gguf_header(path)


@settings(max_examples=300, deadline=1000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(flips=st.lists(st.tuples(st.integers(0, 2**32), st.integers(0, 255)), min_size=1, max_size=4))
def test_a_damaged_file_is_read_or_refused(
    small_file: bytes, tmp_path: Path, flips: list[tuple[int, int]]
) -> None:
    header_size = small_file.index(b"output.weight") + 64  # the tensor table, where damage does harm
    damaged = bytearray(small_file)
    for position, value in flips:
        damaged[position % header_size] = value
    path = tmp_path / "damaged.gguf"
    path.write_bytes(bytes(damaged))
    try:
        header = read_gguf_header(path)
    except GgufFormatError:
        return
    assert header.data_offset <= header.file_size
