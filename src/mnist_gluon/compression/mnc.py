"""The compressed model file, `model.mnc`: a pruned network stored as what is left of it.

Each weight layer is a codebook of shared values (compression.codebook), a bitmap of the
weights it keeps (row by row, a bit each), and the codebook index of each kept weight (a byte
each); the biases are float32. That body, after a JSON description (architecture,
normalisation, dataset, the checkpoint it came from), is compressed by LZMA2 (Python's `lzma`),
which codes the runs of pruned weights and the skewed indices near their entropy: the bitmap
and the indices apart compress 6% smaller than a byte per weight, and LZMA2 10% smaller than
Zstandard at level 22 (scripts/codec_sizes.py). The layout, little-endian:

    magic (8 bytes) | version (u16) | body bytes (u32) | payload bytes (u32) | CRC-32 (u32) |
    payload: LZMA2 (raw) of [description bytes (u32) | description (JSON) | layers...]

The CRC covers the header's fields and the payload. The reader trusts nothing in the file:
every count is bounded before it is used, and the body must decompress to exactly the size the
header and the description declare.
"""

from __future__ import annotations

import json
import lzma
import struct
import zlib
from dataclasses import asdict
from pathlib import Path

import numpy as np

from ..checkpoint import Checkpoint, typed
from ..config import ACTIVATIONS, MODELS
from ..data import DATASETS, Normalization
from ..errors import CheckpointError
from ..files import COMPRESSED_MAGIC, sha256_of
from ..model import Architecture
from ..reading import read_regular
from .codebook import kmeans

MAGIC = COMPRESSED_MAGIC
VERSION = 1
HEADER = struct.Struct("<8sHIII")
FORMAT = "mnist-gluon-compressed"
# LZMA2 with no container (the header holds sizes and a CRC): 60 bytes less than .xz. lc=0:
# a weight's byte says little about the next one's high bits.
FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 9 | lzma.PRESET_EXTREME, "lc": 0, "lp": 0,
            "pb": 0}]
CODEBOOK = 32  # shared values per layer (5-bit indices), chosen on validation
MAX_CODEBOOK = 256  # a byte per kept weight
MAX_FILE_BYTES = 64 << 20
MAX_PARAMETERS = 1 << 24  # 64 MB of float32 once decoded; the LeNet has 317,066
MAX_DESCRIPTION_BYTES = 1 << 16


# --- writing ------------------------------------------------------------------------------

def encode(checkpoint: Checkpoint, codebook: int | None = None) -> bytes:
    """The .mnc file of `checkpoint`: each weight layer shared through a k-means codebook of at
    most `codebook` values (by default the number its run trained, train.prune.shared_values,
    so that those are stored exactly; else CODEBOOK), its zeros kept as pruned."""
    config = checkpoint.sidecar.config if checkpoint.sidecar is not None else None
    trained = config.train.prune.shared_values if config is not None else None
    codebook = codebook or trained or CODEBOOK
    arch, layers, parts = checkpoint.architecture, [], []
    for name, shape in arch.shapes.items():
        values = np.asarray(checkpoint.arrays[name], np.float32)
        if name.endswith(".weight"):
            kept = values != 0
            centroids, index = kmeans(values[kept], codebook) if kept.any() else (
                np.zeros(0, np.float32), np.zeros(0, np.int64))
            layers.append({"name": name, "shape": list(shape), "codebook": len(centroids),
                           "kept": int(kept.sum())})
            parts += [centroids.astype("<f4").tobytes(), np.packbits(kept.ravel()).tobytes(),
                      index.astype(np.uint8).tobytes()]
        else:
            layers.append({"name": name, "shape": list(shape), "codebook": 0, "kept": 0})
            parts.append(values.astype("<f4").tobytes())
    description = json.dumps(describe(checkpoint, layers), separators=(",", ":")).encode()
    return packed(struct.pack("<I", len(description)) + description + b"".join(parts))


def packed(body: bytes, version: int = VERSION) -> bytes:
    """The file that holds `body`: its header, then the body compressed."""
    payload = lzma.compress(body, format=lzma.FORMAT_RAW, filters=FILTERS)
    fields = (MAGIC, version, len(body), len(payload))
    crc = zlib.crc32(payload, zlib.crc32(HEADER.pack(*fields, 0)[:-4]))
    return HEADER.pack(*fields, crc) + payload


def describe(checkpoint: Checkpoint, layers: list[dict]) -> dict:
    sidecar = checkpoint.sidecar
    return {
        "format": FORMAT,
        "architecture": asdict(checkpoint.architecture),
        "normalization": asdict(checkpoint.normalization),
        "classes": list(DATASETS[checkpoint.dataset].class_names),
        "checkpoint": {"path": str(checkpoint.params_path),
                       "sha256": sha256_of(checkpoint.params_path),
                       "dataset": checkpoint.dataset,
                       "epoch": sidecar.epoch if sidecar else None,
                       "sparsity": sidecar.sparsity if sidecar else {}},
        "layers": layers,
    }


# --- reading ------------------------------------------------------------------------------

def read_compressed(path: Path) -> Checkpoint:
    """The network a .mnc file stores, decoded to dense arrays, as a Checkpoint (its
    description stands where an export's model.json would). A file that is damaged, of another
    version or declares more than it may is a CheckpointError naming what is wrong."""
    raw = read_regular(path, MAX_FILE_BYTES, CheckpointError, "compressed model")
    body = unpacked(raw, path)
    (size,) = struct.unpack_from("<I", body)
    if size > min(MAX_DESCRIPTION_BYTES, len(body) - 4):
        damaged(path, f"its description claims {size:,} bytes")
    try:
        description = json.loads(body[4:4 + size])
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
        damaged(path, "its description is not JSON")
    arch, normalization, layers = described(description, path)
    arrays, offset = {}, 4 + size
    expected = 4 + size + sum(layer_bytes(layer) for layer in layers)
    if expected != len(body):
        damaged(path, f"its layers take {expected - 4 - size:,} bytes, its body holds "
                      f"{len(body) - 4 - size:,}")
    for layer in layers:
        count, k = int(np.prod(layer["shape"])), layer["codebook"]
        if layer["name"].endswith(".weight"):
            centroids = np.frombuffer(body, "<f4", k, offset)
            bits = np.frombuffer(body, np.uint8, bitmap_bytes(count), offset + 4 * k)
            kept = np.unpackbits(bits)
            index = np.frombuffer(body, np.uint8, layer["kept"], offset + 4 * k + bits.size)
            if kept.sum() != layer["kept"] or kept[count:].any():
                damaged(path, f"{layer['name']}'s bitmap keeps other than its {layer['kept']:,} "
                              "weights")
            if index.size and index.max() >= k:
                damaged(path, f"{layer['name']} names a shared value past its {k}")
            values = np.zeros(count, np.float32)
            values[kept[:count].astype(bool)] = centroids[index]
        else:
            values = np.frombuffer(body, "<f4", count, offset).astype(np.float32)
        if not np.isfinite(values).all():
            damaged(path, f"{layer['name']} holds a value that is not finite")
        arrays[layer["name"]] = values.reshape(layer["shape"])
        offset += layer_bytes(layer)
    return Checkpoint(path, arch, normalization, arrays, None, description)


def unpacked(raw: bytes, path: Path) -> bytes:
    """The body of a .mnc file's bytes, once its header and CRC hold."""
    if raw[:len(MAGIC)] != MAGIC:
        raise CheckpointError(f"{path} is not a compressed model (mnist-export --format "
                              "compressed writes them); pass a model.mnc, a .params file or "
                              "a run folder")
    if len(raw) < HEADER.size:
        damaged(path, f"it ends after {len(raw)} bytes, inside its header")
    magic, version, body_size, payload_size, crc = HEADER.unpack_from(raw)
    if version != VERSION:
        raise CheckpointError(f"{path} is a compressed model of version {version}; this "
                              f"mnist-gluon reads version {VERSION}: export it again with "
                              "this one")
    payload = raw[HEADER.size:]
    if len(payload) != payload_size:
        damaged(path, f"it holds {len(payload):,} bytes after its header, which declares "
                      f"{payload_size:,} (truncated or appended to)")
    if zlib.crc32(payload, zlib.crc32(raw[:HEADER.size - 4])) != crc:
        damaged(path, "its CRC-32 does not match its content")
    if body_size > MAX_PARAMETERS * 4 + MAX_DESCRIPTION_BYTES + 4 or body_size < 4:
        damaged(path, f"it declares a body of {body_size:,} bytes")
    decompressor = lzma.LZMADecompressor(lzma.FORMAT_RAW, filters=FILTERS)
    try:
        body = decompressor.decompress(payload, max_length=body_size)
        # Past the declared size there must be nothing: the stream's end, and no more bytes.
        beyond = b"" if decompressor.eof else decompressor.decompress(b"", max_length=1)
    except lzma.LZMAError:
        damaged(path, "its compressed body does not decode")
    if len(body) != body_size or beyond or not decompressor.eof or decompressor.unused_data:
        damaged(path, f"its body does not decode to the {body_size:,} bytes declared")
    return body


def described(description, path: Path) -> tuple[Architecture, Normalization, list[dict]]:
    """The description's architecture, normalisation and layers, each checked."""
    if not isinstance(description, dict) or description.get("format") != FORMAT:
        damaged(path, "its description is not a compressed model's")
    source = f"compressed model {path}"
    for key in ("architecture", "normalization", "layers", "checkpoint"):
        if key not in description:
            damaged(path, f"its description lacks {key}")
    arch = typed(Architecture, description["architecture"], source, "architecture")
    normalization = typed(Normalization, description["normalization"], source,
                          "normalization")
    checkpoint = description["checkpoint"]
    problems = [
        (not (np.isfinite(normalization.mean) and np.isfinite(normalization.std)
              and normalization.std > 0), "normalisation"),
        (arch.kind not in MODELS or arch.activation not in ACTIVATIONS, "model"),
        (not 1 <= arch.hidden <= 100_000 or not 2 <= arch.classes <= 1000
         or arch.inputs != 784, "layer sizes"),
        (arch.kind == "lenet" and not (isinstance(arch.channels, list) and len(arch.channels)
                                       == 2 and all(isinstance(c, int) and 1 <= c <= 1024
                                                    for c in arch.channels)), "channels"),
        (not isinstance(checkpoint, dict) or checkpoint.get("dataset") not in DATASETS,
         "dataset"),
    ]
    for bad, what in problems:
        if bad:
            damaged(path, f"its description holds an impossible {what}")
    shapes = arch.shapes
    if sum(int(np.prod(shape)) for shape in shapes.values()) > MAX_PARAMETERS:
        damaged(path, f"its network has more than {MAX_PARAMETERS:,} parameters")
    layers = description["layers"]
    wanted = [{"name": name, "shape": list(shape)} for name, shape in shapes.items()]
    if not isinstance(layers, list) or len(layers) != len(wanted) or any(
            not isinstance(layer, dict) or set(layer) != {"name", "shape", "codebook", "kept"}
            or {"name": layer["name"], "shape": layer["shape"]} != want
            or not all(type(layer[key]) is int for key in ("codebook", "kept"))
            or not (0 <= layer["codebook"] <= MAX_CODEBOOK and 0 <= layer["kept"] <= int(
                np.prod(want["shape"])) and (layer["codebook"] > 0 or layer["kept"] == 0)
                    if want["name"].endswith(".weight") else layer["codebook"] == layer["kept"]
                    == 0)
            for layer, want in zip(layers, wanted, strict=True)):
        damaged(path, f"its layers do not fit its architecture ({arch.describe()})")
    return arch, normalization, layers


def layer_bytes(layer: dict) -> int:
    count = int(np.prod(layer["shape"]))
    if layer["name"].endswith(".weight"):
        return 4 * layer["codebook"] + bitmap_bytes(count) + layer["kept"]
    return 4 * count


def bitmap_bytes(count: int) -> int:
    return (count + 7) // 8


def damaged(path: Path, what: str):
    raise CheckpointError(f"compressed model {path} is damaged: {what}; export it again "
                          "(mnist-export --format compressed)")
