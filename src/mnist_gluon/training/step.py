"""One training step as one graph, the training set held on the devices, and the plan of an
epoch's steps."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data import split_steps
from ..model import MLP
from ..mxnet_compat import gluon, mx
from .augment import NoAugmentation
from .distill import Teacher, distillation_loss


class TrainStep(gluon.HybridBlock):
    """One training batch as one graph: the augmentation's block gathers the batch from the
    training set held on the device, then the network classifies it (and a distillation's
    teacher too); the graph returns [summed loss, number correct]. Loss and accuracy stay on
    the device; gradients flow from the loss alone (argmax and == have none).

    Inputs: the device's `DeviceData.inputs`, then the step's from `plan_epoch`.
    """

    def __init__(self, net: MLP, gather: gluon.HybridBlock, label_smoothing: float = 0.0,
                 teacher: Teacher | None = None, **kwargs):
        super().__init__(**kwargs)
        self.net = net
        self.gather = gather
        self.smoothing = label_smoothing
        self.distill = teacher
        self.teacher = teacher.net if teacher is not None else None
        # Precomputed soft targets come in as the graph's last input instead.
        self.precomputed = teacher is not None and self.teacher is None
        self.calls: dict[int, list] = {}  # per device: its CachedOp's inputs, as `step` fills them

    def step(self, *inputs):
        """self(*inputs), straight through the graph's CachedOp once Gluon has built it. Every
        step passes the same kinds of arrays on the same device, and Gluon's checks of each
        input's type and context, with its own bookkeeping, cost about 25 us a step (a tenth
        of one at batch 64). The device is known by its training set, the first input."""
        template = self.calls.get(id(inputs[0]))
        if template is None:
            out = self(*inputs)
            ctx = inputs[0].context
            self.calls[id(inputs[0])] = [(True, i) if is_arg else (False, i.data(ctx))
                                         for is_arg, i in self._cached_op_args]
            return out
        return self._cached_op(*[inputs[v] if is_arg else v for is_arg, v in template])

    def hybrid_forward(self, F, *inputs):
        if self.precomputed:
            *inputs, teacher_logits = inputs
        batch, labels = self.gather(*inputs)
        logits = self.net(batch)
        log_p = F.log_softmax(logits, axis=1)
        loss = -F.pick(log_p, labels, axis=1)
        if self.smoothing:
            # Label smoothing: the target puts 1 - e on the label and e spread over all.
            loss = (1 - self.smoothing) * loss - self.smoothing * F.mean(log_p, axis=1)
        if self.distill is not None:
            if not self.precomputed:
                teacher_logits = self.teacher(batch)
            loss = distillation_loss(F, logits, teacher_logits, loss, self.distill.temperature,
                                     self.distill.weight)
        correct = F.sum(F.argmax(logits, axis=1) == labels)
        return F.concat(F.sum(loss), correct, dim=0)


def train_step_graph(net: MLP, augmentation: NoAugmentation, label_smoothing: float = 0.0,
                     teacher: Teacher | None = None) -> TrainStep:
    graph = TrainStep(net, augmentation.gather(), label_smoothing, teacher)
    graph.gather.initialize(ctx=net.fc1.weight.list_ctx())  # its constants, if it has any
    graph.hybridize(static_alloc=True, static_shape=True)
    return graph


@dataclass
class DeviceData:
    """A training set, normalised, on one device, as the augmentation holds it: what the
    training graph gathers from."""

    inputs: tuple

    @classmethod
    def on_devices(cls, normalised: np.ndarray, labels: np.ndarray,
                   augmentation: NoAugmentation, ctxs) -> list[DeviceData]:
        """The arrays are made once on the host, then copied to each device."""
        host = augmentation.device_arrays(normalised, labels)
        return [cls(tuple(mx.nd.array(a, ctx=ctx, dtype=a.dtype) for a in host)) for ctx in ctxs]


def plan_sampled_epoch(batches: list[np.ndarray], labels: np.ndarray,
                       augmentation: NoAugmentation, seed: int, epoch: int, ctx,
                       copies: int = 1) -> list[list]:
    """plan_epoch's steps for batches of any size, on one device: each step's columns, or
    None for a step whose batch is empty; with each example `copies` times in a row (each copy
    augmented anew)."""
    order = np.repeat(np.concatenate(batches), copies)
    columns = augmentation.step_columns(order, labels, seed, epoch)
    bounds = np.cumsum([len(batch) * copies for batch in batches])[:-1]
    parts = [np.split(column, bounds) for column in columns]
    return [[tuple(mx.nd.array(part[i], ctx=ctx, dtype=part[i].dtype) for part in parts)
             if len(batch) else None] for i, batch in enumerate(batches)]


def plan_epoch(order: np.ndarray, labels: np.ndarray, batch_size: int, ctxs,
               augmentation: NoAugmentation, seed: int, epoch: int,
               soft_targets: np.ndarray | None = None) -> list[list[tuple]]:
    """Each step's own inputs to the training graph, per device, made once for the epoch;
    precomputed `soft_targets` (the teacher's logits per training image) go last."""
    columns = augmentation.step_columns(order, labels, seed, epoch)
    if soft_targets is not None:
        columns = [*columns, soft_targets[order]]
    return split_steps(columns, batch_size, ctxs)
