"""The MLP: Dense(hidden, activation) -> Dense(classes), emitting logits."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .data import PIXELS, Normalization
from .mxnet_compat import gluon

EVAL_BATCH_SIZE = 10_000  # images per forward pass when scoring a whole split


@dataclass(frozen=True)
class Architecture:
    """What it takes to rebuild the network: stored in every checkpoint's sidecar."""

    inputs: int = PIXELS
    hidden: int = 128
    activation: str = "relu"
    classes: int = 10
    dropout: float = 0.0  # on the hidden layer, in training only


class MLP(gluon.HybridBlock):
    """784 -> hidden -> classes. The layers are `fc1` and `fc2`, as in the plain Gluon script,
    so parameter files move between the two. No softmax: the loss takes logits."""

    def __init__(self, arch: Architecture, **kwargs):
        super().__init__(**kwargs)
        self.architecture = arch
        self.fc1 = gluon.nn.Dense(arch.hidden, activation=arch.activation, in_units=arch.inputs)
        self.drop = gluon.nn.Dropout(arch.dropout) if arch.dropout > 0 else None
        self.fc2 = gluon.nn.Dense(arch.classes, in_units=arch.hidden)

    def hybrid_forward(self, F, x):
        hidden = self.fc1(x)
        if self.drop is not None:
            hidden = self.drop(hidden)
        return self.fc2(hidden)


class PixelClassifier(gluon.HybridBlock):
    """Raw pixels (0-255, N x 784, any dtype) -> logits, for evaluation, prediction and export.

    The normalisation is folded into the first layer, W((x * s) - c) + b = (sW)x + (b - cW1),
    so inference pays for a cast and nothing else. It holds a copy of `net`'s parameters as
    they are when it is made.
    """

    def __init__(self, net: MLP, normalization: Normalization, **kwargs):
        super().__init__(**kwargs)
        ctxs = net.fc1.weight.list_ctx()
        self.net = MLP(net.architecture)
        self.net.initialize(ctx=ctxs)
        scale = 1.0 / (255.0 * normalization.std)
        shift = normalization.mean / normalization.std
        weight = net.fc1.weight.data().asnumpy().astype(np.float64)
        bias = net.fc1.bias.data().asnumpy().astype(np.float64)
        folded = {"fc1.weight": weight * scale, "fc1.bias": bias - shift * weight.sum(axis=1),
                  "fc2.weight": net.fc2.weight.data().asnumpy(),
                  "fc2.bias": net.fc2.bias.data().asnumpy()}
        set_parameters(self.net, {k: v.astype(np.float32) for k, v in folded.items()})

    def hybrid_forward(self, F, pixels):
        return self.net(F.cast(pixels, "float32"))


def pixel_classifier(net: MLP, normalization: Normalization) -> PixelClassifier:
    classifier = PixelClassifier(net, normalization)
    classifier.hybridize(static_alloc=True, static_shape=True)
    return classifier


def build_model(arch: Architecture, ctx, initialize: bool = True) -> MLP:
    """A hybridized MLP on the contexts `ctx`; Xavier-initialised unless parameters follow."""
    from .mxnet_compat import mx

    net = MLP(arch)
    if initialize:
        net.initialize(mx.init.Xavier(), ctx=ctx)
    # static_alloc/static_shape: the graph's memory is planned once and reused every step.
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def named_parameters(net: MLP) -> dict:
    """Parameters by the names `save_parameters` writes: fc1.weight, fc1.bias, fc2.weight, ..."""
    return {
        f"{layer}.{kind}": getattr(getattr(net, layer), kind)
        for layer in ("fc1", "fc2")
        for kind in ("weight", "bias")
    }


def set_parameters(net: MLP, arrays: dict) -> None:
    """Load numpy arrays, keyed as in `named_parameters`, into every context of `net`."""
    from .mxnet_compat import mx

    for name, param in named_parameters(net).items():
        param.set_data(mx.nd.array(arrays[name]))


def predict_logits(net, inputs, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Logits for `inputs` (an N x 784 NDArray on the network's device), in big batches:
    normalised images for the MLP, raw pixels for a PixelClassifier."""
    parts = [net(inputs[start : start + batch_size]).asnumpy()
             for start in range(0, inputs.shape[0], batch_size)]
    return np.concatenate(parts)
