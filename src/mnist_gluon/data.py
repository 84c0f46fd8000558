"""MNIST-format data: IDX files, where to find or fetch them, splits, normalisation, batches.

Everything up to `normalise` is numpy only; batching works on MXNet arrays held on the device.
"""

from __future__ import annotations

import hashlib
import math
import os
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import DataError
from .files import atomic_write
from .reading import fetch, read_regular

IMAGE_SIZE = 28
PIXELS = IMAGE_SIZE * IMAGE_SIZE

# IDX type codes: https://yann.lecun.com/exdb/mnist/ ("THE IDX FILE FORMAT").
IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}


# The most an IDX file may hold, inflated: over twice MNIST's 47 MB of training images, and
# little enough that no file, however small and however compressed, costs more.
MAX_IDX_BYTES = 128 << 20


def idx_header(raw: bytes, name: str) -> tuple[np.dtype, tuple[int, ...], int] | None:
    """(item type, dimensions, total bytes) that an IDX file's first bytes promise; None
    until `raw` holds the whole header. A DataError for what no IDX file starts with."""
    if len(raw) < 4:
        return None
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in IDX_TYPES or raw[3] == 0:
        magic = int.from_bytes(raw[:4], "big")
        raise DataError(
            f"{name} is not an IDX file: bad magic number {magic} "
            "(MNIST images have 2051, labels 2049)"
        )
    dtype, ndim = IDX_TYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        return None
    dims = tuple(int.from_bytes(raw[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    size = header + int(np.prod(dims, dtype=object)) * dtype.itemsize
    if size > MAX_IDX_BYTES:
        raise DataError(f"{name}'s header claims {'x'.join(map(str, dims))} items ({size:,} "
                        f"bytes), more than the {MAX_IDX_BYTES:,} bytes an IDX file may hold "
                        "here; its dimensions are wrong, or split the file")
    return dtype, dims, size


def parse_idx(raw: bytes, name: str) -> np.ndarray:
    """Decode IDX bytes; any inconsistency is a DataError naming `name`."""
    if len(raw) < 4:
        raise DataError(f"{name} is not an IDX file: only {len(raw)} bytes")
    promised = idx_header(raw, name)
    if promised is None:
        raise DataError(f"{name} is truncated: its header needs {4 + 4 * raw[3]} bytes, it "
                        f"has {len(raw)}")
    dtype, dims, expected = promised
    if len(raw) != expected:
        state = ("truncated, or its header's dimensions are wrong" if len(raw) < expected
                 else "longer than its header says")
        raise DataError(
            f"{name} is {state}: header says {'x'.join(map(str, dims))} items "
            f"({expected} bytes), file has {len(raw)} bytes"
        )
    array = np.frombuffer(raw, dtype=dtype, offset=4 + 4 * len(dims)).reshape(dims)
    return array.astype(dtype.newbyteorder("="), copy=False)


def promise(prefix: bytes) -> int | None:
    """The size an IDX file's header promises, or None: not IDX, or not all of it yet."""
    try:
        header = idx_header(prefix, "")
    except DataError:
        return None
    return header[2] if header is not None else None


def read_file_bytes(path: Path) -> tuple[bytes, bytes]:
    """(bytes on disk, content): content is decompressed when the file is gzip."""
    stored = read_regular(path, MAX_IDX_BYTES, DataError, "data file")
    return stored, decompressed(stored, str(path))


def decompressed(stored: bytes, name: str) -> bytes:
    """The content of a data file: gunzipped when it is gzip, else as stored. Inflating stops
    as soon as there is more than an IDX header promises, or than MAX_IDX_BYTES: a small gzip
    file (or many gzip members one after another) can stand for gigabytes of zeros."""
    if stored[:2] != b"\x1f\x8b":
        return stored
    out, bound, promised = bytearray(), MAX_IDX_BYTES, False
    pending = memoryview(stored)
    inflater, in_member = zlib.decompressobj(wbits=31), False
    try:
        while pending or inflater.unconsumed_tail:
            if inflater.unconsumed_tail:
                data = inflater.unconsumed_tail
            else:
                data, pending = pending[: 1 << 16], pending[1 << 16 :]
            in_member = True
            out += inflater.decompress(data, min(bound - len(out) + 1, 1 << 22))
            if not promised and len(out) >= 4:
                header = promise(bytes(out[:64]))
                promised = header is not None or len(out) >= 64
                bound = header if header is not None else bound
            if len(out) > bound:
                limit = ("its IDX header promises" if bound < MAX_IDX_BYTES
                         else "an IDX file may hold here")
                raise DataError(f"{name} inflates to more than the {bound:,} bytes {limit}; "
                                "replace it")
            if inflater.eof:  # another gzip member may follow
                rest = inflater.unused_data
                inflater, in_member = zlib.decompressobj(wbits=31), False
                pending = memoryview(rest + bytes(pending)) if rest else pending
    except zlib.error as error:
        raise DataError(f"{name} is a damaged gzip file ({error}); replace it") from None
    if in_member:
        raise DataError(f"{name} is a damaged gzip file (it ends early); replace it")
    return bytes(out)


@dataclass(frozen=True)
class IdxFile:
    name: str  # the canonical gzip name; the uncompressed file drops ".gz"
    gz_sha1: str  # what Gluon's dataset classes check for the .gz
    content_sha1: str  # of the uncompressed content, whoever compressed it


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    train_images: IdxFile
    train_labels: IdxFile
    test_images: IdxFile
    test_labels: IdxFile
    mirrors: tuple[str, ...]
    class_names: tuple[str, ...]
    system_roots: tuple[str, ...] = ()

    @property
    def files(self) -> tuple[IdxFile, ...]:
        return (self.train_images, self.train_labels, self.test_images, self.test_labels)

    def split_files(self, split: str) -> tuple[IdxFile, IdxFile]:
        if split == "train":
            return self.train_images, self.train_labels
        return self.test_images, self.test_labels


GLUON_REPO = "https://apache-mxnet.s3-accelerate.dualstack.amazonaws.com/gluon/dataset/"

DATASETS = {
    "mnist": DatasetSpec(
        name="mnist",
        train_images=IdxFile(
            "train-images-idx3-ubyte.gz",
            "6c95f4b05d2bf285e1bfb0e7960c31bd3b3f8a7d",
            "c3557c10f29b266e19b3eeee1553c85e0ef4a8ea",
        ),
        train_labels=IdxFile(
            "train-labels-idx1-ubyte.gz",
            "2a80914081dc54586dbdf242f9805a6b8d2a15fc",
            "adbf52269f5d842899f287c269e2883e40b4f6e2",
        ),
        test_images=IdxFile(
            "t10k-images-idx3-ubyte.gz",
            "c3a25af1f52dad7f726cce8cacb138654b760d48",
            "65e11ec1fd220343092a5070b58418b5c2644e26",
        ),
        test_labels=IdxFile(
            "t10k-labels-idx1-ubyte.gz",
            "763e7fa3757d93b0cdec073cef058b2004252c17",
            "a6d52cc628797e845885543326e9f10abb8a6f89",
        ),
        mirrors=(
            GLUON_REPO + "mnist/",
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ),
        class_names=tuple(str(digit) for digit in range(10)),
    ),
    "fashion-mnist": DatasetSpec(
        name="fashion-mnist",
        train_images=IdxFile(
            "train-images-idx3-ubyte.gz",
            "0cf37b0d40ed5169c6b3aba31069a9770ac9043d",
            "b9bd999c0106c9b8b4b0cefce58c9a6060f27095",
        ),
        train_labels=IdxFile(
            "train-labels-idx1-ubyte.gz",
            "236021d52f1e40852b06a4c3008d8de8aef1e40b",
            "4bccf37222e01638381eaa326bf730337a597267",
        ),
        test_images=IdxFile(
            "t10k-images-idx3-ubyte.gz",
            "626ed6a7c06dd17c0eec72fa3be1740f146a2863",
            "880056926db704f9f713097915f99da346f5b1d1",
        ),
        test_labels=IdxFile(
            "t10k-labels-idx1-ubyte.gz",
            "17f9ab60e7257a1620f4ad76bbbaf857c3920701",
            "958122e8b4b97fd4e71eca2d08ef754ed77c3ad9",
        ),
        mirrors=(
            GLUON_REPO + "fashion-mnist/",
            "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        ),
        class_names=("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
                     "Sneaker", "Bag", "Ankle boot"),
        # Debian's dataset-fashion-mnist package.
        system_roots=("/usr/share/datasets/fashion-mnist",),
    ),
}


def gluon_cache_root(name: str) -> Path:
    """Where `gluon.data.vision.MNIST` keeps its files: $MXNET_HOME/datasets/<name>."""
    home = os.environ.get("MXNET_HOME") or os.path.join(os.path.expanduser("~"), ".mxnet")
    return Path(home) / "datasets" / name


def find_file(root: Path, file: IdxFile) -> Path | None:
    """The gzip or the uncompressed form of `file` in `root`, whichever exists (gzip first)."""
    for candidate in (root / file.name, root / file.name.removesuffix(".gz")):
        if candidate.exists():
            return candidate
    return None


def locate(
    spec: DatasetSpec,
    root: str | Path | None,
    files: Sequence[IdxFile],
    download: bool,
    mirrors: Sequence[str] | None = None,
    timeout: float = 30.0,
) -> dict[IdxFile, Path]:
    """Paths of `files`: from `root` if given, else Gluon's cache or a system copy; missing
    files are downloaded into that root when `download` is set."""
    if root is not None:
        candidates = [Path(root).expanduser()]
    else:
        candidates = [gluon_cache_root(spec.name)] + [Path(p) for p in spec.system_roots]
    for candidate in candidates:
        found = {file: find_file(candidate, file) for file in files}
        if all(found.values()):
            return found  # type: ignore[return-value]
    target = candidates[0]
    missing = [file for file in files if find_file(target, file) is None]
    how = (
        f"copy the four {spec.name} files ({', '.join(f.name for f in spec.files)}; gzip or "
        f"uncompressed) into {target}, or pass --data-root DIR pointing at a folder that has them"
    )
    if not download:
        names = ", ".join(f.name for f in missing)
        raise DataError(f"{spec.name} files missing from {target} ({names}); {how}")
    for file in missing:
        download_file(file, target, mirrors if mirrors is not None else spec.mirrors, how, timeout)
    return {file: find_file(target, file) for file in files}  # type: ignore[misc]


def download_file(
    file: IdxFile, folder: Path, mirrors: Sequence[str], how: str, timeout: float
) -> Path:
    """Fetch `file` from the first mirror that serves it intact; written atomically. The
    folder is created only once there is a file to put in it."""
    destination = folder / file.name
    failures = []
    for mirror in mirrors:
        url = mirror.rstrip("/") + "/" + file.name
        try:
            stored = fetch(url, timeout, MAX_IDX_BYTES)
        except (OSError, ValueError) as error:  # urllib's URLError is an OSError
            failures.append(f"{url}: {getattr(error, 'reason', error)}")
            continue
        try:
            intact = is_original(file, stored, decompressed(stored, url))
        except DataError:
            intact = False
        if not intact:
            failures.append(f"{url}: checksum mismatch")
            continue
        try:
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write(destination, lambda temporary, data=stored: temporary.write_bytes(data))
        except OSError as error:
            raise DataError(f"cannot write {destination} ({error.strerror}); {how}") from None
        return destination
    tried = "; ".join(failures) if failures else "no mirrors configured"
    raise DataError(f"could not download {file.name} ({tried}); {how}")


def is_original(file: IdxFile, stored: bytes, content: bytes) -> bool:
    """The file as Gluon ships it (its .gz SHA-1), or the same content however compressed."""
    return (hashlib.sha1(stored).hexdigest() == file.gz_sha1
            or hashlib.sha1(content).hexdigest() == file.content_sha1)


@dataclass
class Split:
    images: np.ndarray  # uint8, N x 28 x 28
    labels: np.ndarray  # int32, N
    checksums: dict[str, str]  # file name -> sha1 of its content


def read_split(
    spec: DatasetSpec,
    split: str,
    root: str | Path | None = None,
    download: bool = True,
    verify: bool = True,
    mirrors: Sequence[str] | None = None,
    classes: int = 10,
) -> Split:
    """The `train` or `test` images and labels of `spec`, found, checked and decoded."""
    image_file, label_file = spec.split_files(split)
    paths = locate(spec, root, (image_file, label_file), download, mirrors)
    arrays, checksums = {}, {}
    for file, kind in ((image_file, "images"), (label_file, "labels")):
        path = paths[file]
        stored, content = read_file_bytes(path)
        content_sha1 = hashlib.sha1(content).hexdigest()
        if verify and not is_original(file, stored, content):
            raise DataError(
                f"{path} fails its checksum (content sha1 {content_sha1}, expected "
                f"{file.content_sha1}); replace it with the original {spec.name} file, "
                "or, for IDX data of your own, train with --set data.verify=false (the "
                "commands that read a checkpoint follow its run)"
            )
        arrays[kind] = parse_idx(content, str(path))
        checksums[path.name] = content_sha1
    images, labels = arrays["images"], arrays["labels"]
    image_path, label_path = paths[image_file], paths[label_file]
    if images.ndim != 3 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE) or images.dtype != np.uint8:
        raise DataError(
            f"{image_path} holds {images.dtype} items of shape {images.shape}, "
            f"not uint8 images of {IMAGE_SIZE}x{IMAGE_SIZE}"
        )
    if labels.ndim != 1 or labels.dtype != np.uint8:
        raise DataError(f"{label_path} holds {labels.dtype} items of shape {labels.shape}, "
                        "not uint8 labels")
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} has {len(images)} images but {label_path} has {len(labels)} labels; "
            "they must come from the same split"
        )
    if len(labels) == 0:
        raise DataError(f"{label_path} holds no examples")
    if labels.max() >= classes:
        raise DataError(f"{label_path} has label {labels.max()}, beyond the {classes} classes")
    return Split(images, labels.astype(np.int32), checksums)


def split_validation(
    images: np.ndarray, labels: np.ndarray, val_size: int, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(train_images, train_labels, val_images, val_labels), the validation set drawn by `seed`."""
    if val_size >= len(images):
        raise DataError(
            f"data.val_size={val_size} leaves no training data out of {len(images)} examples"
        )
    order = np.random.default_rng(seed).permutation(len(images))
    val, train = order[:val_size], order[val_size:]
    return images[train], labels[train], images[val], labels[val]


@dataclass(frozen=True)
class Normalization:
    """Pixels become ((pixel / 255) - mean) / std."""

    mean: float
    std: float


def fit_normalization(images: np.ndarray, slice_pixels: int = 1 << 18) -> Normalization:
    """The mean and std of uint8 `images` / 255, exact: from the integer sums of the pixels
    and of their squares, a slice at a time (no float copy of the set), rounded once."""
    flat = images.reshape(-1)
    count, total, squares = flat.size, 0, 0
    for start in range(0, count, slice_pixels):  # 1 MB of squares at a time
        part = flat[start:start + slice_pixels]
        total += int(part.sum(dtype=np.uint64))
        squares += int(np.square(part, dtype=np.uint32).sum(dtype=np.uint64))
    spread = math.isqrt((count * squares - total * total) << 128)  # 64 bits below the point
    std = float(Fraction(spread, (255 * count) << 64))
    return Normalization(float(Fraction(total, 255 * count)), std or 1.0)


def normalise(images: np.ndarray, norm: Normalization) -> np.ndarray:
    """uint8 N x 28 x 28 (or N x 784) -> float32 N x 784."""
    flat = images.reshape(len(images), -1).astype(np.float32)
    # In place: a new 172 MB array costs its page faults, which these VMs make slow (the two
    # this saves were 1.7-3.8 s of every run's start).
    np.multiply(flat, np.float32(1.0 / (255.0 * norm.std)), out=flat)
    np.subtract(flat, np.float32(norm.mean / norm.std), out=flat)
    return flat


def epoch_order(num_examples: int, seed: int, epoch: int) -> np.ndarray:
    """The shuffled order of one epoch: a function of (seed, epoch) alone, so a resumed run
    sees exactly the batches it would have seen."""
    return np.random.default_rng([seed, epoch]).permutation(num_examples).astype(np.int32)


def split_steps(columns: list[np.ndarray], batch_size: int, ctxs: Sequence) -> list[list]:
    """Per-example arrays, in the epoch's order, cut into the epoch's steps: for each step,
    for each device, a tuple with that device's equal share of each column. Made with one
    `split` per column and device, so the steps pay nothing to get their inputs.

    The last partial batch is dropped: every step has the same shape (a static graph) and
    the dropped examples differ from epoch to epoch.
    """
    from .mxnet_compat import mx

    steps = steps_per_epoch(len(columns[0]), batch_size)
    per_device = batch_size // len(ctxs)
    per_ctx = []
    for i, ctx in enumerate(ctxs):
        pieces = []
        for column in columns:
            grid = column[: steps * batch_size].reshape(steps, len(ctxs), per_device,
                                                        *column.shape[1:])
            array = mx.nd.array(grid[:, i], ctx=ctx, dtype=column.dtype)
            parts = mx.nd.split(array, num_outputs=steps, axis=0, squeeze_axis=True)
            pieces.append(parts if steps > 1 else [parts])
        per_ctx.append(list(zip(*pieces, strict=True)))
    return [list(step) for step in zip(*per_ctx, strict=True)]


def steps_per_epoch(num_examples: int, batch_size: int) -> int:
    return num_examples // batch_size
