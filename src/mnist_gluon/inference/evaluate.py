"""`evaluate`: a checkpoint scored on a dataset's test split, as mnist-eval reports it."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..checkpoint import PrivacyRecord
from ..data import DATASETS, PIXELS, Normalization
from ..errors import ConfigError
from ..files import writable_folder
from ..metrics import ClassScores, Scores, classification_report, format_report, softmax
from ..reading import shown
from .classifier import Classifier, checkpoint_split, load
from .plots import missing, plot_confusion, plot_explained_mistakes, plot_mistakes


@dataclass
class Report:
    """A checkpoint on a test set: `scores` (accuracy, loss, per-class precision, recall and
    F1, the confusion matrix), and the images, labels and logits they come from.
    `to_dict()` is `mnist-eval --json`; `str()` is mnist-eval's tables."""

    checkpoint: Path
    dataset: str
    class_names: tuple[str, ...]
    scores: Scores
    images: np.ndarray  # the test images, uint8 N x 28 x 28
    labels: np.ndarray
    logits: np.ndarray
    trained_on: str | None = None  # the checkpoint's dataset, from its sidecar (None: bare)
    privacy: PrivacyRecord | None = None  # what a private run spent, from its sidecar
    classifier: Classifier | None = field(default=None, repr=False, compare=False)

    @property
    def foreign(self) -> bool:
        """Whether the test set is of another dataset than the one the model learned."""
        return self.trained_on is not None and self.trained_on != self.dataset

    @property
    def accuracy(self) -> float:
        return self.scores.accuracy

    @property
    def per_class(self) -> list[ClassScores]:
        return self.scores.per_class

    @property
    def confusion(self) -> np.ndarray:
        """Counts: a row per true class, a column per predicted class."""
        return self.scores.confusion

    def to_dict(self) -> dict:
        privacy = dataclasses.asdict(self.privacy) if self.privacy is not None else None
        return {"checkpoint": str(self.checkpoint), "dataset": self.dataset,
                "trained_on": self.trained_on, "privacy": privacy, **self.scores.to_dict()}

    def __str__(self) -> str:
        title = f"{self.checkpoint} on the {self.dataset} test set"
        if (spent := self.privacy) is not None:
            title += (f"\ntrained with differential privacy: epsilon {spent.epsilon:.3f} at delta "
                      f"{spent.delta:g} ({spent.accountant.upper()} accountant, {spent.steps} "
                      f"DP-SGD steps, noise multiplier {spent.noise_multiplier:g})")
        return format_report(self.scores, title)

    def plot(self, folder: str | Path) -> tuple[Path, ...]:
        """Write confusion.png, mistakes.png (the most confidently wrong test images) and
        mistakes-explained.png (their integrated-gradients maps for the predicted and the true
        class) into `folder`; needs matplotlib (the plot extra). Returns the paths written."""
        from ..errors import OutputError

        if (note := missing()) is not None:
            raise OutputError(f"no pictures written; {note}")
        folder = writable_folder(Path(folder), "--plot folder")
        confusion, mistakes = folder / "confusion.png", folder / "mistakes.png"
        plot_confusion(self.confusion, list(self.class_names), confusion)
        probabilities = softmax(self.logits)
        plot_mistakes(self.images, self.labels, probabilities, list(self.class_names), mistakes)
        if self.classifier is None:
            return confusion, mistakes
        explained = folder / "mistakes-explained.png"
        plot_explained_mistakes(self.images, self.labels, probabilities, self.classifier.explain,
                                list(self.class_names), explained)
        return confusion, mistakes, explained


def evaluate(checkpoint: str | Path, dataset: str | None = None, *, data_root: str | None = None,
             device: str = "auto", normalization: Normalization | tuple[float, float] | None = None,
             download: bool = True) -> Report:
    """Score a checkpoint on the test split of the dataset it was trained on (or `dataset`:
    mnist or fashion-mnist), rebuilt from the checkpoint alone: what mnist-eval reports.
    `data_root` is where the dataset's IDX files are (default: where the run found them);
    `normalization` is for a bare .params file, as in `load`."""
    if dataset is not None and dataset not in DATASETS:
        raise ConfigError(f"--dataset {shown(dataset)} is not a dataset mnist-gluon knows; "
                          f"choose one of {', '.join(DATASETS)}")
    classifier = load(checkpoint, device, normalization)
    from ..model import predict_logits
    from ..mxnet_compat import mx

    name = dataset or classifier.checkpoint.dataset
    test = checkpoint_split(classifier.checkpoint, "test", data_root, name, download)
    pixels = mx.nd.array(test.images.reshape(len(test.images), PIXELS), ctx=classifier.context,
                         dtype="uint8")
    logits = predict_logits(classifier.pixel_net, pixels)
    read = classifier.checkpoint
    return Report(Path(checkpoint), name, DATASETS[name].class_names,
                  classification_report(logits, test.labels), test.images, test.labels, logits,
                  read.dataset if read.sidecar is not None or read.exported else None,
                  read.sidecar.privacy if read.sidecar is not None else None, classifier)
