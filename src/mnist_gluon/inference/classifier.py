"""A checkpoint put to use: the classifier it makes (on raw pixels) and the data it was
trained on, found the way its run found it. Evaluation, prediction, export, quantization and
the server all start here, so they treat a checkpoint and `--normalize` alike."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import Checkpoint, load_network, read_checkpoint
from ..config import DataConfig
from ..data import DATASETS, Normalization, Split, read_split
from ..device import resolve_contexts
from ..errors import ConfigError
from ..model import PixelClassifier, pixel_classifier


def load_classifier(params_path: str | Path, device: str = "cpu",
                    bare_normalization: Normalization | None = None
                    ) -> tuple[PixelClassifier, Checkpoint]:
    """(classifier taking raw 0-255 pixels, the checkpoint it came from). A normalisation is
    given only for a bare .params file: a sidecar records its own."""
    checkpoint = read_checkpoint(params_path, bare_normalization)
    if bare_normalization is not None and checkpoint.sidecar is not None:
        raise ConfigError(f"--normalize is for bare .params files; {params_path} has a sidecar "
                          "that records its normalisation: drop --normalize")
    ctx = resolve_contexts(device)[0]
    return pixel_classifier(load_network(checkpoint, ctx), checkpoint.normalization), checkpoint


def checkpoint_split(checkpoint: Checkpoint, split: str, data_root: str | None = None,
                     dataset: str | None = None, download: bool = True) -> Split:
    """The `train` or `test` split of the checkpoint's dataset (or of `dataset`), from its
    run's data root, mirrors and checksum rule unless `data_root` says where. Another dataset
    than the run's is found where that dataset is by default: the run's folder holds its own."""
    sidecar = checkpoint.sidecar
    own = dataset is None or dataset == checkpoint.dataset
    data = (sidecar.config.data if own and sidecar is not None and sidecar.config
            else DataConfig())
    return read_split(DATASETS[dataset or checkpoint.dataset], split,
                      root=data_root if data_root is not None else data.root,
                      download=download and data.download, verify=data.verify,
                      mirrors=data.mirrors, classes=checkpoint.architecture.classes)
