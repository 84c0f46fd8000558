"""Configuration: YAML files and `--set` overrides turned into checked, typed dataclasses.

The config is a contract: an unknown key, a value of the wrong type or one out of range
is a ConfigError that names the key, never a silently ignored setting.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.resources
import math
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from .data import DATASETS as DATASET_SPECS
from .device import parse_device
from .errors import ConfigError
from .reading import coerce, parse_yaml, read_yaml_mapping, shown, unknown_key_message

OPTIMIZERS = ("sgd", "nag", "adam", "rmsprop")
LR_SCHEDULES = ("none", "step", "cosine")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "softrelu", "softsign")
DATASETS = tuple(DATASET_SPECS)
KVSTORES = ("local", "device", "dist_sync", "dist_device_sync", "dist_async")
MODELS = ("mlp", "lenet")
SOFT_TARGETS = ("batch", "precomputed")
PRUNE_SCOPES = ("global", "layer")
PRUNE_SCHEDULES = ("gradual", "one_shot")
ACCOUNTANTS = ("pld", "rdp")  # dp-accounting's privacy loss distribution and Renyi DP
KERNELS = ("compiled", "mxnet")  # mnist_gluon.kernels.COMPILED and .MXNET
MAX_CONFIG_BYTES = 1 << 20  # what a config may cost to read: ours are a few hundred bytes
MAX_OVERRIDE_CHARS = 10_000
INT32_MAX = 2**31 - 1
# Sizes that set how much is allocated: far beyond any MNIST-like use, short of exhausting
# memory on a typo.
MAX_CLASSES = 1000
MAX_EPOCHS = 100_000
MAX_RENDERED = 200_000  # train.pretrain.images: 0.6 GB of float32
MAX_BATCH = 65_536
MAX_THREADS = 1024
# A private run's noise multiplier: below the least, epsilon is past 100 (no privacy worth the
# name) and the PLD accountant's time and memory grow without bound; the most is past any use.
MIN_NOISE, MAX_NOISE = 0.3, 100.0


@dataclass
class ElasticConfig:
    """Elastic distortion (Simard et al. 2003): a random displacement field per image,
    smoothed by a Gaussian of `sigma` pixels and scaled by `alpha` pixels; 0 turns it off."""

    alpha: float = 0.0  # displacement scale in pixels; 0 is off (Simard et al.: 34)
    sigma: float = 4.0  # the Gaussian that smooths the random displacement field, in pixels


@dataclass
class AugmentConfig:
    """Random changes to each training image, drawn per image and per step, on the device."""

    shift: int = 0  # translate by up to this many whole pixels each way (exact, cheap)
    rotate: float = 0.0  # rotate by up to this many degrees each way (affine sampler)
    scale: float = 0.0  # scale by a factor in [1 - scale, 1 + scale] (affine sampler)
    flip: bool = False  # mirror left-right half the time (clothes, not digits)
    elastic: ElasticConfig = field(default_factory=ElasticConfig)

    @property
    def affine(self) -> bool:
        return bool(self.shift or self.rotate or self.scale or self.flip)

    @property
    def active(self) -> bool:
        return self.affine or self.elastic.alpha > 0


@dataclass
class DataConfig:
    """Where the images come from, and how many are held out for validation."""

    name: str = "mnist"  # the dataset
    # the folder of its four IDX files (gzip or not); null: $MXNET_HOME/datasets/<name>
    root: str | None = None
    download: bool = True  # fetch missing files from data.mirrors
    verify: bool = True  # check the files' SHA-1 sums; false for IDX data of your own
    val_size: int = 5000  # held out of the training set, for choosing best.params
    mirrors: list[str] | None = None  # null: Gluon's repository, then the usual MNIST mirrors
    # training images only, drawn per image and per step from (seed, epoch)
    augment: AugmentConfig = field(default_factory=AugmentConfig)


@dataclass
class ModelConfig:
    """The network."""

    # mlp: the two Dense layers; lenet: two 5x5 convolutions, each with 2x2 max pooling, first
    kind: str = "mlp"
    hidden: int = 128  # the hidden Dense layer's units
    activation: str = "relu"  # the hidden layers' activation
    classes: int = 10  # the output layer's units
    dropout: float = 0.0  # on the hidden layer, while training only
    channels: list[int] = field(default_factory=lambda: [32, 64])  # lenet's convolutions' outputs


@dataclass
class EarlyStoppingConfig:
    """Stop when validation accuracy stops rising; best.params stays the best epoch."""

    patience: int | None = None  # stop after this many epochs without improvement; null: off
    min_delta: float = 0.0  # validation accuracy must rise by more than this to count


@dataclass
class AverageConfig:
    """Stochastic weight averaging, validated beside the live weights."""

    # Average the weights at the end of every epoch from this one on (stochastic weight
    # averaging), validated beside the live weights; null: off.
    start_epoch: int | None = None


@dataclass
class DistillConfig:
    """Knowledge distillation (Hinton et al. 2015): the loss is weight * T^2 *
    KL(teacher_T || student_T) + (1 - weight) * the labels' cross-entropy."""

    teacher: str | None = None  # a checkpoint mnist-train wrote, of the same dataset; null: off
    temperature: float = 4.0  # T: both networks' logits are divided by it in the KL term
    weight: float = 0.9  # W: the KL term's share of the loss
    # batch: the teacher classifies each step's (augmented) batch inside the training graph;
    # precomputed: its answers on the unaugmented training images, computed once (cheaper).
    soft_targets: str = "batch"


@dataclass
class PruneConfig:
    """Magnitude pruning: the smallest weights (not biases) are set to zero and kept there
    through every update; mnist-export --format compressed stores what is left."""

    sparsity: float | None = None  # the fraction of the weights set to zero; null: off
    # global: one magnitude threshold across the layers; layer: each layer to `sparsity`
    scope: str = "global"
    # gradual: sparsity rises as 1 - (1 - e/epochs)^3 over the first `epochs` epochs (Zhu and
    # Gupta 2017); one_shot: all of it before the first step, then retraining
    schedule: str = "gradual"
    epochs: int = 10  # gradual: the epochs over which the sparsity rises
    # the weights to start from: a checkpoint mnist-train wrote, of the same model; null: init
    start_from: str | None = None
    # weight sharing (Han et al. 2016) in the last share_epochs epochs: each layer's kept
    # weights tied to this many k-means centroids, which train on; null: off
    shared_values: int | None = None
    share_epochs: int = 5


@dataclass
class PrivacyConfig:
    """Differentially private SGD (Abadi et al. 2016): each example's gradient clipped to norm
    `clip`, then Gaussian noise of noise_multiplier x clip added to the batch's sum; each step's
    batch holds each training example with probability batch_size / examples. On when
    noise_multiplier or target_epsilon is set."""

    noise_multiplier: float | None = None  # sigma; null: chosen to spend target_epsilon
    target_epsilon: float | None = None  # the epsilon the whole run may spend
    delta: float | None = None  # the guarantee's delta: below 1 / training examples (1e-5)
    clip: float = 1.0  # the bound on each example's gradient norm, C
    accountant: str = "pld"  # dp-accounting's: pld (privacy loss distribution) or rdp
    # each sampled example's gradient is the mean over this many augmented copies of it
    # (augmentation multiplicity, De et al. 2022), clipped as one; needs data.augment
    augmentations: int = 1

    @property
    def on(self) -> bool:
        return self.noise_multiplier is not None or self.target_epsilon is not None


@dataclass
class PretrainConfig:
    """Training before the first step on digits drawn from TrueType fonts, warped at random:
    public data, which a private run's guarantee does not pay for. Not again on resume."""

    images: int | None = None  # digits to render (each drawn once); null: off
    epochs: int = 8  # passes over them: NAG, learning rate 0.1, momentum 0.9, batches of 128
    fonts: str = "/usr/share/fonts/truetype"  # a folder searched for .ttf files


@dataclass
class TrainConfig:
    """The training loop and its optimizer."""

    epochs: int = 10  # passes over the training images
    batch_size: int = 64  # split evenly over the devices
    optimizer: str = "adam"  # the update rule
    lr: float = 0.001  # the peak learning rate
    momentum: float = 0.9  # sgd and nag
    weight_decay: float = 0.0  # L2 penalty on every parameter
    lr_schedule: str = "cosine"  # after the warm-up: constant, stepped down, or cosine to 0
    warmup_epochs: float = 0.0  # linear warm-up from 0; cut to half a shorter run
    lr_decay: float = 0.1  # step schedule: the factor at each of lr_step_epochs
    lr_step_epochs: list[int] = field(default_factory=list)  # step schedule; []: 1/2 and 3/4
    clip_gradient: float | None = None  # clip each gradient element to +-value; null: off
    kvstore: str = "local"  # where gradients meet: several devices, or dist_* (mnist-launch)
    skip_nonfinite: bool = False  # skip a batch whose loss is not finite, instead of stopping
    # the target puts 1 - e on the label and e spread over all the classes
    label_smoothing: float = 0.0
    early_stopping: EarlyStoppingConfig = field(default_factory=EarlyStoppingConfig)
    average: AverageConfig = field(default_factory=AverageConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)
    prune: PruneConfig = field(default_factory=PruneConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)


@dataclass
class CheckpointConfig:
    """What is saved, and how often."""

    keep: int = 3  # epoch-NNNN checkpoints kept beside last and best
    every_steps: int | None = None  # also write last.* every N steps inside an epoch


@dataclass
class TrackConfig:
    """TensorBoard event files: `tensorboard --logdir runs` shows every run."""

    # TensorBoard event files in the run folder; null: when tensorboardX (the track extra)
    # is installed; true: asked for, and said when it is not
    tensorboard: bool | None = None
    every_steps: int = 50  # the training loss and accuracy every N steps
    histograms: bool = True  # the weights' histograms every epoch


@dataclass
class Config:
    """A training run's settings: the top level of a config file."""

    seed: int = 42  # Python's, numpy's and MXNet's generators; also draws the validation split
    device: str = "auto"  # auto (GPU 0 when MXNet sees one, else the CPU), cpu, gpu, gpu:N
    # compiled: mnist_gluon's own kernels on CPU contexts (kernels.cc); mxnet: MXNet's operators.
    # The update gives the same numbers either way; the elastic distortion draws others.
    kernels: str = KERNELS[0]
    # The threads a run trains on: auto (what is fastest for the network on the cores this
    # process may use: all of them for a LeNet, and for an MLP the compiled step trains;
    # one otherwise), or a number. OMP_NUM_THREADS overrides it; a resumed run keeps its own.
    threads: int | str = "auto"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    track: TrackConfig = field(default_factory=TrackConfig)


def bundled_configs() -> list[str]:
    """Names of the configs that ship inside the package (`base` for configs/base.yaml)."""
    folder = importlib.resources.files(__package__) / "configs"
    return sorted(entry.name.removesuffix(".yaml") for entry in folder.iterdir()
                  if entry.name.endswith(".yaml"))


def config_file(name_or_path: str | Path) -> Path:
    """A path means that file; a bare name (no folder, no suffix) that is not a file in the
    current folder means the bundled config of that name, so `--config base` works anywhere."""
    path = Path(name_or_path)
    if path.is_file() or len(path.parts) != 1 or path.suffix:
        return path
    bundled = importlib.resources.files(__package__) / "configs" / f"{path.name}.yaml"
    if not bundled.is_file():
        raise ConfigError(f"no config file {path} and no bundled config of that name; pass a "
                          f"YAML file or one of {', '.join(bundled_configs())}")
    return Path(str(bundled))


def load_config(path: str | Path | None = None, overrides: typing.Sequence[str] = (),
                values: typing.Iterable[tuple[str, Any]] = ()) -> Config:
    """Defaults, then the YAML file at `path`, then each `key.sub=value` override, then each
    (`key.sub`, value) pair, checked."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = read_yaml_mapping(Path(path), MAX_CONFIG_BYTES, "config file")
    for key, value in [*map(parse_override, overrides), *values]:
        set_dotted(raw, key, value)
    return config_from_dict(raw)


def parse_override(override: str) -> tuple[str, Any]:
    """`train.lr=0.01` -> ("train.lr", 0.01); the value is read as YAML (`null`, `[1,2]`)."""
    key, sep, text = override.partition("=")
    if not sep or not key.strip():
        raise ConfigError(
            f"override {override!r} is not KEY=VALUE; write e.g. --set train.lr=0.01")
    if len(text) > MAX_OVERRIDE_CHARS:
        raise ConfigError(f"--set {key.strip()} has a value of {len(text):,} characters; "
                          f"a value may have up to {MAX_OVERRIDE_CHARS:,}")
    value = parse_yaml(text, f"--set {key.strip()}", plain=True) if text.strip() else ""
    return key.strip(), value


def set_dotted(raw: dict[str, Any], key: str, value: Any) -> None:
    node = raw
    parts = key.split(".")
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {key}: {part} is a value, not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(raw: dict[str, Any]) -> Config:
    config = build(Config, raw, prefix="")
    validate(config)
    return config


def build(cls: type, raw: Any, prefix: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{prefix.rstrip('.') or 'config'} must be a mapping of keys to values")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    values = {}
    for key, value in raw.items():
        dotted = f"{prefix}{key}"
        if key not in fields:
            raise ConfigError(unknown_key_message(dotted, [f"{prefix}{name}" for name in fields]))
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            values[key] = build(hint, value if value is not None else {}, prefix=f"{dotted}.")
        else:
            values[key] = coerce(dotted, value, hint)
    return cls(**values)


# Each number's range, as (key, test, what the message says it must be); null skips the test.
RANGES = [
    ("seed", lambda v: 0 <= v < 2**32, "in [0, 2**32)"),
    ("data.val_size", lambda v: 0 <= v <= INT32_MAX,
     "0 or more (and fewer than the training images)"),
    ("model.hidden", lambda v: 1 <= v <= 100_000, "in [1, 100000]"),
    ("model.dropout", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("model.classes", lambda v: 2 <= v <= MAX_CLASSES, f"in [2, {MAX_CLASSES}]"),
    ("train.epochs", lambda v: 1 <= v <= MAX_EPOCHS, f"in [1, {MAX_EPOCHS}]"),
    ("train.batch_size", lambda v: 1 <= v <= MAX_BATCH, f"in [1, {MAX_BATCH}]"),
    ("train.lr", lambda v: 0 < v < math.inf, "a finite number greater than 0"),
    ("train.momentum", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.weight_decay", lambda v: v >= 0, "0 or more"),
    ("train.warmup_epochs", lambda v: v >= 0, "0 or more"),
    ("train.lr_decay", lambda v: 0 < v <= 1, "in (0, 1]"),
    ("train.clip_gradient", lambda v: v > 0, "null or > 0"),
    ("train.label_smoothing", lambda v: 0 <= v < 1, "in [0, 1)"),
    ("train.distill.temperature", lambda v: 0.1 <= v <= 100, "in [0.1, 100]"),
    ("train.distill.weight", lambda v: 0 <= v <= 1, "in [0, 1]"),
    ("train.prune.sparsity", lambda v: 0 <= v < 1, "null, or in [0, 1)"),
    ("train.pretrain.images", lambda v: 1000 <= v <= MAX_RENDERED, f"null, or in [1000, "
     f"{MAX_RENDERED}]"),
    ("train.pretrain.epochs", lambda v: 1 <= v <= 100, "in [1, 100]"),
    ("train.prune.epochs", lambda v: 1 <= v <= MAX_EPOCHS, f"in [1, {MAX_EPOCHS}]"),
    ("train.prune.shared_values", lambda v: 1 <= v <= 256, "null, or in [1, 256]"),
    ("train.prune.share_epochs", lambda v: 1 <= v <= MAX_EPOCHS, f"in [1, {MAX_EPOCHS}]"),
    ("train.early_stopping.patience", lambda v: 1 <= v <= MAX_EPOCHS, "null or 1 or more"),
    ("train.early_stopping.min_delta", lambda v: v >= 0, "0 or more"),
    # past the run's end is fitted to it (training.train.fit_short_run)
    ("train.average.start_epoch", lambda v: 1 <= v <= MAX_EPOCHS, "null or 1 or more"),
    ("data.augment.shift", lambda v: 0 <= v <= 8, "in [0, 8] pixels"),
    ("data.augment.rotate", lambda v: 0 <= v <= 45, "in [0, 45] degrees"),
    ("data.augment.scale", lambda v: 0 <= v <= 0.5, "in [0, 0.5]"),
    ("data.augment.elastic.alpha", lambda v: 0 <= v <= 100, "in [0, 100] pixels"),
    ("data.augment.elastic.sigma", lambda v: 0.5 <= v <= 10, "in [0.5, 10] pixels"),
    ("checkpoint.every_steps", lambda v: 1 <= v <= INT32_MAX, "null or 1 or more"),
    ("checkpoint.keep", lambda v: 0 <= v <= MAX_EPOCHS, f"in [0, {MAX_EPOCHS}]"),
    ("track.every_steps", lambda v: 1 <= v <= INT32_MAX, "1 or more"),
    ("threads", lambda v: v == "auto" or isinstance(v, int) and 1 <= v <= MAX_THREADS,
     f"auto, or a number of threads in [1, {MAX_THREADS}]"),
    ("train.privacy.noise_multiplier", lambda v: MIN_NOISE <= v <= MAX_NOISE,
     f"null, or in [{MIN_NOISE:g}, {MAX_NOISE:g}]: with less, epsilon is past 100"),
    ("train.privacy.target_epsilon", lambda v: 0 < v < math.inf, "null, or above 0"),
    ("train.privacy.delta", lambda v: 0 < v < 1, "null, or in (0, 1): 1e-5 for MNIST"),
    ("train.privacy.clip", lambda v: 0 < v < math.inf, "a number above 0"),
    ("train.privacy.augmentations", lambda v: 1 <= v <= 64, "in [1, 64]"),
]
CHOICES = {"data.name": DATASETS, "model.kind": MODELS, "model.activation": ACTIVATIONS,
           "train.optimizer": OPTIMIZERS, "train.lr_schedule": LR_SCHEDULES,
           "train.kvstore": KVSTORES, "kernels": KERNELS,
           "train.distill.soft_targets": SOFT_TARGETS, "train.prune.scope": PRUNE_SCOPES,
           "train.prune.schedule": PRUNE_SCHEDULES, "train.privacy.accountant": ACCOUNTANTS}


# The checks of `validate` that RANGES and CHOICES cannot express, as what each value must be.
RULES = {
    "model.channels": "two numbers of channels in [1, 1024], e.g. [32, 64]",
    "train.lr_step_epochs": "epochs in (0, train.epochs)",
    "data.mirrors": "http://, https:// or file:// URLs",
    "device": "auto, cpu, gpu, gpu:N, or several: gpu:0,1 or cpu:0,1 (ids 0-63)",
}


def validate(config: Config) -> None:
    """Range and choice checks that types alone cannot express."""
    for key, choices in CHOICES.items():
        require_choice(key, setting(config, key), choices)
    for key, test, allowed in RANGES:
        if (value := setting(config, key)) is not None:
            require(test(value), key, value, allowed)
    channels = config.model.channels
    require(len(channels) == 2 and all(1 <= c <= 1024 for c in channels), "model.channels",
            channels, RULES["model.channels"])
    t = config.train
    for epoch in t.lr_step_epochs:
        require(0 < epoch < t.epochs, "train.lr_step_epochs", t.lr_step_epochs,
                f"epochs in (0, train.epochs={t.epochs})")
    for mirror in config.data.mirrors or ():
        require(mirror.startswith(("http://", "https://", "file://")), "data.mirrors", mirror,
                RULES["data.mirrors"])
    prune = config.train.prune
    require(prune.sparsity is not None or prune.start_from is None, "train.prune.sparsity",
            None, "set when train.prune.start_from is (the sparsity to prune it to)")
    require(prune.sparsity is None or not t.kvstore.startswith("dist"), "train.kvstore",
            t.kvstore, "local or device with train.prune (the servers' update keeps no mask)")
    require(t.pretrain.images is None or (config.data.name == "mnist" and config.model.classes
            == 10 and prune.start_from is None), "train.pretrain.images", t.pretrain.images,
            "null with data.name=fashion-mnist, model.classes other than 10 (it draws the 10 "
            "digits) or train.prune.start_from (which gives the starting weights)")
    parse_device(config.device)  # so a typo fails before any data is read


def setting(config: Config, key: str) -> Any:
    """The value of a dotted key, `train.early_stopping.patience`."""
    return functools.reduce(getattr, key.split("."), config)


def require(ok: bool, key: str, value: Any, allowed: str) -> None:
    if not ok:
        raise ConfigError(f"{key} is {shown(value)}; it must be {allowed}")


def require_choice(key: str, value: str, choices: typing.Sequence[str]) -> None:
    if value not in choices:
        close = difflib.get_close_matches(value, choices, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ConfigError(f"{key} is {shown(value)}; choose one of {', '.join(choices)}{hint}")


def config_to_dict(config: Config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def config_to_yaml(config: Config) -> str:
    return yaml.safe_dump(config_to_dict(config), sort_keys=False)
