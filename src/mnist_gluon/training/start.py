"""Where a run's weights start: a resumed run's checkpoint, the checkpoint
train.prune.start_from names, training on rendered digits (train.pretrain), or initialisation."""

from __future__ import annotations

from typing import NamedTuple

from .. import checkpoint as ckpt
from ..compression.start import read_start
from ..config import Config
from ..model import architecture_of
from ..pretraining.pretrain import pretrain
from .data import TrainingData


class Start(NamedTuple):
    """The weights a run continues or starts from (None: initialised), and where from."""

    arrays: dict | None
    started_from: ckpt.CheckpointRecord | None = None  # train.prune.start_from
    pretrained: ckpt.PretrainRecord | None = None  # train.pretrain


def starting_weights(config: Config, data: TrainingData, resumed: ckpt.Checkpoint | None,
                     ctx) -> Start:
    """A resumed run's weights; else train.prune.start_from's, or train.pretrain's on `ctx`."""
    if resumed is not None:
        return Start(resumed.arrays, resumed.sidecar.started_from, resumed.sidecar.pretrained)
    if (start := read_start(config, data.normalization)) is not None:
        return Start(*start)
    if config.train.pretrain.images is not None:
        arrays, record = pretrain(architecture_of(config.model), data.normalization, ctx,
                                  config.train.pretrain, config.seed)
        return Start(arrays, pretrained=record)
    return Start(None)
