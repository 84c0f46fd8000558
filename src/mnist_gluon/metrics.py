"""Classification metrics in plain numpy: accuracy, loss, confusion matrix, per-class scores."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """Row = true class, column = predicted class, as counts."""
    labels = np.asarray(labels, dtype=np.int64)
    predictions = np.asarray(predictions, dtype=np.int64)
    return np.bincount(labels * classes + predictions, minlength=classes * classes).reshape(
        classes, classes
    )


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """Log class probabilities from logits, row by row, computed stably in float64."""
    shifted = np.asarray(logits, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # infinite logits give nan, which the caller judges
        shifted = shifted - shifted.max(axis=1, keepdims=True)
        return shifted - np.log(np.exp(shifted).sum(axis=1, keepdims=True))


def softmax(logits: np.ndarray) -> np.ndarray:
    return np.exp(log_softmax(logits))


def softmax_cross_entropy(logits: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log-likelihood of `labels` under softmax(`logits`)."""
    picked = log_softmax(logits)[np.arange(len(labels)), np.asarray(labels, dtype=np.int64)]
    return float(-np.mean(picked))


@dataclass
class ClassScores:
    precision: float
    recall: float
    f1: float
    support: int


@dataclass
class Scores:
    """A classifier's figures on a labelled set."""

    accuracy: float
    loss: float
    per_class: list[ClassScores]
    macro_precision: float
    macro_recall: float
    macro_f1: float
    confusion: np.ndarray

    def to_dict(self) -> dict:
        return {
            "accuracy": self.accuracy,
            "loss": self.loss,
            "examples": int(self.confusion.sum()),
            "macro": {
                "precision": self.macro_precision,
                "recall": self.macro_recall,
                "f1": self.macro_f1,
            },
            "per_class": [
                {"class": i, "precision": s.precision, "recall": s.recall, "f1": s.f1,
                 "support": s.support}
                for i, s in enumerate(self.per_class)
            ],
            "confusion_matrix": self.confusion.tolist(),
        }


def scores_from_confusion(confusion: np.ndarray) -> list[ClassScores]:
    """Per-class precision, recall and F1; a score whose denominator is 0 is 0."""
    true_positives = np.diag(confusion).astype(np.float64)
    predicted = confusion.sum(axis=0)
    actual = confusion.sum(axis=1)
    precision = np.divide(true_positives, predicted, out=np.zeros_like(true_positives),
                          where=predicted > 0)
    recall = np.divide(true_positives, actual, out=np.zeros_like(true_positives),
                       where=actual > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(both), where=both > 0)
    return [
        ClassScores(float(p), float(r), float(f), int(n))
        for p, r, f, n in zip(precision, recall, f1, actual, strict=True)
    ]


def classification_report(logits: np.ndarray, labels: np.ndarray) -> Scores:
    classes = logits.shape[1]
    predictions = logits.argmax(axis=1)
    confusion = confusion_matrix(labels, predictions, classes)
    per_class = scores_from_confusion(confusion)
    return Scores(
        accuracy=float(np.mean(predictions == labels)),
        loss=softmax_cross_entropy(logits, labels),
        per_class=per_class,
        macro_precision=float(np.mean([s.precision for s in per_class])),
        macro_recall=float(np.mean([s.recall for s in per_class])),
        macro_f1=float(np.mean([s.f1 for s in per_class])),
        confusion=confusion,
    )


def format_report(report: Scores, title: str = "") -> str:
    """The report as a human-readable table."""
    lines = []
    if title:
        lines.append(title)
    lines.append(f"accuracy {report.accuracy:.4f}  loss {report.loss:.4f}  "
                 f"({int(report.confusion.sum())} examples)")
    lines.append("")
    lines.append(f"{'class':>5} {'precision':>9} {'recall':>9} {'f1':>9} {'support':>8}")
    for i, s in enumerate(report.per_class):
        lines.append(f"{i:>5} {s.precision:>9.4f} {s.recall:>9.4f} {s.f1:>9.4f} {s.support:>8}")
    lines.append(f"{'macro':>5} {report.macro_precision:>9.4f} {report.macro_recall:>9.4f} "
                 f"{report.macro_f1:>9.4f} {int(report.confusion.sum()):>8}")
    lines.append("")
    lines.append("confusion matrix (rows: true class, columns: predicted class)")
    width = max(5, len(str(int(report.confusion.max()))) + 1)
    lines.append(" " * 5 + "".join(f"{j:>{width}}" for j in range(report.confusion.shape[1])))
    for i, row in enumerate(report.confusion):
        lines.append(f"{i:>5}" + "".join(f"{int(v):>{width}}" for v in row))
    return "\n".join(lines)
