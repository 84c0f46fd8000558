"""The network and what trains it: the model of a config on its devices, the optimizer's
updater, and the step that trains a batch (MXNet's graph, or the MLP's compiled step)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config
from ..model import (
    MLP,
    Architecture,
    architecture_of,
    build_model,
    named_parameters,
    set_parameters,
)
from ..mxnet_compat import mx
from ..privacy.accounting import Mechanism
from ..privacy.clipping import PrivateStep
from .augment import NoAugmentation
from .cluster import Cluster
from .compiled_step import CompiledStep
from .distill import Teacher
from .kernel_choice import KernelChoice
from .loop import GraphStep
from .optim import Updater
from .server_update import DistUpdater
from .step import train_step_graph


@dataclass
class Trainer:
    """The network and what trains it: `step` trains one batch (`train_epoch` calls it),
    `updater` holds the optimizer's state."""

    architecture: Architecture
    net: MLP
    step: GraphStep | CompiledStep | PrivateStep
    updater: Updater | DistUpdater
    teacher: Teacher | None = None

    @property
    def soft_targets(self):
        """The teacher's precomputed logits per training image, if it has them."""
        return self.teacher.targets if self.teacher is not None else None


def build_trainer(config: Config, ctxs, augmentation: NoAugmentation,
                  arrays: dict | None = None, cluster: Cluster | None = None, steps: int = 1,
                  offset: int = 0, kernels: KernelChoice | None = None,
                  teacher: Teacher | None = None, threads: int = 1,
                  background: float = 0.0, mechanism: Mechanism | None = None) -> Trainer:
    """The model of `config` on `ctxs`, Xavier-initialised or holding `arrays`, with its
    training step; a distributed `cluster` updates on its servers, from step `offset` of
    `steps` per epoch. `kernels`: which compiled kernels train it (choose_kernels; None: MXNet's
    operators); `teacher`: distilled from it (read_teacher); `threads`: the compiled step's;
    `background`: the normalised images' background pixel, which the compiled step skips;
    `mechanism`: train.privacy's DP-SGD, which then trains each step."""
    arch = architecture_of(config.model)
    net = build_model(arch, ctxs)
    if arrays is not None:
        set_parameters(net, arrays)
    compiled_update = kernels is not None and kernels.compiled_update
    if cluster is not None and cluster.kvstore is not None:
        updater = DistUpdater(net, config.train, cluster.kvstore, steps, offset,
                              compiled_update)
    else:
        # Several devices: gradients meet on the CPU (kvstore local) or on the first device.
        reduce_ctx = mx.cpu() if len(ctxs) > 1 and config.train.kvstore == "local" else ctxs[0]
        updater = Updater(named_parameters(net), config.train, reduce_ctx, compiled_update)
    if mechanism is not None:
        gather = augmentation.gather()
        gather.initialize(ctx=ctxs[0])  # its constants, if it has any
        step = PrivateStep(net, gather, updater, mechanism, config.train.label_smoothing,
                           config.train.privacy.augmentations)
    elif kernels is not None and kernels.step is not None:
        step = CompiledStep(updater, augmentation, config, threads, background)
    else:
        graph = train_step_graph(net, augmentation, config.train.label_smoothing, teacher)
        step = GraphStep(graph, updater, config.train.skip_nonfinite)
    return Trainer(arch, net, step, updater, teacher)
