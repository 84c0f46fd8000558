"""A run's saves: when a step asks for one (a stop signal, `checkpoint.every_steps`), and the
checkpoints and metrics lines that rank 0 writes."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import checkpoint as ckpt
from ..checkpoint import EpochProgress, EpochResult, Sidecar
from ..model import MLP
from .average import WeightAverage
from .resume import saved_at
from .state import RunState


class StopRequests:
    """Asked after every step: "stop" once a signal came (kept in `signalled`), "save" every
    `every` steps inside an epoch, else None."""

    def __init__(self, stop_signal: Callable[[], int | None] | None, every: int | None,
                 steps: int):
        self.stop_signal, self.every, self.steps = stop_signal, every, steps
        self.signalled: int | None = None

    def __call__(self, step: int) -> str | None:
        signum = self.stop_signal() if self.stop_signal is not None else None
        if signum:
            self.signalled = signum
            return "stop"
        return "save" if self.every and step % self.every == 0 and step % self.steps else None


class Saver:
    """Writes the run's checkpoints and metrics (rank 0 only) and knows the last one saved."""

    def __init__(self, run_dir: Path, net: MLP, updater, run: Sidecar, writer: bool, keep: int,
                 last: str | None, average: WeightAverage | None = None):
        self.run_dir, self.net, self.updater = run_dir, net, updater
        self.run, self.writer = run, writer
        self.keep, self.last, self.average = keep, last, average

    def mid_epoch(self, state: RunState, step: int, now: EpochProgress) -> None:
        if not self.writer:
            return
        sidecar = state.sidecar(self.run, step, now)
        self.save("last", sidecar, keep_previous=True)
        self.last = saved_at(self.run_dir / "last.params", sidecar)

    def end_of_epoch(self, state: RunState, result: EpochResult, improved: bool) -> None:
        """metrics.jsonl's line, then `epoch-NNNN` (the last `keep` are kept), `best` when
        validation accuracy improved, and `last`, which `--resume` continues from."""
        sidecar = state.sidecar(self.run, result.step)
        if self.writer:
            # Metrics first: a crash before the checkpoint leaves a line that resume drops.
            with open(self.run_dir / "metrics.jsonl", "a") as handle:
                handle.write(json.dumps(dataclasses.asdict(result)) + "\n")
            # The same weights under several names are written once (save_checkpoint).
            copies = [(f"epoch-{result.epoch:04d}", sidecar)] if self.keep > 0 else []
            if improved and state.best_weights == "live":
                copies.append(("best", sidecar))
            elif improved:  # the best weights are their average
                self.save("best", dataclasses.replace(sidecar, weights="average"),
                          net=self.average.net)
            self.save("last", sidecar, keep_previous=True, copies=copies)
            for old in (sorted(self.run_dir.glob("epoch-*.params"))[:-self.keep]
                        if self.keep > 0 else []):
                for path in (old, ckpt.states_path(old), ckpt.sidecar_path(old),
                             ckpt.average_path(old)):
                    path.unlink(missing_ok=True)
        self.last = saved_at(self.run_dir / "last.params", sidecar)

    def save(self, name: str, sidecar: Sidecar, keep_previous: bool = False,
             net: MLP | None = None, copies: Sequence[tuple[str, Sidecar]] = ()) -> None:
        """Write checkpoint `name` and, of the same weights, each (name, sidecar) of `copies`."""
        average = self.average if self.average is not None and self.average.count else None
        ckpt.save_checkpoint(self.run_dir / f"{name}.params", net or self.net, self.updater,
                             sidecar, keep_previous, average,
                             [(self.run_dir / f"{n}.params", s) for n, s in copies])
