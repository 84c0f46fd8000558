"""The optional extras (plot, onnx, serve, sweep, track, ...): the command that installs one
into the Python that is running, as mnist-gluon's own metadata pins it, with numpy held where
it is. `pip install 'mnist-gluon[plot]'` would look for mnist-gluon on the index, and in a venv
that `make` gave numpy 2, pip would then honour mxnet's stale numpy<2 and move it back."""

from __future__ import annotations

import operator
import re
import shlex
import sys
from importlib import metadata

COMPARE = {"<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge,
           "==": operator.eq, "!=": operator.ne}
CLAUSE = re.compile(r"""(\w+)\s*(<=|>=|==|!=|<|>)\s*["']([^"']*)["']""")


def applies(marker: str, extra: str) -> bool:
    """Whether a requirement's marker (`python_version < "3.14" and extra == "onnx"`, as our
    metadata writes them: clauses joined by `and`) holds for `extra` on this Python."""
    here = {"python_version": tuple(sys.version_info[:2]), "extra": extra}
    for name, op, value in CLAUSE.findall(marker):
        wanted = tuple(int(part) for part in value.split(".")) if name == "python_version" \
            else value
        if name not in here or not COMPARE[op](here[name], wanted):
            return False
    return True


def requirements(extra: str) -> list[str]:
    """The packages `extra` adds, with their version ranges, for this Python."""
    try:
        declared = metadata.requires("mnist-gluon") or []
    except metadata.PackageNotFoundError:  # run from a source tree that was never installed
        return []
    found = []
    for line in declared:
        requirement, _, marker = line.partition(";")
        if f'extra == "{extra}"' not in marker or not applies(marker, extra):
            continue
        if (nested := re.match(r"mnist-gluon\[([\w,]+)\]", requirement.strip())) is not None:
            for inner in nested[1].split(","):
                found += [r for r in requirements(inner) if r not in found]
        else:
            found.append(requirement.strip().replace(" ", ""))
    return found


def install_command(extra: str) -> str:
    """A command that installs `extra` here: `/venv/bin/python -m pip install 'matplotlib<3.11,
    >=3.9.2' numpy==2.3.5`."""
    import numpy

    packages = requirements(extra) or [f"mnist-gluon[{extra}]"]
    return shlex.join([sys.executable, "-m", "pip", "install", *packages,
                       f"numpy=={numpy.__version__}"])
