"""TensorBoard event files in the run folder, so `tensorboard --logdir runs` shows every run:
the loss and accuracy every few steps, each epoch's figures and weight histograms, and at the
end the validation confusion matrix and the config against the best validation accuracy.

Written by rank 0 only, with the `track` extra (tensorboardX). A resumed run appends to the
same folder; what the stopped run logged after its checkpoint is purged, so no step shows
twice."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ..checkpoint import EpochProgress, EpochResult
from ..config import Config, config_to_dict
from ..model import MLP, named_parameters


class NoTracking:
    """What a run does without TensorBoard logs: nothing."""

    def start_epoch(self, progress: EpochProgress, first_step: int, batch_size: int) -> None:
        pass

    def running(self, now: EpochProgress) -> None:
        pass

    def end_epoch(self, result: EpochResult, net: MLP) -> None:
        pass

    def finish(self, config: Config, best_val_accuracy: float | None, step: int,
               confusion: np.ndarray | None) -> None:
        pass

    def close(self) -> None:
        pass


def open_tracking(config: Config, run_dir: Path, writer: bool,
                  resumed_step: int | None) -> tuple[NoTracking, str | None]:
    """The run's tracker, and a note for the log when it cannot track as configured: with
    `track.tensorboard: null` (the default) a run logs when tensorboardX is installed, and says
    nothing when it is not; `true` asks for the logs, and their absence is said."""
    if config.track.tensorboard is False or not writer:
        return NoTracking(), None
    try:
        import_tensorboardx()
    except ImportError:
        if config.track.tensorboard is None:
            return NoTracking(), None
        from ..errors import install_command

        return NoTracking(), ("no TensorBoard logs: track.tensorboard=true needs tensorboardX: "
                              f"{install_command('track')}")
    return TensorBoard(config, run_dir, resumed_step), None


def import_tensorboardx():
    """tensorboardX, without torch: where torch is installed, tensorboardX's writer imports it
    (1.2-1.7 s) only to name its tensor type in type hints. Runs hand it numpy arrays."""
    hide = "torch" not in sys.modules
    if hide:
        sys.modules["torch"] = None  # `import torch` raises ImportError while this is here
    try:
        import tensorboardX
    finally:
        if hide:
            del sys.modules["torch"]
    return tensorboardX


class TensorBoard(NoTracking):
    def __init__(self, config: Config, run_dir: Path, resumed_step: int | None):
        self.run_dir, self.resumed_step = run_dir, resumed_step
        self.histograms = config.track.histograms
        self.first_step, self.batch_size, self.last = 0, 1, (0, 0, 0.0, 0.0)
        self._writer = None

    @property
    def writer(self):
        """Opened at the first value, so a run that logs nothing (it diverged at once, or it
        had already ended) leaves no file."""
        if self._writer is None:
            from tensorboardX import SummaryWriter

            # Resumed at step S: what the stopped run logged after S is discarded.
            purge = self.resumed_step + 1 if self.resumed_step is not None else None
            # Files are read in name order, and the name starts with the second the file was
            # opened in: the purge step in the suffix puts a resumed run's file after the one
            # it continues, even within the same second.
            self._writer = SummaryWriter(
                str(self.run_dir), purge_step=purge, flush_secs=10,
                filename_suffix=f".{purge or 0:012d}.{os.getpid()}")
        return self._writer

    def start_epoch(self, progress: EpochProgress, first_step: int, batch_size: int) -> None:
        self.first_step, self.batch_size = first_step, batch_size
        self.last = (progress.steps_done, progress.skipped, *progress.totals)

    def running(self, now: EpochProgress) -> None:
        """The mean loss and accuracy of the steps since the last call."""
        done, skipped, loss, correct = self.last
        seen = ((now.steps_done - done) - (now.skipped - skipped)) * self.batch_size
        now_loss, now_correct = now.totals
        self.last = (now.steps_done, now.skipped, now_loss, now_correct)
        if seen > 0 and np.isfinite(now_loss):
            step = self.first_step + now.steps_done
            self.writer.add_scalar("step/train_loss", (now_loss - loss) / seen, step)
            self.writer.add_scalar("step/train_accuracy", (now_correct - correct) / seen, step)

    def end_epoch(self, result: EpochResult, net: MLP) -> None:
        figures = {"train_loss": result.train_loss, "train_accuracy": result.train_accuracy,
                   "val_loss": result.val_loss, "val_accuracy": result.val_accuracy,
                   "lr": result.lr, "samples_per_second": result.samples_per_second,
                   "average_val_loss": result.average_val_loss,
                   "average_val_accuracy": result.average_val_accuracy}
        for name, value in figures.items():
            if value is not None and np.isfinite(value):
                self.writer.add_scalar(f"epoch/{name}", value, result.step)
        if self.histograms:
            for name, param in named_parameters(net).items():
                values = param.data().asnumpy()
                # Weights a diverging run blew up (skip_nonfinite) have no histogram.
                if np.isfinite(values).all() and np.abs(values).max() < 1e18:
                    self.writer.add_histogram(f"weights/{name}", values, result.step)

    def finish(self, config: Config, best_val_accuracy: float | None, step: int,
               confusion: np.ndarray | None) -> None:
        from tensorboardX.summary import hparams

        if confusion is not None:
            self.writer.add_image("validation/confusion_matrix", confusion_image(confusion),
                                  step, dataformats="HWC")
        if best_val_accuracy is not None:
            metric = "hparam/best_val_accuracy"
            for summary in hparams(flat_settings(config), {metric: best_val_accuracy}):
                self.writer.file_writer.add_summary(summary)
            self.writer.add_scalar(metric, best_val_accuracy, step)

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()


def flat_settings(config: Config) -> dict[str, bool | int | float | str]:
    """The config as TensorBoard's hparams take it: dotted keys, scalar values."""
    flat: dict[str, bool | int | float | str] = {}

    def walk(prefix: str, node) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                walk(f"{prefix}{key}.", value)
            else:
                flat[f"{prefix}{key}"] = (value if isinstance(value, (bool, int, float, str))
                                          else str(value))

    walk("", config_to_dict(config))
    return flat


def confusion_image(confusion: np.ndarray, cell: int = 16) -> np.ndarray:
    """The confusion matrix as an RGB picture, row-normalised: white for none of a class's
    examples, dark blue for all of them; true classes down, predictions across."""
    totals = confusion.sum(axis=1, keepdims=True)
    share = confusion / np.maximum(totals, 1)
    colour = np.stack([1 - share, 1 - 0.7 * share, 1 - 0.3 * share], axis=-1)
    image = np.kron(colour, np.ones((cell, cell, 1)))
    return (255 * image).astype(np.uint8)
