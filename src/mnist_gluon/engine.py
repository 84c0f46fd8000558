"""Which of MXNet's engines a command runs on: chosen before MXNet is imported, because MXNet
reads the choice from the environment once.

MXNet's default engine runs operators on a worker thread, with one OpenMP thread, so that
Python can queue the next operators while the worker runs. That pays when operators are small
(training steps of up to 128 images). When a few big operators do the work - training steps
of 256 images or more, inference over thousands of images - both cores serve better: the
NaiveEngine runs each operator at once in the calling thread, with an OpenMP thread per core.
The numbers are the same bit for bit either way (BENCHMARKS.md, "Against JAX, and MXNet's
engines"). Whatever the user sets in the environment (MXNET_ENGINE_TYPE, OMP_NUM_THREADS)
stands.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

from .device import parse_device

SYNCHRONOUS_FROM_BATCH = 256  # images per device and step; measured in BENCHMARKS.md


def all_cores() -> dict[str, str]:
    """The settings of synchronous operators on every core this process may use."""
    return {"MXNET_ENGINE_TYPE": "NaiveEngine",
            "OMP_NUM_THREADS": str(len(os.sched_getaffinity(0)))}


def training_settings(batch_size: int, device: str, kvstore: str) -> dict[str, str]:
    """The engine settings for training: all cores for big steps of a local run on one CPU,
    MXNet's defaults otherwise (GPUs, several devices and clusters need its threaded engine)."""
    if (batch_size >= SYNCHRONOUS_FROM_BATCH and kvstore == "local"
            and runs_on_one_cpu(device)):
        return all_cores()
    return {}


def inference_settings(device: str, threads: int | None = None) -> dict[str, str]:
    """The engine settings for inference on `device`: synchronous, on `threads` OpenMP threads
    (every core unless given)."""
    if not runs_on_one_cpu(device):
        return {}
    settings = all_cores()
    if threads is not None:
        settings["OMP_NUM_THREADS"] = str(threads)
    return settings


def shared_settings(jobs: int) -> dict[str, str]:
    """The engine settings for one of `jobs` training processes that run side by side: MXNet's
    threaded engine (one thread of operators each) once they are more than one, since each
    taking every core would slow all of them."""
    return {"MXNET_ENGINE_TYPE": "ThreadedEnginePerDevice"} if jobs > 1 else {}


def runs_on_one_cpu(device: str) -> bool:
    spec = parse_device(device)
    if spec.kind == "auto":  # the CPU unless a CUDA build of MXNet is installed
        return cpu_build_installed()
    return spec.kind == "cpu" and len(spec.ids) == 1


def cpu_build_installed() -> bool:
    """Whether the installed MXNet is the `mxnet` package (CUDA builds are `mxnet-cu*`); read
    from its metadata folder, which is quicker than importlib.metadata."""
    spec = importlib.util.find_spec("mxnet")
    if spec is None or spec.origin is None:
        return False
    return any(Path(spec.origin).parent.parent.glob("mxnet-[0-9]*.dist-info"))


def choose(settings: dict[str, str]) -> None:
    """Put `settings` into the environment where the user has not set them. After MXNet is
    imported, this changes nothing."""
    if "mxnet" in sys.modules:
        return
    for name, value in settings.items():
        os.environ.setdefault(name, value)
