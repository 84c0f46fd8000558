"""Evaluate a checkpoint on a dataset's test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import load_network, read_checkpoint
from .data import DATASETS, PIXELS, Normalization, read_split
from .device import resolve_contexts
from .errors import ConfigError
from .metrics import Report, classification_report
from .model import pixel_classifier
from .mxnet_compat import mx
from .train import predict_logits


@dataclass
class Evaluation:
    checkpoint: Path
    dataset: str
    report: Report
    images: np.ndarray  # the test images, uint8 N x 28 x 28
    labels: np.ndarray
    logits: np.ndarray


def evaluate_checkpoint(params_path: str | Path, data_root: str | None = None,
                        device: str = "auto", dataset: str | None = None,
                        bare_normalization: Normalization | None = None,
                        download: bool = True) -> Evaluation:
    """Rebuild the model from the checkpoint alone and score it on the test split."""
    checkpoint = read_checkpoint(params_path, bare_normalization)
    if bare_normalization is not None and checkpoint.meta:
        raise ConfigError(f"--normalize is for bare .params files; {params_path} has a sidecar "
                          "that records its normalisation: drop --normalize")
    data_config = checkpoint.meta.get("config", {}).get("data", {})
    name = dataset or checkpoint.dataset
    test = read_split(
        DATASETS[name], "test",
        root=data_root if data_root is not None else data_config.get("root"),
        download=download and data_config.get("download", True),
        verify=data_config.get("verify", True),
        mirrors=data_config.get("mirrors"),
        classes=checkpoint.architecture.classes,
    )
    ctx = resolve_contexts(device)[0]
    classifier = pixel_classifier(load_network(checkpoint, ctx), checkpoint.normalization)
    pixels = mx.nd.array(test.images.reshape(len(test.images), PIXELS), ctx=ctx, dtype="uint8")
    logits = predict_logits(classifier, pixels)
    return Evaluation(Path(params_path), name, classification_report(logits, test.labels),
                      test.images, test.labels, logits)
