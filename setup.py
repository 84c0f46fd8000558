"""The wheel carries mnist_gluon's compiled kernels: src/mnist_gluon/kernels/kernels.cc, built
against the lib_api files of the mxnet installed where the wheel is built (`make dist` builds
without isolation, so that mxnet is there). The library is a plain shared object that MXNet
loads, not a Python extension, so the wheel is tagged for any Python 3 on this platform.
Without mxnet or a compiler the build says why and makes a wheel without the library; such an
install updates with MXNet's own operators (the same numbers) and says so.
"""

import importlib.util
import sys
from pathlib import Path

from setuptools import Distribution, setup
from setuptools.command.bdist_wheel import bdist_wheel
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent


def kernels_build():
    """mnist_gluon/kernels/build.py, loaded alone: the package cannot be imported yet."""
    path = HERE / "src" / "mnist_gluon" / "kernels" / "build.py"
    spec = importlib.util.spec_from_file_location("mnist_gluon_kernels_build", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class BuildWithKernels(build_py):
    def run(self):
        super().run()
        self.distribution.kernels_built = False
        if self.editable_mode:  # an editable install: `make` builds the library in place
            return
        build = kernels_build()
        target = Path(self.build_lib) / "mnist_gluon" / "kernels" / build.LIBRARY_NAME
        try:
            build.build(target)
        except build.BuildError as error:
            print(f"warning: this wheel carries no compiled kernels: {error}", file=sys.stderr)
            return
        self.distribution.kernels_built = True


class KernelsDistribution(Distribution):
    def has_ext_modules(self):
        return True  # platform-specific: the library goes in with the package


class Wheel(bdist_wheel):
    def get_tag(self):
        plat = super().get_tag()[2]
        return ("py3", "none", plat if getattr(self.distribution, "kernels_built", False)
                else "any")


setup(distclass=KernelsDistribution, cmdclass={"build_py": BuildWithKernels, "bdist_wheel": Wheel})
