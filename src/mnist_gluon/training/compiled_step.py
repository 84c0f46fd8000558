"""The MLP's whole training step in one call of the compiled `mnist_mlp_step`: forward, loss,
backward and the update (NAG or SGD with momentum), on a fixed team of threads.

Each number it computes is summed by one thread in a fixed order, so a run's parameters are
the same on 1, 2 or 16 threads. They are not MXNet's: its products round otherwise, and the
AVX-512 and AVX2 forms of ours round differently from each other (the sidecar records which
ran). `kernels: mxnet` trains through MXNet's graph as before.
"""

from __future__ import annotations

import time

import numpy as np

from ..config import Config
from ..engine import free_cores
from ..mxnet_compat import mx
from .augment import NoAugmentation

STEP = "mlp_step"  # the sidecar's name of it, in `kernels`
ISA_NAMES = {512: "avx512", 2: "avx2"}


def compiled_isa() -> str | None:
    """The instruction set the loaded library's step runs on here; None when it cannot run
    (a CPU without AVX2 and FMA)."""
    import ctypes

    from .. import kernels

    return ISA_NAMES.get(ctypes.CDLL(str(kernels.library())).mnist_mlp_step_isa())


class CompiledStep:
    """Train steps as `GraphStep` does, up to `most` in one call of mnist_mlp_step. fc1's
    weights and momentum live in the step's mirror while it trains: `sync` writes them back
    to the network and the updater, and the first call after it (or after `refresh`) reads
    them again. The updater only counts the steps (its state file is the same either way)."""

    def __init__(self, updater, augmentation: NoAugmentation, config: Config, threads: int,
                 background: float):
        from .. import kernels

        names = list(updater.params)  # fc1.weight, fc1.bias, fc2.weight, fc2.bias
        self.fc1 = [updater.params[names[0]].data(), updater.states[names[0]][0]]
        rest = [updater.params[name].data() for name in names[1:]]
        rest += [updater.states[name][0] for name in names[1:]]
        ctx = rest[0].context
        self.mirror = mx.nd.zeros((2 * self.fc1[0].size,), ctx=ctx)
        self.updater, self.threads = updater, threads
        self.options = dict(updater.options)
        # Without augmentation the steps gather their batches themselves, as many as a call
        # may take; otherwise the augmentation's graph makes each batch first, one a call.
        self.gather = None
        self.most = 1 << 30
        if type(augmentation) is not NoAugmentation:
            self.gather = augmentation.gather()
            self.gather.initialize(ctx=ctx)
            self.gather.hybridize(static_alloc=True, static_shape=True)
            self.most = 1
        self.plan: tuple[list, object] | None = None  # the epoch's plan, its batches stacked
        self.call = kernels.Invocation(
            "mnist_mlp_step", [self.mirror, *rest],
            ("kind", *self.options, "rescale_grad", "smoothing", "threads", "background",
             "parity"), fresh_output=True)
        self.settings = [config.train.optimizer, *self.options.values()]
        self.smoothing = config.train.label_smoothing
        self.background = repr(float(background))
        self.mirrored = False
        self.asked, self.size = -1.0, threads

    def refresh(self) -> None:
        """Read fc1's weights and momentum again at the next call: they were changed."""
        self.mirrored = False

    def sync(self) -> None:
        """Write fc1's weights and momentum back where the network and the updater read
        them (a checkpoint, validation)."""
        if self.mirrored:
            mx.nd.mnist_mlp_mirror(*self.fc1, self.mirror, to_mirror=0, threads=self.threads)
            self.mirrored = False

    def __call__(self, data: list, steps: list, done: int, count: int, lr_at, batch_size: int,
                 index: int, sums) -> int:
        """Train the plan's steps done..done+count-1 (global steps from `index`); returns 0,
        the batches skipped."""
        if not self.mirrored:
            mx.nd.mnist_mlp_mirror(*self.fc1, self.mirror, to_mirror=1, threads=self.threads)
            self.mirrored = True
        (part,) = data
        ctx = part.inputs[0].context
        if self.gather is None:
            images, labels = part.inputs
            batches = self.stacked(steps)[done:done + count]
        else:
            images, labels = self.gather(*part.inputs, *steps[done][0])
            batches = mx.nd.arange(images.shape[0], ctx=ctx, dtype="int32").reshape((1, -1))
        rates = mx.nd.array(np.array([lr_at(index + t) for t in range(count)], np.float32),
                            ctx=ctx)
        stats = self.call([images, labels, batches, rates, *sums.pairs[0]], *self.settings,
                          1.0 / batch_size, self.smoothing, self.team(), self.background,
                          index % 2)
        sums.record(index, [stats])
        self.updater.num_update += count
        return 0

    def team(self) -> int:
        """The threads of the next call: the run's, less those a neighbour's threads take
        (engine.free_cores), asked at most every 10 ms. The numbers are the same on any."""
        now = time.monotonic()
        if now - self.asked >= 0.01:
            self.asked, self.size = now, free_cores(self.threads)
        return self.size

    def stacked(self, steps: list):
        """The plan's batches as one (steps, batch) array, made once per plan."""
        if self.plan is None or self.plan[0] is not steps:
            self.plan = (steps, mx.nd.stack(*(step[0][0] for step in steps)))
        return self.plan[1]
