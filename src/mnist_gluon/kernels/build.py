"""Compile kernels.cc and mlp_step.cc into the extension library, against the installed mxnet's
lib_api files.

`python -m mnist_gluon.kernels.build` writes it beside the source (what `make` runs); the wheel
build writes it into the wheel. MXNet is not imported: only its headers and lib_api.cc are read.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
SOURCES = (HERE / "kernels.cc", HERE / "mlp_step.cc")
INCLUDED = (HERE / "mlp_step_isa.h",)  # by mlp_step.cc
LIBRARY_NAME = "libmnist_kernels.so"
# No -ffast-math and no contraction into FMA: the update must do MXNet's operations exactly.
FLAGS = ["-O3", "-std=c++17", "-shared", "-fPIC", "-fopenmp", "-ffp-contract=off",
         "-Wall"]


class BuildError(Exception):
    """The library could not be built; the message says why in one line."""


def mxnet_dir() -> Path:
    spec = importlib.util.find_spec("mxnet")
    if spec is None or not spec.submodule_search_locations:
        raise BuildError("mxnet is not installed, so its lib_api files are missing")
    return Path(next(iter(spec.submodule_search_locations)))


def source_key() -> str:
    """What a built library depends on, as a short digest: our source, the flags, and the
    lib_api files of the installed mxnet (a cached build of another is never loaded)."""
    digest = hashlib.sha256(" ".join(FLAGS).encode())
    mxnet = mxnet_dir()
    lib_api = (mxnet / "src" / "lib_api.cc", mxnet / "include" / "mxnet" / "lib_api.h")
    for path in (*SOURCES, *INCLUDED, *lib_api):
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


def compiler() -> str:
    found = shutil.which(os.environ.get("CXX", "g++"))
    if found is None:
        raise BuildError("no C++ compiler (g++, or $CXX) on the PATH")
    return found


def build(target: Path | None = None) -> Path:
    """Compile into `target` (default: beside the source), replacing it only once complete."""
    target = target or HERE / LIBRARY_NAME
    mxnet = mxnet_dir()
    lib_api = mxnet / "src" / "lib_api.cc"
    if not lib_api.is_file() or not (mxnet / "include" / "mxnet" / "lib_api.h").is_file():
        raise BuildError(f"{mxnet} has no include/mxnet/lib_api.h and src/lib_api.cc")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as scratch:
        partial = Path(scratch) / LIBRARY_NAME
        command = [compiler(), *FLAGS, f"-I{mxnet / 'include'}", *map(str, SOURCES), str(lib_api),
                   "-o", str(partial)]
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            raise BuildError("the compiler failed:\n" + done.stderr.strip())
        os.replace(partial, target)
    return target


def main() -> int:
    try:
        print(f"built {build()}")
    except BuildError as error:
        print(f"mnist_gluon kernels: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
