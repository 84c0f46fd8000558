"""Which checkpoint a resumed run continues from, and what may not change when it does."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from .. import checkpoint as ckpt
from ..checkpoint import EpochResult, Sidecar
from ..config import Config, setting
from ..errors import CheckpointError, ConfigError
from ..files import atomic_write_text, sha256_of
from ..reading import read_regular

# Changing these on resume would make the run another run: other examples held out, another
# model, other batches.
# And the optimizer: its saved state means something else to another (SGD's momentum holds
# lr-scaled steps, NAG's the gradients), so a switch would continue from a wrong state.
FIXED_ON_RESUME = ("seed", "data.name", "data.val_size", "model.kind", "model.hidden",
                   "model.activation", "model.classes", "model.dropout", "model.channels",
                   "train.batch_size", "train.optimizer", "train.distill.teacher",
                   "train.distill.temperature", "train.distill.weight",
                   "train.distill.soft_targets", "train.pretrain.images", "train.pretrain.epochs",
                   "train.pretrain.fonts")


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
    checkpoint = max(usable, key=lambda c: c.sidecar.step)  # the first of equals: last
    for key in FIXED_ON_RESUME:
        before, now = setting(checkpoint.sidecar.config, key), setting(config, key)
        if before != now:
            raise ConfigError(f"{key} was {before!r} in the run being resumed, now {now!r}; "
                              "it cannot change on --resume: start a new run with --out DIR")
    return checkpoint


def resumable_checkpoint(params_path: Path) -> ckpt.Checkpoint:
    checkpoint = ckpt.read_checkpoint(params_path)
    states = ckpt.states_path(params_path)
    sidecar = checkpoint.sidecar
    if sidecar is None:
        raise CheckpointError(f"{params_path} has no sidecar {params_path.stem}.json, so the run "
                              "cannot be resumed; start a new run")
    if sidecar.states_format != ckpt.STATES_FORMAT or sidecar.config is None:
        raise CheckpointError(f"{params_path} was written by an earlier mnist-gluon whose "
                              "optimizer state this version cannot continue; start a new run "
                              "(its parameters still evaluate with mnist-eval)")
    if not states.exists() or sha256_of(states) != sidecar.states_sha256:
        raise CheckpointError(f"{states} is missing or does not match {params_path.name}'s "
                              "sidecar; the run cannot resume exactly from it")
    average = ckpt.average_path(params_path)
    if sidecar.average_sha256 is not None and (
            not average.exists() or sha256_of(average) != sidecar.average_sha256):
        raise CheckpointError(f"{average} is missing or does not match {params_path.name}'s "
                              "sidecar; the run cannot resume its weight average exactly")
    return checkpoint


def saved_at(params_path: Path, sidecar: Sidecar) -> str:
    """A checkpoint as the run's messages name it: its file and how far the run had got."""
    at = (f"epoch {sidecar.in_epoch.epoch}, step {sidecar.step}" if sidecar.in_epoch
          else f"end of epoch {sidecar.epoch}")
    return f"{params_path} ({at})"


MAX_METRICS_BYTES = 64 << 20  # a line per epoch, a few hundred bytes each


def history_until(path: Path, last_epoch: int) -> list[EpochResult]:
    """metrics.jsonl's results up to `last_epoch`, with any later lines (a crash may have
    left some) removed from the file. Keys this version does not know (a newer version's
    metric) are kept in the file and left out of the results."""
    if not path.exists():
        return []
    raw = read_regular(path, MAX_METRICS_BYTES, CheckpointError, "metrics file")
    kept, lines = [], []
    known = {f.name for f in dataclasses.fields(EpochResult)}
    for number, line in enumerate(raw.decode(errors="replace").splitlines(), start=1):
        try:
            row = json.loads(line)
        except (json.JSONDecodeError, RecursionError):
            continue  # a line a crash cut short
        if not isinstance(row, dict) or not isinstance(row.get("epoch"), int):
            raise CheckpointError(f"{path} line {number} is not an epoch's metrics; restore "
                                  "the file, or move it away to resume without the history")
        if row["epoch"] <= last_epoch:
            ours = {key: value for key, value in row.items() if key in known}
            kept.append(ckpt.typed(EpochResult, ours, f"{path} line {number}", ""))
            lines.append(line + "\n")
    atomic_write_text(path, "".join(lines))
    return kept
