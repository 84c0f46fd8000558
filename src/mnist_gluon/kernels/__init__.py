"""mnist_gluon's own operators, compiled from kernels.cc into an MXNet extension library.

`mnist_fused_update` updates every parameter in one call (NAG, SGD with momentum, Adam), bit
for bit as MXNet's own update operators do. `mnist_elastic_warp` gathers a batch, moves it by
its affine draws and distorts it elastically in one pass, from random numbers keyed by (seed,
epoch, image). Both run on CPU contexts.

A built wheel and `make` carry the library beside this file. An install from source without
it (`pip install .`, `pip install -e .`, whose isolated build has no mxnet to compile against)
builds it at first use, against the installed mxnet, into a per-user cache
($XDG_CACHE_HOME/mnist-gluon, else ~/.cache/mnist-gluon), once, under a lock. Where it can be
neither found nor built, `load` says why in one line, and the run uses MXNet's own operators.
"""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from ..config import KERNELS

LIBRARY = Path(__file__).resolve().parent / "libmnist_kernels.so"  # build.LIBRARY_NAME
COMPILED, MXNET = KERNELS  # which implementation ran, as `kernels:` and the sidecar name it
BUILD_COMMAND = "python -m mnist_gluon.kernels.build"
OPERATORS = ("mnist_fused_update", "mnist_elastic_warp", "mnist_mlp_step", "mnist_mlp_mirror")


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mnist-gluon" / "kernels"


def library() -> Path:
    """The library this install uses: the one beside this file, else the cached build for
    this source and this mxnet, built here first if there is none yet (BuildError: it
    cannot be)."""
    if LIBRARY.is_file():
        return LIBRARY
    import fcntl

    from . import build  # not at the top: `python -m mnist_gluon.kernels.build` imports this

    cached = cache_dir() / build.source_key() / build.LIBRARY_NAME
    if cached.is_file():
        return cached
    try:
        cached.parent.mkdir(parents=True, exist_ok=True)
        lock = os.open(cached.parent / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as error:
        raise build.BuildError(f"the cache {cached.parent} is not writable "
                               f"({error.strerror})") from None
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it: wait for it
        if not cached.is_file():
            build.compiler()  # no note when there is nothing to compile with
            print(f"mnist-gluon: compiling its kernels for this install, once, into "
                  f"{cached.parent} (about 10 s)", file=sys.stderr, flush=True)
            build.build(cached)
    finally:
        os.close(lock)
    return cached


@functools.cache
def load() -> str | None:
    """Load the library into this process's MXNet, once: None when its operators are there,
    otherwise why they are not."""
    from ..mxnet_compat import mx
    from .build import BuildError

    try:
        path = library()
    except BuildError as error:
        return f"{LIBRARY.name} was not built for this install, and cannot be built here: {error}"
    try:
        register_operators(path)
    except mx.base.MXNetError as error:
        lines = [line for line in str(error).splitlines() if line.strip()]
        return f"{path} did not load ({lines[-1].strip() if lines else 'no reason given'})"
    except OSError as error:
        return f"{path} did not load ({error})"
    return None


def register_operators(path: Path) -> None:
    """What mx.library.load does, for our two operators alone: it makes the Python function of
    every one of MXNet's 2,500 operators again, 0.26 s of a run's start-up. MXNet is reached by
    name: a parameter server calls this from inside `import mxnet`, before mx.nd exists."""
    import ctypes

    from mxnet import base, ndarray, symbol
    from mxnet.ndarray.register import _make_ndarray_function
    from mxnet.symbol.register import _make_symbol_function

    base.check_call(base._LIB.MXLoadLib(str(path).encode(), base.mx_uint(0)))
    for name in OPERATORS:
        handle = base.OpHandle()
        base.check_call(base._LIB.NNGetOpHandle(base.c_str(name), ctypes.byref(handle)))
        HANDLES[name] = handle
        setattr(ndarray, name, _make_ndarray_function(handle, name, name))
        setattr(symbol, name, _make_symbol_function(handle, name, name))


HANDLES: dict = {}  # operator name -> MXNet's handle of it, once loaded


class Invocation:
    """One of our operators called again and again on the same arrays (and a few that change),
    through C arrays of their handles and of the arguments' names made once: MXNet's generated
    function makes them on every call, about 15 us of a 250 us step at batch 64. Values are
    passed as that function passes them, as str() of each. With `fresh_output`, every call
    returns a new output array (which MXNet allocates); otherwise all write one array."""

    def __init__(self, name: str, inputs: list, keys: tuple[str, ...],
                 fresh_output: bool = False):
        import ctypes

        from mxnet import base, ndarray

        self.ctypes, self.base, self.ndarray = ctypes, base, ndarray
        self.handle = ctypes.c_void_p(HANDLES[name].value)
        self.inputs = inputs  # kept alive while their handles are used
        self.handles = [array.handle for array in inputs]
        self.fresh_output = fresh_output
        self.output = None if fresh_output else ndarray.zeros((1,), ctx=inputs[0].context)
        self.output_handles = None if fresh_output else base.c_handle_array([self.output])
        self.keys = base.c_str_array(keys)
        self.count = len(keys)

    def __call__(self, more: list, *values):
        """Call it on the inputs, then the arrays `more`, with the keys' `values`; returns its
        output array."""
        ctypes, base = self.ctypes, self.base
        handles = [*self.handles, *(array.handle for array in more)]
        if self.fresh_output:
            outputs, count = ctypes.POINTER(base.NDArrayHandle)(), ctypes.c_int(0)
        else:
            outputs = ctypes.cast(self.output_handles, ctypes.POINTER(base.NDArrayHandle))
            count = ctypes.c_int(1)
        stypes = ctypes.POINTER(ctypes.c_int)()
        base.check_call(base._LIB.MXImperativeInvokeEx(
            self.handle, ctypes.c_int(len(handles)), (base.NDArrayHandle * len(handles))(*handles),
            ctypes.byref(count), ctypes.byref(outputs), ctypes.c_int(self.count),
            self.keys, base.c_str_array([str(value) for value in values]),
            ctypes.byref(stypes)))
        if self.fresh_output:
            return self.ndarray.NDArray(base.NDArrayHandle(outputs[0]))
        return self.output


def why_not_compiled_step(config, on_one_cpu: bool) -> str | None:
    """Why mnist_mlp_step cannot train `config` (None: it can), read from the config alone;
    `on_one_cpu`: whether the run is on one CPU context. Whether the library loads, and the
    CPU can run it, is asked later (training.compiled_step.compiled_isa)."""
    model, train = config.model, config.train
    reasons = [
        (config.kernels != COMPILED, "kernels is mxnet"),
        (model.kind != "mlp", f"model.kind is {model.kind}"),
        (model.activation != "relu", f"model.activation is {model.activation}"),
        (model.dropout > 0, "model.dropout is set"),
        (model.hidden % 16 != 0, f"model.hidden={model.hidden} is not a multiple of 16"),
        (not on_one_cpu, "the run is not on one CPU"),
        (train.kvstore != "local", f"train.kvstore is {train.kvstore}"),
        (train.optimizer not in ("nag", "sgd"), f"train.optimizer is {train.optimizer}"),
        (train.momentum == 0, "train.momentum is 0"),
        (train.skip_nonfinite, "train.skip_nonfinite is set"),
        (train.distill.teacher is not None, "the run is distilled"),
        (train.prune.sparsity is not None, "the run is pruned"),
        (train.privacy.on, "the run is private (train.privacy)"),
    ]
    return next((reason for failed, reason in reasons if failed), None)


def step_may_run(config) -> bool:
    """Whether the compiled step will train `config`, told without loading the library (which
    would start OpenMP before the run has chosen its threads): the config fits it, the library
    is built or can be, and the CPU has AVX2 and FMA."""
    from ..engine import runs_on_one_cpu
    from .build import BuildError, compiler, source_key

    if why_not_compiled_step(config, runs_on_one_cpu(config.device)) is not None:
        return False
    try:
        if not LIBRARY.is_file() and not (cache_dir() / source_key() / LIBRARY.name).is_file():
            compiler()
        with open("/proc/cpuinfo") as cpu:
            flags = next((line.split(":", 1)[1].split() for line in cpu
                          if line.startswith("flags")), [])
    except (BuildError, OSError):
        return False
    return {"avx2", "fma"} <= set(flags)


def available() -> bool:
    return load() is None
