"""Checkpoints on disk, read back with their meaning (training.saver writes them).

A checkpoint `X` is three files: `X.params` (parameters, MXNet's format), `X.states` (the
optimizer state, for resuming) and `X.json`, the sidecar that says what the
parameters are (architecture, normalisation, config, epoch, metrics, data and library
versions) and holds the SHA-256 of the other two. The sidecar is written last, so a
checkpoint without one was never finished.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .config import ACTIVATIONS, MODELS, Config, config_from_dict, config_to_dict
from .data import DATASETS, PIXELS, Normalization
from .errors import CheckpointError, ConfigError
from .files import check_path_names, is_compressed, sha256_of
from .model import Architecture, bare_architecture
from .reading import MAX_SIDECAR_BYTES, check_regular, read_json, shown

SIDECAR_FORMAT = "mnist-gluon-checkpoint"
SIDECAR_VERSION = 1
# How the `.states` file is laid out (optim.Updater.save); resume needs the same layout.
STATES_FORMAT = "mnist-gluon-updater-1"
RUN_FILES = ("config.yaml", "metrics.jsonl", "last.params", "best.params")
PREVIOUS = "previous"  # the `last` checkpoint before the newest, kept while it is replaced
# The normalisation of Gluon's MNIST examples (ToTensor, then Normalize(0.13, 0.31)): assumed
# for a bare .params file that came without a sidecar, unless the user says otherwise.
GLUON_EXAMPLE_NORMALIZATION = Normalization(0.1307, 0.3081)
# mnist-export's float MXNet model takes raw pixels, 0-255: its normalisation is in its weights.
RAW_PIXELS = Normalization(0.0, 1.0 / 255.0)


@dataclass
class EpochResult:
    """One finished epoch: a line of metrics.jsonl, and a sidecar's `metrics`."""

    epoch: int
    step: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    samples_per_second: float
    # The weight average's, with train.average (None without it, or before it starts).
    average_val_loss: float | None = None
    average_val_accuracy: float | None = None


@dataclass
class EpochProgress:
    """How far an epoch has got: what a mid-epoch checkpoint records to continue it exactly."""

    epoch: int
    steps_done: int = 0
    # Per device, the [loss, correct] sums of its two accumulators (even and odd steps), as the
    # device's float32 values: restored as they were, the epoch's sums come out bit-identical.
    sums: list = field(default_factory=list)
    skipped: int = 0  # batches skipped as non-finite (train.skip_nonfinite)
    seconds: float = 0.0

    @property
    def totals(self) -> tuple[float, float]:
        if not self.sums:
            return 0.0, 0.0
        loss, correct = np.sum(np.asarray(self.sums, dtype=np.float32).reshape(-1, 2), axis=0,
                               dtype=np.float32)
        return float(loss), float(correct)


@dataclass
class EarlyStopping:
    stale_epochs: int = 0  # epochs in a row whose validation accuracy did not rise enough
    stopped: bool = False


@dataclass
class DataRecord:
    name: str = "mnist"
    sha1: dict[str, str] = field(default_factory=dict)  # file name -> SHA-1 of its content


@dataclass
class CheckpointRecord:
    """A checkpoint a run learnt from: a teacher (train.distill.teacher), or the weights a
    pruned run started from (train.prune.start_from)."""

    path: str  # as resolved when the run began
    sha256: str


@dataclass
class PretrainRecord:
    """train.pretrain's digits: their fonts by name, and one digest of the fonts' bytes."""

    images: int
    epochs: int
    fonts: list[str]
    fonts_sha256: str
    seconds: float  # rendering and training


@dataclass
class PrivacyRecord:
    """A private run's DP-SGD (train.privacy) and the (epsilon, delta) that its `steps` steps
    so far spent, as dp-accounting's `accountant` counts them."""

    epsilon: float
    delta: float
    noise_multiplier: float
    sample_rate: float  # each example's chance of being in a step's batch
    steps: int
    clip: float
    accountant: str


@dataclass
class Sidecar:
    """What a checkpoint records beside its parameters: the `X.json` file, typed. `epoch`
    counts finished epochs; `in_epoch` is how far the next one had got when the checkpoint
    was written inside it. The checksums are filled in by `training.saver.save_checkpoint`."""

    architecture: Architecture
    normalization: Normalization
    config: Config | None = None
    epoch: int = 0
    step: int = 0
    in_epoch: EpochProgress | None = None
    metrics: EpochResult | None = None
    best_val_accuracy: float | None = None
    best_epoch: int = 0
    early_stopping: EarlyStopping | None = None
    data: DataRecord = field(default_factory=DataRecord)
    versions: dict[str, str] = field(default_factory=dict)
    # A refit: trained on the whole training set for the epochs validation chose in this run
    # folder. It has no validation figure of its own.
    refit_of: str | None = None
    # The OpenMP threads MXNet's operators ran on: a batch's gradient sums are split by it, so
    # the parameters depend on it. A resumed run continues on it. None: not recorded.
    threads: int | None = None
    # Which implementation ran each operator that has two: {"update": "compiled" | "mxnet",
    # "elastic": ..., "mlp_step": "avx512" | "avx2" when the MLP's compiled step trained it}.
    # Empty: written before the compiled kernels (MXNet's operators).
    kernels: dict[str, str] = field(default_factory=dict)
    teacher: CheckpointRecord | None = None  # train.distill's teacher
    started_from: CheckpointRecord | None = None  # train.prune.start_from
    pretrained: PretrainRecord | None = None  # train.pretrain
    # With train.prune: each weight layer's fraction of weights held at zero by its mask.
    sparsity: dict[str, float] = field(default_factory=dict)
    privacy: PrivacyRecord | None = None  # with train.privacy
    # Which weights the .params file holds: the live ones, or their average (train.average).
    weights: str = "live"
    # The weight average, for resuming it exactly: how many epochs it holds, and its file's.
    average_count: int = 0
    average_sha256: str | None = None
    params_sha256: str | None = None
    states_file: str | None = None
    states_format: str | None = None
    states_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        record = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        record["config"] = config_to_dict(self.config) if self.config is not None else None
        for name in ("architecture", "normalization", "in_epoch", "metrics", "early_stopping",
                     "data", "teacher", "started_from", "pretrained", "privacy"):
            if record[name] is not None:
                record[name] = dataclasses.asdict(record[name])
        return {"format": SIDECAR_FORMAT, "version": SIDECAR_VERSION, **record}

    @classmethod
    def from_json(cls, raw: dict[str, Any], sidecar: Path) -> Sidecar:
        """The sidecar's JSON, each value checked against the type its field declares."""
        values = {f.name: raw[f.name] for f in dataclasses.fields(cls) if f.name in raw}
        return typed(cls, values, f"sidecar {sidecar}", "")

    @property
    def dataset(self) -> str:
        return self.data.name


def typed(cls: type, raw: Any, source: str, where: str) -> Any:
    """`raw` as the dataclass `cls`; a value of the wrong type (say a string for a mean) is a
    CheckpointError naming it, so no command meets it later as a TypeError."""
    if not isinstance(raw, dict):
        raise CheckpointError(f"{source} garbles {where or 'its content'}: not an "
                              "object; restore it")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    if unknown := sorted(set(raw) - names):
        raise CheckpointError(f"{source} garbles {where or 'its content'}: unknown "
                              f"key {unknown[0]!r}; restore it")
    values = {name: typed_value(hints[name], value, source, f"{where}.{name}" if where else name)
              for name, value in raw.items()}
    try:
        return cls(**values)
    except TypeError:
        missing = [f.name for f in dataclasses.fields(cls) if f.name not in raw
                   and f.default is dataclasses.MISSING
                   and f.default_factory is dataclasses.MISSING]
        field = f"{where}.{missing[0]}" if where else missing[0]
        raise CheckpointError(f"{source} lacks {field}; restore it") from None


def typed_value(hint: Any, value: Any, source: str, where: str) -> Any:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Config:
        try:
            return config_from_dict(value)
        except ConfigError as error:
            raise CheckpointError(f"{source} holds a config this version cannot "
                                  f"read ({error})") from None
    if dataclasses.is_dataclass(hint):
        return typed(hint, value, source, where)
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [arg for arg in args if arg is not type(None)]
        return typed_value(inner, value, source, where)
    if hint is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        value = float(value) if ok else value
    elif hint is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif hint is list or origin is list:
        ok = isinstance(value, list)
    elif origin is dict:
        ok = isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, args[1])
                                             for k, v in value.items())
    else:
        ok = isinstance(value, hint)
    if not ok:
        raise CheckpointError(f"{source} garbles {where}: {shown(value)} is not "
                              f"{type_name(hint)}; restore it")
    return value


def type_name(hint: Any) -> str:
    names = {float: "a number", int: "an integer", str: "a string", bool: "true or false"}
    return names.get(hint, "a list" if hint is list or typing.get_origin(hint) is list
                     else "an object")


def sidecar_path(params_path: Path) -> Path:
    return params_path.with_suffix(".json")


def states_path(params_path: Path) -> Path:
    return params_path.with_suffix(".states")


def average_path(params_path: Path) -> Path:
    return params_path.with_suffix(".average")


def library_versions() -> dict[str, str]:
    from . import __version__
    from .mxnet_compat import mx

    return {"mnist_gluon": __version__, "mxnet": mx.__version__, "numpy": np.__version__,
            "python": sys.version.split()[0]}


@dataclass
class Checkpoint:
    """A parameter file and what is known about it."""

    params_path: Path
    architecture: Architecture
    normalization: Normalization
    arrays: dict[str, np.ndarray]  # by our names (Architecture.shapes): fc1.weight, ...
    sidecar: Sidecar | None  # None for a bare file
    exported: dict | None = None  # model.json, for mnist-export's own model

    @property
    def dataset(self) -> str:
        if self.sidecar is not None:
            return self.sidecar.dataset
        return (self.exported or {}).get("checkpoint", {}).get("dataset") or "mnist"


def read_named(key: str, path: Path, make_it: str, example: str) -> Checkpoint:
    """The checkpoint that the config key `key` names (train.distill.teacher,
    train.prune.start_from), which must be one mnist-train wrote; anything else is a ConfigError
    naming the key. `make_it` says how to make it, `example` where one usually is."""
    if not path.exists():
        raise ConfigError(f"{key}={path} does not exist; {make_it}, or name another with --set "
                          f"{key}=PATH")
    if is_compressed(path):
        raise ConfigError(f"{key}={path} is a compressed model (mnist-export --format "
                          "compressed), which only predicts; pass the checkpoint it was "
                          "exported from")
    try:
        checkpoint = read_checkpoint(path)
    except CheckpointError as error:
        raise ConfigError(f"{key}: {error}") from None
    if checkpoint.sidecar is None:
        raise ConfigError(f"{key}={path} has no sidecar: pass a checkpoint mnist-train wrote "
                          f"(e.g. {example})")
    return checkpoint


def read_checkpoint(params_path: str | Path, bare_normalization: Normalization | None = None,
                    exported: dict | None = None) -> Checkpoint:
    """Read and check a checkpoint. Without a sidecar, the file is taken for a plain Gluon
    script's MLP or LeNet: its layer sizes come from the parameter shapes. `exported` is
    mnist-export's model.json when the file is its float model (inference.sources)."""
    params_path = Path(params_path)
    if params_path.is_symlink() and not params_path.exists():
        raise CheckpointError(f"checkpoint {params_path} is a symbolic link to nothing (or to "
                              "itself); pass the .params file it should name")
    if params_path.suffix == ".json" and params_path.with_suffix(".params").exists():
        raise CheckpointError(f"{params_path} is a checkpoint's sidecar; pass its parameter "
                              f"file, {params_path.with_suffix('.params')}")
    if not params_path.exists():
        raise CheckpointError(f"checkpoint {params_path} does not exist; pass a .params file "
                              "written by mnist-train (e.g. runs/base/best.params)")
    if params_path.is_dir():
        raise CheckpointError(f"checkpoint {params_path} is a directory; pass its .params file")
    check_regular(params_path, CheckpointError, "checkpoint")  # a FIFO would hang MXNet's read
    sidecar = (read_sidecar(params_path) if exported is None and sidecar_path(params_path).exists()
               else None)
    arrays = read_param_arrays(params_path)
    if sidecar is not None:
        architecture, normalization = sidecar.architecture, sidecar.normalization
        layers = arrays
    else:
        architecture, layers = bare_architecture(arrays, params_path)
        normalization = (RAW_PIXELS if exported is not None
                         else bare_normalization or GLUON_EXAMPLE_NORMALIZATION)
    check_shapes(layers, architecture, params_path)
    return Checkpoint(params_path, architecture, normalization, layers, sidecar, exported)


SIGNATURE = "sidecar_sha256"


def content_digest(content: dict[str, Any]) -> str:
    """The SHA-256 of a sidecar's content, without its own checksum, in a canonical form."""
    canonical = json.dumps({k: v for k, v in content.items() if k != SIGNATURE},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def signed(content: dict[str, Any]) -> dict[str, Any]:
    return {**content, SIGNATURE: content_digest(content)}


def check_meaning(sidecar: Sidecar, path: Path) -> Sidecar:
    """What the numbers mean must make sense: an edited value would change every prediction."""
    norm, arch = sidecar.normalization, sidecar.architecture
    problems = [
        (not (np.isfinite(norm.mean) and np.isfinite(norm.std) and norm.std > 0),
         f"normalization {norm.mean}, {norm.std} (the std must be finite and above 0)"),
        (arch.activation not in ACTIVATIONS, f"activation {arch.activation!r}"),
        (not 0 <= arch.dropout < 1, f"dropout {arch.dropout}"),
        (arch.kind not in MODELS, f"model kind {arch.kind!r}"),
        (sidecar.dataset not in DATASETS, f"dataset {sidecar.dataset!r} (this mnist-gluon "
                                          f"knows {', '.join(DATASETS)})"),
        (arch.kind == "lenet" and not (isinstance(arch.channels, list)
                                       and len(arch.channels) == 2
                                       and all(isinstance(c, int) and c > 0
                                               for c in arch.channels)),
         f"list of channels {arch.channels!r}"),
    ]
    for bad, what in problems:
        if bad:
            raise CheckpointError(f"sidecar {path} holds an impossible {what}; restore it, or "
                                  "move it away to evaluate the .params file bare")
    return sidecar


def read_sidecar(params_path: Path) -> Sidecar:
    """The sidecar of `params_path`, checked against the file it describes."""
    sidecar = sidecar_path(params_path)
    meta = read_json(sidecar, MAX_SIDECAR_BYTES, CheckpointError, "sidecar",
                     "restore it, or move it away to evaluate the .params file bare")
    if not isinstance(meta, dict) or meta.get("format") != SIDECAR_FORMAT:
        raise CheckpointError(f"{sidecar} is not an mnist-gluon checkpoint sidecar; move it "
                              "away to evaluate the .params file bare")
    if meta.get("version") != SIDECAR_VERSION:
        raise CheckpointError(f"{sidecar} has sidecar version {meta.get('version')}; this "
                              f"mnist-gluon reads version {SIDECAR_VERSION}")
    if sha256_of(params_path) != meta.get("params_sha256"):
        raise CheckpointError(
            f"{params_path} does not match the checksum in {sidecar.name}: the file was "
            "changed or damaged after it was written; use another checkpoint"
        )
    if SIGNATURE not in meta:
        raise CheckpointError(f"sidecar {sidecar} has no {SIGNATURE}, so nothing proves it is "
                              "the one mnist-train wrote; restore it, or move it away to "
                              "evaluate the .params file bare")
    if meta[SIGNATURE] != content_digest(meta):
        raise CheckpointError(f"sidecar {sidecar} was changed after it was written (its "
                              f"{SIGNATURE} does not match its content); restore it, or move "
                              "it away to evaluate the .params file bare")
    return check_meaning(Sidecar.from_json(meta, sidecar), sidecar)


def read_param_arrays(params_path: Path) -> dict[str, np.ndarray]:
    from .mxnet_compat import mx

    check_path_names(params_path, "checkpoint")
    try:
        loaded = mx.nd.load(str(params_path))
    except mx.base.MXNetError:
        raise CheckpointError(f"{params_path} is not an MXNet parameter file (empty, truncated "
                              "or another format); pass a .params file from mnist-train or "
                              "net.save_parameters") from None
    if not isinstance(loaded, dict) or not loaded:
        raise CheckpointError(f"{params_path} holds no named parameters; pass a file written "
                              "by net.save_parameters")
    return {name: array.asnumpy() for name, array in loaded.items()}


def check_shapes(layers: dict[str, np.ndarray], arch: Architecture, params_path: Path) -> None:
    expected = arch.shapes
    if set(layers) != set(expected):
        raise CheckpointError(f"{params_path} holds {', '.join(sorted(layers))}, but the "
                              f"architecture ({arch.describe()}) has "
                              f"{', '.join(sorted(expected))}; the sidecar belongs to another "
                              "model")
    for name, shape in expected.items():
        if layers[name].shape != shape:
            raise CheckpointError(
                f"{params_path}: {name} has shape {layers[name].shape} but the architecture "
                f"says {shape}; the sidecar belongs to another model"
            )
    if arch.inputs != PIXELS:
        raise CheckpointError(f"{params_path} takes {arch.inputs} inputs, not {PIXELS} pixels")


def load_network(checkpoint: Checkpoint, ctx):
    """The checkpoint's network, hybridized, with its parameters, on the contexts `ctx`."""
    from .model import network_holding

    return network_holding(checkpoint.architecture, checkpoint.arrays, ctx)
