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
    """What the loop asks after each step (or span of steps). `action(step)` returns None to go
    on, "save" to write a mid-epoch checkpoint, or "stop" to write one and end; `save` writes
    it. A span of steps ends where a save is due: at every multiple of `every` steps."""

    action: Callable[[int], str | None]
    save: Callable[[EpochProgress], None]
    every: int | None = None

    def room(self, step: int) -> int:
        """How many steps from global step `step` on may run before the next is asked."""
        return self.every - step % self.every if self.every else 1 << 30


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

    def accumulators(self, step: int) -> list:
        """Each device's accumulator of `step`'s stats."""
        return [pair[step % 2] for pair in self.pairs]

    def record(self, step: int, stats: list) -> None:
        """Keep the per-device stats of the steps from `step` on, (2,) for one step or (K, 2)
        for K, until the next check, which names the first that was not finite."""
        self.unchecked.append((step, stats))

    def additions(self, step: int, stats: list) -> list[tuple]:
        """The (accumulator, stats) pairs that add the step's stats, for the updater to add in
        its call (Updater.step)."""
        self.record(step, stats)
        return list(zip(self.accumulators(step), stats, strict=True))

    def check(self) -> None:
        """Raise Diverged, naming the first step whose loss was not finite, if one was summed
        since the last check. A non-finite sum stays non-finite, so the accumulators tell."""
        if not all_finite(acc for pair in self.pairs for acc in pair):
            step = next((step + offset for step, stats in self.unchecked
                         for offset in first_nonfinite(stats)),
                        self.unchecked[-1][0] if self.unchecked else -1)
            raise Diverged(f"the loss became non-finite at step {step + 1}")
        self.unchecked.clear()

    def values(self) -> list:
        return [[acc.asnumpy().tolist() for acc in pair] for pair in self.pairs]


class GraphStep:
    """A step through MXNet: the training graph forward and backward under autograd on each
    device, then the updater. With `skip_nonfinite` the host waits for each step's loss and
    skips the update of a batch whose loss is not finite."""

    most = 1  # steps a call takes

    def __init__(self, graph: TrainStep, updater, skip_nonfinite: bool = False):
        self.graph, self.updater, self.skip_nonfinite = graph, updater, skip_nonfinite

    def __call__(self, data: list[DeviceData], steps: list, done: int, count: int,
                 lr_at: Callable, batch_size: int, index: int, sums: DeviceSums) -> int:
        """Train the plan's step `done` (global step `index`), its stats added to `sums`;
        returns how many batches were skipped (0 or 1)."""
        with autograd.record():
            stats = [self.graph.step(*part.inputs, *columns)
                     for part, columns in zip(data, steps[done], strict=True)]
        autograd.backward(stats)
        if self.skip_nonfinite and not all_finite(stats):
            return 1  # nothing is updated or counted for this batch
        self.updater.step(lr_at(index), batch_size, adds=sums.additions(index, stats))
        return 0

    def sync(self) -> None:
        """Nothing: the parameters are always where MXNet reads them."""


def train_epoch(step_once: Callable, data: list[DeviceData], steps: list, batch_size: int,
                lr_at: Callable, progress: EpochProgress, first_step: int, *,
                reseed: Callable[[int], None] | None = None,
                control: StepControl | None = None,
                on_progress: Callable[[EpochProgress], None] | None = None,
                report_every: int = PROGRESS_EVERY) -> tuple[EpochProgress, bool]:
    """Train on the epoch's `steps` (from `plan_epoch`) from `progress.steps_done` on, through
    `step_once` (a GraphStep, or a CompiledStep, which takes up to `most` steps a call, never
    past a check or a save); returns (progress, whether `control` stopped the epoch early).

    `data` holds the training set once per device. The loss is checked every `report_every`
    steps, before every save and at the end: a non-finite one raises Diverged naming its step,
    and nothing is saved after it. (A non-finite gradient shows as a non-finite loss at the
    next step.) `on_progress` is given the epoch's progress every `report_every` steps.
    """
    sums = DeviceSums([part.inputs[0].context for part in data], progress)
    skipped, started = progress.skipped, time.perf_counter()
    step = first_step + progress.steps_done

    def current(done: int) -> EpochProgress:
        return EpochProgress(progress.epoch, done, sums.values(), skipped,
                             progress.seconds + time.perf_counter() - started)

    done = progress.steps_done
    while done < len(steps):
        count = min(step_once.most, len(steps) - done, report_every - done % report_every,
                    control.room(step) if control is not None else len(steps))
        if reseed is not None:
            reseed(step)
        skipped += step_once(data, steps, done, count, lr_at, batch_size, step, sums)
        done, step = done + count, step + count
        action = control.action(step) if control is not None else None
        if action is not None:
            sums.check()
            step_once.sync()
            control.save(now := current(done))
            if action == "stop":
                return now, True
        if done % report_every == 0:
            sums.check()
            if on_progress is not None:
                on_progress(current(done))
    sums.check()
    step_once.sync()
    return current(len(steps)), False


def first_nonfinite(stats: list) -> list[int]:
    """[the first row (step) of the per-device stats whose loss or count is not finite], or
    []: each device's array is (2,) for one step or (K, 2) for K."""
    bad = np.any([~np.isfinite(a.asnumpy().reshape(-1, 2)).all(axis=1) for a in stats], axis=0)
    return [int(np.argmax(bad))] if bad.any() else []


def all_finite(arrays) -> bool:
    """Whether every value of the NDArrays is finite (each read waits for its device)."""
    return all(np.isfinite(array.asnumpy()).all() for array in arrays)
