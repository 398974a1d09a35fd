"""The header of a GGUF file, read fast: its metadata and its tensor table, never its tensor data.

``gguf.GGUFReader`` builds a numpy view for every array element, which takes
seconds on a real vocabulary (128k tokens, 280k merges). This reader uses
``struct`` over large buffered reads of one file object and skips long arrays
by their lengths, so a catalogue scan costs a tenth of a second per model.

A hostile or damaged file cannot make it allocate or loop beyond its size:
every count and length is checked against the bytes left in the file before
anything is read, and every failure is a ``GgufFormatError`` naming the file
and what was wrong.
"""

from __future__ import annotations

import enum
import os
import struct
from math import prod
from pathlib import Path
from typing import BinaryIO, TypeAlias

import msgspec

from llamactl.errors import LlamactlError

GGUF_MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
DEFAULT_ALIGNMENT = 32

KEPT_ARRAY_ITEMS = 64
"""Arrays longer than this are summarised (item type and length), not read: vocabularies and merges."""

KEPT_NUMBER_ARRAY_ITEMS = 512
"""Numeric arrays are kept up to llama.cpp's LLAMA_MAX_LAYERS, so per-layer hyperparameters
(``head_count_kv`` of a hybrid model with 80 layers) survive; they cost one ``struct`` call."""

MAX_KEPT_STRING_BYTES = 16 * 1024 * 1024
"""No real metadata string (a chat template is tens of KiB) comes near this; a damaged length
would otherwise make a multi-GB file allocate up to its size for one string."""

MAX_ARRAY_NESTING = 8
MAX_TENSOR_DIMS = 4  # GGML_MAX_DIMS; llama.cpp refuses more


class GgufFormatError(LlamactlError):
    status = 422
    code = "invalid_gguf"


class GgufValueType(enum.IntEnum):
    """The type tag of a metadata value (``GGUFValueType`` in gguf's constants.py)."""

    UINT8 = 0
    INT8 = 1
    UINT16 = 2
    INT16 = 3
    UINT32 = 4
    INT32 = 5
    FLOAT32 = 6
    BOOL = 7
    STRING = 8
    ARRAY = 9
    UINT64 = 10
    INT64 = 11
    FLOAT64 = 12


class GgmlType(enum.IntEnum):
    """The storage type of a tensor (``GGMLQuantizationType`` in gguf 0.19.0's constants.py)."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39
    NVFP4 = 40
    Q1_0 = 41


# (elements per block, bytes per block) of each type: GGML_QUANT_SIZES in gguf 0.19.0's
# gguf/constants.py, which copies ggml's type_traits (ggml/src/ggml.c). A test checks it against gguf.
GGML_QUANT_SIZES: dict[GgmlType, tuple[int, int]] = {
    GgmlType.F32: (1, 4),
    GgmlType.F16: (1, 2),
    GgmlType.Q4_0: (32, 18),
    GgmlType.Q4_1: (32, 20),
    GgmlType.Q5_0: (32, 22),
    GgmlType.Q5_1: (32, 24),
    GgmlType.Q8_0: (32, 34),
    GgmlType.Q8_1: (32, 40),
    GgmlType.Q2_K: (256, 84),
    GgmlType.Q3_K: (256, 110),
    GgmlType.Q4_K: (256, 144),
    GgmlType.Q5_K: (256, 176),
    GgmlType.Q6_K: (256, 210),
    GgmlType.Q8_K: (256, 292),
    GgmlType.IQ2_XXS: (256, 66),
    GgmlType.IQ2_XS: (256, 74),
    GgmlType.IQ3_XXS: (256, 98),
    GgmlType.IQ1_S: (256, 50),
    GgmlType.IQ4_NL: (32, 18),
    GgmlType.IQ3_S: (256, 110),
    GgmlType.IQ2_S: (256, 82),
    GgmlType.IQ4_XS: (256, 136),
    GgmlType.I8: (1, 1),
    GgmlType.I16: (1, 2),
    GgmlType.I32: (1, 4),
    GgmlType.I64: (1, 8),
    GgmlType.F64: (1, 8),
    GgmlType.IQ1_M: (256, 56),
    GgmlType.BF16: (1, 2),
    GgmlType.TQ1_0: (256, 54),
    GgmlType.TQ2_0: (256, 66),
    GgmlType.MXFP4: (32, 17),
    GgmlType.NVFP4: (64, 36),
    GgmlType.Q1_0: (128, 18),
}


class ArraySummary(msgspec.Struct, frozen=True):
    """A metadata array too long to keep: what its items are and how many there are."""

    item_type: GgufValueType
    length: int


MetadataValue: TypeAlias = "int | float | bool | str | ArraySummary | tuple[MetadataValue, ...]"


class TensorInfo(msgspec.Struct, frozen=True):
    name: str
    ggml_type: GgmlType
    shape: tuple[int, ...]
    """Dimensions as GGUF stores them: the fastest-varying (row length) first."""
    offset: int
    """Where the tensor's data starts, counted from ``GgufHeader.data_offset``."""
    n_elements: int
    n_bytes: int


class GgufHeader(msgspec.Struct, frozen=True):
    version: int
    metadata: dict[str, MetadataValue]
    tensors: tuple[TensorInfo, ...]
    alignment: int
    data_offset: int
    """Where tensor data starts in the file: the end of the header, rounded up to ``alignment``."""
    file_size: int


_CHUNK_BYTES = 1 << 16
"""Bytes read at a time: most headers fit in one read, and a sparse file's hole is not read with them."""
# Plain dicts: an IntEnum lookup by value costs a microsecond, and a header has thousands.
_VALUE_TYPES = {value_type.value: value_type for value_type in GgufValueType}
_GGML_TYPES = {ggml_type.value: ggml_type for ggml_type in GgmlType}
_QUANT = {ggml_type.value: sizes for ggml_type, sizes in GGML_QUANT_SIZES.items()}
_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")
_SCALAR_FORMATS: dict[GgufValueType, str] = {
    GgufValueType.UINT8: "B",
    GgufValueType.INT8: "b",
    GgufValueType.UINT16: "H",
    GgufValueType.INT16: "h",
    GgufValueType.UINT32: "I",
    GgufValueType.INT32: "i",
    GgufValueType.FLOAT32: "f",
    GgufValueType.BOOL: "?",
    GgufValueType.UINT64: "Q",
    GgufValueType.INT64: "q",
    GgufValueType.FLOAT64: "d",
}
_SCALAR_STRUCTS = {value_type: struct.Struct("<" + code) for value_type, code in _SCALAR_FORMATS.items()}
_SCALAR_SIZES = {value_type: parser.size for value_type, parser in _SCALAR_STRUCTS.items()}
# The fewest bytes an item can take: a string is at least its length, an array its type and count.
_MIN_ITEM_BYTES = {**_SCALAR_SIZES, GgufValueType.STRING: 8, GgufValueType.ARRAY: 12}
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, the smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 4 + 8  # name length, dimension count, type, offset
# A tensor info after its name: dimension count, the dimensions, type, offset; by dimension count.
_TENSOR_TAILS = {dims: struct.Struct(f"<{dims}QIQ") for dims in range(MAX_TENSOR_DIMS + 1)}


class _Cursor:
    """A position in the file over a window of it read in large chunks.

    ``self._file`` is always positioned at the end of ``self._window``.
    """

    def __init__(self, file: BinaryIO, path: Path, file_size: int) -> None:
        self._file = file
        self._path = path
        self.file_size = file_size
        self._window = b""
        self._window_start = 0
        self._index = 0
        self.reading = "the magic number"
        """What is being read, for error messages."""

    @property
    def position(self) -> int:
        return self._window_start + self._index

    def error(self, problem: str) -> GgufFormatError:
        return GgufFormatError(f"{self._path} is not a valid GGUF file: {problem}")

    def truncated(self, wanted: int) -> GgufFormatError:
        return self.error(
            f"truncated at byte {self.file_size} while reading {self.reading}"
            f" ({wanted} bytes wanted at byte {self.position})"
        )

    def take(self, size: int) -> tuple[bytes, int]:
        """The window and the index in it of the next ``size`` bytes, which are then passed."""
        if self._index + size > len(self._window):
            self._refill(size)
        index = self._index
        self._index += size
        return self._window, index

    def skip(self, size: int) -> None:
        if self._index + size <= len(self._window):
            self._index += size
            return
        target = self.position + size
        if target > self.file_size:
            raise self.truncated(size)
        self._file.seek(target)
        self._window, self._window_start, self._index = b"", target, 0

    def _refill(self, size: int) -> None:
        if self.position + size > self.file_size:
            raise self.truncated(size)
        rest = self._window[self._index :]
        more = self._file.read(max(size - len(rest), _CHUNK_BYTES))
        self._window_start += self._index
        self._window, self._index = rest + more, 0
        if len(self._window) < size:  # the file shrank while being read
            raise self.truncated(size)

    def u32(self) -> int:
        window, index = self.take(4)
        value: int = _U32.unpack_from(window, index)[0]
        return value

    def u64(self) -> int:
        window, index = self.take(8)
        value: int = _U64.unpack_from(window, index)[0]
        return value

    def count(self, what: str, min_item_bytes: int) -> int:
        """A u64 count of items of at least ``min_item_bytes`` each, checked against the file size."""
        count = self.u64()
        left = self.file_size - self.position
        if count * min_item_bytes > left:
            raise self.error(
                f"{what} {count:,} at byte {self.position - 8} cannot fit in the {left:,} bytes left"
            )
        return count

    def string_bytes(self, limit: int = MAX_KEPT_STRING_BYTES) -> bytes:
        window, index = self._window, self._index
        if index + 8 <= len(window):  # the common case, inlined: metadata is mostly short strings
            length: int = _U64.unpack_from(window, index)[0]
            end = index + 8 + length
            if end <= len(window) and length <= limit:
                self._index = end
                return window[index + 8 : end]
        length = self.count("string length", 1)
        if length > limit:
            raise self.error(f"a string of {length:,} bytes while reading {self.reading} exceeds {limit:,}")
        window, index = self.take(length)
        return window[index : index + length]

    def plain_tensor_infos(self, count: int, tensors: list[TensorInfo]) -> None:
        """Append up to ``count`` tensor infos that lie whole in the window and are well formed.

        A header holds hundreds of tensor infos, so the common case is read in
        one loop over local names, without naming what is read. It stops before
        anything unusual, without passing it: the checked path then reads that
        one again and says what is wrong.
        """
        window, index = self._window, self._index
        end = len(window)
        u64, u32, tails, types, sizes = _U64.unpack_from, _U32.unpack_from, _TENSOR_TAILS, _GGML_TYPES, _QUANT
        for _ in range(count):
            if index + 8 > end:
                break
            name_end = index + 8 + u64(window, index)[0]
            if name_end + 4 > end:
                break
            tail = tails.get(u32(window, name_end)[0])
            if tail is None or name_end + 4 + tail.size > end:
                break
            values = tail.unpack_from(window, name_end + 4)
            shape, type_tag = values[:-2], values[-2]
            ggml_type = types.get(type_tag)
            if ggml_type is None:
                break
            block_size, type_size = sizes[type_tag]
            if shape and shape[0] % block_size:
                break
            try:
                name = window[index + 8 : name_end].decode("utf-8")
            except UnicodeDecodeError:
                break
            index = name_end + 4 + tail.size
            n_elements = prod(shape)
            size = n_elements // block_size * type_size
            tensors.append(TensorInfo(name, ggml_type, shape, values[-1], n_elements, size))
        self._index = index

    def skip_strings(self, count: int) -> None:
        """Pass ``count`` strings reading only their lengths: the loop that makes big vocabularies cheap.

        The inner loop does nothing but add lengths: a length that does not lie
        whole in the window makes ``unpack_from`` raise, and a string that runs
        past it leaves the position beyond the window; both are handled once
        per window, outside the loop.
        """
        unpack = _U64.unpack_from
        while count:
            window, index = self._window, self._index
            passed = 0
            try:
                for passed in range(count):  # noqa: B007 - the count passed is read after a break-out
                    index += 8 + unpack(window, index)[0]
                passed = count
            except (struct.error, OverflowError):  # the next length is not whole in the window
                pass
            count -= passed
            end = len(window)
            if index > end:  # the last string passed runs on past the window
                self._index = end
                self.skip(index - end)
            else:
                self._index = index
                if count:
                    self._refill(8)


def _value_type(cursor: _Cursor) -> GgufValueType:
    tag = cursor.u32()
    value_type = _VALUE_TYPES.get(tag)
    if value_type is None:
        raise cursor.error(f"unknown value type {tag} in {cursor.reading}")
    return value_type


def _read_value(cursor: _Cursor, value_type: GgufValueType) -> MetadataValue:
    scalar = _SCALAR_STRUCTS.get(value_type)
    if scalar is not None:
        window, index = cursor.take(scalar.size)
        value: int | float | bool = scalar.unpack_from(window, index)[0]
        return value
    if value_type is GgufValueType.STRING:
        # Values are for display, so text that is not UTF-8 is shown with replacement characters.
        return cursor.string_bytes().decode("utf-8", errors="replace")
    return _read_array(cursor, depth=0)


def _read_array(cursor: _Cursor, depth: int) -> MetadataValue:
    if depth >= MAX_ARRAY_NESTING:
        raise cursor.error(f"arrays nested more than {MAX_ARRAY_NESTING} deep in {cursor.reading}")
    item_type = _value_type(cursor)
    length = cursor.count("array length", _MIN_ITEM_BYTES[item_type])
    code = _SCALAR_FORMATS.get(item_type)
    if code is not None and length <= KEPT_NUMBER_ARRAY_ITEMS:
        window, index = cursor.take(length * _SCALAR_SIZES[item_type])
        return struct.unpack_from(f"<{length}{code}", window, index)
    if length <= KEPT_ARRAY_ITEMS and item_type is GgufValueType.STRING:
        return tuple(cursor.string_bytes().decode("utf-8", errors="replace") for _ in range(length))
    if length <= KEPT_ARRAY_ITEMS:
        return tuple(_read_array(cursor, depth + 1) for _ in range(length))
    _skip_items(cursor, item_type, length, depth)
    return ArraySummary(item_type, length)


def _skip_array(cursor: _Cursor, depth: int) -> None:
    if depth >= MAX_ARRAY_NESTING:
        raise cursor.error(f"arrays nested more than {MAX_ARRAY_NESTING} deep in {cursor.reading}")
    item_type = _value_type(cursor)
    _skip_items(cursor, item_type, cursor.count("array length", _MIN_ITEM_BYTES[item_type]), depth)


def _skip_items(cursor: _Cursor, item_type: GgufValueType, length: int, depth: int) -> None:
    """Pass an array's ``length`` items of ``item_type`` without keeping them."""
    if item_type in _SCALAR_SIZES:
        cursor.skip(length * _SCALAR_SIZES[item_type])
    elif item_type is GgufValueType.STRING:
        cursor.skip_strings(length)
    else:
        for _ in range(length):
            _skip_array(cursor, depth + 1)


def _read_name(cursor: _Cursor) -> str:
    raw = cursor.string_bytes()
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        raise cursor.error(f"{cursor.reading} has a name that is not UTF-8: {raw[:40]!r}") from None


def _read_metadata(cursor: _Cursor) -> dict[str, MetadataValue]:
    kv_count = cursor.count("metadata count", _MIN_KV_BYTES)
    metadata: dict[str, MetadataValue] = {}
    for number in range(kv_count):
        cursor.reading = f"metadata key {number}"
        key = _read_name(cursor)
        cursor.reading = f"metadata key {key!r}"
        if key in metadata:
            raise cursor.error(f"duplicate metadata key {key!r}")
        metadata[key] = _read_value(cursor, _value_type(cursor))
    return metadata


def _checked_tensor_info(cursor: _Cursor) -> TensorInfo:
    """A tensor info read field by field, each checked and named in the error: the slow path."""
    name = _read_name(cursor)
    cursor.reading = f"tensor info {name!r}"
    n_dims = cursor.u32()
    if n_dims > MAX_TENSOR_DIMS:
        raise cursor.error(f"tensor {name!r} has {n_dims} dimensions; GGML allows at most {MAX_TENSOR_DIMS}")
    window, index = cursor.take(8 * n_dims + 4 + 8)
    *shape, type_tag, offset = _TENSOR_TAILS[n_dims].unpack_from(window, index)
    ggml_type = _GGML_TYPES.get(type_tag)
    if ggml_type is None:
        raise cursor.error(f"tensor {name!r} has unknown GGML type {type_tag}")
    block_size, type_size = GGML_QUANT_SIZES[ggml_type]
    if shape and shape[0] % block_size:
        raise cursor.error(
            f"tensor {name!r} has rows of {shape[0]} elements, not a multiple of {ggml_type.name}'s"
            f" block of {block_size}"
        )
    n_elements = 1
    for dimension in shape:
        n_elements *= dimension
    return TensorInfo(name, ggml_type, tuple(shape), offset, n_elements, n_elements // block_size * type_size)


def _alignment(cursor: _Cursor, metadata: dict[str, MetadataValue]) -> int:
    alignment = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
    if type(alignment) is not int or alignment <= 0 or alignment & (alignment - 1):
        raise cursor.error(f"general.alignment {alignment!r} is not a positive power of two")
    return alignment


def _check_tensor_data(
    cursor: _Cursor, tensors: tuple[TensorInfo, ...], alignment: int, data_offset: int
) -> None:
    """Every tensor's data starts aligned and ends inside the file, as llama.cpp requires."""
    data_size = cursor.file_size - data_offset
    for tensor in tensors:
        if tensor.offset % alignment:
            raise cursor.error(
                f"tensor {tensor.name!r} starts at {tensor.offset}, not a multiple of {alignment}"
            )
        if tensor.offset + tensor.n_bytes > data_size:
            raise cursor.error(
                f"tensor {tensor.name!r} ({tensor.n_bytes:,} bytes at byte {data_offset + tensor.offset:,})"
                f" runs past the end of the file at byte {cursor.file_size:,}"
            )


def _read_header(cursor: _Cursor) -> GgufHeader:
    window, index = cursor.take(8)
    magic, version = window[index : index + 4], _U32.unpack_from(window, index + 4)[0]
    if magic != GGUF_MAGIC:
        raise cursor.error(f"bad magic {magic!r} (expected {GGUF_MAGIC!r})")
    if version not in SUPPORTED_VERSIONS:
        swapped = int.from_bytes(version.to_bytes(4, "little"), "big")
        if swapped in SUPPORTED_VERSIONS:  # a small version number stored the other way round
            raise cursor.error(f"big-endian GGUF (version {swapped}) is not supported")
        raise cursor.error(
            f"version {version} is not supported (only {', '.join(map(str, SUPPORTED_VERSIONS))})"
        )
    cursor.reading = "the tensor count"
    tensor_count = cursor.count("tensor count", _MIN_TENSOR_INFO_BYTES)
    cursor.reading = "the metadata count"
    metadata = _read_metadata(cursor)
    tensors: list[TensorInfo] = []
    while len(tensors) < tensor_count:
        cursor.plain_tensor_infos(tensor_count - len(tensors), tensors)
        if len(tensors) < tensor_count:  # at the window's end, or something to explain
            cursor.reading = f"tensor info {len(tensors)}"
            tensors.append(_checked_tensor_info(cursor))
    if len({tensor.name for tensor in tensors}) < len(tensors):
        names: set[str] = set()
        for tensor in tensors:
            if tensor.name in names:
                raise cursor.error(f"duplicate tensor name {tensor.name!r}")
            names.add(tensor.name)
    alignment = _alignment(cursor, metadata)
    data_offset = -(-cursor.position // alignment) * alignment
    header = GgufHeader(version, metadata, tuple(tensors), alignment, data_offset, cursor.file_size)
    _check_tensor_data(cursor, header.tensors, alignment, data_offset)
    return header


def read_gguf_header(path: Path) -> GgufHeader:
    """The metadata and tensor table of the GGUF file at ``path``; ``GgufFormatError`` if it is not one.

    ``OSError`` (missing, unreadable) passes through: that is not the file's format.
    """
    with open(path, "rb") as file:
        cursor = _Cursor(file, path, os.fstat(file.fileno()).st_size)
        return _read_header(cursor)
