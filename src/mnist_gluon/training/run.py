"""A training run, from the start or from a checkpoint, to its end: set up, then for each
epoch plan, train, validate, update the run's state and save."""

from __future__ import annotations

import random
import signal
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .. import checkpoint as ckpt
from .. import engine
from ..checkpoint import DataRecord, EpochProgress, EpochResult, Sidecar
from ..compression.prune import sharing, sparsity_at
from ..config import Config, config_to_yaml
from ..data import epoch_order, steps_per_epoch
from ..device import resolve_contexts
from ..errors import ConfigError, Diverged, Stopped
from ..files import atomic_write_text
from ..kernels import MXNET
from ..metrics import confusion_matrix
from ..model import predict_logits
from ..mxnet_compat import mx
from ..privacy.accounting import Mechanism, run_mechanism
from ..privacy.coverage import check_private
from ..privacy.sampling import poisson_batches
from . import run_folder as folders
from .average import WeightAverage, weight_average
from .cluster import Cluster, join_cluster, parameters_digest
from .compiled_step import STEP
from .data import TrainingData, prepare_data, validation_scores
from .distill import read_teacher
from .kernel_choice import KernelChoice, choose_kernels
from .loop import PROGRESS_EVERY, StepControl, train_epoch
from .optim import learning_rate
from .progress import Log, format_epoch
from .resume import history_until, read_resumable, saved_at
from .saver import Saver, StopRequests
from .start import Start, starting_weights
from .state import RunState
from .step import plan_epoch, plan_sampled_epoch
from .tracking import NoTracking, TensorBoard, open_tracking
from .trainer import Trainer, build_trainer


@dataclass
class Run:
    """A run folder that training wrote: the run's config, its epochs' figures, and its
    checkpoints (`best.params` by validation accuracy, and `last.params`)."""

    folder: Path
    config: Config
    history: list[EpochResult]  # one per epoch trained, as in metrics.jsonl
    best_epoch: int
    best_val_accuracy: float | None  # None without a validation set (a refit)
    written: bool = True  # False on the workers of a distributed run other than rank 0
    prefix: str = ""  # what each of its lines begins with: "[rank 0/2] " in a distributed run

    @property
    def best_checkpoint(self) -> Path:
        return self.folder / "best.params"

    @property
    def last_checkpoint(self) -> Path:
        return self.folder / "last.params"


def run_training(config: Config, run_dir: Path, *, resume: bool = False, force: bool = False,
                 quiet: bool = False,
                 stop_signal: Callable[[], int | None] | None = None,
                 judge: Callable[[int, float | None], str | None] | None = None,
                 refit_of: Path | None = None) -> Run:
    """Train `config` into `run_dir`, from scratch or continuing the run saved there.

    `stop_signal` is asked after every step; a signal number from it ends the run after a
    checkpoint (Stopped). A non-finite loss or gradient raises Diverged. `judge` (a sweep's
    pruner) is given each epoch's validation accuracy; a reason from it ends the run there,
    as early stopping does. `refit_of` is the run folder whose validation chose this run's
    epochs, for a run on the whole training set.
    """
    with folders.unmade_on_failure(run_dir, fresh=not resume and folders.is_fresh(run_dir)):
        return train_epochs(config, run_dir, resume, force, quiet, stop_signal, judge,
                            refit_of)


def train_epochs(config: Config, run_dir: Path, resume: bool, force: bool, quiet: bool,
                 stop_signal: Callable[[], int | None] | None,
                 judge: Callable[[int, float | None], str | None] | None,
                 refit_of: Path | None) -> Run:
    lock = folders.FolderLock(run_dir)  # released on every exit, a refusal included
    try:
        run, state = set_up(config, run_dir, resume, force, quiet, lock, refit_of)
        stops = StopRequests(stop_signal, config.checkpoint.every_steps, run.steps)
        trained = False
        try:
            for epoch in range(state.next_epoch, config.train.epochs + 1):
                if state.early.stopped:
                    break
                progress = run.train(epoch, state, stops)
                result = run.result(epoch, progress)
                improved = state.finish_epoch(result, config.train.early_stopping,
                                              config.train.epochs, may_be_best(config, epoch))
                verdict = judge(epoch, result.val_accuracy) if judge is not None else None
                state.early.stopped |= verdict is not None and epoch < config.train.epochs
                run.saver.end_of_epoch(state, result, improved)
                run.report(result, progress, state, verdict)
                trained = True
            if trained:
                run.finish_tracking(state)
        finally:
            run.tracker.close()
    finally:
        lock.release()
    if run.cluster.kvstore is not None:
        run.log.line(f"parameters sha256 {parameters_digest(run.trainer.net)}")
    return Run(run_dir, config, state.history, state.best_epoch, state.best_val_accuracy,
               run.cluster.writer, run.cluster.prefix)


def set_up(config: Config, run_dir: Path, resume: bool, force: bool, quiet: bool,
           lock: folders.FolderLock, refit_of: Path | None = None) -> tuple[Training, RunState]:
    """Everything a run needs before its first step, checked in the order that leaves
    nothing behind when a check fails; and where the run stands."""
    check_private(config)
    ctxs = resolve_contexts(config.device)
    tcfg, cluster = config.train, join_cluster(config.train.kvstore)
    check_batch_split(tcfg.batch_size, ctxs)
    if cluster.writer:
        lock.take()
    # A run stopped before its first checkpoint (a full disk, Ctrl-C) starts from the start.
    resumed = (read_resumable(run_dir, config)
               if resume and any(run_dir.glob("*.params")) else None)
    threads = same_threads(resumed, run_dir)
    kernels = choose_kernels(config, ctxs, resumed.sidecar.kernels if resumed else None)
    config, force = kernels.config, force or resume
    if resumed is None and cluster.writer:
        folders.check_run_dir(run_dir, force)
    if cluster.writer and run_dir.is_dir():
        folders.sweep_stale_temporaries(run_dir)
    seed_everything(config.seed)
    data = prepare_data(config, ctxs, resumed.normalization if resumed else None)
    teacher = read_teacher(config, data.normalization, data.train_pixels, ctxs,
                           resumed.sidecar.teacher if resumed else None)
    steps = steps_per_epoch(data.num_train, tcfg.batch_size * cluster.workers)
    if steps == 0:
        raise ConfigError(f"train.batch_size={tcfg.batch_size} is larger than the "
                          f"{data.num_train} training examples; lower it")
    mechanism = run_mechanism(tcfg, data.num_train, steps, resumed and resumed.sidecar, run_dir)
    start = starting_weights(config, data, resumed, ctxs[0])
    if resumed is None and cluster.writer:
        # Created only now, so a failure to read the data leaves no empty run folder behind.
        folders.prepare_run_dir(run_dir, force)
        lock.take()
    trainer = build_trainer(config, ctxs, data.augmentation, start.arrays, cluster, steps,
                            resumed.sidecar.step if resumed else 0, kernels, teacher,
                            engine.team_size(threads), data.background, mechanism)
    state, last = RunState(), None
    if resumed:
        trainer.updater.load(ckpt.states_path(resumed.params_path))
        history = history_until(run_dir / "metrics.jsonl", resumed.sidecar.epoch)
        state = RunState.resumed(resumed.sidecar, history)
        last = saved_at(resumed.params_path, resumed.sidecar)
    # On resume too: `--set` may have changed the config (e.g. more epochs).
    if cluster.writer:
        atomic_write_text(run_dir / "config.yaml", config_to_yaml(config))
    average = weight_average(config, trainer.architecture, ctxs[0], resumed)
    if resumed and resumed.sidecar.refit_of:
        refit_of = Path(resumed.sidecar.refit_of)
    saver = Saver(run_dir, trainer.net, trainer.updater,
                  run_sidecar(config, trainer, data, threads, kernels, start, refit_of),
                  cluster.writer, config.checkpoint.keep, last, average, mechanism)
    tracker, note = open_tracking(config, run_dir, cluster.writer,
                                  resumed.sidecar.step if resumed else None)
    run = Training(config, run_dir, ctxs, cluster, data, trainer, steps, saver,
                   Log(quiet, cluster.prefix), tracker, average, mechanism)
    run.announce(resumed, state, asked_to_resume=resume)
    for line in (*kernels.notes, note) if note is not None else kernels.notes:
        run.log.line(line)
    return run, state


def check_batch_split(batch_size: int, ctxs) -> None:
    if batch_size % len(ctxs):
        raise ConfigError(f"train.batch_size={batch_size} does not split evenly over "
                          f"{len(ctxs)} devices; use a multiple of {len(ctxs)}")


def same_threads(resumed: ckpt.Checkpoint | None, run_dir: Path) -> int | None:
    """The OpenMP threads this process trains on, which a resumed run must have been trained
    on (train() sets them before MXNet is imported, unless something imported it first)."""
    threads = engine.threads_in_effect()
    if resumed and resumed.sidecar.threads not in (None, threads):
        raise ConfigError(
            f"{run_dir} was trained on {engine.openmp_threads(resumed.sidecar.threads)}, and "
            f"its numbers depend on the count, but MXNet was imported here on "
            f"{engine.openmp_threads(threads)} before the run could choose; resume it in a "
            f"new process: mnist-train --resume {run_dir}")
    return threads


def run_sidecar(config: Config, trainer: Trainer, data: TrainingData, threads: int | None,
                kernels: KernelChoice, start: Start, refit_of: Path | None = None) -> Sidecar:
    """What every checkpoint of the run records about the run itself."""
    used = {"update": trainer.updater.kernel}
    if kernels.elastic is not None:
        used["elastic"] = kernels.elastic
    if kernels.step is not None:
        used[STEP] = kernels.step
    return Sidecar(architecture=trainer.architecture, normalization=data.normalization,
                   config=config, data=DataRecord(config.data.name, data.checksums),
                   versions=ckpt.library_versions(),
                   refit_of=str(refit_of.resolve()) if refit_of else None, threads=threads,
                   kernels=used, teacher=trainer.teacher.record if trainer.teacher else None,
                   started_from=start.started_from, pretrained=start.pretrained)


@dataclass
class Training:
    """A run set up: what its epochs train with, and where they report and save."""

    config: Config
    run_dir: Path
    ctxs: list
    cluster: Cluster
    data: TrainingData
    trainer: Trainer
    steps: int  # per epoch
    saver: Saver
    log: Log
    tracker: NoTracking
    average: WeightAverage | None = None
    mechanism: Mechanism | None = None  # train.privacy's

    def lr_at(self, step: int) -> float:
        return learning_rate(step, self.steps, self.config.train)

    def train(self, epoch: int, state: RunState, stops: StopRequests) -> EpochProgress:
        """Plan the epoch's steps and train them; raise Stopped on a signal and Diverged on
        a non-finite loss, naming the checkpoint to continue from."""
        config, tcfg = self.config, self.config.train
        first_step = (epoch - 1) * self.steps
        if self.mechanism is not None:
            batches = poisson_batches(self.trainer.step.key, first_step, self.steps,
                                      self.data.num_train, self.mechanism.sample_rate)
            plan = plan_sampled_epoch(batches, self.data.train_labels, self.data.augmentation,
                                      config.seed, epoch, self.ctxs[0],
                                      tcfg.privacy.augmentations)
        else:
            order = self.cluster.share(epoch_order(self.data.num_train, config.seed, epoch),
                                       tcfg.batch_size)
            plan = plan_epoch(order, self.data.train_labels, tcfg.batch_size, self.ctxs,
                              self.data.augmentation, config.seed, epoch,
                              self.trainer.soft_targets)
        control = StepControl(stops, lambda now: self.saver.mid_epoch(
            state, first_step + now.steps_done, now), config.checkpoint.every_steps)
        start = state.start_epoch(epoch)
        if tcfg.prune.sparsity is not None and start.steps_done == 0:
            self.trainer.updater.prune(sparsity_at(epoch, tcfg.prune), tcfg.prune.scope)
        if sharing(tcfg.prune, epoch, tcfg.epochs):  # resumed too: its clusters are its values
            self.trainer.updater.share(tcfg.prune.shared_values)
        self.tracker.start_epoch(start, first_step, tcfg.batch_size)
        bar = self.log.start_epoch(epoch, tcfg.epochs, self.steps, tcfg.batch_size)
        tracking = isinstance(self.tracker, TensorBoard)

        def on_progress(now: EpochProgress) -> None:
            if bar is not None:
                bar(now)
            self.tracker.running(now)

        try:
            progress, stopped = train_epoch(
                self.trainer.step, self.data.train, plan, tcfg.batch_size, self.lr_at, start,
                first_step, reseed=dropout_reseeder(config),
                control=control, on_progress=on_progress if bar or tracking else None,
                report_every=config.track.every_steps if tracking else PROGRESS_EVERY)
        except Diverged as error:
            skip = "" if tcfg.skip_nonfinite else ", or set train.skip_nonfinite=true"
            raise Diverged(f"{error} (epoch {epoch}); {self.last_good()}; lower train.lr or "
                           f"set train.clip_gradient{skip}") from None
        finally:
            self.log.end_epoch()
        if stopped:
            name = signal.Signals(stops.signalled).name
            raise Stopped(f"stopped by {name} at epoch {epoch}, step "
                          f"{progress.steps_done} of {self.steps}; saved "
                          f"{self.run_dir / 'last.params'}; continue with: "
                          f"mnist-train --resume {self.run_dir}", stops.signalled)
        return progress

    def last_good(self) -> str:
        """Where a diverged run can continue from, as its message says it."""
        return (f"the last good checkpoint is {self.saver.last}" if self.saver.last
                else "no checkpoint was written")

    def result(self, epoch: int, progress: EpochProgress) -> EpochResult:
        """The finished epoch's figures, validation included: of the live weights, and of
        their average once it has started (which this takes the epoch's weights into)."""
        steps, batch_size = self.steps, self.config.train.batch_size
        # Skipping non-finite batches cannot undo an update that already made the weights
        # blow up: every later batch would be skipped, and the run would end looking done.
        finite = all(np.isfinite(p.data(self.ctxs[0]).asnumpy()).all()
                     for p in self.trainer.net.collect_params().values())
        val_loss, val_acc = (validation_scores(self.trainer.net, self.data) if finite
                             else (None, None))
        blew_up = not finite or val_loss is not None and not np.isfinite(val_loss)
        if blew_up or progress.skipped > steps / 2:
            what = ("the weights blew up" if blew_up
                    else "more than half the batches had a non-finite loss")
            raise Diverged(f"{what} in epoch {epoch} ({progress.skipped} of {steps} batches "
                           f"were skipped as non-finite"
                           f"{'; the validation loss is not finite' if blew_up else ''}); "
                           f"{self.last_good()}; lower train.lr or set train.clip_gradient")
        average = (None, None)
        if self.average is not None and self.average.add(self.trainer.net, epoch,
                                                         self.trainer.updater):
            average = validation_scores(self.average.net, self.data)
        trained = max((steps - progress.skipped) * batch_size, 1)
        loss_sum, correct_sum = progress.totals
        last_step = epoch * steps
        return EpochResult(epoch, last_step, self.lr_at(last_step - 1), loss_sum / trained,
                           correct_sum / trained, val_loss, val_acc, progress.seconds,
                           steps * batch_size / progress.seconds, *average)

    def announce(self, resumed: ckpt.Checkpoint | None, state: RunState,
                 asked_to_resume: bool = False) -> None:
        config, tcfg, log, steps = self.config, self.config.train, self.log, self.steps
        at = ""
        if resumed and (state.early.stopped or state.next_epoch > tcfg.epochs):
            ended = (f"it stopped early at epoch {state.epoch}" if state.early.stopped
                     else f"all its {tcfg.epochs} epochs are trained")
            at = (f"  |  nothing to resume: {ended} (--set train.epochs=N lengthens a run that "
                  "did not stop early)")
        elif resumed:
            partial = state.in_epoch
            at = f"  |  resuming at epoch {state.next_epoch}" + (
                f", step {partial.steps_done + 1} of {steps}" if partial else "")
            if resumed.params_path.name != "last.params":
                at += f" from {resumed.params_path.name} (last.params was incomplete)"
        log.line(
            f"mnist-train: {self.run_dir.name} -> {self.run_dir}  |  {config.data.name}: "
            f"{self.data.num_train} train / {len(self.data.val_labels)} validation examples  |"
            f"  device {', '.join(str(c) for c in self.ctxs)}  |  {steps} steps/epoch of "
            f"{tcfg.batch_size}{at}")
        if self.cluster.kvstore is not None:
            workers, batch = self.cluster.workers, tcfg.batch_size
            log.line(f"{tcfg.kvstore}: {workers} workers; this one trains on its own {batch} "
                     f"of each global batch of {batch * workers}, {steps * batch} of the "
                     f"{self.data.num_train} examples each epoch")
            if resumed:
                log.line("resuming a distributed run restores its parameters; the optimizer's "
                         "state (momentum) restarts: MXNet keeps it on the servers and cannot "
                         "save it")
        if asked_to_resume and resumed is None:
            log.line(f"mnist-train: {self.run_dir} holds no checkpoint yet; training it from "
                     "the beginning with its saved config")
        if (prune := tcfg.prune).sparsity is not None:
            log.line(f"pruning {prune.sparsity:.1%} of the weights ({prune.scope}, "
                     + ("at once" if prune.schedule == "one_shot"
                        else f"gradually over {prune.epochs} epochs")
                     + (f") from {prune.start_from}" if prune.start_from else ")")
                     + (f"; each layer's weights tied to {prune.shared_values} shared values "
                        f"in the last {prune.share_epochs} epochs" if prune.shared_values else ""))
        if (pre := self.saver.run.pretrained) is not None and resumed is None:
            log.line(f"pretrained on {pre.images:,} digits rendered from {len(pre.fonts)} fonts "
                     f"in {pre.epochs} epochs ({pre.seconds:.0f} s), no training image read")
        if self.mechanism is not None:
            log.line(self.mechanism.describe(steps * tcfg.epochs))

    def finish_tracking(self, state: RunState) -> None:
        """The validation confusion matrix of the best checkpoint, and the run's settings
        against its best validation accuracy."""
        best = self.run_dir / "best.params"
        if not isinstance(self.tracker, TensorBoard) or not best.exists():
            return
        confusion = None
        if self.data.val_images is not None:
            net = ckpt.load_network(ckpt.read_checkpoint(best), self.ctxs[0])
            predicted = predict_logits(net, self.data.val_images).argmax(axis=1)
            confusion = confusion_matrix(self.data.val_labels, predicted,
                                         self.config.model.classes)
        self.tracker.finish(self.config, state.best_val_accuracy,
                            state.history[-1].step if state.history else 0, confusion)

    def report(self, result: EpochResult, progress: EpochProgress, state: RunState,
               verdict: str | None = None) -> None:
        self.tracker.end_epoch(result, self.trainer.net)
        skipped = progress.skipped
        spent = (f"  epsilon {self.mechanism.spent(result.step).epsilon:.3f}"
                 if self.mechanism is not None else "")
        self.log.line(format_epoch(result, self.config.train.epochs) + spent
                      + (f"  ({skipped} non-finite batches skipped)" if skipped else ""))
        if verdict is not None:
            self.log.line(verdict)
        elif state.early.stopped:
            stopping = self.config.train.early_stopping
            self.log.line(f"early stopping: validation accuracy has not risen by more than "
                          f"{stopping.min_delta} for {stopping.patience} epochs; the best is "
                          f"epoch {state.best_epoch}")


def may_be_best(config: Config, epoch: int) -> bool:
    """Whether `epoch` may become best.params: a pruned run's once it trained at the final
    sparsity, its weights shared if they are to be; a private run's last alone (choosing an
    earlier one would look at epochs whose privacy its record does not count)."""
    prune, epochs = config.train.prune, config.train.epochs
    return ((prune.sparsity is None or sparsity_at(epoch, prune) >= prune.sparsity)
            and (prune.shared_values is None or sharing(prune, epoch, epochs))
            and (not config.train.privacy.on or epoch == epochs))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    mx.random.seed(seed)


def dropout_reseeder(config: Config) -> Callable[[int], None] | None:
    """With dropout or MXNet's elastic distortion, MXNet's generator is seeded from (seed,
    step) before every step, so a run resumed at any step draws the masks and displacement
    fields the uninterrupted run drew. MXNet cannot save the generator's state, and nothing else
    draws from it (the other augmentations draw on the host; the compiled elastic warp hashes
    its own). Seeding costs more than a small step."""
    mxnet_elastic = config.data.augment.elastic.alpha > 0 and config.kernels == MXNET
    if config.model.dropout == 0 and not mxnet_elastic:
        return None
    return lambda step: mx.random.seed((config.seed * 1_000_003 + step) % 2**31)
