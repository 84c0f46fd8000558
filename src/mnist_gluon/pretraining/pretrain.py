"""train.pretrain: the run's network trained on rendered digits before its first step, by plain
minibatch training (NAG), each epoch's digits shifted anew by up to 2 pixels each way."""

from __future__ import annotations

import time

import numpy as np

from ..checkpoint import PretrainRecord
from ..config import PretrainConfig
from ..data import IMAGE_SIZE, Normalization, normalise
from ..model import Architecture, build_model, named_parameters
from ..mxnet_compat import autograd, gluon, mx
from .rendered_digits import font_files, fonts_digest, render_digits

BATCH, LR, MOMENTUM, WEIGHT_DECAY, SHIFT = 128, 0.1, 0.9, 1e-4, 2


def pretrain(arch: Architecture, normalization: Normalization, ctx, settings: PretrainConfig,
             seed: int) -> tuple[dict[str, np.ndarray], PretrainRecord]:
    """The network's parameters after `settings.epochs` epochs on `settings.images` digits
    rendered from `seed`, for images normalised by `normalization`; and what it was."""
    began = time.perf_counter()
    fonts = font_files(settings.fonts)
    images, labels = render_digits(settings.images, seed, fonts)
    rng = np.random.default_rng(seed)
    net = build_model(arch, ctx)
    trainer = gluon.Trainer(net.collect_params(), "nag", {
        "learning_rate": LR, "momentum": MOMENTUM, "wd": WEIGHT_DECAY})
    loss = gluon.loss.SoftmaxCrossEntropyLoss()
    padded = np.pad(images, ((0, 0), (SHIFT, SHIFT), (SHIFT, SHIFT)))
    for _ in range(settings.epochs):
        shifted = normalise(shifted_copies(padded, rng), normalization)
        order = rng.permutation(len(images))
        for start in range(0, len(order) - BATCH + 1, BATCH):
            rows = order[start:start + BATCH]
            batch = mx.nd.array(shifted[rows], ctx=ctx)
            with autograd.record():
                value = loss(net(batch), mx.nd.array(labels[rows], ctx=ctx))
            value.backward()
            trainer.step(BATCH)
    arrays = {name: param.data(ctx).asnumpy() for name, param in named_parameters(net).items()}
    record = PretrainRecord(settings.images, settings.epochs, [font.name for font in fonts],
                            fonts_digest(fonts), round(time.perf_counter() - began, 1))
    return arrays, record


def shifted_copies(padded: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Each image cut from its padded copy at a random offset: shifted by up to SHIFT pixels."""
    count = len(padded)
    dy, dx = rng.integers(0, 2 * SHIFT + 1, (2, count))
    rows = dy[:, None] + np.arange(IMAGE_SIZE)
    cols = dx[:, None] + np.arange(IMAGE_SIZE)
    return padded[np.arange(count)[:, None, None], rows[:, :, None], cols[:, None, :]]
