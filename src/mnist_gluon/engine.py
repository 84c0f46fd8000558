"""Which of MXNet's engines, and how many OpenMP threads, a command runs on: chosen before MXNet
is imported, because MXNet reads both from the environment once.

Training runs on the config's `threads`: by default every core this process may use where
that pays (a LeNet's convolutions, the MLP's compiled step), else one thread on MXNet's
threaded engine (MXNet's small operators gain nothing from more). With more than one, a run on
one CPU takes the NaiveEngine, and OpenMP threads that wait spin only briefly before they
sleep: spinning is what made each of two runs side by side 5 to 250 times slower
(BENCHMARKS.md, "The whole process and the shared machine"). A run's numbers can depend on the
thread count (MKLDNN splits a batch's gradient sums by it; the compiled step's do not), so the
count is recorded in every checkpoint, and a resumed run continues on it.

Inference (mnist-eval, -predict, -export) runs short bursts of big operators: the synchronous
NaiveEngine, in the calling thread, with an OpenMP thread per core. The numbers are the same
either way. What the user sets in the environment (MXNET_ENGINE_TYPE, OMP_NUM_THREADS) stands,
except that a resumed run keeps the count it was trained on.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from pathlib import Path

from .device import parse_device
from .errors import ConfigError
from .reading import MAX_SIDECAR_BYTES, read_regular

THREADS = "OMP_NUM_THREADS"
ENGINE = "MXNET_ENGINE_TYPE"
TRAINING_THREADS = 1
# How long an OpenMP thread with nothing to do spins before it sleeps. GNU OpenMP's default,
# 300,000 spins (milliseconds), is what made two runs side by side collapse; these keep each
# run's share of the machine (BENCHMARKS.md, "Every core, and a neighbour").
WAITING = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT")
FAIR_WAITING = {"GOMP_SPINCOUNT": "1000"}


def all_cores() -> dict[str, str]:
    """The settings of synchronous operators on every core this process may use."""
    return {ENGINE: "NaiveEngine", THREADS: str(len(os.sched_getaffinity(0)))}


def thread_count(value: str | None) -> int | None:
    """An OMP_NUM_THREADS value as a thread count; None when it is not set."""
    value = (value or "").strip()
    if not value:
        return None
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"{THREADS}={value!r} is not a number of threads; set it to a whole "
                          f"number such as 1, or unset it (training uses {TRAINING_THREADS})")
    return int(value)


def training_threads(threads: int | str, parallel: bool) -> int:
    """The OpenMP threads a run trains on, from the config's `threads`: auto is every core this
    process may use where that pays (`parallel`: a LeNet's convolutions, the MLP's compiled
    step), else one (MXNet's small operators gain nothing from more)."""
    if threads != "auto":
        return int(threads)
    return len(os.sched_getaffinity(0)) if parallel else TRAINING_THREADS


def choose_training(threads: int = TRAINING_THREADS, recorded: int | None = None,
                    one_cpu: bool = True) -> str | None:
    """Set the OpenMP threads of a training run: `recorded`, the count a resumed run was
    trained on, else what OMP_NUM_THREADS asks, else `threads`. With more than one, threads
    that wait spin only briefly (FAIR_WAITING), and a run on `one_cpu` takes the synchronous
    NaiveEngine (MXNet's threaded engine runs operators on a worker thread of its own, beside
    the OpenMP team). Returns a note when the environment asked for another count than the
    run keeps. Nothing changes once MXNet is imported."""
    asked = thread_count(os.environ.get(THREADS))
    if "mxnet" in sys.modules:
        return None
    note = None
    if recorded is not None and asked not in (None, recorded):
        note = (f"resuming on the {openmp_threads(recorded)} this run was trained on, not "
                f"{THREADS}={asked}: its numbers depend on the count")
        os.environ[THREADS] = str(recorded)
    else:
        os.environ.setdefault(THREADS, str(recorded or threads))
    if int(os.environ[THREADS]) > 1:
        if not any(name in os.environ for name in WAITING):
            os.environ.update(FAIR_WAITING)
        if one_cpu:
            os.environ.setdefault(ENGINE, "NaiveEngine")
    return note


def openmp_threads(count: int | None) -> str:
    return ("MXNet's default OpenMP threads" if count is None
            else f"{count} OpenMP thread{'s' if count > 1 else ''}")


def recorded_threads(run_dir: Path) -> int | None:
    """The OpenMP threads the run in `run_dir` was trained on, as its newest checkpoint's
    sidecar records them, read without MXNet (resume checks the checkpoint in full later);
    None for a folder without one, or a run from before they were recorded."""
    newest: tuple[int, int | None] = (-1, None)
    for params in run_dir.glob("*.params"):
        try:
            meta = json.loads(read_regular(params.with_suffix(".json"), MAX_SIDECAR_BYTES,
                                           ConfigError, "sidecar"))
            step, threads = int(meta["step"]), meta.get("threads")
        except (ConfigError, ValueError, KeyError, TypeError, RecursionError):
            continue
        if isinstance(threads, int) and threads > 0 and step > newest[0]:
            newest = (step, threads)
    return newest[1]


def team_size(threads: int | None) -> int:
    """The threads of a team of our compiled kernels: the run's OpenMP threads, else (MXNet's
    default) every core this process may use."""
    return threads or len(os.sched_getaffinity(0))


def free_cores(team: int) -> int:
    """How many threads of a team of `team` the machine has cores for now, at least one: the
    cores this process may use, less those that other processes' running threads take
    (/proc/stat's procs_running, less this team's own). A computation whose numbers do not
    depend on its thread count (the compiled step) asks before each call, and leaves a
    neighbour its share instead of waiting on threads that the neighbour's preempt."""
    try:
        with open("/proc/stat", "rb") as stat:
            running = next(int(line.split()[1]) for line in stat
                           if line.startswith(b"procs_running"))
    except (OSError, StopIteration, ValueError, IndexError):
        return team
    others = max(0, running - team)
    return max(1, min(team, len(os.sched_getaffinity(0)) - others))


def threads_in_effect() -> int | None:
    """The OpenMP threads MXNet's operators run on in this process, as MXNet read them when it
    was imported; None when OMP_NUM_THREADS was not set then (MXNet's own default)."""
    from .mxnet_compat import IMPORTED_WITH_THREADS

    return thread_count(IMPORTED_WITH_THREADS)


def inference_settings(device: str, threads: int | None = None) -> dict[str, str]:
    """The engine settings for inference on `device`: synchronous, on `threads` OpenMP threads
    (every core unless given)."""
    if not runs_on_one_cpu(device):
        return {}
    settings = all_cores()
    if threads is not None:
        settings[THREADS] = str(threads)
    return settings


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
