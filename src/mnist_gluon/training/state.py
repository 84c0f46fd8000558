"""Where a run stands between epochs: what its checkpoints record, and what each finished
epoch changes (the best epoch, early stopping)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

from ..checkpoint import EarlyStopping, EpochProgress, EpochResult, Sidecar
from ..config import EarlyStoppingConfig


@dataclass
class RunState:
    epoch: int = 0  # finished epochs
    best_val_accuracy: float | None = None
    best_epoch: int = 0
    early: EarlyStopping = field(default_factory=EarlyStopping)
    history: list[EpochResult] = field(default_factory=list)  # one result per finished epoch
    in_epoch: EpochProgress | None = None  # how far a resumed run's unfinished epoch had got
    best_weights: str = "live"  # which weights scored best_val_accuracy: live or average

    @classmethod
    def resumed(cls, sidecar: Sidecar, history: list[EpochResult]) -> RunState:
        return cls(sidecar.epoch, sidecar.best_val_accuracy, sidecar.best_epoch,
                   dataclasses.replace(sidecar.early_stopping or EarlyStopping()), history,
                   sidecar.in_epoch)

    @property
    def next_epoch(self) -> int:
        return self.in_epoch.epoch if self.in_epoch is not None else self.epoch + 1

    def start_epoch(self, epoch: int) -> EpochProgress:
        """The progress `epoch` starts from: a resumed epoch's, once, else none."""
        progress, self.in_epoch = self.in_epoch or EpochProgress(epoch), None
        return progress

    def finish_epoch(self, result: EpochResult, stopping: EarlyStoppingConfig,
                     epochs: int, eligible: bool = True) -> bool:
        """Count a finished epoch in; whether it is the best so far: its live weights or their
        average, whichever validates better. Without a validation set, the latest epoch
        counts as the best. An epoch that is not `eligible` (a pruned run's, before its weights
        reach the sparsity asked for) is never the best."""
        val, weights = result.val_accuracy, "live"
        average = result.average_val_accuracy
        if average is not None and (val is None or average > val):
            val, weights = average, "average"
        best = self.best_val_accuracy
        improved = eligible and (val is None or best is None or val > best)
        if stopping.patience is not None and val is not None:
            enough = best is None or val - best > stopping.min_delta
            self.early.stale_epochs = 0 if enough else self.early.stale_epochs + 1
            self.early.stopped = (self.early.stale_epochs >= stopping.patience
                                  and result.epoch < epochs)
        if improved:
            self.best_val_accuracy, self.best_epoch, self.best_weights = val, result.epoch, weights
        self.history.append(result)
        self.epoch = result.epoch
        return improved

    def sidecar(self, run: Sidecar, step: int, in_epoch: EpochProgress | None = None
                ) -> Sidecar:
        """`run` (what the run is: model, normalisation, config, data) at this point."""
        return dataclasses.replace(
            run, epoch=self.epoch, step=step, in_epoch=in_epoch,
            metrics=self.history[-1] if self.history else None,
            best_val_accuracy=self.best_val_accuracy, best_epoch=self.best_epoch,
            early_stopping=dataclasses.replace(self.early))


def finished(sidecar: Sidecar) -> bool:
    """Whether the run whose `last` checkpoint this is has ended: all its epochs trained, or
    stopped early."""
    early = sidecar.early_stopping
    done = sidecar.config is not None and sidecar.epoch >= sidecar.config.train.epochs
    return (done and sidecar.in_epoch is None) or bool(early and early.stopped)
