"""What a run trains on: the training split read once, the validation set held out of it,
both normalised and moved to the devices."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..config import Config
from ..data import (
    DATASETS,
    Normalization,
    fit_normalization,
    normalise,
    read_split,
    split_validation,
)
from ..metrics import softmax_cross_entropy
from ..model import MLP, inference_copy, predict_logits
from ..mxnet_compat import mx
from ..privacy.coverage import PUBLIC_NORMALIZATION
from .augment import NoAugmentation, augmentation, background_pixel
from .step import DeviceData


@dataclass
class TrainingData:
    """The training set on each device and the validation set on the first, with what the
    checkpoints must record: the normalisation and the data files' checksums."""

    train: list[DeviceData]  # one copy per device
    train_pixels: np.ndarray  # the training images as read, N x 784 uint8
    train_labels: np.ndarray
    val_images: mx.nd.NDArray | None
    val_labels: np.ndarray
    normalization: Normalization
    augmentation: NoAugmentation
    checksums: dict[str, str]

    @property
    def num_train(self) -> int:
        return len(self.train_labels)

    @property
    def background(self) -> float:
        """A black pixel, normalised: most of every image."""
        return background_pixel(self.normalization)


def prepare_data(config: Config, ctxs,
                 normalization: Normalization | None = None) -> TrainingData:
    """Read the training split, hold out the validation set, move both to the devices. A
    resumed run passes the normalisation it started with."""
    spec = DATASETS[config.data.name]
    split = read_split(spec, "train", config.data.root, config.data.download, config.data.verify,
                       config.data.mirrors, config.model.classes)
    train_images, train_labels, val_images, val_labels = split_validation(
        split.images, split.labels, config.data.val_size, config.seed)
    # A private run's guarantee covers the training images only through its steps: it
    # normalises with constants that no image chose.
    normalization = normalization or (PUBLIC_NORMALIZATION if config.train.privacy.on
                                      else fit_normalization(train_images))
    augment = augmentation(config.data.augment, normalization, config.kernels)
    val_nd = (mx.nd.array(normalise(val_images, normalization), ctx=ctxs[0])
              if len(val_images) else None)
    return TrainingData(
        train=DeviceData.on_devices(normalise(train_images, normalization), train_labels,
                                    augment, ctxs),
        train_pixels=train_images,
        train_labels=train_labels,
        val_images=val_nd,
        val_labels=val_labels,
        normalization=normalization,
        augmentation=augment,
        checksums=split.checksums,
    )


def validation_scores(net: MLP, data: TrainingData) -> tuple[float | None, float | None]:
    """(loss, accuracy) on the validation set; (None, None) without one."""
    if data.val_images is None:
        return None, None
    if net.architecture.kind == "lenet":
        net = inference_copy(net)
    logits = predict_logits(net, data.val_images)
    accuracy = float(np.mean(logits.argmax(axis=1) == data.val_labels))
    return softmax_cross_entropy(logits, data.val_labels), accuracy
