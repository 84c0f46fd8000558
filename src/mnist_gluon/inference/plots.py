"""mnist-eval's pictures: the confusion matrix and the most confidently wrong test images
(a run's curves.png is training.curves').

matplotlib is the optional `plot` extra. Without it nothing fails: `missing()` gives the line
that says how to install it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..files import atomic_write


def missing() -> str | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        from ..errors import install_command

        return f"pictures need matplotlib: {install_command('plot')}"
    return None


def _figure(width: float, height: float):
    """A figure drawn off-screen by Agg, outside pyplot: nothing to close, no display."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _save(figure, path: Path) -> None:
    atomic_write(path, lambda temporary: figure.savefig(temporary, format="png"))


def plot_confusion(matrix: np.ndarray, classes: list[str], path: Path) -> None:
    """Rows are true classes, columns predicted: 700 x 600 pixels."""
    figure = _figure(7, 6)
    axes = figure.add_subplot(1, 1, 1)
    shown = axes.imshow(np.log1p(matrix), cmap="Blues")
    for (row, col), count in np.ndenumerate(matrix):
        if count:
            axes.text(col, row, str(count), ha="center", va="center", fontsize=7,
                      color="white" if row == col else "black")
    axes.set_xticks(range(len(classes)), classes, rotation=45 if len(classes[0]) > 2 else 0)
    axes.set_yticks(range(len(classes)), classes)
    axes.set_xlabel("predicted")
    axes.set_ylabel("true")
    axes.set_title(f"confusion matrix ({int(matrix.sum())} test images)")
    figure.colorbar(shown, ax=axes, label="log(1 + count)")
    figure.tight_layout()
    _save(figure, path)


def worst_mistakes(labels: np.ndarray, probabilities: np.ndarray, count: int) -> np.ndarray:
    """The indices of the `count` wrong predictions made with the most confidence."""
    predicted = probabilities.argmax(axis=1)
    wrong = np.flatnonzero(predicted != labels)
    return wrong[np.argsort(-probabilities[wrong, predicted[wrong]], kind="stable")][:count]


def plot_mistakes(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                  classes: list[str], path: Path, count: int = 25) -> int:
    """The `count` wrong predictions made with the most confidence, in a 5-wide grid:
    800 x 880 pixels. Returns how many were drawn."""
    predicted = probabilities.argmax(axis=1)
    worst = worst_mistakes(labels, probabilities, count)
    figure = _figure(8, 8.8)
    for slot, index in enumerate(worst):
        axes = figure.add_subplot(5, 5, slot + 1)
        axes.imshow(images[index].reshape(28, 28), cmap="gray")
        axes.set_title(f"{classes[predicted[index]]} {probabilities[index, predicted[index]]:.2f}"
                       f" (true {classes[labels[index]]})", fontsize=8)
        axes.axis("off")
    figure.suptitle("most confident mistakes: predicted, probability (true)")
    figure.tight_layout()
    _save(figure, path)
    return len(worst)


def plot_explained_mistakes(images: np.ndarray, labels: np.ndarray, probabilities: np.ndarray,
                            explain, classes: list[str], path: Path, count: int = 8) -> int:
    """The `count` most confident mistakes, each as two maps side by side: what raised the
    predicted class's logit and what raised the true class's (red raised, blue lowered).
    `explain(images, target=classes)` gives the maps (`Classifier.explain`). 4 mistakes a row
    pair: 960 x 1000 pixels. Returns how many were drawn."""
    from ..explain.heatmap import overlay

    predicted = probabilities.argmax(axis=1)
    worst = worst_mistakes(labels, probabilities, count)
    if len(worst):
        shown = images[worst].reshape(len(worst), -1)
        for_predicted = explain(shown, target=predicted[worst])
        for_true = explain(shown, target=labels[worst])
    figure = _figure(9.6, 10)
    for slot, index in enumerate(worst):
        for side, (maps, target, why) in enumerate([(for_predicted, predicted[index], "predicted"),
                                                    (for_true, labels[index], "true")]):
            axes = figure.add_subplot(4, 4, 2 * slot + side + 1)
            axes.imshow(overlay(images[index], maps[slot]))
            axes.set_title(f"{why} {classes[target]} ({probabilities[index, target]:.2f})",
                           fontsize=9)
            axes.axis("off")
    figure.suptitle("most confident mistakes: what raised the predicted class (left) and the "
                    "true class (right)\nred: the pixel raised the class's logit, blue: lowered it")
    figure.tight_layout()
    _save(figure, path)
    return len(worst)
