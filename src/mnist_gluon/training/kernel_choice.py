"""Which implementation of each operator a run uses: mnist_gluon's compiled kernels, or
MXNet's own operators. The sidecar records the choice (`kernels`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import kernels
from ..config import Config
from ..errors import ConfigError


@dataclass(frozen=True)
class KernelChoice:
    config: Config  # the run's config, its `kernels` as the run will use them
    compiled_update: bool  # whether the update may use mnist_fused_update
    elastic: str | None  # kernels.COMPILED or kernels.MXNET; None without elastic distortion
    notes: tuple[str, ...] = ()  # lines for the log, where the choice is not what was asked


def choose_kernels(config: Config, ctxs, recorded: dict[str, str] | None) -> KernelChoice:
    """The kernels of a run of `config` on `ctxs`; a resumed run passes its sidecar's record,
    and keeps the elastic distortion it began with (a record without one: MXNet's)."""
    on_cpu = all(ctx.device_type == "cpu" for ctx in ctxs)
    wanted = config.kernels == kernels.COMPILED and on_cpu
    elastic = None
    if config.data.augment.elastic.alpha > 0:
        elastic = recorded.get("elastic", kernels.MXNET) if recorded is not None else (
            kernels.COMPILED if wanted else kernels.MXNET)
    missing = kernels.load() if wanted or elastic == kernels.COMPILED else None
    notes = []
    if elastic == kernels.COMPILED and missing is not None:
        if recorded is not None:  # its random numbers were the compiled kernel's
            raise ConfigError(f"this run was distorted by mnist_gluon's compiled kernels: "
                              f"{missing}; resume it where they are (a C++ compiler builds "
                              "them at first use)")
        elastic = kernels.MXNET
        notes.append(f"mnist-train: mnist_gluon's compiled kernels are not available "
                     f"({missing}); the update and the elastic distortion run on MXNet's own "
                     "operators (the update gives the same numbers, the distortion draws "
                     "others)")
    elif wanted and missing is not None:
        notes.append(f"mnist-train: mnist_gluon's compiled kernels are not available "
                     f"({missing}); the update runs on MXNet's own operators, which give the "
                     "same numbers")
    if elastic is not None:
        if elastic != config.kernels:
            config = dataclasses.replace(config, kernels=elastic)
            if not notes:
                notes.append(
                    f"mnist-train: resuming with the elastic distortion the run began with: "
                    f"kernels={elastic}" if recorded is not None else
                    "mnist-train: the elastic distortion runs on MXNet's operators on GPU "
                    "contexts (the compiled kernel is for CPUs)")
        if elastic == kernels.COMPILED and not on_cpu:
            raise ConfigError("this run was distorted by the compiled kernel, which runs on "
                              "CPU contexts only; resume it with device: cpu")
    return KernelChoice(config, wanted and missing is None, elastic, tuple(notes))
