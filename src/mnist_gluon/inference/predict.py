"""Predictions for images with a checkpoint: the top-k classes and their probabilities."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .classifier import Classifier
from .images import Input


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
        return {**out, **answer_dict(self.top_k)}


def answer_dict(best: list[tuple[int, float]]) -> dict:
    """{"label", "top_k": [{"label", "probability"}]} for classes ranked best first: the form
    of `mnist-predict --json` and of mnist-serve's answers."""
    return {"label": best[0][0],
            "top_k": [{"label": label, "probability": p} for label, p in best]}


def ranked(row: np.ndarray, top_k: int) -> list[tuple[int, float]]:
    """The `top_k` most probable classes, best first; ties keep class order."""
    return [(int(i), float(row[i])) for i in np.argsort(-row, kind="stable")[:top_k]]


def predict(classifier: Classifier, inputs: list[Input], top_k: int = 3) -> list[Prediction]:
    """Each input's `top_k` classes, as mnist-predict prints them."""
    if not inputs:
        return []
    rows = classifier.probabilities(np.stack([item.pixels for item in inputs]))
    out = []
    for item, row in zip(inputs, rows, strict=True):
        best = ranked(row, top_k)
        out.append(Prediction(item.path, item.index, best[0][0], best))
    return out
