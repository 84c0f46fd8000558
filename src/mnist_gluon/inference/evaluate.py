"""Evaluate a checkpoint on a dataset's test split."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..data import DATASETS, PIXELS, Normalization
from ..metrics import Report, classification_report
from ..model import predict_logits
from ..mxnet_compat import mx
from .classifier import checkpoint_split, load_classifier


@dataclass
class Evaluation:
    checkpoint: Path
    dataset: str
    class_names: tuple[str, ...]
    report: Report
    images: np.ndarray  # the test images, uint8 N x 28 x 28
    labels: np.ndarray
    logits: np.ndarray


def evaluate_checkpoint(params_path: str | Path, data_root: str | None = None,
                        device: str = "auto", dataset: str | None = None,
                        bare_normalization: Normalization | None = None,
                        download: bool = True) -> Evaluation:
    """Rebuild the model from the checkpoint alone and score it on the test split."""
    classifier, checkpoint = load_classifier(params_path, device, bare_normalization)
    name = dataset or checkpoint.dataset
    test = checkpoint_split(checkpoint, "test", data_root, name, download)
    ctx = classifier.net.fc1.weight.list_ctx()[0]
    pixels = mx.nd.array(test.images.reshape(len(test.images), PIXELS), ctx=ctx, dtype="uint8")
    logits = predict_logits(classifier, pixels)
    return Evaluation(Path(params_path), name, DATASETS[name].class_names,
                      classification_report(logits, test.labels), test.images, test.labels,
                      logits)
