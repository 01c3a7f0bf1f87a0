"""A checkpoint's weights on disk: one `model.safetensors` or an index and its shards, read tensor by tensor.

The safetensors format is read here directly (an 8-byte header length, a JSON header of
name -> dtype, shape and byte range, then the bytes), so that:

- a truncated or corrupt file is a one-line error naming the file before anything is loaded;
- tensors are streamed in bounded chunks with plain reads (no memory map, whose touched pages
  would count as resident memory) and converted straight into the target dtype and device, so a
  bfloat16 side never holds a float32 copy of the model;
- progress can be reported in bytes read of the total.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from verify_ate.verify.errors import InputError

WEIGHTS_FILE = "model.safetensors"
INDEX_FILE = "model.safetensors.index.json"
# Bytes read and converted at a time: the largest temporary a load holds besides the model.
CHUNK_BYTES = 16 * 2**20
HEADER_LIMIT = 100 * 2**20  # safetensors' own cap on the JSON header

# safetensors dtype name -> (torch dtype name, bytes per element)
STORED_DTYPES = {
    "F64": ("float64", 8),
    "F32": ("float32", 4),
    "F16": ("float16", 2),
    "BF16": ("bfloat16", 2),
    "I64": ("int64", 8),
    "I32": ("int32", 4),
    "I16": ("int16", 2),
    "I8": ("int8", 1),
    "U8": ("uint8", 1),
    "BOOL": ("bool", 1),
}


@dataclass(frozen=True)
class TensorEntry:
    """Where one tensor's bytes lie: file, absolute byte offset, length, dtype and shape."""

    path: Path
    offset: int
    nbytes: int
    dtype: str  # safetensors name, e.g. "F32"
    shape: tuple[int, ...]

    @property
    def numel(self) -> int:
        count = 1
        for size in self.shape:
            count *= size
        return count


def read_header(path: Path) -> dict[str, TensorEntry]:
    """The tensors of one safetensors file, checked against the file's size (InputError naming the file)."""
    try:
        size = path.stat().st_size
        with path.open("rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                raise InputError(f"{path}: not a safetensors file ({size} bytes, shorter than its header length)")
            length = int.from_bytes(prefix, "little")
            if length > min(HEADER_LIMIT, size - 8):
                raise InputError(f"{path}: truncated or not a safetensors file (header of {length} bytes, file {size})")
            header_bytes = handle.read(length)
    except OSError as error:
        raise InputError(f"{path}: cannot read the weights file ({error.strerror})") from None
    try:
        header = json.loads(header_bytes)
        if not isinstance(header, dict):
            raise ValueError("the header is not a JSON object")
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{path}: corrupt safetensors header ({error})") from None
    data_start = 8 + length
    entries: dict[str, TensorEntry] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (begin, end) = spec["dtype"], tuple(int(n) for n in spec["shape"]), spec["data_offsets"]
            begin, end = int(begin), int(end)
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{path}: corrupt safetensors header entry for tensor {name!r}") from None
        if dtype not in STORED_DTYPES:
            raise InputError(f"{path}: tensor {name!r} has dtype {dtype!r}, which verify-ate does not read")
        entry = TensorEntry(path, data_start + begin, end - begin, dtype, shape)
        if end < begin or entry.nbytes != entry.numel * STORED_DTYPES[dtype][1]:
            raise InputError(f"{path}: tensor {name!r}: byte range [{begin}, {end}) does not fit shape {list(shape)}")
        if entry.offset + entry.nbytes > size:
            raise InputError(
                f"{path}: truncated: tensor {name!r} ends at byte {entry.offset + entry.nbytes}, the file has {size}"
            )
        entries[name] = entry
    return entries


@dataclass(frozen=True)
class CheckpointWeights:
    """The weight files of a checkpoint folder that a load reads, and every tensor in them."""

    folder: Path
    files: tuple[Path, ...]  # the files read: model.safetensors, or the index and its shards
    tensors: dict[str, TensorEntry]
    note: str | None = None  # why one layout was chosen over another present one

    @property
    def total_bytes(self) -> int:
        return sum(entry.nbytes for entry in self.tensors.values())

    def keys(self) -> list[str]:
        return list(self.tensors)


def checkpoint_weights(folder: Path) -> CheckpointWeights:
    """The weights of `folder`: shards + index when that set is complete, else a complete `model.safetensors`.

    Both layouts are validated from their headers (no tensor is read). With both present, the
    shards are used only when every shard the index names is there and holds its tensors; a
    broken set then falls back to `model.safetensors`, saying why. With one layout, its problem
    is the error (InputError naming the file).
    """
    single, index = folder / WEIGHTS_FILE, folder / INDEX_FILE
    if not single.is_file() and not index.is_file():
        raise InputError(f"{folder}: not a lerobot checkpoint folder (no {WEIGHTS_FILE} or {INDEX_FILE})")
    sharded_error: InputError | None = None
    if index.is_file():
        try:
            return _sharded(folder, index)
        except InputError as error:
            if not single.is_file():
                raise
            sharded_error = error
    weights = CheckpointWeights(folder, (single,), read_header(single))
    if sharded_error is not None:
        return CheckpointWeights(folder, weights.files, weights.tensors, f"using {WEIGHTS_FILE}: {sharded_error}")
    return weights


def _sharded(folder: Path, index: Path) -> CheckpointWeights:
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict) or not weight_map:
            raise ValueError("weight_map is not a non-empty object")
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise InputError(f"{index}: not a safetensors index ({type(error).__name__}: {error})") from None
    shards = sorted(set(weight_map.values()))
    missing = [name for name in shards if not (folder / name).is_file()]
    if missing:
        raise InputError(
            f"{folder / missing[0]}: shard named by {index.name} is missing ({len(missing)} of {len(shards)})"
        )
    tensors: dict[str, TensorEntry] = {}
    for name in shards:
        tensors.update(read_header(folder / name))
    for tensor, shard in weight_map.items():
        if tensor not in tensors or tensors[tensor].path.name != shard:
            raise InputError(f"{folder / shard}: holds no tensor {tensor!r}, which {index.name} places there")
    return CheckpointWeights(folder, (index, *(folder / name for name in shards)), tensors)


def read_all_into(
    state: dict[str, Any],
    sources: dict[str, str],
    weights: CheckpointWeights,
    on_bytes: Callable[[int, int], None] | None = None,
) -> int:
    """Every model tensor `state[key]` (a state_dict with keep_vars) filled from its file tensor `sources[key]`,
    one tensor at a time (`read_into`); `on_bytes(read so far, total)` after each chunk. Returns the bytes read."""
    import torch

    total = sum(weights.tensors[file_key].nbytes for file_key in sources.values())
    done = 0

    def count(read: int) -> None:
        nonlocal done
        done += read
        if on_bytes is not None:
            on_bytes(done, total)

    with torch.no_grad():
        for key, file_key in sources.items():
            read_into(weights.tensors[file_key], state[key].data, count)
    return total


def read_into(entry: TensorEntry, target: Any, on_bytes: Callable[[int], None] | None = None) -> None:
    """Copy one tensor from disk into `target` (a torch tensor of the same shape, any dtype and device).

    A CPU target of the stored dtype is read straight into its memory. Otherwise the bytes are
    read in chunks of at most CHUNK_BYTES and each chunk is converted into the matching slice of
    `target`: the only temporary is one chunk.
    """
    import torch

    if tuple(target.shape) != entry.shape:
        raise InputError(f"{entry.path}: tensor of shape {list(entry.shape)} cannot fill {list(target.shape)}")
    dtype = getattr(torch, STORED_DTYPES[entry.dtype][0])
    itemsize = STORED_DTYPES[entry.dtype][1]
    if target.device.type == "cpu" and target.dtype == dtype and target.is_contiguous() and entry.nbytes:
        raw = memoryview(target.view(-1).view(torch.uint8).numpy())
        with entry.path.open("rb") as handle:
            handle.seek(entry.offset)
            for start in range(0, entry.nbytes, CHUNK_BYTES):  # in pieces, for the progress report
                piece = raw[start : start + CHUNK_BYTES]
                if handle.readinto(piece) != len(piece):
                    raise InputError(f"{entry.path}: truncated while reading (file shorter than its header says)")
                if on_bytes is not None:
                    on_bytes(len(piece))
        return
    flat = target.view(-1)
    per_chunk = max(1, CHUNK_BYTES // itemsize)
    buffer = bytearray(min(entry.nbytes, per_chunk * itemsize))
    with entry.path.open("rb") as handle, torch.no_grad():
        handle.seek(entry.offset)
        for start in range(0, entry.numel, per_chunk):
            count = min(per_chunk, entry.numel - start)
            view = memoryview(buffer)[: count * itemsize]
            if handle.readinto(view) != len(view):
                raise InputError(f"{entry.path}: truncated while reading (file shorter than its header says)")
            chunk = torch.frombuffer(view, dtype=dtype, count=count)
            flat[start : start + count].copy_(chunk)
            if on_bytes is not None:
                on_bytes(len(view))


def read_tensor(entry: TensorEntry) -> Any:
    """One whole tensor on the CPU, in its stored dtype."""
    import torch

    tensor = torch.empty(entry.shape, dtype=getattr(torch, STORED_DTYPES[entry.dtype][0]))
    read_into(entry, tensor)
    return tensor


def write_safetensors(tensors: dict[str, TensorEntry], target: Path) -> Path:
    """A safetensors file holding `tensors` (entries of other files), copied byte for byte in chunks of
    CHUNK_BYTES: any size of model is rewritten without being held in memory."""
    header: dict = {}
    offset = 0
    for name, entry in tensors.items():
        header[name] = {
            "dtype": entry.dtype,
            "shape": list(entry.shape),
            "data_offsets": [offset, offset + entry.nbytes],
        }
        offset += entry.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode("utf-8")
    encoded += b" " * (-len(encoded) % 8)  # safetensors aligns the data to 8 bytes
    with target.open("wb") as out:
        out.write(len(encoded).to_bytes(8, "little"))
        out.write(encoded)
        for entry in tensors.values():
            with entry.path.open("rb") as source:
                source.seek(entry.offset)
                remaining = entry.nbytes
                while remaining:
                    block = source.read(min(CHUNK_BYTES, remaining))
                    if not block:
                        raise InputError(f"{entry.path}: truncated while reading (file shorter than its header says)")
                    out.write(block)
                    remaining -= len(block)
    return target
