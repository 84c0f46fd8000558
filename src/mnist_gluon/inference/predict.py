"""Predictions for images with a checkpoint: the top-k classes and their probabilities."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .classifier import Classifier
from .images import Input


@dataclass
class Prediction:
    path: str
    index: int | None
    label: int
    top_k: list[tuple[int, float]]
    explanation: Path | None = None  # the heatmap mnist-predict --explain wrote

    def to_dict(self) -> dict:
        out = {"path": self.path}
        if self.index is not None:
            out["index"] = self.index
        out.update(answer_dict(self.top_k))
        if self.explanation is not None:
            out["explanation"] = str(self.explanation)
        return out


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


def explain_predictions(classifier: Classifier, inputs: list[Input],
                        predictions: list[Prediction], folder: Path, method: str,
                        taken: set[str]) -> None:
    """Write a heatmap of each input's predicted class into `folder`, named after the input
    (`digit.explained.png`, `t10k-images-idx3-ubyte-12.explained.png`) and never twice the same
    name in one run (`taken`); each prediction then names its file."""
    from ..explain.heatmap import write_heatmap

    if not inputs:
        return
    pixels = np.stack([item.pixels for item in inputs])
    maps = classifier.attributor.explain(pixels, method).maps
    for item, prediction, attribution in zip(inputs, predictions, maps, strict=True):
        stem = Path(item.path).name.split(".")[0] or "image"
        stem += f"-{item.index}" if item.index is not None else ""
        name, copy = stem, 1
        while name in taken:
            copy += 1
            name = f"{stem}-{copy}"
        taken.add(name)
        prediction.explanation = folder / f"{name}.explained.png"
        label, probability = prediction.top_k[0]
        write_heatmap(prediction.explanation, item.pixels.reshape(attribution.shape),
                      attribution, f"predicted {label} ({probability:.2f}); {method}")
