"""DP-SGD's step: each example's gradient clipped to norm C before the batch's sum, then
Gaussian noise of standard deviation noise_multiplier x C added, then the run's optimizer.

No example's gradient is materialised where it need not be. The network runs as one graph
with a zero "probe" added to each layer's output, so one backward pass gives every example's
gradient at every layer's output, g. A dense layer's per-example weight gradient is then the
outer product of g and the layer's input a, whose norm is |g| |a| (Goodfellow 2015), and the
clipped sum is one matrix product. A convolution's is g times the input's 5 x 5 patches
(im2col), materialised per example: C_out x C_in x 25 numbers each (12,800 for private-lenet's
second layer, 51,200 for lenet.yaml's). A "ghost" norm would need the Gram matrices of the
layer's output positions instead: 576 x 576 for the first layer, and for the second 64 x 64
that cost twice the multiply-adds of the gradients themselves."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import IMAGE_SIZE
from ..model import KERNEL, MLP, Architecture, named_parameters
from ..mxnet_compat import autograd, gluon, mx
from .accounting import Mechanism
from .sampling import gaussian_noise, new_key

KEY = "privacy"  # the run's secret key, among the updater's saved secrets
TINY = 1e-6  # added to each norm before dividing by it


@dataclass
class Tap:
    """A layer with parameters, as one forward pass met it: its input, and the probe added to
    its output, whose gradient is the output's."""

    name: str
    inputs: mx.nd.NDArray
    probe: mx.nd.NDArray

    @property
    def convolution(self) -> bool:
        return self.probe.ndim == 4


def output_shapes(net: MLP, batch: int) -> dict[str, tuple[int, ...]]:
    """Each layer's output shape for a batch of `batch`."""
    arch = net.architecture
    shapes = {"fc1": (batch, arch.hidden), "fc2": (batch, arch.classes)}
    if arch.kind == "lenet":
        c1, c2 = arch.channels
        side1 = IMAGE_SIZE - KERNEL + 1
        side2 = side1 // 2 - KERNEL + 1
        shapes = {"conv1": (batch, c1, side1, side1), "conv2": (batch, c2, side2, side2),
                  **shapes}
    return shapes


class TappedNetwork(gluon.HybridBlock):
    """`net`'s function as one graph, computed as its own graph computes it (dropout included,
    under autograd's training mode), taking its parameters and a probe per layer as inputs, and
    returning its logits and each layer's input. Hybridized without static shapes: a Poisson
    batch's size changes every step."""

    def __init__(self, arch: Architecture, **kwargs):
        super().__init__(**kwargs)
        self.arch = arch

    def hybrid_forward(self, F, batch, *inputs):
        arch, layers = self.arch, self.arch.layers
        names = [f"{layer}.{kind}" for layer in layers for kind in ("weight", "bias")]
        weights = dict(zip(names, inputs[:len(names)], strict=True))
        probes = dict(zip(layers, inputs[len(names):], strict=True))
        seen = []

        def dense(name, x, units):
            seen.append(x)
            return F.FullyConnected(x, weights[f"{name}.weight"], weights[f"{name}.bias"],
                                    num_hidden=units) + probes[name]

        def conv(name, x, filters):
            seen.append(x)
            out = F.Convolution(x, weights[f"{name}.weight"], weights[f"{name}.bias"],
                                kernel=(KERNEL, KERNEL), num_filter=filters) + probes[name]
            return F.Pooling(F.Activation(out, act_type=arch.activation), kernel=(2, 2),
                             stride=(2, 2), pool_type="max")

        features = batch
        if arch.kind == "lenet":
            images = F.reshape(batch, (-1, 1, IMAGE_SIZE, IMAGE_SIZE))
            c1, c2 = arch.channels
            features = F.flatten(conv("conv2", conv("conv1", images, c1), c2))
        hidden = F.Activation(dense("fc1", features, arch.hidden), act_type=arch.activation)
        if arch.dropout > 0:
            hidden = F.Dropout(hidden, p=arch.dropout)
        return (dense("fc2", hidden, arch.classes), *seen)


@dataclass
class LayerGradients:
    """One layer's per-example gradients, in the form that is cheapest to hold: a dense
    layer's output gradients and inputs, a convolution's per-example weight gradients. With
    `copies` > 1 each example came as that many augmented copies in a row, and its gradient is
    their gradients' mean."""

    tap: Tap
    grad: mx.nd.NDArray  # the output's gradient, batch first
    copies: int = 1

    def __post_init__(self):
        if self.tap.convolution:
            rows, channels = self.grad.shape[:2]
            outputs = self.grad.reshape((rows, channels, -1))
            patches = mx.nd.im2col(self.tap.inputs, kernel=(KERNEL, KERNEL))
            self.weights = self.per_example(mx.nd.batch_dot(outputs, patches, transpose_b=True))
            self.biases = self.per_example(outputs.sum(axis=2))

    def per_example(self, rows: mx.nd.NDArray) -> mx.nd.NDArray:
        """The mean of each example's copies' rows."""
        if self.copies == 1:
            return rows
        return rows.reshape((-1, self.copies, *rows.shape[1:])).mean(axis=1)

    def squared_norms(self) -> mx.nd.NDArray:
        """Each example's squared gradient norm over the layer's weight and bias."""
        if self.tap.convolution:
            return ((self.weights * self.weights).sum(axis=(1, 2))
                    + (self.biases * self.biases).sum(axis=1))
        grad, inputs, k = self.grad, self.tap.inputs, self.copies
        if k == 1:
            return (grad * grad).sum(axis=1) * ((inputs * inputs).sum(axis=1) + 1)
        # |mean_k g_k a_k^T|^2 + |mean_k g_k|^2 = sum_kl (g_k . g_l)(a_k . a_l + 1) / k^2
        grads = grad.reshape((-1, k, grad.shape[1]))
        inputs = inputs.reshape((-1, k, inputs.shape[1]))
        products = (mx.nd.batch_dot(grads, grads, transpose_b=True)
                    * (mx.nd.batch_dot(inputs, inputs, transpose_b=True) + 1))
        return products.sum(axis=(1, 2)) / k**2

    def weighted_sums(self, scale: mx.nd.NDArray) -> tuple[mx.nd.NDArray, mx.nd.NDArray]:
        """(weight, bias) gradients summed over the batch, example i's times scale[i]."""
        if self.tap.convolution:
            row = scale.reshape((1, -1))
            flat = self.weights.reshape((self.weights.shape[0], -1))
            return (mx.nd.dot(row, flat).reshape((self.weights.shape[1], -1)),
                    mx.nd.dot(row, self.biases).reshape((-1,)))
        if self.copies > 1:  # each copy's share of its example's mean
            scale = mx.nd.repeat(scale, self.copies) / self.copies
        scaled = self.grad * scale.reshape((-1, 1))
        return mx.nd.dot(scaled, self.tap.inputs, transpose_a=True), scaled.sum(axis=0)


def tapped_network(arch: Architecture) -> TappedNetwork:
    network = TappedNetwork(arch)
    network.hybridize()
    return network


def per_example_gradients(net: MLP, batch: mx.nd.NDArray, labels: mx.nd.NDArray,
                          label_smoothing: float = 0.0, tapped: TappedNetwork | None = None,
                          copies: int = 1) -> tuple[list[LayerGradients], mx.nd.NDArray]:
    """Each layer's per-example gradients of the cross-entropy, and [summed loss, number
    correct] for the batch, counted per example; `tapped`: `net`'s TappedNetwork, made once for
    a run; `copies`: each example's augmented copies, in a row, whose gradients are averaged."""
    tapped = tapped or tapped_network(net.architecture)
    ctx = batch.context
    params = named_parameters(net)
    shapes = output_shapes(net, batch.shape[0])
    probes = [mx.nd.zeros(shape, ctx=ctx) for shape in shapes.values()]
    for probe in probes:
        probe.attach_grad()
    with autograd.record(train_mode=True):
        # The weights as constants: their gradients are not wanted, only the outputs'.
        logits, *inputs = tapped(batch, *(p.data(ctx).detach() for p in params.values()),
                                 *probes)
        log_p = mx.nd.log_softmax(logits, axis=1)
        loss = -mx.nd.pick(log_p, labels, axis=1)
        if label_smoothing:
            loss = (1 - label_smoothing) * loss - label_smoothing * mx.nd.mean(log_p, axis=1)
        total = loss.sum()
    total.backward()
    grads = [probe.grad for probe in probes]
    taps = [Tap(name, x, probe) for name, x, probe in zip(shapes, inputs, probes, strict=True)]
    correct = (logits.argmax(axis=1) == labels).sum()
    layers = [LayerGradients(tap, grad, copies) for tap, grad in zip(taps, grads, strict=True)]
    stats = mx.nd.concat(total.detach().reshape((1,)), correct.reshape((1,)), dim=0)
    return layers, stats / copies


def clip_factors(layers: list[LayerGradients], clip: float) -> mx.nd.NDArray:
    """min(1, C / |g_i|) per example, |g_i| over all the network's parameters."""
    norms = mx.nd.sqrt(mx.nd.add_n(*(layer.squared_norms() for layer in layers)))
    return mx.nd.minimum(clip / (norms + TINY), 1.0)


def clipped_sum(net: MLP, batch: mx.nd.NDArray, labels: mx.nd.NDArray, clip: float,
                label_smoothing: float = 0.0, tapped: TappedNetwork | None = None,
                copies: int = 1) -> tuple[dict, mx.nd.NDArray]:
    """{parameter name: the sum over the batch of each example's gradient clipped to norm
    `clip`}, and [summed loss, number correct]; per_example_gradients' `copies`."""
    layers, stats = per_example_gradients(net, batch, labels, label_smoothing, tapped, copies)
    scale = clip_factors(layers, clip)
    sums = {}
    for layer in layers:
        weight, bias = layer.weighted_sums(scale)
        shape = getattr(net, layer.tap.name).weight.shape
        sums[f"{layer.tap.name}.weight"] = weight.reshape(shape)
        sums[f"{layer.tap.name}.bias"] = bias
    return sums, stats


class PrivateStep:
    """A DP-SGD step, called as `GraphStep` is (one step a call), on one device: the batch's
    clipped sum plus noise becomes each parameter's gradient, which the run's updater (any
    optimizer, the fused update included) divides by the expected batch size and applies."""

    most = 1

    def __init__(self, net: MLP, gather, updater, mechanism: Mechanism,
                 label_smoothing: float = 0.0, copies: int = 1):
        """`copies`: augmented copies of each example in a row (plan_sampled_epoch's)."""
        self.net, self.gather, self.updater = net, gather, updater
        self.mechanism, self.smoothing, self.copies = mechanism, label_smoothing, copies
        self.params = named_parameters(net)
        self.shapes = [param.shape for param in self.params.values()]
        self.tapped = tapped_network(net.architecture)

    @property
    def key(self) -> np.ndarray:
        """The run's secret key: made at its first step, saved and resumed with the updater."""
        if KEY not in self.updater.secrets:
            self.updater.secrets[KEY] = new_key()
        return self.updater.secrets[KEY]

    def __call__(self, data, steps: list, done: int, count: int, lr_at, batch_size: int,
                 index: int, sums) -> int:
        columns = steps[done][0]
        ctx = data[0].inputs[0].context
        if columns is None:  # nobody was sampled: the update is noise alone
            grads = {name: mx.nd.zeros(p.shape, ctx=ctx) for name, p in self.params.items()}
            stats = mx.nd.zeros((2,), ctx=ctx)
        else:
            batch, labels = self.gather(*data[0].inputs, *columns)
            grads, stats = clipped_sum(self.net, batch, labels, self.mechanism.clip,
                                       self.smoothing, self.tapped, self.copies)
        spread = self.mechanism.noise_multiplier * self.mechanism.clip
        noise = gaussian_noise(self.key, index, self.shapes)
        for (name, param), draw in zip(self.params.items(), noise, strict=True):
            param.grad(ctx)[:] = grads[name] + spread * mx.nd.array(draw, ctx=ctx)
        self.updater.step(lr_at(index), batch_size, adds=sums.additions(index, [stats]))
        return 0

    def sync(self) -> None:
        """Nothing: the parameters are always where MXNet reads them."""
