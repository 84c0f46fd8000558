"""The training procedure: data, model, trainer, the autograd loop, validation, checkpoints."""

from __future__ import annotations

import dataclasses
import json
import random
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import checkpoint as ckpt
from .augment import (
    Shift,
    ShiftCopies,
    Warp,
    affine_draws,
    copy_rows,
    pad_images,
    shift_draws,
    shifted_copies,
    uses_copies,
)
from .config import AugmentConfig, Config, config_to_dict, config_to_yaml
from .data import (
    DATASETS,
    Normalization,
    epoch_order,
    fit_normalization,
    normalise,
    read_split,
    split_steps,
    split_validation,
    steps_per_epoch,
)
from .device import resolve_contexts
from .errors import CheckpointError, ConfigError, Diverged, Stopped
from .files import atomic_write_text, sha256_of
from .metrics import softmax_cross_entropy
from .model import MLP, Architecture, build_model, named_parameters, set_parameters
from .mxnet_compat import autograd, gluon, mx
from .optim import DistUpdater, Updater, learning_rate

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
    wrote: bool = True  # False on the workers of a distributed run other than rank 0


# --- optimisation ---------------------------------------------------------------------------

def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


# --- one epoch, evaluation ------------------------------------------------------------------

class TrainStep(gluon.HybridBlock):
    """One training batch as one graph: gather the batch from the normalised training set held
    on the device (through shifted windows when augmenting), classify it, and return [summed
    loss, number correct]. Loss and accuracy stay on the device; gradients flow from the loss
    alone (argmax and == have none).

    Inputs: the device's `DeviceData.inputs`, then the step's from `plan_epoch`.
    """

    def __init__(self, net: MLP, augment: AugmentConfig | None = None,
                 background: float = 0.0, label_smoothing: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        self.mode = augment_mode(augment)
        self.smoothing = label_smoothing
        if self.mode == "copies":
            self.copies = ShiftCopies()
        elif self.mode == "shift":
            self.shift = Shift(augment.shift)
        elif self.mode == "warp":
            self.warp = Warp(background)

    def hybrid_forward(self, F, *inputs):
        if self.mode == "copies":
            copies, rows, labels = inputs
            batch = self.copies(copies, rows)
        elif self.mode == "shift":
            rows_data, rows, offsets, labels = inputs
            batch = self.shift(rows_data, rows, offsets)
        else:
            images, all_labels, index = inputs[:3]
            batch, labels = F.take(images, index), F.take(all_labels, index)
            if self.mode == "warp":
                batch = self.warp(batch, inputs[3])
        logits = self.net(batch)
        log_p = F.log_softmax(logits, axis=1)
        loss = -F.pick(log_p, labels, axis=1)
        if self.smoothing:
            # Label smoothing: the target puts 1 - e on the label and e spread over all.
            loss = (1 - self.smoothing) * loss - self.smoothing * F.mean(log_p, axis=1)
        correct = F.sum(F.argmax(logits, axis=1) == labels)
        return F.concat(F.sum(loss), correct, dim=0)


def augment_mode(augment: AugmentConfig | None) -> str:
    if augment is None or not augment.active:
        return "none"
    if augment.rotate or augment.scale:
        return "warp"
    return "copies" if uses_copies(augment) else "shift"


def train_step_graph(net: MLP, augment: AugmentConfig | None = None, background: float = 0.0,
                     label_smoothing: float = 0.0) -> TrainStep:
    graph = TrainStep(net, augment, background, label_smoothing)
    if graph.mode == "shift":
        graph.shift.initialize(ctx=net.fc1.weight.list_ctx())  # its constant selectors
    graph.hybridize(static_alloc=True, static_shape=True)
    return graph


@dataclass
class DeviceData:
    """A training set, normalised, on one device: what the training graph gathers from. With
    shift augmentation the images are held padded, a row per image row, and each step's
    labels come gathered from the host."""

    inputs: tuple

    @classmethod
    def on_devices(cls, images: np.ndarray, labels: np.ndarray, normalization: Normalization,
                   ctxs, augment: AugmentConfig | None = None) -> list[DeviceData]:
        """The arrays are made once on the host, then copied to each device."""
        normalised = normalise(images, normalization)
        mode = augment_mode(augment)
        if mode in ("copies", "shift"):
            padded = pad_images(normalised, augment.shift, background(normalization))
            host = (shifted_copies(padded, augment) if mode == "copies" else padded,)
        else:
            host = (normalised, labels.astype(np.float32))
        return [cls(tuple(mx.nd.array(a, ctx=ctx, dtype=a.dtype) for a in host)) for ctx in ctxs]


def background(normalization: Normalization) -> float:
    """The normalised value of a black pixel: what moves in from outside an image."""
    return float(normalise(np.zeros((1, 1), np.uint8), normalization)[0, 0])


def plan_epoch(order: np.ndarray, labels: np.ndarray, batch_size: int, ctxs,
               augment: AugmentConfig | None, seed: int, epoch: int) -> list[list[tuple]]:
    """Each step's own inputs to the training graph, per device, made once for the epoch."""
    mode = augment_mode(augment)
    if mode == "copies":
        rows, selectors = shift_draws(order, augment, seed, epoch)
        columns = [copy_rows(rows, selectors, len(labels), augment),
                   labels[order].astype(np.float32)]
    elif mode == "shift":
        columns = [*shift_draws(order, augment, seed, epoch), labels[order].astype(np.float32)]
    elif mode == "warp":
        columns = [order.astype(np.int32), affine_draws(len(order), augment, seed, epoch)]
    else:
        columns = [order.astype(np.int32)]
    return split_steps(columns, batch_size, ctxs)


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
class StepControl:
    """What the loop asks after each step. `action(step)` returns None to go on, "save" to
    write a mid-epoch checkpoint, or "stop" to write one and end; `save` writes it."""

    action: Callable[[int], str | None]
    save: Callable[[EpochProgress], None]


def train_epoch(graph: TrainStep, updater: Updater, data: list[DeviceData], steps: list,
                batch_size: int, lr_at: Callable, progress: EpochProgress, first_step: int, *,
                skip_nonfinite: bool = False, reseed: Callable[[int], None] | None = None,
                control: StepControl | None = None,
                on_progress: Callable | None = None) -> tuple[EpochProgress, bool]:
    """Train on the epoch's `steps` (from `plan_epoch`) from `progress.steps_done` on;
    returns (progress, whether `control` stopped the epoch early).

    `data` holds the training set once per device. Loss and accuracy are summed on the device
    into two alternating accumulators, so the host can check the previous step's sum for a
    non-finite loss while the device works on the current step: a non-finite loss raises
    Diverged one step later, before anything more is saved. (A non-finite gradient shows as a
    non-finite loss at the next step.) With `skip_nonfinite` the host instead waits for each
    step's loss and skips the update of a batch whose loss is not finite.
    """
    ctxs = [part.inputs[0].context for part in data]
    sums = [[mx.nd.zeros((2,), ctx=ctx), mx.nd.zeros((2,), ctx=ctx)] for ctx in ctxs]
    if len(progress.sums) == len(ctxs):
        for pair, saved in zip(sums, progress.sums, strict=True):
            for accumulator, values in zip(pair, saved, strict=True):
                accumulator[:] = mx.nd.array(values, dtype="float32")
    elif progress.sums:  # resumed on another number of devices: the totals still hold
        sums[0][0][:] = mx.nd.array(progress.totals, dtype="float32")
    skipped = progress.skipped
    started = time.perf_counter()
    step = first_step + progress.steps_done

    def current(done: int) -> EpochProgress:
        values = [[acc.asnumpy().tolist() for acc in pair] for pair in sums]
        return EpochProgress(progress.epoch, done, values, skipped,
                             progress.seconds + time.perf_counter() - started)

    for done in range(progress.steps_done + 1, len(steps) + 1):
        if reseed is not None:
            reseed(step)
        with autograd.record():
            stats = [graph(*part.inputs, *own)
                     for part, own in zip(data, steps[done - 1], strict=True)]
        autograd.backward(stats)
        if skip_nonfinite and not all(np.isfinite(s.asnumpy()).all() for s in stats):
            skipped += 1  # nothing is updated or counted for this batch
        else:
            updater.step(lr_at(step), batch_size)
            for pair, batch_stats in zip(sums, stats, strict=True):
                pair[step % 2] += batch_stats
        check_finite([pair[(step + 1) % 2] for pair in sums], step - 1)
        step += 1
        action = control.action(step) if control is not None else None
        if action is not None:
            check_finite([pair[(step + 1) % 2] for pair in sums], step - 1)
            now = current(done)
            control.save(now)
            if action == "stop":
                return now, True
        if on_progress is not None and done % PROGRESS_EVERY == 0:
            now = current(done)
            seen = max((done - now.skipped) * batch_size, 1)
            loss, correct = now.totals
            on_progress(done, loss / seen, correct / seen)
    check_finite([pair[(step + 1) % 2] for pair in sums], step - 1)
    return current(len(steps)), False


def check_finite(device_sums, step: int) -> None:
    """Raise Diverged if a loss summed into `device_sums` (up to `step`) was not finite."""
    if not all(np.isfinite(s.asnumpy()).all() for s in device_sums):
        raise Diverged(f"the loss became non-finite at step {step + 1}")


def predict_logits(net, inputs, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Logits for `inputs` (an N x 784 NDArray on the network's device), in big batches:
    normalised images for the MLP, raw pixels for a PixelClassifier."""
    parts = [net(inputs[start : start + batch_size]).asnumpy()
             for start in range(0, inputs.shape[0], batch_size)]
    return np.concatenate(parts)


# --- the run ----------------------------------------------------------------------------------

class Log:
    """Progress on stdout: a tqdm bar on a terminal, one plain line per epoch otherwise."""

    def __init__(self, quiet: bool, prefix: str = ""):
        self.interactive = sys.stdout.isatty() and not quiet
        self.prefix = prefix  # "[rank 1/2] " in a distributed run
        self.bar = None

    def line(self, text: str) -> None:
        text = self.prefix + text
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
    train_labels: np.ndarray
    val_images: mx.nd.NDArray | None
    val_labels: np.ndarray
    normalization: Normalization
    checksums: dict[str, str]

    @property
    def num_train(self) -> int:
        return len(self.train_labels)


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
        train=DeviceData.on_devices(train_images, train_labels, normalization, ctxs,
                                    config.data.augment),
        train_labels=train_labels,
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


@dataclass
class Cluster:
    """Where this process stands in a distributed run; one worker of one otherwise."""

    kvstore: object = None
    rank: int = 0
    workers: int = 1

    @property
    def writer(self) -> bool:
        return self.rank == 0  # only rank 0 writes the run folder

    @property
    def prefix(self) -> str:
        return f"[rank {self.rank}/{self.workers}] " if self.kvstore is not None else ""

    def share(self, order: np.ndarray, batch_size: int) -> np.ndarray:
        """This worker's part of each global batch of the epoch's `order`: every worker
        takes its own `batch_size` examples of each step, so the workers together train on
        the batches a single process with the global batch would."""
        if self.workers == 1:
            return order
        steps = steps_per_epoch(len(order), batch_size * self.workers)
        grid = order[: steps * batch_size * self.workers].reshape(steps, self.workers, -1)
        return grid[:, self.rank].reshape(-1)


def join_cluster(kvstore: str) -> Cluster:
    """For a dist_* kvstore, connect to the parameter servers (started by mnist-launch)."""
    if not kvstore.startswith("dist"):
        return Cluster()
    import os

    missing = [v for v in ("DMLC_ROLE", "DMLC_PS_ROOT_URI", "DMLC_PS_ROOT_PORT",
                           "DMLC_NUM_WORKER", "DMLC_NUM_SERVER") if v not in os.environ]
    if missing:
        raise ConfigError(f"train.kvstore={kvstore} needs a cluster ({', '.join(missing)} not "
                          "set); start it with: mnist-launch -n WORKERS -s SERVERS -- "
                          "mnist-train ...")
    kv = mx.kv.create(kvstore)
    return Cluster(kv, kv.rank, kv.num_workers)


def build_training(config: Config, ctxs, arrays: dict | None = None,
                   normalization: Normalization | None = None, cluster: Cluster | None = None,
                   steps: int = 1, offset: int = 0) -> Model:
    """The model of `config` on `ctxs`, Xavier-initialised or holding `arrays`.
    `normalization` gives augmentation the background's value; a distributed `cluster`
    updates on its servers, from step `offset` of `steps` per epoch."""
    arch = Architecture(hidden=config.model.hidden, activation=config.model.activation,
                        classes=config.model.classes, dropout=config.model.dropout)
    net = build_model(arch, ctxs)
    if arrays is not None:
        set_parameters(net, arrays)
    # Several devices: gradients meet on the CPU (kvstore local) or on the first device.
    reduce_ctx = mx.cpu() if len(ctxs) > 1 and config.train.kvstore == "local" else ctxs[0]
    params = {name: param for name, param in named_parameters(net).items()}
    graph = train_step_graph(net, config.data.augment,
                             background(normalization or Normalization(0.0, 1.0)),
                             config.train.label_smoothing)
    if cluster is not None and cluster.kvstore is not None:
        updater = DistUpdater(net, config.train, cluster.kvstore, steps, offset)
    else:
        updater = Updater(params, config.train, reduce_ctx)
    return Model(arch, net, graph, updater)


def run_training(config: Config, run_dir: Path, *, config_name: str = "", resume: bool = False,
                 force: bool = False, quiet: bool = False,
                 stop_signal: Callable[[], int | None] | None = None) -> TrainSummary:
    """Train `config` into `run_dir`, from scratch or continuing the run saved there.

    `stop_signal` is asked after every step; a signal number from it ends the run after a
    checkpoint (Stopped). A non-finite loss or gradient raises Diverged.
    """
    ctxs = resolve_contexts(config.device)
    tcfg = config.train
    cluster = join_cluster(tcfg.kvstore)
    log = Log(quiet, cluster.prefix)
    if tcfg.batch_size % len(ctxs):
        raise ConfigError(f"train.batch_size={tcfg.batch_size} does not split evenly over "
                          f"{len(ctxs)} devices; use a multiple of {len(ctxs)}")

    resumed = None
    if resume:
        resumed = read_resumable(run_dir, config)
    elif cluster.writer:
        ckpt.check_run_dir(run_dir, force)

    seed_everything(config.seed)
    data = prepare_data(config, ctxs, resumed.normalization if resumed else None)
    num_train = data.num_train
    steps = steps_per_epoch(num_train, tcfg.batch_size * cluster.workers)
    if steps == 0:
        raise ConfigError(f"train.batch_size={tcfg.batch_size} is larger than the "
                          f"{num_train} training examples; lower it")
    if not resume and cluster.writer:
        # Created only now, so a failure to read the data leaves no empty run folder behind.
        ckpt.prepare_run_dir(run_dir, force)

    model = build_training(config, ctxs, resumed.arrays if resumed else None,
                           data.normalization, cluster, steps,
                           resumed.meta["step"] if resumed else 0)
    start_epoch, best_val, best_epoch, history, partial = 1, None, 0, [], None
    early = {"stale_epochs": 0, "stopped": False}  # epochs without enough improvement
    last_saved = "none was written yet"
    if resumed:
        model.updater.load(ckpt.states_path(resumed.params_path))
        start_epoch = resumed.meta["epoch"] + 1
        best_val, best_epoch = resumed.meta["best_val_accuracy"], resumed.meta["best_epoch"]
        early = dict(resumed.meta.get("early_stopping") or early)
        history = truncate_metrics(run_dir / "metrics.jsonl", resumed.meta["epoch"])
        if resumed.meta.get("in_epoch"):
            partial = EpochProgress(**resumed.meta["in_epoch"])
            start_epoch = partial.epoch
        last_saved = describe(resumed.params_path, resumed.meta)
    # On resume too: `--set` may have changed the config (e.g. more epochs).
    if cluster.writer:
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))

    at = ""
    if resumed:
        at = f"  |  resuming at epoch {start_epoch}" + (
            f", step {partial.steps_done + 1} of {steps}" if partial else "")
        if resumed.params_path.name != "last.params":
            at += f" from {resumed.params_path.name} (last.params was incomplete)"
    log.line(
        f"mnist-train: {config_name or 'run'} -> {run_dir}  |  {config.data.name}: "
        f"{num_train} train / {len(data.val_labels)} validation examples  |  "
        f"device {', '.join(str(c) for c in ctxs)}  |  {steps} steps/epoch of "
        f"{tcfg.batch_size}{at}"
    )
    if cluster.kvstore is not None:
        log.line(f"{tcfg.kvstore}: {cluster.workers} workers; this one trains on its own "
                 f"{tcfg.batch_size} of each global batch of {tcfg.batch_size * cluster.workers}"
                 f", {steps * tcfg.batch_size} of the {num_train} examples each epoch")
        if resumed:
            log.line("resuming a distributed run restores its parameters; the optimizer's "
                     "state (momentum) restarts: MXNet keeps it on the servers and cannot "
                     "save it")

    lr_at = lambda step: learning_rate(step, steps, tcfg)  # noqa: E731
    every = config.checkpoint.every_steps
    signalled: list[int] = []

    def action(step: int) -> str | None:
        signum = stop_signal() if stop_signal is not None else None
        if signum:
            signalled.append(signum)
            return "stop"
        return "save" if every and step % every == 0 and step % steps else None

    patience, min_delta = tcfg.early_stopping.patience, tcfg.early_stopping.min_delta
    for epoch in range(start_epoch, tcfg.epochs + 1):
        if early["stopped"]:
            break
        first_step = (epoch - 1) * steps
        progress = partial if partial is not None else EpochProgress(epoch)
        partial = None

        def save_mid(now: EpochProgress, epoch: int = epoch, best: tuple = (best_val, best_epoch)
                     ) -> None:
            nonlocal last_saved
            if not cluster.writer:
                return
            meta = checkpoint_meta(config, model.architecture, data, epoch - 1,
                                   (epoch - 1) * steps + now.steps_done,
                                   history[-1] if history else None, *best, now, early)
            ckpt.save_checkpoint(run_dir / "last.params", model.net, model.updater, meta,
                                 keep_previous=True)
            last_saved = describe(run_dir / "last.params", meta)

        on_progress = log.start_epoch(epoch, tcfg.epochs, steps, tcfg.batch_size)
        try:
            progress, stopped = train_epoch(
                model.graph, model.updater, data.train,
                plan_epoch(cluster.share(epoch_order(num_train, config.seed, epoch),
                                         tcfg.batch_size), data.train_labels,
                           tcfg.batch_size, ctxs, config.data.augment, config.seed, epoch),
                tcfg.batch_size, lr_at, progress, first_step, skip_nonfinite=tcfg.skip_nonfinite,
                reseed=dropout_reseeder(config), control=StepControl(action, save_mid),
                on_progress=on_progress)
        except Diverged as error:
            raise Diverged(f"{error} (epoch {epoch}); the last good checkpoint is {last_saved}; "
                           "lower train.lr, set train.clip_gradient, or set "
                           "train.skip_nonfinite=true") from None
        finally:
            log.end_epoch()
        if stopped:
            name = signal.Signals(signalled[-1]).name
            step = first_step + progress.steps_done
            raise Stopped(f"stopped by {name} at epoch {epoch}, step {step}; saved "
                          f"{run_dir / 'last.params'}; continue with: "
                          f"mnist-train --resume {run_dir}", signalled[-1])
        val_loss, val_acc = validate(model.net, data)
        trained = max((steps - progress.skipped) * tcfg.batch_size, 1)
        loss_sum, correct_sum = progress.totals
        result = EpochResult(epoch, first_step + steps, lr_at(first_step + steps - 1),
                             loss_sum / trained, correct_sum / trained, val_loss, val_acc,
                             progress.seconds, steps * tcfg.batch_size / progress.seconds)
        # Without a validation set, the latest epoch counts as the best.
        improved = val_acc is None or best_val is None or val_acc > best_val
        if patience is not None and val_acc is not None:
            enough = best_val is None or val_acc - best_val > min_delta
            early["stale_epochs"] = 0 if enough else early["stale_epochs"] + 1
            early["stopped"] = early["stale_epochs"] >= patience and epoch < tcfg.epochs
        if improved:
            best_val, best_epoch = val_acc, epoch
        history.append(result)
        meta = checkpoint_meta(config, model.architecture, data, epoch, result.step, result,
                               best_val, best_epoch, early=early)
        if cluster.writer:
            # Metrics first: a crash before the checkpoint leaves a line that resume drops.
            append_metrics(run_dir / "metrics.jsonl", result)
            save_epoch(run_dir, model.net, model.updater, meta, epoch, improved,
                       config.checkpoint.keep)
        last_saved = describe(run_dir / "last.params", meta)
        log.line(format_epoch(result, tcfg.epochs)
                 + (f"  ({progress.skipped} non-finite batches skipped)" if progress.skipped
                    else ""))
        if early["stopped"]:
            log.line(f"early stopping: validation accuracy has not risen by more than "
                     f"{min_delta} for {patience} epochs; the best is epoch {best_epoch}")

    if cluster.kvstore is not None:
        log.line(f"parameters sha256 {parameters_digest(model.net)}")
    return TrainSummary(run_dir, history, best_epoch, best_val, run_dir / "best.params",
                        run_dir / "last.params", cluster.writer)


def parameters_digest(net: MLP) -> str:
    """A checksum of the parameters' values: equal on every worker of a consistent run."""
    import hashlib

    digest = hashlib.sha256()
    for name, param in sorted(named_parameters(net).items()):
        digest.update(name.encode() + param.data().asnumpy().tobytes())
    return digest.hexdigest()


def dropout_reseeder(config: Config) -> Callable[[int], None] | None:
    """With dropout, MXNet's generator is seeded from (seed, step) before every step, so a run
    resumed at any step draws the masks the uninterrupted run drew. MXNet cannot save the
    generator's state, and nothing else draws from it (augmentation draws on the host)."""
    if config.model.dropout == 0:
        return None
    return lambda step: mx.random.seed((config.seed * 1_000_003 + step) % 2**31)


def describe(params_path: Path, meta: dict) -> str:
    where = meta.get("in_epoch")
    at = (f"epoch {where['epoch']}, step {meta['step']}" if where
          else f"end of epoch {meta['epoch']}")
    return f"{params_path} ({at})"


# Changing these on resume would make the run another run: other examples held out, another
# model, other batches.
FIXED_ON_RESUME = ("seed", "data.name", "data.val_size", "model.hidden", "model.activation",
                   "model.classes", "model.dropout", "train.batch_size")


def read_resumable(run_dir: Path, config: Config) -> ckpt.Checkpoint:
    """The newest complete checkpoint of the run in `run_dir`, checked against `config`:
    `last`, or `previous` or an `epoch-NNNN` if a crash cut the writing of `last` short."""
    params_path = run_dir / "last.params"
    if not params_path.exists():
        raise CheckpointError(f"{run_dir} holds no run to resume (no last.params); pass the "
                              "folder an earlier mnist-train wrote")
    usable, problems = [], []
    for path in [params_path, run_dir / f"{ckpt.PREVIOUS}.params",
                 *sorted(run_dir.glob("epoch-*.params"), reverse=True)]:
        if not path.exists():
            continue
        try:
            usable.append(resumable_checkpoint(path))
        except CheckpointError as error:
            problems.append(error)
    if not usable:
        raise problems[0]
    checkpoint = max(usable, key=lambda c: c.meta.get("step", 0))  # the first of equals: last
    saved = checkpoint.meta["config"]
    for key in FIXED_ON_RESUME:
        section, _, leaf = key.rpartition(".")
        before = saved[section][leaf] if section else saved[leaf]
        now = getattr(getattr(config, section), leaf) if section else getattr(config, key)
        if before != now:
            raise ConfigError(f"{key} was {before!r} in the run being resumed, now {now!r}; "
                              "it cannot change on --resume: start a new run with --out DIR")
    return checkpoint


def resumable_checkpoint(params_path: Path) -> ckpt.Checkpoint:
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
    return checkpoint


def validate(net: MLP, data: Prepared) -> tuple[float | None, float | None]:
    """(loss, accuracy) on the validation set; (None, None) without one."""
    if data.val_images is None:
        return None, None
    logits = predict_logits(net, data.val_images)
    accuracy = float(np.mean(logits.argmax(axis=1) == data.val_labels))
    return softmax_cross_entropy(logits, data.val_labels), accuracy


def checkpoint_meta(config: Config, arch: Architecture, data: Prepared, epoch: int, step: int,
                    result: EpochResult | None, best_val: float | None, best_epoch: int,
                    in_epoch: EpochProgress | None = None, early: dict | None = None) -> dict:
    """The sidecar's content. `epoch` counts finished epochs; `in_epoch` is how far the next
    one had got when a checkpoint is written inside it."""
    return {
        "architecture": dataclasses.asdict(arch),
        "normalization": dataclasses.asdict(data.normalization),
        "config": config_to_dict(config),
        "epoch": epoch,
        "step": step,
        "in_epoch": dataclasses.asdict(in_epoch) if in_epoch is not None else None,
        "metrics": dataclasses.asdict(result) if result is not None else None,
        "best_val_accuracy": best_val,
        "best_epoch": best_epoch,
        "early_stopping": dict(early) if early is not None else None,
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
    ckpt.save_checkpoint(run_dir / "last.params", net, updater, meta, keep_previous=True)


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
