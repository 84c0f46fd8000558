"""The update of a distributed run, which runs on the parameter servers."""

from __future__ import annotations

from pathlib import Path

from .. import kernels
from ..config import TrainConfig
from ..mxnet_compat import mx
from .optim import learning_rate


class ServerSchedule:
    """`learning_rate` for the optimizer that runs on the parameter servers of a distributed
    run: it is pickled to them and called with their update count, as an `mx.lr_scheduler`
    is. `offset` is the steps a resumed run had already taken. (Not a subclass: a server
    unpickles it from inside `import mxnet`, before `mx.lr_scheduler` exists.)"""

    def __init__(self, steps_per_epoch: int, cfg: TrainConfig, offset: int = 0):
        self.base_lr = cfg.lr
        self.steps_per_epoch, self.cfg, self.offset = steps_per_epoch, cfg, offset

    def __call__(self, num_update: int) -> float:
        return learning_rate(self.offset + max(num_update - 1, 0), self.steps_per_epoch,
                             self.cfg)


class CompiledNAG(mx.optimizer.NAG):
    """mx.optimizer.NAG, its update done by the compiled `mnist_fused_update` on the server
    that holds the parameter (pickled to it by name, so it loads the library there too); on a
    server where the library does not load, by MXNet's `nag_mom_update`, as NAG does. (MXNet
    drops an error raised in a server's update, leaving the parameter as it was: the whole
    runs of tests/test_kernels.py are what show this update happens.)"""

    def _update_impl(self, index, weight, grad, state, multi_precision=False):
        if multi_precision or state is None or kernels.load() is not None:
            return super()._update_impl(index, weight, grad, state, multi_precision)
        self._update_count(index)
        options = {"lr": self._get_lr(index), "wd": self._get_wd(index),
                   "rescale_grad": self.rescale_grad, "momentum": self.momentum}
        if self.clip_gradient:
            options["clip_gradient"] = self.clip_gradient
        # By name: inside a server's `import mxnet` there is no mx.nd yet.
        from mxnet import ndarray

        ndarray.mnist_fused_update(weight, grad, state, kind="nag", count=1, **options)
        return None


class DistUpdater:
    """The update of a distributed run: `gluon.Trainer` on MXNet's parameter-server kvstore,
    updating on the servers (update_on_kvstore; updating on the workers raced here and
    ended with wrong parameters). Gradients are summed over the workers, so a step divides by
    the global batch. The optimizer's state lives on the servers and MXNet cannot save it
    there: a resumed distributed run restores parameters and restarts that state."""

    def __init__(self, net, cfg: TrainConfig, kvstore, steps_per_epoch: int, offset: int = 0,
                 compiled: bool = False):
        from ..mxnet_compat import gluon

        options = {"learning_rate": cfg.lr, "wd": cfg.weight_decay,
                   "lr_scheduler": ServerSchedule(steps_per_epoch, cfg, offset)}
        if cfg.optimizer in ("sgd", "nag"):
            options["momentum"] = cfg.momentum
        if cfg.clip_gradient is not None:
            options["clip_gradient"] = cfg.clip_gradient
        compiled = compiled and cfg.optimizer == "nag" and cfg.momentum > 0
        optimizer = (CompiledNAG(**options) if compiled
                     else mx.optimizer.create(cfg.optimizer, **options))
        self.kernel = kernels.COMPILED if compiled else kernels.MXNET
        # train.prune is refused with a dist_* kvstore
        self.masks, self.sparsity, self.shared, self.constrained = {}, {}, {}, []
        self.workers = kvstore.num_workers
        self.trainer = gluon.Trainer(net.collect_params(), optimizer, kvstore=kvstore,
                                     update_on_kvstore=True)
        self.num_update = offset

    def step(self, lr: float, batch_size: int, adds: list | tuple = ()) -> None:
        self.num_update += 1
        self.trainer.step(batch_size * self.workers)
        for target, value in adds:
            target += value

    def save(self, path: str | Path) -> None:
        mx.nd.save(str(path), {"num_update": mx.nd.array([self.num_update], dtype="int64"),
                               "distributed": mx.nd.array([1], dtype="int64")})

    def load(self, path: str | Path) -> None:
        arrays = mx.nd.load(str(path))
        self.num_update = int(arrays["num_update"].asnumpy()[0])
