#!/usr/bin/env python
"""Whether a checkpoint's explanations mean something, in figures, and the gallery picture.

    python scripts/explain_checks.py --data-root DIR CHECKPOINT [--images 300] [--json OUT]
    python scripts/explain_checks.py --data-root DIR CHECKPOINT --gallery docs/explanations.png

For the first `--images` MNIST test images, with each method of `Classifier.explain`:
- completeness: |sum of the map - (the target's logit on the image - on the blank image)|,
  relative to that gap: median and 95th percentile (integrated gradients only: the others make
  no such promise);
- faithfulness: blanking the top 5% of pixels by the map against blanking as many inked pixels
  at random: the share of images where the class's logit falls further, and the deletion
  curve's area (the mean logit after blanking 1, 2, 5, 10 and 20% of the pixels) for both;
- sanity (Adebayo et al. 2018): Spearman's rank correlation, over each image's inked pixels,
  between the maps of the trained network and of the same network with its weights drawn
  afresh: median.

Completeness and faithfulness use nothing but the public API (`mnist_gluon.load`,
`Classifier.explain`, `Classifier.logits`); the sanity check builds the re-initialised network
with `mnist_gluon.model`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

FRACTIONS = (0.01, 0.02, 0.05, 0.1, 0.2)
TOP = 0.05


def blanked(images: np.ndarray, order: np.ndarray, count: int) -> np.ndarray:
    """`images` (N x 784) with the first `count` pixels of each row of `order` set to 0."""
    out = images.copy()
    np.put_along_axis(out, order[:, :count], 0, axis=1)
    return out


def random_ink_order(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image's pixels in random order, its inked ones first."""
    keys = rng.random(images.shape) + (images == 0)
    return np.argsort(keys, axis=1)


def check(classifier, images: np.ndarray, method: str, seed: int = 0) -> dict:
    flat = images.reshape(len(images), -1).astype(np.float32)
    rows = np.arange(len(images))
    logits = classifier.logits(flat)
    targets = logits.argmax(axis=1)
    maps = classifier.explain(flat, method=method).reshape(len(images), -1)
    figures: dict = {}
    if method == "integrated_gradients":
        gaps = logits[rows, targets] - classifier.logits(np.zeros((28, 28)))[0, targets]
        errors = np.abs(maps.sum(axis=1) - gaps) / np.abs(gaps)
        figures["completeness"] = {"median": float(np.median(errors)),
                                   "p95": float(np.percentile(errors, 95)),
                                   "max": float(errors.max())}
    ranked = np.argsort(-maps, axis=1, kind="stable")
    chance = random_ink_order(flat, np.random.default_rng(seed))
    curves = {"ranked": [], "random": []}
    for fraction in FRACTIONS:
        count = round(fraction * flat.shape[1])
        for name, order in (("ranked", ranked), ("random", chance)):
            curves[name].append(classifier.logits(blanked(flat, order, count))[rows, targets])
    top = FRACTIONS.index(TOP)
    figures["faithfulness"] = {
        "top_5_percent_beats_random": float(np.mean(curves["ranked"][top]
                                                    < curves["random"][top])),
        "deletion_area_ranked": float(np.mean(curves["ranked"])),
        "deletion_area_random": float(np.mean(curves["random"])),
        "logit_before": float(np.mean(logits[rows, targets]))}
    return figures


def sanity(classifier, images: np.ndarray, method: str) -> float:
    """Median rank correlation between the maps of the trained and a re-initialised network."""
    from mnist_gluon.inference.classifier import Classifier
    from mnist_gluon.model import build_model, pixel_classifier
    from mnist_gluon.mxnet_compat import mx

    mx.random.seed(0)  # the same fresh weights each time
    net = build_model(classifier.architecture, classifier.context)
    fresh = Classifier(classifier.checkpoint, net, pixel_classifier(net, classifier.normalization))
    targets = classifier.logits(images).argmax(axis=1)
    pairs = zip(classifier.explain(images, method=method, target=targets),
                fresh.explain(images, method=method, target=targets), images, strict=True)
    correlations = []
    for learned, random, image in pairs:
        inked = image.reshape(-1) > 0
        ranks = [np.argsort(np.argsort(m.reshape(-1)[inked])) for m in (learned, random)]
        correlations.append(np.corrcoef(*ranks)[0, 1])
    return float(np.median(correlations))


def gallery(classifier, images: np.ndarray, labels: np.ndarray, path: Path) -> None:
    """Five digits and two mistakes: each image, then its maps by the three methods; a mistake
    also with the map of its true class."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from mnist_gluon.explain import METHODS
    from mnist_gluon.explain.heatmap import overlay

    predicted = classifier.predict(images).labels
    right = [i for i in range(len(images)) if predicted[i] == labels[i]]
    wrong = [i for i in range(len(images)) if predicted[i] != labels[i]]
    picked = right[:5] + wrong[:2]
    figure = Figure(figsize=(10, 1.75 * len(picked)), dpi=100)
    FigureCanvasAgg(figure)
    columns = 5
    for row, index in enumerate(picked):
        image = images[index]
        panels = [("image", None, None)] + [(m.replace("_", " "), m, predicted[index])
                                            for m in METHODS]
        if index in wrong:
            panels.append((f"true class {labels[index]}", METHODS[0], labels[index]))
        for column, (title, method, target) in enumerate(panels):
            axes = figure.add_subplot(len(picked), columns, row * columns + column + 1)
            if method is None:
                axes.imshow(image, cmap="gray_r")
                title = f"predicted {predicted[index]}" + (
                    f" (true {labels[index]})" if index in wrong else "")
            else:
                axes.imshow(overlay(image, classifier.explain(image, method=method,
                                                              target=int(target))[0]))
            axes.set_title(title, fontsize=9)
            axes.axis("off")
    figure.suptitle("red: the pixel's ink raised the class's logit; blue: it lowered it",
                    fontsize=10)
    figure.tight_layout()
    figure.savefig(path, format="png")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint")
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--gallery", type=Path, help="draw the gallery here instead")
    args = parser.parse_args()

    import mnist_gluon
    from mnist_gluon.data import DATASETS, read_split
    from mnist_gluon.explain import METHODS

    test = read_split(DATASETS["mnist"], "test", args.data_root, download=False)
    classifier = mnist_gluon.load(args.checkpoint, "cpu")
    if args.gallery:
        gallery(classifier, test.images[:300], test.labels[:300], args.gallery)
        return 0
    images = test.images[: args.images]
    figures = {"checkpoint": args.checkpoint, "images": len(images),
               "model": classifier.architecture.describe(),
               **{method: {**check(classifier, images, method),
                           "sanity_rank_correlation": sanity(classifier, images, method)}
                  for method in METHODS}}
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
