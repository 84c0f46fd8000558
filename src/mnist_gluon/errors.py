"""What a user is told: one error type per kind of user mistake (the CLI prints each as one
line, exit status 2), and the ways a run ends early: interrupted, stopped by a signal,
diverged. A message is written once, in the commands' words (`--force`, `--data-root DIR`);
the package's public functions rephrase it in theirs. A missing extra is named with the
command that installs it here."""

from __future__ import annotations

import operator
import re
import shlex
import sys
from importlib import metadata


class UserError(Exception):
    """Something the user can fix: the message says what is wrong and what to do."""


class ConfigError(UserError):
    """A config file, key or value is wrong."""


class DataError(UserError):
    """A data file is missing, unreadable, malformed or fails its checksum."""


class CheckpointError(UserError):
    """A checkpoint is missing, corrupt, or does not match what it claims to be."""


class DeviceError(UserError):
    """A device was asked for that this machine does not have."""


class OutputError(UserError):
    """The output folder cannot be written, or writing would overwrite a run."""


class Interrupted(Exception):
    """The user stopped a run (Ctrl-C); the message says what was kept. Exit status 130."""


class Stopped(Exception):
    """SIGINT or SIGTERM stopped a run after a checkpoint; exit 128 + the signal's number."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_status = 128 + signum


class Diverged(Exception):
    """The loss or a gradient stopped being finite; the message names the step and the last
    good checkpoint. Exit status 1."""


# --- the command that installs a missing extra ----------------------------------------------

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
    """A command that installs the optional `extra` into the Python that is running, as
    mnist-gluon's metadata pins it, with numpy held where it is: `pip install
    'mnist-gluon[plot]'` would look for mnist-gluon on the index, and in a venv that `make`
    gave numpy 2, pip would honour mxnet's stale numpy<2 and move it back."""
    import numpy

    packages = requirements(extra) or [f"mnist-gluon[{extra}]"]
    return shlex.join([sys.executable, "-m", "pip", "install", *packages,
                       f"numpy=={numpy.__version__}"])
