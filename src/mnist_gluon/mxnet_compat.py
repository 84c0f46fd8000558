"""The one place that imports MXNet, after putting back what newer numpy removed.

Every module of the package takes `mx`, `gluon` and `autograd` from here, so MXNet 1.9.1 loads
the same way on Python 3.10 to 3.13 whichever way the package is entered. The parameter
servers and the scheduler of `mnist-launch` run `python -m mnist_gluon.mxnet_compat`: their
whole life is spent inside `import mxnet`.
"""

import os
import sys

import numpy

# numpy 1.24 removed the alias `numpy.bool` (for the builtin bool), which `import mxnet` 1.9.1
# still reads; numpy 2 has the name again, for numpy.bool_. (Python 3.12 removed distutils,
# which mxnet also imports: setuptools, a dependency on those Pythons, provides it.)
if "bool" not in numpy.__dict__:
    numpy.bool = bool

# Without this, MXNet prints "Subgraph backend MKLDNN is activated" on every quantization.
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

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
    import mxnet.onnx

    return mxnet.onnx
