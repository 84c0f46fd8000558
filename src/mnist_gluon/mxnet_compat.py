"""The one place that imports MXNet, after putting back what newer numpy removed.

Every module of the package takes `mx`, `gluon` and `autograd` from here, so MXNet 1.9.1 loads
the same way on Python 3.10 to 3.13 whichever way the package is entered. The parameter
servers and the scheduler of `mnist-launch` run `python -m mnist_gluon.mxnet_compat`: their
whole life is spent inside `import mxnet`.
"""

import os

import numpy

# numpy 1.24 removed the alias `numpy.bool` (for the builtin bool), which `import mxnet` 1.9.1
# still reads; numpy 2 has the name again, for numpy.bool_. (Python 3.12 removed distutils,
# which mxnet also imports: setuptools, a dependency on those Pythons, provides it.)
if "bool" not in numpy.__dict__:
    numpy.bool = bool

# Without this, MXNet prints "Subgraph backend MKLDNN is activated" on every quantization.
os.environ.setdefault("MXNET_SUBGRAPH_VERBOSE", "0")

import mxnet as mx  # noqa: E402


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
