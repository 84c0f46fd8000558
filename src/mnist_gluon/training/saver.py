"""A run's saves: when a step asks for one (a stop signal, `checkpoint.every_steps`), and the
checkpoints and metrics lines that rank 0 writes, atomically and durably."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence
from pathlib import Path

from .. import checkpoint as ckpt
from ..checkpoint import EpochProgress, EpochResult, Sidecar
from ..files import commit, link_or_copy, sha256_of, stage, sync, temporary_for
from ..model import MLP
from ..privacy.accounting import Mechanism
from .average import WeightAverage
from .resume import saved_at
from .run_folder import append_line
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
                 last: str | None, average: WeightAverage | None = None,
                 mechanism: Mechanism | None = None):
        """`mechanism`: a private run's DP-SGD, whose spent privacy each checkpoint records."""
        self.run_dir, self.net, self.updater = run_dir, net, updater
        self.run, self.writer = run, writer
        self.keep, self.last, self.average = keep, last, average
        self.mechanism = mechanism

    def at(self, state: RunState, step: int, in_epoch: EpochProgress | None = None) -> Sidecar:
        """The sidecar of a checkpoint written after global step `step`."""
        sidecar = state.sidecar(self.run, step, in_epoch)
        if self.mechanism is None:
            return sidecar
        return dataclasses.replace(sidecar, privacy=self.mechanism.spent(step))

    def mid_epoch(self, state: RunState, step: int, now: EpochProgress) -> None:
        if not self.writer:
            return
        sidecar = self.at(state, step, now)
        self.save("last", sidecar, keep_previous=True)
        self.last = saved_at(self.run_dir / "last.params", sidecar)

    def end_of_epoch(self, state: RunState, result: EpochResult, improved: bool) -> None:
        """metrics.jsonl's line, then `epoch-NNNN` (the last `keep` are kept), `best` when
        validation accuracy improved, and `last`, which `--resume` continues from."""
        sidecar = self.at(state, result.step)
        if self.writer:
            # Metrics first: a crash before the checkpoint leaves a line that resume drops.
            append_line(self.run_dir / "metrics.jsonl",
                        json.dumps(dataclasses.asdict(result)) + "\n")
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
        save_checkpoint(self.run_dir / f"{name}.params", net or self.net, self.updater,
                        sidecar, keep_previous, average,
                        [(self.run_dir / f"{n}.params", s) for n, s in copies])


def save_checkpoint(params_path: Path, net, updater, sidecar: Sidecar,
                    keep_previous: bool = False, average=None,
                    copies: Sequence[tuple[Path, Sidecar]] = ()) -> None:
    """Write `params_path`, its `.states` and its `.json` sidecar (with a weight `average`,
    `X.average` too), and the same weights as each of `copies`, (parameter path, sidecar)
    pairs: a run's `epoch-NNNN` and `best` beside its `last`.

    The data files are written and fsynced once, under temporary names, and hard-linked to
    each copy's; every checkpoint gets its own sidecar, fsynced. Then all are renamed into
    place, each checkpoint's sidecar after its files and `params_path`'s last, and the folder
    is synced once. With `keep_previous`, the checkpoint being replaced is first hard-linked
    to `previous.*`, so a crash between the renames still leaves one complete checkpoint.
    """
    files = [(params_path, lambda tmp: net.save_parameters(str(tmp))),
             (ckpt.states_path(params_path), updater.save)]
    if average is not None:
        files.append((ckpt.average_path(params_path), average.save))
    temporaries: list[Path] = []
    renames: list[tuple[Path, Path]] = []
    try:
        for path, write in files:
            temporaries.append(stage(path, write))
        written = list(temporaries)
        digests = [sha256_of(temporary) for temporary in written]
        for target, its_sidecar in [*copies, (params_path, sidecar)]:
            for temporary, (path, _) in zip(written, files, strict=True):
                named, source = target.with_suffix(path.suffix), temporary
                if target != params_path:
                    source = linked(temporary, named)
                    temporaries.append(source)
                renames.append((source, named))
            content = ckpt.signed(sealed(its_sidecar, target, digests, average,
                                              updater.sparsity).to_json())
            text = json.dumps(content, indent=2) + "\n"
            sidecar_file = ckpt.sidecar_path(target)
            temporary = stage(sidecar_file, lambda tmp, text=text: tmp.write_text(text))
            temporaries.append(temporary)
            renames.append((temporary, sidecar_file))
        if keep_previous and ckpt.sidecar_path(params_path).exists():
            keep_as_previous(params_path, [named for _, named in renames[-len(files) - 1:]])
        commit(renames)
    finally:
        for temporary in temporaries:
            temporary.unlink(missing_ok=True)


def sealed(sidecar: Sidecar, params_path: Path, digests: list[str], average,
           sparsity: dict[str, float]) -> Sidecar:
    """`sidecar` with the checksums of its checkpoint's files (in save_checkpoint's order), and
    the pruned fraction of each masked layer."""
    done = dataclasses.replace(sidecar, params_sha256=digests[0],
                               states_file=ckpt.states_path(params_path).name,
                               states_format=ckpt.STATES_FORMAT, states_sha256=digests[1],
                               sparsity=dict(sparsity))
    if average is not None:
        done = dataclasses.replace(done, average_count=average.count,
                                   average_sha256=digests[2])
    return done


def linked(temporary: Path, path: Path) -> Path:
    """A second temporary name for the written file `temporary`, to be renamed to `path`:
    a hard link, or a synced copy on a file system without them."""
    second = temporary_for(path)
    second.unlink(missing_ok=True)
    if not link_or_copy(temporary, second):
        sync(second)  # a copy is written anew
    return second


def keep_as_previous(params_path: Path, paths: list[Path]) -> None:
    """Hard-link (or copy) the checkpoint's files now under `paths` to `previous.*`."""
    previous = params_path.with_name(ckpt.PREVIOUS + params_path.suffix)
    for path in paths:
        backup = previous.with_suffix(path.suffix)
        backup.unlink(missing_ok=True)
        if path.exists():  # not an average that starts with this checkpoint
            link_or_copy(path, backup)
