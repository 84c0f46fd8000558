"""A checkpoint put to use: `load` makes it a `Classifier` of raw pixels, and `checkpoint_split`
finds the data it was trained on the way its run found it. Evaluation, prediction, export,
quantization and the server all start here, so they treat a checkpoint and `--normalize`
alike."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from .. import engine
from ..config import DataConfig
from ..data import DATASETS, PIXELS, Normalization, Split, read_split
from ..errors import ConfigError
from ..metrics import softmax
from ..reading import float32_number, shown
from .images import inputs_of
from .sources import checkpoint_file

if TYPE_CHECKING:  # these import MXNet, which `load` imports only once the engine is chosen
    from ..checkpoint import Checkpoint
    from ..explain.attribution import Attributor
    from ..model import MLP, Architecture, PixelClassifier


class Predictions(NamedTuple):
    """What `Classifier.predict` answers, one row per image."""

    labels: np.ndarray  # int64, N
    probabilities: np.ndarray  # float64, N x classes


class Classifier:
    """A checkpoint loaded for prediction, as `load` returns it.

    `net` is the Gluon block as trained: it takes normalised images, N x 784 float32 (see
    `normalization`). `pixel_net` takes raw pixels instead (0-255, N x 784, any dtype), with
    the normalisation folded into its first layer: what `predict`, mnist-eval, mnist-predict,
    mnist-serve and mnist-export run.
    """

    def __init__(self, checkpoint: Checkpoint, net: MLP, pixel_net: PixelClassifier):
        self.checkpoint, self.net, self.pixel_net = checkpoint, net, pixel_net
        self._attributor: Attributor | None = None

    @property
    def architecture(self) -> Architecture:
        return self.checkpoint.architecture

    @property
    def normalization(self) -> Normalization:
        return self.checkpoint.normalization

    @property
    def context(self):
        """The MXNet context the networks are on."""
        return self.pixel_net.net.fc1.weight.list_ctx()[0]

    def predict(self, images: Any) -> Predictions:
        """Labels and class probabilities for `images`: a numpy array (N x 28 x 28, N x 784,
        or one 28 x 28 image; uint8 or float, 0-255 or 0-1), a PIL image, a path (an image
        file, a .npy, an IDX file, or a folder of them), or a list of these. Photos and
        drawings are made to look like MNIST first, as mnist-predict does. What cannot be
        read as images raises DataError."""
        pixels = pixels_of(images)
        if not len(pixels):
            return Predictions(np.zeros(0, np.int64),
                               np.zeros((0, self.architecture.classes), np.float64))
        rows = self.probabilities(pixels)
        return Predictions(rows.argmax(axis=1), rows)

    def logits(self, images: Any) -> np.ndarray:
        """The network's logits (N x classes, float32) for `images`, taken as `predict` takes
        them: what `explain`'s maps are attributions of."""
        return self.attributor.logits(pixels_of(images, blank_ok=True))

    def explain(self, images: Any, method: str = "integrated_gradients",
                target: Any = None) -> np.ndarray:
        """One 28 x 28 map per image (float32, N x 28 x 28) attributing a class's logit to the
        raw pixels (0-255) of `images`, taken as `predict` takes them. `target` is the class:
        None for each image's predicted class, one class for all, or one per image.

        A blank image is allowed here, unlike in `predict`: it is the baseline, and
        `logits(np.zeros((28, 28)))` is the logit the maps are measured from.

        `method`: integrated_gradients (from the blank image, so each map sums to the logit's
        difference between the image and the blank; exact for a ReLU MLP), gradient_x_input,
        or smoothgrad (the gradient averaged over noisy copies, times the image). Positive
        values are pixels whose ink raised the logit."""
        return self.attributor.explain(pixels_of(images, blank_ok=True), method, target).maps

    @property
    def attributor(self) -> Attributor:
        """The network behind `explain` and `logits`, made on first use."""
        if self._attributor is None:
            from ..explain.attribution import Attributor

            self._attributor = Attributor(self.pixel_net.net)
        return self._attributor

    def probabilities(self, pixels: np.ndarray) -> np.ndarray:
        """Class probabilities (N x classes) for N x 784 raw pixels, 0-255."""
        from ..mxnet_compat import mx

        return softmax(self.pixel_net(mx.nd.array(pixels, ctx=self.context)).asnumpy())


def pixels_of(images: Any, blank_ok: bool = False) -> np.ndarray:
    """N x 784 raw pixels of images as `Classifier.predict` takes them."""
    inputs = inputs_of(images, blank_ok)
    return (np.stack([item.pixels for item in inputs]) if inputs
            else np.zeros((0, PIXELS), np.float32))


def load(checkpoint: str | Path, device: str = "auto",
         normalization: Normalization | tuple[float, float] | None = None) -> Classifier:
    """Load a checkpoint for prediction: a `.params` file that mnist-train wrote (with its
    `.json` sidecar), a compressed `model.mnc` that mnist-export wrote, or a bare `.params`
    file from a plain Gluon script of the same MLP. `device` is
    auto, cpu, gpu or gpu:N. `normalization` (mean, std of pixels scaled to [0, 1]) is only
    for a bare file; a sidecar records its own. Raises CheckpointError for a file that is
    missing, damaged or of another model."""
    engine.choose(engine.inference_settings(device))
    from ..checkpoint import load_network, read_checkpoint
    from ..compression.mnc import read_compressed
    from ..device import resolve_contexts
    from ..files import is_compressed
    from ..model import pixel_classifier

    bare = checked_normalization(normalization, "normalization")
    path, exported = checkpoint_file(Path(checkpoint))
    compressed = is_compressed(path)
    read = read_compressed(path) if compressed else read_checkpoint(path, bare, exported)
    if bare is not None and (read.sidecar is not None or read.exported is not None):
        has = ("a sidecar" if read.sidecar is not None else "a description" if compressed
               else "mnist-export's model.json")
        raise ConfigError(f"--normalize is for bare .params files; {checkpoint} has {has} "
                          "that records its normalisation: drop --normalize")
    net = load_network(read, resolve_contexts(device)[0])
    return Classifier(read, net, pixel_classifier(net, read.normalization))


def checked_normalization(values: Any, where: str) -> Normalization | None:
    """(mean, std) of pixels scaled to [0, 1], for a bare .params file, checked as every number
    is: finite float32 numbers, and a std above 0 (`where` names the flag or keyword)."""
    if values is None:
        return None
    if isinstance(values, Normalization):
        values = (values.mean, values.std)
    if isinstance(values, (str, bytes)) or not hasattr(values, "__len__") or len(values) != 2:
        raise ConfigError(f"{where} must be two numbers, MEAN,STD (e.g. 0.1307,0.3081), got "
                          f"{shown(values)}")
    mean, std = (float32_number(f"{where}'s {name}", value)
                 for name, value in zip(("mean", "std"), values, strict=True))
    if std <= 0:
        raise ConfigError(f"{where}'s std is {std:g}; it must be greater than 0")
    return Normalization(mean, std)


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

