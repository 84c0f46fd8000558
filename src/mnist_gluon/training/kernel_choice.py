"""Which implementation of each operator a run uses: mnist_gluon's compiled kernels, or
MXNet's own operators. The sidecar records the choice (`kernels`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .. import kernels
from ..config import Config
from ..errors import ConfigError
from .compiled_step import STEP, compiled_isa


@dataclass(frozen=True)
class KernelChoice:
    config: Config  # the run's config, its `kernels` as the run will use them
    compiled_update: bool  # whether the update may use mnist_fused_update
    elastic: str | None  # kernels.COMPILED or kernels.MXNET; None without elastic distortion
    notes: tuple[str, ...] = ()  # lines for the log, where the choice is not what was asked
    # the instruction set of the MLP's compiled whole step (compiled_step), None: MXNet's graph
    step: str | None = None


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
    one_cpu = on_cpu and len(ctxs) == 1
    fits = kernels.why_not_compiled_step(config, one_cpu) is None
    what = "the MLP's training step" if fits else "the update"
    notes = []
    if elastic == kernels.COMPILED and missing is not None:
        if recorded is not None:  # its random numbers were the compiled kernel's
            raise ConfigError(f"this run was distorted by mnist_gluon's compiled kernels: "
                              f"{missing}; resume it where they are (a C++ compiler builds "
                              "them at first use)")
        elastic = kernels.MXNET
        notes.append(f"mnist-train: mnist_gluon's compiled kernels are not available "
                     f"({missing}); {what} and the elastic distortion run on MXNet's own "
                     "operators, as with kernels: mxnet")
    elif wanted and missing is not None:
        notes.append(f"mnist-train: mnist_gluon's compiled kernels are not available "
                     f"({missing}); {what} runs on MXNet's own operators, as with "
                     "kernels: mxnet")
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
    step = None
    if wanted and missing is None and fits:
        step = compiled_isa()
        if step is None:
            notes.append("mnist-train: the MLP's compiled step needs a CPU with AVX2 and FMA; "
                         "the step runs on MXNet's operators")
    if recorded is not None and STEP not in recorded:
        step = None  # a run keeps the step it began with: its numbers are MXNet's
    return KernelChoice(config, wanted and missing is None, elastic, tuple(notes), step)
