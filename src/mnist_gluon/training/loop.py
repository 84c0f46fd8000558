"""One epoch of training: the steps of its plan, with the loss checked every few steps."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ..checkpoint import EpochProgress
from ..errors import Diverged
from ..mxnet_compat import autograd, mx
from .step import DeviceData, TrainStep

PROGRESS_EVERY = 50  # steps between checks of the loss and progress reports; each waits


@dataclass
class StepControl:
    """What the loop asks after each step. `action(step)` returns None to go on, "save" to
    write a mid-epoch checkpoint, or "stop" to write one and end; `save` writes it."""

    action: Callable[[int], str | None]
    save: Callable[[EpochProgress], None]


class DeviceSums:
    """Loss and correct answers summed on each device into two accumulators, for even and
    odd steps (the layout a mid-epoch checkpoint records). The host reads them only when it
    checks them, so the device is not waited for after every step."""

    def __init__(self, ctxs, progress: EpochProgress):
        self.pairs = [[mx.nd.zeros((2,), ctx=ctx), mx.nd.zeros((2,), ctx=ctx)] for ctx in ctxs]
        if len(progress.sums) == len(ctxs):
            for pair, saved in zip(self.pairs, progress.sums, strict=True):
                for accumulator, values in zip(pair, saved, strict=True):
                    accumulator[:] = mx.nd.array(values, dtype="float32")
        elif progress.sums:  # resumed on another number of devices: the totals still hold
            self.pairs[0][0][:] = mx.nd.array(progress.totals, dtype="float32")
        self.unchecked: list[tuple[int, list]] = []  # (step, its per-device sums) since a check

    def additions(self, step: int, stats: list) -> list[tuple]:
        """The (accumulator, stats) pairs that add the step's stats, for the updater to add in
        its call (Updater.step)."""
        self.unchecked.append((step, stats))
        return [(pair[step % 2], batch_stats)
                for pair, batch_stats in zip(self.pairs, stats, strict=True)]

    def check(self) -> None:
        """Raise Diverged, naming the first step whose loss was not finite, if one was summed
        since the last check. A non-finite sum stays non-finite, so the accumulators tell."""
        if not all_finite(acc for pair in self.pairs for acc in pair):
            step = next((step for step, stats in self.unchecked if not all_finite(stats)),
                        self.unchecked[-1][0] if self.unchecked else -1)
            raise Diverged(f"the loss became non-finite at step {step + 1}")
        self.unchecked.clear()

    def values(self) -> list:
        return [[acc.asnumpy().tolist() for acc in pair] for pair in self.pairs]


def train_epoch(graph: TrainStep, updater, data: list[DeviceData], steps: list,
                batch_size: int, lr_at: Callable, progress: EpochProgress, first_step: int, *,
                skip_nonfinite: bool = False, reseed: Callable[[int], None] | None = None,
                control: StepControl | None = None,
                on_progress: Callable[[EpochProgress], None] | None = None,
                report_every: int = PROGRESS_EVERY) -> tuple[EpochProgress, bool]:
    """Train on the epoch's `steps` (from `plan_epoch`) from `progress.steps_done` on;
    returns (progress, whether `control` stopped the epoch early).

    `data` holds the training set once per device. The loss is checked every `report_every`
    steps, before every save and at the end: a non-finite one raises Diverged naming its step,
    and nothing is saved after it. (A non-finite gradient shows as a non-finite loss at the
    next step.) With `skip_nonfinite` the host instead waits for each step's loss and skips
    the update of a batch whose loss is not finite. `on_progress` is given the epoch's
    progress every `report_every` steps.
    """
    sums = DeviceSums([part.inputs[0].context for part in data], progress)
    skipped, started = progress.skipped, time.perf_counter()
    step = first_step + progress.steps_done

    def current(done: int) -> EpochProgress:
        return EpochProgress(progress.epoch, done, sums.values(), skipped,
                             progress.seconds + time.perf_counter() - started)

    for done in range(progress.steps_done + 1, len(steps) + 1):
        if reseed is not None:
            reseed(step)
        with autograd.record():
            stats = [graph.step(*part.inputs, *own)
                     for part, own in zip(data, steps[done - 1], strict=True)]
        autograd.backward(stats)
        if skip_nonfinite and not all_finite(stats):
            skipped += 1  # nothing is updated or counted for this batch
        else:
            updater.step(lr_at(step), batch_size, adds=sums.additions(step, stats))
        step += 1
        action = control.action(step) if control is not None else None
        if action is not None:
            sums.check()
            control.save(now := current(done))
            if action == "stop":
                return now, True
        if done % report_every == 0:
            sums.check()
            if on_progress is not None:
                on_progress(current(done))
    sums.check()
    return current(len(steps)), False


def all_finite(arrays) -> bool:
    """Whether every value of the NDArrays is finite (each read waits for its device)."""
    return all(np.isfinite(array.asnumpy()).all() for array in arrays)
