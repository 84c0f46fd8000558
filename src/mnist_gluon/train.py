"""The training procedure: data, model, trainer, the autograd loop, validation, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import math
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mxnet as mx
import numpy as np
from mxnet import autograd, gluon

from . import checkpoint as ckpt
from .config import Config, TrainConfig, config_to_dict, config_to_yaml
from .data import (
    DATASETS,
    Normalization,
    batch_indices,
    epoch_order,
    fit_normalization,
    normalise,
    read_split,
    split_validation,
    steps_per_epoch,
)
from .device import resolve_contexts
from .errors import CheckpointError, ConfigError
from .files import atomic_write_text, sha256_of
from .metrics import softmax_cross_entropy
from .model import MLP, Architecture, build_model, named_parameters, set_parameters
from .optim import Updater

EVAL_BATCH_SIZE = 10_000
PROGRESS_EVERY = 50  # steps between progress-bar refreshes; each one waits for the device


@dataclass
class EpochResult:
    epoch: int
    step: int
    lr: float
    train_loss: float
    train_accuracy: float
    val_loss: float | None
    val_accuracy: float | None
    seconds: float
    samples_per_second: float


@dataclass
class TrainSummary:
    run_dir: Path
    epochs: list[EpochResult]
    best_epoch: int
    best_val_accuracy: float | None
    best_checkpoint: Path
    last_checkpoint: Path


# --- optimisation ---------------------------------------------------------------------------

def learning_rate(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """The learning rate for global step `step` (0-based): warm-up, then the schedule."""
    epoch_progress = step / steps_per_epoch
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    if cfg.lr_schedule == "cosine":
        span = cfg.epochs - cfg.warmup_epochs
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch_progress - cfg.warmup_epochs) / span))
    if cfg.lr_schedule == "step":
        milestones = cfg.lr_step_epochs or [m for m in (cfg.epochs // 2, cfg.epochs * 3 // 4) if m]
        return cfg.lr * cfg.lr_decay ** sum(epoch_progress >= m for m in milestones)
    return cfg.lr


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


# --- one epoch, evaluation ------------------------------------------------------------------

class TrainStep(gluon.HybridBlock):
    """One training batch as one graph: gather the batch's rows from the normalised training
    set held on the device, classify them, and return [summed loss, number correct]. Loss and
    accuracy stay on the device; gradients flow from the loss alone (argmax and == have none).
    """

    def __init__(self, net: MLP, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        self.loss = gluon.loss.SoftmaxCrossEntropyLoss()

    def hybrid_forward(self, F, images, labels, index):
        logits = self.net(F.take(images, index))
        batch_labels = F.take(labels, index)
        correct = F.sum(F.argmax(logits, axis=1) == batch_labels)
        return F.concat(F.sum(self.loss(logits, batch_labels)), correct, dim=0)


def train_step_graph(net: MLP) -> TrainStep:
    graph = TrainStep(net)
    graph.hybridize(static_alloc=True, static_shape=True)
    return graph


@dataclass
class DeviceData:
    """A training set, normalised, on one device: what the training graph gathers from."""

    images: mx.nd.NDArray  # float32 N x 784
    labels: mx.nd.NDArray  # float32 N

    @classmethod
    def create(cls, images: np.ndarray, labels: np.ndarray, normalization: Normalization,
               ctx) -> DeviceData:
        return cls(mx.nd.array(normalise(images, normalization), ctx=ctx),
                   mx.nd.array(labels, ctx=ctx, dtype="float32"))


def train_epoch(graph: TrainStep, updater: Updater, data: list[DeviceData], order: np.ndarray,
                batch_size: int, lr_at: Callable, first_step: int,
                on_progress: Callable | None = None) -> tuple[float, float, int]:
    """Train on the batches of `order` (one shuffled epoch); (mean loss, accuracy, steps).

    `data` holds the training set once per device. The host waits for the devices only at
    the end, or when progress is shown.
    """
    ctxs = [part.images.context for part in data]
    sums = [mx.nd.zeros((2,), ctx=ctx) for ctx in ctxs]
    step = first_step
    for indices in batch_indices(order, batch_size, ctxs):
        with autograd.record():
            stats = [graph(part.images, part.labels, index)
                     for part, index in zip(data, indices, strict=True)]
        autograd.backward(stats)
        updater.step(lr_at(step), batch_size)
        for total_so_far, batch_stats in zip(sums, stats, strict=True):
            total_so_far += batch_stats
        step += 1
        if on_progress is not None and (step - first_step) % PROGRESS_EVERY == 0:
            loss, correct = totals(sums)
            seen = (step - first_step) * batch_size
            on_progress(step - first_step, loss / seen, correct / seen)
    steps = step - first_step
    loss, correct = totals(sums)
    seen = max(steps * batch_size, 1)
    return loss / seen, correct / seen, steps


def totals(device_sums) -> tuple[float, float]:
    loss, correct = np.sum([s.asnumpy().astype(np.float64) for s in device_sums], axis=0)
    return float(loss), float(correct)


def predict_logits(net, inputs, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Logits for `inputs` (an N x 784 NDArray on the network's device), in big batches:
    normalised images for the MLP, raw pixels for a PixelClassifier."""
    parts = [net(inputs[start : start + batch_size]).asnumpy()
             for start in range(0, inputs.shape[0], batch_size)]
    return np.concatenate(parts)


# --- the run ----------------------------------------------------------------------------------

class Log:
    """Progress on stdout: a tqdm bar on a terminal, one plain line per epoch otherwise."""

    def __init__(self, quiet: bool):
        self.interactive = sys.stdout.isatty() and not quiet
        self.bar = None

    def line(self, text: str) -> None:
        if self.bar is not None:
            self.bar.write(text)
        else:
            print(text, flush=True)

    def start_epoch(self, epoch: int, epochs: int, steps: int, batch_size: int) -> Callable | None:
        if not self.interactive:
            return None
        from tqdm import tqdm

        self.bar = tqdm(total=steps, desc=f"epoch {epoch}/{epochs}", unit="step", leave=False,
                        dynamic_ncols=True)
        started = time.perf_counter()
        done = [0]

        def on_progress(steps_done: int, loss: float, accuracy: float) -> None:
            self.bar.update(steps_done - done[0])
            done[0] = steps_done
            rate = steps_done * batch_size / (time.perf_counter() - started)
            self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.4f}",
                                 samples_s=f"{rate:,.0f}")

        return on_progress

    def end_epoch(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None


@dataclass
class Prepared:
    """What a run trains on, normalised once and held on the devices, with what the
    checkpoints must record."""

    train: list[DeviceData]  # one copy per device
    val_images: mx.nd.NDArray | None
    val_labels: np.ndarray
    normalization: Normalization
    checksums: dict[str, str]

    @property
    def num_train(self) -> int:
        return self.train[0].images.shape[0]


def prepare_data(config: Config, ctxs, normalization: Normalization | None = None) -> Prepared:
    """Read the training split, hold out the validation set, move both to the devices."""
    spec = DATASETS[config.data.name]
    split = read_split(spec, "train", config.data.root, config.data.download, config.data.verify,
                       config.data.mirrors, config.model.classes)
    train_images, train_labels, val_images, val_labels = split_validation(
        split.images, split.labels, config.data.val_size, config.seed)
    normalization = normalization or fit_normalization(train_images)
    val_nd = (mx.nd.array(normalise(val_images, normalization), ctx=ctxs[0])
              if len(val_images) else None)
    return Prepared(
        train=[DeviceData.create(train_images, train_labels, normalization, ctx) for ctx in ctxs],
        val_images=val_nd,
        val_labels=val_labels,
        normalization=normalization,
        checksums=split.checksums,
    )


@dataclass
class Model:
    """The network and what trains it: `graph` is the training step, `updater` the optimizer."""

    architecture: Architecture
    net: object
    graph: TrainStep
    updater: Updater


def build_training(config: Config, ctxs, arrays: dict | None = None) -> Model:
    """The model of `config` on `ctxs`, Xavier-initialised or holding `arrays`."""
    arch = Architecture(hidden=config.model.hidden, activation=config.model.activation,
                        classes=config.model.classes, dropout=config.model.dropout)
    net = build_model(arch, ctxs)
    if arrays is not None:
        set_parameters(net, arrays)
    # Several devices: gradients meet on the CPU (kvstore local) or on the first device.
    reduce_ctx = mx.cpu() if len(ctxs) > 1 and config.train.kvstore == "local" else ctxs[0]
    params = {name: param for name, param in named_parameters(net).items()}
    return Model(arch, net, train_step_graph(net),
                 Updater(params, config.train, reduce_ctx))


def run_training(config: Config, run_dir: Path, *, config_name: str = "", resume: bool = False,
                 force: bool = False, quiet: bool = False) -> TrainSummary:
    """Train `config` into `run_dir`, from scratch or continuing the run saved there."""
    log = Log(quiet)
    ctxs = resolve_contexts(config.device)
    tcfg = config.train
    if tcfg.batch_size % len(ctxs):
        raise ConfigError(f"train.batch_size={tcfg.batch_size} does not split evenly over "
                          f"{len(ctxs)} devices; use a multiple of {len(ctxs)}")

    resumed = None
    if resume:
        resumed = read_resumable(run_dir, config)
    else:
        ckpt.check_run_dir(run_dir, force)

    seed_everything(config.seed)
    data = prepare_data(config, ctxs, resumed.normalization if resumed else None)
    num_train = data.num_train
    steps = steps_per_epoch(num_train, tcfg.batch_size)
    if steps == 0:
        raise ConfigError(f"train.batch_size={tcfg.batch_size} is larger than the "
                          f"{num_train} training examples; lower it")
    if not resume:
        # Created only now, so a failure to read the data leaves no empty run folder behind.
        ckpt.prepare_run_dir(run_dir, force)

    model = build_training(config, ctxs, resumed.arrays if resumed else None)
    start_epoch, best_val, best_epoch, history = 1, None, 0, []
    if resumed:
        model.updater.load(ckpt.states_path(resumed.params_path))
        start_epoch = resumed.meta["epoch"] + 1
        best_val, best_epoch = resumed.meta["best_val_accuracy"], resumed.meta["best_epoch"]
        history = truncate_metrics(run_dir / "metrics.jsonl", resumed.meta["epoch"])
    # On resume too: `--set` may have changed the config (e.g. more epochs).
    atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))

    log.line(
        f"mnist-train: {config_name or 'run'} -> {run_dir}  |  {config.data.name}: "
        f"{num_train} train / {len(data.val_labels)} validation examples  |  "
        f"device {', '.join(str(c) for c in ctxs)}  |  {steps} steps/epoch of "
        f"{tcfg.batch_size}" + (f"  |  resuming at epoch {start_epoch}" if resumed else "")
    )

    lr_at = lambda step: learning_rate(step, steps, tcfg)  # noqa: E731
    for epoch in range(start_epoch, tcfg.epochs + 1):
        first_step = (epoch - 1) * steps
        # Dropout masks come from MXNet's generator: seeded per epoch, so a resumed run draws
        # the masks the uninterrupted run drew.
        mx.random.seed((config.seed * 100_003 + epoch) % 2**31)
        on_progress = log.start_epoch(epoch, tcfg.epochs, steps, tcfg.batch_size)
        started = time.perf_counter()
        order = epoch_order(num_train, config.seed, epoch)
        train_loss, train_acc, done = train_epoch(model.graph, model.updater, data.train,
                                                  order, tcfg.batch_size, lr_at, first_step,
                                                  on_progress)
        seconds = time.perf_counter() - started
        log.end_epoch()
        val_loss, val_acc = validate(model.net, data)
        result = EpochResult(epoch, first_step + done, lr_at(first_step + done - 1), train_loss,
                             train_acc, val_loss, val_acc, seconds,
                             done * tcfg.batch_size / seconds)
        # Without a validation set, the latest epoch counts as the best.
        improved = val_acc is None or best_val is None or val_acc > best_val
        if improved:
            best_val, best_epoch = val_acc, epoch
        meta = checkpoint_meta(config, model.architecture, data, result, best_val, best_epoch)
        save_epoch(run_dir, model.net, model.updater, meta, epoch, improved,
                   config.checkpoint.keep)
        append_metrics(run_dir / "metrics.jsonl", result)
        history.append(result)
        log.line(format_epoch(result, tcfg.epochs))

    return TrainSummary(run_dir, history, best_epoch, best_val, run_dir / "best.params",
                        run_dir / "last.params")


# Changing these on resume would make the run another run: other examples held out, another model.
FIXED_ON_RESUME = ("seed", "data.name", "data.val_size", "model.hidden", "model.activation",
                   "model.classes", "model.dropout")


def read_resumable(run_dir: Path, config: Config) -> ckpt.Checkpoint:
    """The `last` checkpoint of the run in `run_dir`, checked against `config`."""
    params_path = run_dir / "last.params"
    if not params_path.exists():
        raise CheckpointError(f"{run_dir} holds no run to resume (no last.params); pass the "
                              "folder an earlier mnist-train wrote")
    checkpoint = ckpt.read_checkpoint(params_path)
    states = ckpt.states_path(params_path)
    if not checkpoint.meta:
        raise CheckpointError(f"{params_path} has no sidecar {params_path.stem}.json, so the run "
                              "cannot be resumed; start a new run")
    if checkpoint.meta.get("states_format") != ckpt.STATES_FORMAT:
        raise CheckpointError(f"{params_path} was written by an earlier mnist-gluon whose "
                              "optimizer state this version cannot continue; start a new run "
                              "(its parameters still evaluate with mnist-eval)")
    if not states.exists() or sha256_of(states) != checkpoint.meta.get("states_sha256"):
        raise CheckpointError(f"{states} is missing or does not match {params_path.name}'s "
                              "sidecar; the run cannot resume exactly from it")
    saved = checkpoint.meta["config"]
    for key in FIXED_ON_RESUME:
        section, _, leaf = key.rpartition(".")
        before = saved[section][leaf] if section else saved[leaf]
        now = getattr(getattr(config, section), leaf) if section else getattr(config, key)
        if before != now:
            raise ConfigError(f"{key} was {before!r} in the run being resumed, now {now!r}; "
                              "it cannot change on --resume: start a new run with --out DIR")
    return checkpoint


def validate(net: MLP, data: Prepared) -> tuple[float | None, float | None]:
    """(loss, accuracy) on the validation set; (None, None) without one."""
    if data.val_images is None:
        return None, None
    logits = predict_logits(net, data.val_images)
    accuracy = float(np.mean(logits.argmax(axis=1) == data.val_labels))
    return softmax_cross_entropy(logits, data.val_labels), accuracy


def checkpoint_meta(config: Config, arch: Architecture, data: Prepared, result: EpochResult,
                    best_val: float | None, best_epoch: int) -> dict:
    return {
        "architecture": dataclasses.asdict(arch),
        "normalization": dataclasses.asdict(data.normalization),
        "config": config_to_dict(config),
        "epoch": result.epoch,
        "step": result.step,
        "metrics": dataclasses.asdict(result),
        "best_val_accuracy": best_val,
        "best_epoch": best_epoch,
        "data": {"name": config.data.name, "sha1": data.checksums},
        "versions": ckpt.library_versions(),
    }


def save_epoch(run_dir: Path, net, updater: Updater, meta: dict, epoch: int, improved: bool,
               keep: int) -> None:
    """Write this epoch's checkpoints: `epoch-NNNN` (the last `keep` are kept), `best` when
    validation accuracy improved, and `last`, which `--resume` continues from."""
    if keep > 0:
        ckpt.save_checkpoint(run_dir / f"epoch-{epoch:04d}.params", net, updater, meta)
        for old in sorted(run_dir.glob("epoch-*.params"))[:-keep]:
            for path in (old, ckpt.states_path(old), ckpt.sidecar_path(old)):
                path.unlink(missing_ok=True)
    if improved:
        ckpt.save_checkpoint(run_dir / "best.params", net, updater, meta)
    ckpt.save_checkpoint(run_dir / "last.params", net, updater, meta)


def append_metrics(path: Path, result: EpochResult) -> None:
    with open(path, "a") as handle:
        handle.write(json.dumps(dataclasses.asdict(result)) + "\n")


def truncate_metrics(path: Path, last_epoch: int) -> list[EpochResult]:
    """Keep the metric lines up to `last_epoch` (a crash may have left later ones)."""
    if not path.exists():
        return []
    kept = []
    for line in path.read_text().splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        if row.get("epoch", last_epoch + 1) <= last_epoch:
            kept.append(EpochResult(**row))
    atomic_write_text(path, "".join(json.dumps(dataclasses.asdict(r)) + "\n" for r in kept))
    return kept


def format_epoch(result: EpochResult, epochs: int) -> str:
    val = ("" if result.val_accuracy is None else
           f"  val_loss {result.val_loss:.4f}  val_acc {result.val_accuracy:.4f}")
    return (f"epoch {result.epoch}/{epochs}  loss {result.train_loss:.4f}  "
            f"acc {result.train_accuracy:.4f}{val}  lr {result.lr:.2e}  "
            f"{result.samples_per_second:,.0f} samples/s  {result.seconds:.1f}s")
