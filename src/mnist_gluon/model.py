"""The networks, both emitting logits from N x 784 normalised images:

- `mlp`: Dense(hidden, activation) -> Dense(classes), the document's model;
- `lenet`: two 5x5 convolutions, each followed by 2x2 max pooling, then Dense(hidden,
  activation) -> Dense(classes). The images are reshaped to 1 x 28 x 28 inside the network,
  so data, augmentation, prediction, serving and export see the MLP's input either way.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from .data import IMAGE_SIZE, PIXELS, Normalization
from .errors import CheckpointError
from .mxnet_compat import gluon

EVAL_BATCH_SIZE = 10_000  # images per forward pass when scoring a whole split
KERNEL = 5  # LeNet's convolutions: 5 x 5, no padding, stride 1; each followed by 2 x 2 pooling
# A LeNet feature map's side after conv, pool, conv, pool: 28 -> 24 -> 12 -> 8 -> 4.
LENET_SIDE = ((IMAGE_SIZE - KERNEL + 1) // 2 - KERNEL + 1) // 2


@dataclass(frozen=True)
class Architecture:
    """What it takes to rebuild the network: stored in every checkpoint's sidecar."""

    inputs: int = PIXELS
    hidden: int = 128  # the (last) dense hidden layer's units
    activation: str = "relu"
    classes: int = 10
    dropout: float = 0.0  # on the hidden layer, in training only
    kind: str = "mlp"
    channels: list[int] | None = None  # lenet: the two convolutions' output channels

    @property
    def layers(self) -> tuple[str, ...]:
        """The layers with parameters, input first: their names in a .params file."""
        return ("conv1", "conv2", "fc1", "fc2") if self.kind == "lenet" else ("fc1", "fc2")

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Each parameter's shape, by the names `save_parameters` writes."""
        if self.kind == "lenet":
            c1, c2 = self.channels
            dense = {"conv1.weight": (c1, 1, KERNEL, KERNEL), "conv1.bias": (c1,),
                     "conv2.weight": (c2, c1, KERNEL, KERNEL), "conv2.bias": (c2,),
                     "fc1.weight": (self.hidden, c2 * LENET_SIDE**2)}
        else:
            dense = {"fc1.weight": (self.hidden, self.inputs)}
        return {**dense, "fc1.bias": (self.hidden,), "fc2.weight": (self.classes, self.hidden),
                "fc2.bias": (self.classes,)}

    def describe(self) -> str:
        if self.kind == "lenet":
            c1, c2 = self.channels
            return (f"LeNet conv {c1}@{KERNEL}x{KERNEL} -> pool -> conv {c2}@{KERNEL}x{KERNEL} "
                    f"-> pool -> {self.hidden} {self.activation} -> {self.classes}")
        return f"MLP {self.inputs} -> {self.hidden} {self.activation} -> {self.classes}"


def architecture_of(model) -> Architecture:
    """The Architecture a config's `model` section asks for."""
    lenet = model.kind == "lenet"
    return Architecture(hidden=model.hidden, activation=model.activation, classes=model.classes,
                        dropout=model.dropout, kind=model.kind,
                        channels=list(model.channels) if lenet else None)


class MLP(gluon.HybridBlock):
    """784 -> hidden -> classes. The layers are `fc1` and `fc2`, as in the plain Gluon script,
    so parameter files move between the two. No softmax: the loss takes logits."""

    def __init__(self, arch: Architecture, **kwargs):
        super().__init__(**kwargs)
        self.architecture = arch
        self.fc1 = gluon.nn.Dense(arch.hidden, activation=arch.activation, in_units=arch.inputs)
        self.drop = gluon.nn.Dropout(arch.dropout) if arch.dropout > 0 else None
        self.fc2 = gluon.nn.Dense(arch.classes, in_units=arch.hidden)

    def features(self, F, x):
        return x

    def hybrid_forward(self, F, x):
        hidden = self.fc1(self.features(F, x))
        if self.drop is not None:
            hidden = self.drop(hidden)
        return self.fc2(hidden)


class LeNet(MLP):
    """conv1 -> pool -> conv2 -> pool -> fc1 -> fc2, on the images reshaped to 1 x 28 x 28."""

    def __init__(self, arch: Architecture, **kwargs):
        c1, c2 = arch.channels
        super().__init__(replace(arch, inputs=c2 * LENET_SIDE**2), **kwargs)
        self.architecture = arch
        nn = gluon.nn
        self.conv1 = nn.Conv2D(c1, KERNEL, activation=arch.activation, in_channels=1)
        self.conv2 = nn.Conv2D(c2, KERNEL, activation=arch.activation, in_channels=c1)
        self.pool = nn.MaxPool2D(pool_size=2, strides=2)

    def features(self, F, x):
        images = F.reshape(x, (-1, 1, IMAGE_SIZE, IMAGE_SIZE))
        return self.pool(self.conv2(self.pool(self.conv1(images))))


def network(arch: Architecture) -> MLP:
    return LeNet(arch) if arch.kind == "lenet" else MLP(arch)


def fold_input(arrays: dict, arch: Architecture, scale: float, shift: float) -> dict:
    """The parameters of the network that computes on x the same as `arrays` does on
    x * scale - shift: W(sx - c) + b = (sW)x + (b - c W1), in the first layer. A convolution
    without padding sees a whole kernel at every output, so it folds the same way."""
    first = arch.layers[0]
    weight = arrays[f"{first}.weight"].astype(np.float64)
    bias = arrays[f"{first}.bias"].astype(np.float64)
    sums = weight.reshape(weight.shape[0], -1).sum(axis=1)
    folded = {**arrays, f"{first}.weight": weight * scale, f"{first}.bias": bias - shift * sums}
    return {name: np.asarray(value, np.float32) for name, value in folded.items()}


class PixelClassifier(gluon.HybridBlock):
    """Raw pixels (0-255, N x 784, any dtype) -> logits, for evaluation, prediction and export.

    The normalisation is folded into the first layer (fold_input), so inference pays for a
    cast and nothing else. It holds a copy of `net`'s parameters as they are when it is made.
    """

    def __init__(self, net: MLP, normalization: Normalization, **kwargs):
        super().__init__(**kwargs)
        ctxs = net.fc1.weight.list_ctx()
        self.net = network(net.architecture)
        self.net.initialize(ctx=ctxs)
        arrays = {name: p.data().asnumpy() for name, p in named_parameters(net).items()}
        set_parameters(self.net, fold_input(arrays, net.architecture,
                                            1.0 / (255.0 * normalization.std),
                                            normalization.mean / normalization.std))

    def hybrid_forward(self, F, pixels):
        return self.net(F.cast(pixels, "float32"))


def pixel_classifier(net: MLP, normalization: Normalization) -> PixelClassifier:
    classifier = PixelClassifier(net, normalization)
    classifier.hybridize(static_alloc=True, static_shape=True)
    return classifier


def build_model(arch: Architecture, ctx, initialize: bool = True) -> MLP:
    """A hybridized network on the contexts `ctx`; Xavier-initialised unless parameters
    follow."""
    from .mxnet_compat import mx

    net = network(arch)
    if initialize:
        net.initialize(mx.init.Xavier(), ctx=ctx)
    # static_alloc/static_shape: the graph's memory is planned once and reused every step.
    net.hybridize(static_alloc=True, static_shape=True)
    return net


def network_holding(arch: Architecture, arrays: dict, ctx) -> MLP:
    """A hybridized network on the contexts `ctx` holding `arrays` (numpy or NDArrays, keyed
    as in `named_parameters`), made without a random draw."""
    from .mxnet_compat import mx

    net = build_model(arch, ctx, initialize=False)
    net.initialize(mx.init.Zero(), ctx=ctx)
    set_parameters(net, arrays)
    return net


def inference_copy(net: MLP) -> MLP:
    """A network holding `net`'s parameters as they are now, to validate a LeNet with. When a
    convolution's weights first serve inference, MKLDNN reorders them into a layout of its
    own, asynchronously. Training after that read them in whichever layout the reorder had
    reached (validating the live weights made a LeNet's runs differ from one another), and an
    extension operator is handed a copy of an array in that layout, so the fused update's
    in-place writes would be lost."""
    arrays = {name: param.data() for name, param in named_parameters(net).items()}
    return network_holding(net.architecture, arrays, net.fc1.weight.list_ctx())


def named_parameters(net: MLP) -> dict:
    """Parameters by the names `save_parameters` writes: fc1.weight, fc1.bias, fc2.weight, ..."""
    return {
        f"{layer}.{kind}": getattr(getattr(net, layer), kind)
        for layer in net.architecture.layers
        for kind in ("weight", "bias")
    }


def set_parameters(net: MLP, arrays: dict) -> None:
    """Load arrays (numpy or NDArrays), keyed as in `named_parameters`, into every context of
    `net`."""
    from .mxnet_compat import mx

    for name, param in named_parameters(net).items():
        param.set_data(mx.nd.array(arrays[name]))


def predict_logits(net, inputs, batch_size: int = EVAL_BATCH_SIZE) -> np.ndarray:
    """Logits for `inputs` (an N x 784 NDArray on the network's device), in big batches:
    normalised images for the network, raw pixels for a PixelClassifier."""
    parts = [net(inputs[start : start + batch_size]).asnumpy()
             for start in range(0, inputs.shape[0], batch_size)]
    return np.concatenate(parts)


def bare_architecture(arrays: dict[str, np.ndarray], source) -> tuple[Architecture, dict]:
    """The architecture of a parameter file from a plain Gluon script, and its arrays by our
    names, read from the shapes alone (the names differ between scripts: `fc1.weight`,
    `0.weight`, `dense0_weight`): two Dense layers, or two 5x5 convolutions before them."""
    convs = [a for a in arrays.values() if a.ndim == 4]
    if not convs:
        hidden_classes = mlp_layers(arrays, source, PIXELS)
        return Architecture(inputs=PIXELS, hidden=hidden_classes["fc1.weight"].shape[0],
                            classes=hidden_classes["fc2.weight"].shape[0]), hidden_classes
    first, second = sorted(convs, key=lambda w: w.shape[1] != 1)
    needed = (f"mnist-eval reads a bare LeNet of two {KERNEL}x{KERNEL} convolutions from 1 "
              "channel (no padding, each followed by 2x2 pooling), then two Dense layers")
    if len(convs) != 2 or first.shape[1:] != (1, KERNEL, KERNEL) or second.shape[1:] != (
            first.shape[0], KERNEL, KERNEL):
        raise CheckpointError(f"{source} holds convolutions of shapes "
                              f"{', '.join(str(c.shape) for c in convs)}; {needed}")
    named, rest = {}, dict(arrays)
    for layer, conv in (("conv1", first), ("conv2", second)):
        (weight_name,) = [n for n, a in rest.items() if a is conv]
        named[f"{layer}.weight"] = rest.pop(weight_name)
        # The bias named as the weight is (0.bias beside 0.weight), else the one of its size.
        twin = weight_name[: -len("weight")] + "bias" if weight_name.endswith("weight") else None
        sized = [n for n, a in rest.items() if a.shape == (conv.shape[0],)]
        bias = twin if twin in rest else sized[0] if len(sized) == 1 else None
        if bias is None or rest[bias].shape != (conv.shape[0],):
            raise CheckpointError(f"{source}: no bias of {conv.shape[0]} values goes with its "
                                  f"convolution {weight_name}; {needed}")
        named[f"{layer}.bias"] = rest.pop(bias)
    flat = second.shape[0] * LENET_SIDE**2
    dense = mlp_layers(rest, source, flat, needed)
    arch = Architecture(hidden=dense["fc1.weight"].shape[0],
                        classes=dense["fc2.weight"].shape[0], kind="lenet",
                        channels=[first.shape[0], second.shape[0]])
    return arch, {**named, **dense}


def mlp_layers(arrays: dict[str, np.ndarray], source, inputs: int,
               needed: str = ("mnist-eval evaluates Dense(hidden) -> Dense(classes) models, "
                             "or a LeNet of two 5x5 convolutions before them")
               ) -> dict[str, np.ndarray]:
    """Two Dense layers, whatever their names, mapped onto fc1/fc2 by following the shapes
    from `inputs` values."""
    weights = {name: a for name, a in arrays.items() if a.ndim == 2}
    biases = {name: a for name, a in arrays.items() if a.ndim == 1}
    if len(weights) != 2 or len(biases) != 2 or len(arrays) != 4:
        shapes = ", ".join(f"{n} {tuple(a.shape)}" for n, a in arrays.items())
        kind = "a two-layer MLP" if inputs == PIXELS else "a LeNet with two Dense layers"
        raise CheckpointError(f"{source} is not {kind} (it holds {shapes}); {needed}")
    first, second = sorted(weights.values(), key=lambda w: w.shape[1] != inputs)
    if first.shape[1] != inputs:
        raise CheckpointError(f"{source}: no Dense layer takes the {inputs} values "
                              f"({'the pixels' if inputs == PIXELS else 'the pooled maps'}) "
                              f"as input; {needed}")
    if first.shape[0] == second.shape[0]:
        # Equal sizes leave the biases' order to their names, which sort by layer.
        first_bias, second_bias = (biases[n] for n in sorted(biases))
    else:
        by_size = {bias.shape[0]: bias for bias in biases.values()}
        first_bias, second_bias = by_size.get(first.shape[0]), by_size.get(second.shape[0])
    if first_bias is None or second_bias is None or second.shape[1] != first.shape[0]:
        raise CheckpointError(f"{source} holds parameters whose shapes do not chain into "
                              "an MLP; it was saved from another model")
    return {"fc1.weight": first, "fc1.bias": first_bias,
            "fc2.weight": second, "fc2.bias": second_bias}
