"""The one place that imports MXNet, after putting back what newer numpy removed.

Every module of the package takes `mx`, `gluon` and `autograd` from here, so MXNet 1.9.1 loads
the same way on Python 3.10 to 3.14, with numpy 1.26 or 2, whichever way the package is
entered. The parameter servers and the scheduler of `mnist-launch` run
`python -m mnist_gluon.mxnet_compat`: their whole life is spent inside `import mxnet`.
"""

import math
import os
import sys
import warnings

import numpy

# numpy 1.24 removed the alias `numpy.bool` (for the builtin bool), which `import mxnet` 1.9.1
# still reads; numpy 2 has the name again, for numpy.bool_. (Python 3.12 removed distutils,
# which mxnet also imports: setuptools, a dependency on those Pythons, provides it.)
if "bool" not in numpy.__dict__:
    numpy.bool = bool


def _deprecated_alias(name: str, replacement: str, since: str, function):
    """`function` under its old name, warning on each call as numpy 1.26 did."""
    message = (f"`{name}` is deprecated as of NumPy {since}, and will be removed in NumPy 2.0. "
               f"Please use `{replacement}` instead.")

    def alias(*args, **kwargs):
        warnings.warn(message, DeprecationWarning, stacklevel=2)
        return function(*args, **kwargs)

    alias.__name__ = alias.__qualname__ = name
    alias.__doc__ = f"Deprecated alias of `numpy.{replacement}`, put back for MXNet 1.9.1."
    return alias


def _msort(a):
    """Deprecated: `numpy.sort(a, axis=0)`, put back for MXNet 1.9.1."""
    warnings.warn("msort is deprecated, use np.sort(a, axis=0) instead", DeprecationWarning,
                  stacklevel=2)
    return numpy.sort(numpy.array(a, subok=True, copy=True), axis=0)


# What MXNet 1.9.1 reads of the names numpy 2.0 removed, each as numpy 1.26 had it: the
# constants, and the aliases that warned on every call. `mxnet.numpy` copies all of them at
# import; gluon.contrib.estimator uses `Inf` as a default.
RESTORED = {
    "PZERO": 0.0, "NZERO": -0.0, "PINF": math.inf, "NINF": -math.inf, "Inf": math.inf,
    "NAN": math.nan, "NaN": math.nan,
    "alltrue": _deprecated_alias("alltrue", "all", "1.25.0", numpy.all),
    "sometrue": _deprecated_alias("sometrue", "any", "1.25.0", numpy.any),
    "product": _deprecated_alias("product", "prod", "1.25.0", numpy.prod),
    "round_": _deprecated_alias("round_", "round", "1.25.0", numpy.round),
    "msort": _msort,
}
# numpy 1.20 to 1.26 answered the financial functions' names with a stub that warned when
# taken and raised when called (NEP 32); `mxnet.numpy` takes these six at import.
FINANCIAL = ("mirr", "npv", "pmt", "ppmt", "pv", "rate")


def _financial_stub(name: str):
    message = (f"In accordance with NEP 32, the function {name} was removed from NumPy "
               "version 1.20.  A replacement for this function is available in the "
               "numpy_financial library: https://pypi.org/project/numpy-financial")
    warnings.warn(message, DeprecationWarning, stacklevel=3)

    def _expired(*args, **kwds):
        raise RuntimeError(message)

    return _expired


def _restore_removed_names() -> None:
    numpy_getattr = numpy.__dict__.get("__getattr__")

    def __getattr__(name: str):
        if name in FINANCIAL:
            return _financial_stub(name)
        if numpy_getattr is None:
            raise AttributeError(f"module 'numpy' has no attribute {name!r}")
        return numpy_getattr(name)

    for name, value in RESTORED.items():
        numpy.__dict__.setdefault(name, value)
    numpy.__getattr__ = __getattr__


if int(numpy.__version__.split(".")[0]) >= 2:
    _restore_removed_names()

# Without this, MXNet prints "Subgraph backend MKLDNN is activated" on every quantization.
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

# What MXNet reads once, at import, and a run's numbers depend on (engine.threads_in_effect);
# unknown if MXNet was imported before this module.
IMPORTED_WITH_THREADS = None if "mxnet" in sys.modules else os.environ.get("OMP_NUM_THREADS")

import mxnet as mx  # noqa: E402


def _start_engine_quietly() -> None:
    """MXNet starts its engine on the first operator and, when the environment names one
    (engine.py's choice), logs "MXNet start using engine: ..." to stderr: start it here, with
    that line sent to /dev/null."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            mx.nd.zeros((1,)).wait_to_read()
    finally:
        os.dup2(saved, 2)
        os.close(saved)


if os.environ.get("MXNET_ENGINE_TYPE"):
    _start_engine_quietly()


def __getattr__(name: str):
    # `from .mxnet_compat import gluon` looks gluon and autograd up on first use. A parameter
    # server unpickles our updater while `import mxnet` is still running, before MXNet has
    # imported gluon: there, only `mx` may be taken.
    if name in ("autograd", "gluon"):
        return getattr(mx, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def onnx_exporter():
    """MXNet's ONNX exporter, `mxnet.onnx`; it imports only beside the onnx package."""
    import onnx

    if not hasattr(onnx, "mapping"):
        onnx.mapping = sys.modules["onnx.mapping"] = _onnx_mapping(onnx)
    import mxnet.onnx

    return mxnet.onnx


# The numpy dtypes of ONNX tensors, as far as MXNet's exporter looks them up.
_ONNX_NUMPY_TYPES = ("bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32",
                     "uint64", "float16", "float32", "float64", "complex64", "complex128")


def _onnx_mapping(onnx):
    """`onnx.mapping`, which onnx 1.19 removed and MXNet 1.9.1's exporter reads: the two tables
    between numpy dtypes and ONNX tensor types, from onnx's own helpers."""
    import types

    mapping = types.ModuleType("onnx.mapping", "put back by mnist_gluon.mxnet_compat")
    mapping.NP_TYPE_TO_TENSOR_TYPE = {
        numpy.dtype(name): onnx.helper.np_dtype_to_tensor_dtype(numpy.dtype(name))
        for name in _ONNX_NUMPY_TYPES}
    mapping.TENSOR_TYPE_TO_NP_TYPE = {
        tensor: dtype for dtype, tensor in mapping.NP_TYPE_TO_TENSOR_TYPE.items()}
    return mapping
