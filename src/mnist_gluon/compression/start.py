"""The weights a pruned run starts from (train.prune.start_from): a checkpoint of the same
model, read as a run of this config would see it."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from .. import checkpoint as ckpt
from ..checkpoint import CheckpointRecord
from ..config import Config
from ..data import Normalization
from ..errors import ConfigError
from ..files import sha256_of
from ..model import architecture_of, fold_input


def read_start(config: Config, normalization: Normalization
               ) -> tuple[dict[str, np.ndarray], CheckpointRecord] | None:
    """The weights train.prune.start_from names, for images normalised by `normalization`,
    and what they were; None when it is not set. The checkpoint must be of the run's model and
    dataset, and must have held out the same validation images: otherwise the run would be
    validated on images its starting weights were trained on."""
    name = config.train.prune.start_from
    if name is None:
        return None
    path, key = Path(name), "train.prune.start_from"
    if path.is_dir() and (path / "best.params").is_file():
        path = path / "best.params"
    start = ckpt.read_named(key, path, "train the dense model first (e.g. mnist-train --config "
                            "best)", "runs/best/best.params")
    sidecar, wanted = start.sidecar, architecture_of(config.model)
    if sidecar.config is None:
        raise ConfigError(f"{key}={name} records no config, so not the validation images it "
                          "held out; pass a checkpoint this mnist-gluon wrote")
    if replace(start.architecture, dropout=wanted.dropout) != wanted:
        raise ConfigError(f"{key}={name} holds {start.architecture.describe()}, this run trains "
                          f"{wanted.describe()}; pass a checkpoint of the same model")
    theirs = (sidecar.dataset, sidecar.config.seed, sidecar.config.data.val_size)
    ours = (config.data.name, config.seed, config.data.val_size)
    if theirs != ours:
        raise ConfigError(f"{key}={name} was trained on {theirs[0]} holding out the validation "
                          f"images of seed {theirs[1]}, val_size {theirs[2]}; this run has "
                          f"{ours[0]}, seed {ours[1]}, val_size {ours[2]}: set the same, or it "
                          "would validate on images its start was trained on")
    old = start.normalization
    arrays = fold_input(start.arrays, start.architecture, normalization.std / old.std,
                        (old.mean - normalization.mean) / old.std)
    return arrays, CheckpointRecord(str(path.resolve()), sha256_of(path))
