"""Predictions for images with a checkpoint: the top-k classes and their probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .checkpoint import Checkpoint, load_network, read_checkpoint
from .data import Normalization
from .device import resolve_contexts
from .images import Input
from .metrics import softmax


@dataclass
class Prediction:
    path: str
    index: int | None
    label: int
    top_k: list[tuple[int, float]]

    def to_dict(self) -> dict:
        out = {"path": self.path}
        if self.index is not None:
            out["index"] = self.index
        out["label"] = self.label
        out["top_k"] = [{"label": label, "probability": p} for label, p in self.top_k]
        return out


def load_classifier(params_path: str | Path, device: str = "cpu",
                    bare_normalization: Normalization | None = None):
    """(classifier taking raw 0-255 pixels, the checkpoint it came from)."""
    from .model import pixel_classifier

    checkpoint: Checkpoint = read_checkpoint(params_path, bare_normalization)
    ctx = resolve_contexts(device)[0]
    return pixel_classifier(load_network(checkpoint, ctx), checkpoint.normalization), checkpoint


def predict(classifier, inputs: list[Input], top_k: int = 3) -> list[Prediction]:
    import mxnet as mx

    if not inputs:
        return []
    ctx = classifier.net.fc1.weight.list_ctx()[0]
    pixels = mx.nd.array(np.stack([item.pixels for item in inputs]), ctx=ctx)
    probabilities = softmax(classifier(pixels).asnumpy())
    out = []
    for item, row in zip(inputs, probabilities, strict=True):
        best = np.argsort(-row, kind="stable")[:top_k]
        out.append(Prediction(item.path, item.index, int(best[0]),
                              [(int(i), float(row[i])) for i in best]))
    return out
