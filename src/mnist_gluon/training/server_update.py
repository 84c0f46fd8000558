"""The update of a distributed run, which runs on the parameter servers."""

from __future__ import annotations

from pathlib import Path

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


class DistUpdater:
    """The update of a distributed run: `gluon.Trainer` on MXNet's parameter-server kvstore,
    updating on the servers (update_on_kvstore; updating on the workers raced here and
    ended with wrong parameters). Gradients are summed over the workers, so a step divides by
    the global batch. The optimizer's state lives on the servers and MXNet cannot save it
    there: a resumed distributed run restores parameters and restarts that state."""

    def __init__(self, net, cfg: TrainConfig, kvstore, steps_per_epoch: int, offset: int = 0):
        from ..mxnet_compat import gluon

        options = {"learning_rate": cfg.lr, "wd": cfg.weight_decay,
                   "lr_scheduler": ServerSchedule(steps_per_epoch, cfg, offset)}
        if cfg.optimizer in ("sgd", "nag"):
            options["momentum"] = cfg.momentum
        if cfg.clip_gradient is not None:
            options["clip_gradient"] = cfg.clip_gradient
        self.workers = kvstore.num_workers
        self.trainer = gluon.Trainer(net.collect_params(), cfg.optimizer, options,
                                     kvstore=kvstore, update_on_kvstore=True)
        self.num_update = offset

    def step(self, lr: float, batch_size: int) -> None:
        self.num_update += 1
        self.trainer.step(batch_size * self.workers)

    def save(self, path: str | Path) -> None:
        mx.nd.save(str(path), {"num_update": mx.nd.array([self.num_update], dtype="int64"),
                               "distributed": mx.nd.array([1], dtype="int64")})

    def load(self, path: str | Path) -> None:
        arrays = mx.nd.load(str(path))
        self.num_update = int(arrays["num_update"].asnumpy()[0])
