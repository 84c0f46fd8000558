"""The optimizer update, called directly on the parameters.

`gluon.Trainer.step` spends more time in Python than the update itself takes on this small
network (see BENCHMARKS.md), so a local run updates through this class instead. On a CPU
context with the compiled kernels, NAG, SGD with momentum and Adam update every parameter in
one call of `mnist_fused_update`; otherwise each parameter is updated by MXNet's own operator
(`sgd_mom_update`, `nag_mom_update`, `adam_update`, `rmsprop_update`, with the defaults of
`mx.optimizer`). Both do the same arithmetic, bit for bit, so a recipe trains as it would
under `gluon.Trainer`.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from .. import kernels
from ..compression.codebook import Clusters
from ..compression.prune import magnitude_masks, prunable, sparsity_of
from ..config import TrainConfig
from ..errors import CheckpointError
from ..mxnet_compat import mx

ADAM_BETAS = (0.9, 0.999)
RMSPROP_GAMMA = 0.9
EPSILON = 1e-8
FUSED = ("nag", "sgd", "adam")  # the optimizers mnist_fused_update does (with a state)


def learning_rate(step: int, steps_per_epoch: int, cfg: TrainConfig) -> float:
    """The learning rate for global step `step` (0-based): warm-up, then the schedule."""
    epoch_progress = step / steps_per_epoch
    warmup_steps = cfg.warmup_epochs * steps_per_epoch
    if step < warmup_steps:
        return cfg.lr * (step + 1) / warmup_steps
    if cfg.lr_schedule == "cosine":
        span = cfg.epochs - cfg.warmup_epochs
        return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch_progress - cfg.warmup_epochs) / span))
    if cfg.lr_schedule == "step":
        milestones = cfg.lr_step_epochs or [m for m in (cfg.epochs // 2, cfg.epochs * 3 // 4) if m]
        return cfg.lr * cfg.lr_decay ** sum(epoch_progress >= m for m in milestones)
    return cfg.lr


class Updater:
    """Optimizer state for `params` (name -> gluon Parameter) and the step that applies it.

    With several devices, gradients are summed on `reduce_ctx`, the update runs there once,
    and the new weights are copied back to every device.
    """

    def __init__(self, params: dict, cfg: TrainConfig, reduce_ctx, compiled: bool = False):
        """`compiled`: update through the compiled kernels where they apply and load."""
        self.params = params
        self.cfg = cfg
        self.reduce_ctx = reduce_ctx
        self.num_update = 0
        self.multi_device = any(len(p.list_ctx()) > 1 or p.list_ctx()[0] != reduce_ctx
                                for p in params.values())
        self.weights = {name: self._master(p) for name, p in params.items()}
        self.states = {name: [mx.nd.zeros(w.shape, ctx=reduce_ctx) for _ in range(self._slots())]
                       for name, w in self.weights.items()}
        self.options = {"wd": cfg.weight_decay}
        if cfg.clip_gradient is not None:
            self.options["clip_gradient"] = cfg.clip_gradient  # each element to +-value
        if cfg.optimizer in ("sgd", "nag") and self._slots():
            self.options["momentum"] = cfg.momentum
        elif cfg.optimizer == "adam":
            self.options.update(beta1=ADAM_BETAS[0], beta2=ADAM_BETAS[1], epsilon=EPSILON)
        elif cfg.optimizer == "rmsprop":
            self.options.update(gamma1=RMSPROP_GAMMA, epsilon=EPSILON)
        self.fused = (compiled and cfg.optimizer in FUSED and self._slots() > 0
                      and reduce_ctx.device_type == "cpu" and kernels.available())
        self.call: kernels.Invocation | None = None  # the fused update, made once
        # train.prune: each pruned weight's mask, multiplied in after every update, and in a
        # sharing phase each weight's cluster (codebook.Clusters), tied after every update
        self.masks: dict[str, mx.nd.NDArray] = {}
        self.sparsity: dict[str, float] = {}
        self.shared: dict[str, Clusters] = {}
        self.constrained: list[str] = []  # the names of masks and shared, kept by _hold
        # What a step draws from that nobody may know, saved with the states: train.privacy's
        # key (privacy.sampling)
        self.secrets: dict[str, np.ndarray] = {}

    @property
    def kernel(self) -> str:
        """Which implementation updates: kernels.COMPILED or kernels.MXNET."""
        return kernels.COMPILED if self.fused else kernels.MXNET

    def _master(self, param):
        return param.list_data()[0].copyto(self.reduce_ctx) if self.multi_device else param.data()

    def _slots(self) -> int:
        if self.cfg.optimizer == "adam":
            return 2
        if self.cfg.optimizer in ("sgd", "nag") and self.cfg.momentum == 0:
            return 0
        return 1

    def step(self, lr: float, batch_size: int, adds: list | tuple = ()) -> None:
        """One update with learning rate `lr` from gradients summed over `batch_size` examples;
        then each (target, value) of `adds`, target += value. MXNet spends about 25 us on each
        operator called from Python, a tenth of a step at batch 64: the fused update makes the
        additions (the epoch's running sums) in its own call."""
        self.num_update += 1
        options = dict(self.options, rescale_grad=1.0 / batch_size, lr=self._scaled_lr(lr))
        if self.fused:
            # With one device the sums are on it too, and go in the same call.
            joined = () if self.multi_device else adds
            # The same arguments as MXNet's operators, read by MXNet's own parser: it is not
            # correctly rounded (2.6938926112052286e-06 becomes 2.6938924e-06).
            self._fused_call(tuple(options))([array for pair in joined for array in pair],
                                             self.cfg.optimizer, len(self.weights), len(joined),
                                             *options.values())
            adds = adds if self.multi_device else ()
        else:
            for name, param in self.params.items():
                self._apply(self.weights[name], self._gradient(param), self.states[name],
                            options)
        for target, value in adds:
            target += value
        for name in self.constrained:
            self.constrain(name, self.weights[name])
        if self.multi_device:
            for name, param in self.params.items():
                for data in param.list_data():
                    self.weights[name].copyto(data)

    def prune(self, sparsity: float, scope: str) -> None:
        """Mask the smallest `sparsity` of the weights (compression.prune.magnitude_masks), from
        now on; the weights they prune become zero on every device now."""
        names = prunable(self.weights)
        masks = magnitude_masks({name: self.weights[name].asnumpy() for name in names},
                                sparsity, scope)
        self._set_masks(masks)

    def share(self, size: int) -> None:
        """Tie each weight layer's kept weights to at most `size` shared values (their k-means
        centroids) from now on; weights tied already keep their values and clusters."""
        self.shared = {name: Clusters.of(self.weights[name].asnumpy(), size)
                       for name in prunable(self.weights)}
        self._hold(self.shared)

    def constrain(self, name: str, array) -> None:
        """Hold `array`, the weights `name` or their average, to the run's mask and shared
        values, in place."""
        if name in self.masks:
            array *= self.masks[name].as_in_context(array.context)
        if name in self.shared:
            array[:] = self.shared[name].tie(array.asnumpy())

    def _set_masks(self, masks: dict[str, np.ndarray]) -> None:
        self.masks = {name: mx.nd.array(mask, ctx=self.reduce_ctx) for name, mask in masks.items()}
        self.sparsity = sparsity_of(masks)
        self._hold(self.masks)

    def _hold(self, names) -> None:
        """Constrain the weights `names` now, on every device."""
        self.constrained = sorted(self.masks.keys() | self.shared.keys())
        for name in names:
            self.constrain(name, self.weights[name])
            if self.multi_device:
                for data in self.params[name].list_data():
                    self.weights[name].copyto(data)

    def _fused_call(self, keys: tuple[str, ...]) -> kernels.Invocation:
        """mnist_fused_update on each parameter's weight, gradient and states (then the sums).
        With one device these are the same arrays every step, so the call is made once:
        Gluon's getters and MXNet's generated function cost 30 us a step."""
        if self.call is not None:
            return self.call
        inputs = [array for name, param in self.params.items()
                  for array in (self.weights[name], self._gradient(param), *self.states[name])]
        call = kernels.Invocation("mnist_fused_update", inputs, ("kind", "count", "adds", *keys))
        if not self.multi_device:
            self.call = call
        return call

    def _gradient(self, param):
        if not self.multi_device:
            return param.grad()
        return mx.nd.add_n(*(g.as_in_context(self.reduce_ctx) for g in param.list_grad()))

    def _scaled_lr(self, lr: float) -> float:
        if self.cfg.optimizer != "adam":
            return lr
        beta1, beta2 = ADAM_BETAS  # bias correction, as mx.optimizer.Adam applies it
        return lr * math.sqrt(1 - beta2 ** self.num_update) / (1 - beta1 ** self.num_update)

    def _apply(self, weight, grad, states, options) -> None:
        kind = self.cfg.optimizer
        if kind == "adam":
            mx.nd.adam_update(weight, grad, *states, out=weight, **options)
        elif kind == "rmsprop":
            mx.nd.rmsprop_update(weight, grad, *states, out=weight, **options)
        elif not states:
            mx.nd.sgd_update(weight, grad, out=weight, **options)
        elif kind == "nag":
            mx.nd.nag_mom_update(weight, grad, *states, out=weight, **options)
        else:
            mx.nd.sgd_mom_update(weight, grad, *states, out=weight, **options)

    # --- saved with every checkpoint, so a resumed run continues the same trajectory ---------

    def save(self, path: str | Path) -> None:
        arrays = {f"{name}:{i}": state for name, slots in self.states.items()
                  for i, state in enumerate(slots)}
        arrays["num_update"] = mx.nd.array([self.num_update], dtype="int64")
        arrays.update({f"mask:{name}": mask for name, mask in self.masks.items()})
        arrays.update({f"secret:{name}": mx.nd.array(value, dtype="int64")
                       for name, value in self.secrets.items()})
        mx.nd.save(str(path), arrays)

    def load(self, path: str | Path) -> None:
        try:
            arrays = mx.nd.load(str(path))
        except mx.base.MXNetError as error:
            raise CheckpointError(f"{path} is not an optimizer state file this tool wrote "
                                  f"({str(error).splitlines()[0]})") from None
        expected = {f"{name}:{i}" for name, slots in self.states.items()
                    for i in range(len(slots))} | {"num_update"}
        masks = ([f"mask:{name}" for name in prunable(self.weights) if f"mask:{name}" in arrays]
                 if isinstance(arrays, dict) else [])
        secrets = [key for key in arrays if key.startswith("secret:")] if isinstance(
            arrays, dict) else []
        if not isinstance(arrays, dict) or set(arrays) - set(masks) - set(secrets) != expected:
            raise CheckpointError(f"{path} holds the state of another optimizer than "
                                  f"train.optimizer={self.cfg.optimizer}; resume with the "
                                  "optimizer the run started with")
        for name, slots in self.states.items():
            for i, state in enumerate(slots):
                state[:] = arrays[f"{name}:{i}"].as_in_context(self.reduce_ctx)
        self.num_update = int(np.asarray(arrays["num_update"].asnumpy())[0])
        self.secrets = {key.removeprefix("secret:"): arrays[key].asnumpy() for key in secrets}
        if masks:
            self._set_masks({key.removeprefix("mask:"): arrays[key].asnumpy() for key in masks})
