"""Attributions of one class's logit to the raw pixels (0-255) of each image, batched on the
network's device.

- integrated_gradients (Sundararajan et al. 2017), from the blank (all-zero) image: the maps
  sum to the logit's difference between the image and the blank. For an MLP with ReLU the
  integral is exact: along the path t*x each hidden unit's pre-activation t*a + b is linear in
  t, so the unit is active for a fraction of the path that has a closed form, and the map is
  x * W1^T (fraction * W2[class]). Other networks take Gauss-Legendre quadrature over
  `QUADRATURE_NODES` points of the path.
- gradient_x_input: the gradient at the image times the image.
- smoothgrad (Smilkov et al. 2017): the gradient averaged over `SMOOTHGRAD_SAMPLES` copies with
  Gaussian noise of `SMOOTHGRAD_NOISE` x 255, times the image, so that it reads in the same units
  as the other two. The noise comes from a fixed seed: the same image gets the same map.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any, NamedTuple

import numpy as np

from ..data import IMAGE_SIZE
from ..errors import ConfigError
from ..model import MLP, named_parameters, network, set_parameters
from ..reading import shown
from . import METHODS

QUADRATURE_NODES = 32
SMOOTHGRAD_SAMPLES, SMOOTHGRAD_NOISE, SMOOTHGRAD_SEED = 25, 0.15, 0
ROWS = 4096  # images (copies included) per forward and backward pass


class Explanations(NamedTuple):
    """Maps and what they explain, one row per image."""

    maps: np.ndarray  # float32, N x 28 x 28
    targets: np.ndarray  # int64, N: the class whose logit each map attributes
    logits: np.ndarray  # float32, N x classes


def checked_targets(target: Any, logits: np.ndarray) -> np.ndarray:
    """The class each image's map explains: its predicted class for `target=None`, else one
    class for all images, or one per image."""
    count, classes = logits.shape
    if target is None:
        return logits.argmax(axis=1)
    values = np.asarray(target, dtype=object).reshape(-1)
    if values.size not in (1, count) or not all(
            isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 0 <= v < classes
            for v in values):
        raise ConfigError(f"target={shown(target)} must be a class of this model (0-"
                          f"{classes - 1}), or one per image ({count}), or None for the "
                          "predicted class")
    return np.broadcast_to(values.astype(np.int64), (count,)).copy()


class Attributor:
    """A network that takes raw pixels (a PixelClassifier's `net`), copied so that its weights
    ask for no gradients: only the input's are computed."""

    def __init__(self, pixel_net: MLP):
        from ..mxnet_compat import mx

        self.architecture = pixel_net.architecture
        self.context = pixel_net.fc1.weight.list_ctx()[0]
        arrays = {name: p.data() for name, p in named_parameters(pixel_net).items()}
        # Without dropout, so that gradients can be recorded in training mode: in inference
        # mode MKLDNN's max pooling keeps no workspace, and its backward pass gives wrong input
        # gradients (a LeNet's were off by half or were zero). The models have no other layer
        # that differs between the modes.
        self.net = network(replace(self.architecture, dropout=0.0))
        self.net.initialize(mx.init.Zero(), ctx=self.context)
        set_parameters(self.net, arrays)
        for param in self.net.collect_params().values():
            param.grad_req = "null"
        self.net.hybridize(static_alloc=True)

    @property
    def exact(self) -> bool:
        """Whether integrated gradients are computed exactly (an MLP with ReLU) rather than by
        quadrature."""
        return self.architecture.kind == "mlp" and self.architecture.activation == "relu"

    def logits(self, pixels: np.ndarray) -> np.ndarray:
        """N x classes logits for N x 784 raw pixels."""
        from ..mxnet_compat import mx

        return in_batches(len(pixels), ROWS, self.architecture.classes, lambda rows: self.net(
            mx.nd.array(pixels[rows], ctx=self.context)).asnumpy())

    def explain(self, pixels: np.ndarray, method: str = "integrated_gradients",
                target: Any = None) -> Explanations:
        """`method`'s map of each image's target class (see `checked_targets`), for N x 784 raw
        pixels."""
        if method not in METHODS:
            raise ConfigError(f"method={shown(method)} is not a method explain knows; choose "
                              f"{', '.join(METHODS[:-1])} or {METHODS[-1]}")
        logits = self.logits(pixels)
        targets = checked_targets(target, logits)
        maps = self.attribute(pixels, targets, method)
        return Explanations(maps.reshape(-1, IMAGE_SIZE, IMAGE_SIZE), targets, logits)

    def attribute(self, pixels: np.ndarray, targets: np.ndarray, method: str,
                  closed_form: bool = True) -> np.ndarray:
        """N x 784 float32 maps: each image's attribution of its target class's logit.
        `closed_form=False` takes integrated gradients by quadrature even where they are exact
        (to measure what the closed form saves)."""
        pixels = np.asarray(pixels, np.float32).reshape(len(pixels), -1)
        if method == "integrated_gradients" and self.exact and closed_form:
            return self.exact_integrated_gradients(pixels, targets)
        if method == "integrated_gradients":
            nodes, weights = np.polynomial.legendre.leggauss(QUADRATURE_NODES)
            scales, weights = (nodes + 1) / 2, weights / 2  # from [-1, 1] to the path's [0, 1]
            copies = lambda chunk: scales[:, None, None] * chunk[None]  # noqa: E731
        elif method == "gradient_x_input":
            weights = np.ones(1)
            copies = lambda chunk: chunk[None]  # noqa: E731
        else:
            noise = np.random.default_rng(SMOOTHGRAD_SEED)
            weights = np.full(SMOOTHGRAD_SAMPLES, 1 / SMOOTHGRAD_SAMPLES)
            copies = lambda chunk: chunk[None] + noise.normal(  # noqa: E731
                0, SMOOTHGRAD_NOISE * 255, (SMOOTHGRAD_SAMPLES, *chunk.shape)).astype(np.float32)
        return in_batches(len(pixels), max(1, ROWS // len(weights)), pixels.shape[1],
                          lambda rows: pixels[rows] * self.averaged_gradient(
                              copies(pixels[rows]), targets[rows], weights))

    def averaged_gradient(self, copies: np.ndarray, targets: np.ndarray,
                          weights: np.ndarray) -> np.ndarray:
        """sum_k weights[k] * the gradient of the target's logit at copies[k], for K x n x 784
        copies of n images."""
        from ..mxnet_compat import mx

        count, rows = copies.shape[:2]
        x = mx.nd.array(copies.reshape(count * rows, -1), ctx=self.context)
        x.attach_grad()
        chosen = mx.nd.array(np.tile(targets, count), ctx=self.context)
        with mx.autograd.record(train_mode=True):
            picked = mx.nd.pick(self.net(x), chosen, axis=1)
        picked.backward()
        gradients = x.grad.asnumpy().reshape(count, rows, -1)
        return np.tensordot(weights.astype(np.float32), gradients, axes=1)

    def exact_integrated_gradients(self, pixels: np.ndarray, targets: np.ndarray) -> np.ndarray:
        """Integrated gradients of a ReLU MLP, in closed form: unit j's pre-activation on the
        path t*x is t*a_j + b_j, active (> 0) for the fraction of t in [0, 1] computed below; the
        target's logit then rises by sum_j W2[c, j] * a_j * fraction_j."""
        from ..mxnet_compat import mx

        nd, ctx = mx.nd, self.context
        w1, b1 = self.net.fc1.weight.data(), self.net.fc1.bias.data()
        w2 = self.net.fc2.weight.data()

        def maps(rows: slice) -> np.ndarray:
            x = nd.array(pixels[rows], ctx=ctx)
            a = nd.dot(x, w1, transpose_b=True)  # n x hidden
            b = nd.broadcast_like(b1.reshape((1, -1)), a)
            # where a != 0 the unit switches at t = -b/a; where a == 0 it is on or off throughout
            crossing = -b / nd.where(a == 0, nd.ones_like(a), a)
            fraction = nd.where(a > 0, nd.clip(1 - crossing, 0, 1),
                                nd.where(a < 0, nd.clip(crossing, 0, 1), b > 0))
            weighted = fraction * nd.take(w2, nd.array(targets[rows], ctx=ctx))  # W2[c, j] f_j
            return (x * nd.dot(weighted, w1)).asnumpy()

        return in_batches(len(pixels), ROWS, pixels.shape[1], maps)


def in_batches(count: int, size: int, width: int, compute) -> np.ndarray:
    """`compute(rows)` for each slice of `count` rows, `size` at a time, stacked: count x width
    (float32 zeros of that shape for no rows)."""
    parts = [compute(slice(start, start + size)) for start in range(0, count, size)]
    return np.concatenate(parts) if parts else np.zeros((0, width), np.float32)
