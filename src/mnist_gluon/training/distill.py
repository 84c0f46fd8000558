"""Knowledge distillation: a teacher checkpoint's answers on the student's own batches.

The teacher, frozen, either sits inside the training graph and classifies the same augmented
batch the student sees (soft_targets: batch), or answers once for the unaugmented training
images (precomputed); the step's loss becomes W * T^2 * KL(teacher_T || student_T) + (1 - W)
* the labels' cross-entropy (Hinton, Vinyals and Dean 2015).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from .. import checkpoint as ckpt
from ..checkpoint import CheckpointRecord
from ..config import Config
from ..data import Normalization, normalise
from ..errors import ConfigError
from ..files import sha256_of
from ..model import MLP, fold_input, predict_logits
from ..mxnet_compat import mx


@dataclass
class Teacher:
    """What a student learns from: a frozen network that takes the student's normalised
    images (soft_targets: batch), or its logits for each training image, in the training set's
    order (precomputed); and what it was."""

    net: MLP | None
    temperature: float
    weight: float
    record: CheckpointRecord
    targets: np.ndarray | None = None


def read_teacher(config: Config, normalization: Normalization, train_pixels: np.ndarray, ctxs,
                 recorded: CheckpointRecord | None = None) -> Teacher | None:
    """The teacher that train.distill names, for a student whose images are normalised by
    `normalization`, checked against the run's dataset and classes (and, on resume, against
    the file the run began with); None without distillation. Precomputed soft targets are
    its logits for `train_pixels`, the training images as read."""
    distill = config.train.distill
    if distill.teacher is None:
        return None
    path = Path(distill.teacher)
    checkpoint = ckpt.read_named("train.distill.teacher", path, "train the teacher first "
                                 "(distilled.yaml's: mnist-train --config lenet)",
                                 "runs/lenet/best.params")
    sidecar = checkpoint.sidecar
    if sidecar.dataset != config.data.name or checkpoint.architecture.classes != (
            config.model.classes):
        raise ConfigError(f"train.distill.teacher={path} was trained on {sidecar.dataset} with "
                          f"{checkpoint.architecture.classes} classes, this run is "
                          f"{config.data.name} with {config.model.classes}; pass a teacher of "
                          "the same dataset")
    record = CheckpointRecord(str(path.resolve()), sha256_of(path))
    if recorded is not None and recorded.sha256 != record.sha256:
        raise ConfigError(f"train.distill.teacher={path} is not the teacher this run began "
                          f"with (sha256 {recorded.sha256[:16]}…, from {recorded.path}); "
                          "restore that file to resume, or start a new run with --out DIR")
    net = frozen_network(checkpoint, normalization, ctxs)
    if distill.soft_targets == "batch":
        return Teacher(net, distill.temperature, distill.weight, record)
    images = mx.nd.array(normalise(train_pixels, normalization), ctx=ctxs[0])
    targets = predict_logits(net, images).astype(np.float32)
    return Teacher(None, distill.temperature, distill.weight, record, targets)


def frozen_network(checkpoint: ckpt.Checkpoint, normalization: Normalization, ctxs) -> MLP:
    """The teacher as an inference network on images normalised as the student's are: the
    change to its own normalisation is folded into its first layer, its dropout is off and
    nothing computes its gradients."""
    theirs = checkpoint.normalization
    arch = replace(checkpoint.architecture, dropout=0.0)
    folded = fold_input(checkpoint.arrays, arch, normalization.std / theirs.std,
                        (theirs.mean - normalization.mean) / theirs.std)
    # Made without a random draw, so the student's initialisation is what it is without one.
    net = ckpt.load_network(replace(checkpoint, architecture=arch, arrays=folded), ctxs)
    for param in net.collect_params().values():
        param.grad_req = "null"
    return net


def distillation_loss(F, logits, teacher_logits, labels_loss, temperature: float,
                      weight: float):
    """Per example: weight * T^2 * KL(softmax(teacher / T) || softmax(student / T)) + (1 -
    weight) * `labels_loss`. T^2 keeps the soft targets' gradients on the labels' scale."""
    log_teacher = F.log_softmax(F.BlockGrad(teacher_logits) / temperature, axis=1)
    log_student = F.log_softmax(logits / temperature, axis=1)
    kl = F.sum(F.exp(log_teacher) * (log_teacher - log_student), axis=1)
    return weight * temperature**2 * kl + (1 - weight) * labels_loss
