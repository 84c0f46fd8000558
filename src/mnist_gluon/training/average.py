"""Stochastic weight averaging: the mean of the weights at the end of epochs, held on the
device, validated beside the live weights, and saved with every checkpoint so that a resumed
run continues the same average."""

from __future__ import annotations

from pathlib import Path

from ..checkpoint import Checkpoint, average_path
from ..config import Config
from ..errors import CheckpointError
from ..model import MLP, Architecture, build_model, named_parameters
from ..mxnet_compat import mx


class WeightAverage:
    """The running mean of the live network's weights, kept in a network of its own (`net`)
    that validation and best.params can use as they use the live one."""

    def __init__(self, architecture: Architecture, ctx, start_epoch: int):
        self.start_epoch, self.count = start_epoch, 0
        self.net: MLP = build_model(architecture, ctx)

    def add(self, live: MLP, epoch: int, updater=None) -> bool:
        """Take in the weights at the end of `epoch`; whether the average includes them. The
        average is held to the `updater`'s masks and shared values too (train.prune)."""
        if epoch < self.start_epoch:
            return False
        self.count += 1
        averaged = named_parameters(self.net)
        for name, param in named_parameters(live).items():
            mean = averaged[name].data()
            weights = param.list_data()[0].as_in_context(mean.context)
            if self.count == 1:
                mean[:] = weights
            else:
                mean[:] = mean + (weights - mean) / self.count
            if updater is not None and name in updater.constrained:
                updater.constrain(name, mean)
        return True

    def save(self, path: str | Path) -> None:
        arrays = {name: param.data() for name, param in named_parameters(self.net).items()}
        arrays["count"] = mx.nd.array([self.count], dtype="int64")
        mx.nd.save(str(path), arrays)

    def load(self, path: Path, count: int) -> None:
        try:
            arrays = mx.nd.load(str(path))
        except mx.base.MXNetError:
            raise CheckpointError(f"{path} is not a weight average this tool wrote") from None
        for name, param in named_parameters(self.net).items():
            param.set_data(arrays[name])
        self.count = int(arrays["count"].asnumpy()[0])
        if self.count != count:
            raise CheckpointError(f"{path} holds an average of {self.count} epochs, its sidecar "
                                  f"says {count}; the run cannot resume exactly from it")


def weight_average(config: Config, arch: Architecture, ctx,
                   resumed: Checkpoint | None) -> WeightAverage | None:
    """The run's weight average (train.average), as the resumed checkpoint left it."""
    start = config.train.average.start_epoch
    if start is None:
        return None
    average = WeightAverage(arch, ctx, start)
    if resumed and resumed.sidecar.average_count:
        average.load(average_path(resumed.params_path), resumed.sidecar.average_count)
    return average
