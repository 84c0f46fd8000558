"""One message, two phrasings. Errors are written once, in the commands' words (`--force`,
`--data-root DIR`); raised out of the Python API they name that function's keywords instead
(`force=True`, `data={"root": DIR}`), so that what they tell a notebook to do exists there."""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import TypeVar

from .errors import Diverged, Interrupted, Stopped, UserError

F = TypeVar("F", bound=Callable)

# (pattern in a command's message, what the API function's caller writes), applied in order.
COMMON = [
    (r"mnist-train --resume (\S+)", r'mnist_gluon.train(out="\1", resume=True)'),
    (r"mnist-train --config (\w+)", r'mnist_gluon.train("\1")'),
    (r"--resume uses", "resume=True uses"),
    (r"--resume \S+", "resume=True"),
    (r"--resume", "resume=True"),
    (r"--force", "force=True"),
    (r"--out DIR", "out=DIR"),
    (r"--normalize", "normalization=(MEAN, STD)"),
    (r"--device (\w+)", r'device="\1"'),
    (r"--format ('?\w+'?)", r"format=\1"),
    (r"--format (\w+)", r'format="\1"'),
    (r"--quantize (\w+)", r'quantize="\1"'),
    (r"--plot folder", "plot folder"),
]
KEYWORDS = {
    "train": [(r"--data-root DIR", 'data={"root": DIR}'),
              (r"--set ([\w.]+)=(\S+?)([;,)]|$| )", r'set=["\1=\2"]\3'),
              (r"--config", "config"), (r"--refit", "refit")],
    "evaluate": [(r"--data-root DIR", "data_root=DIR"),
                 (r"--set data\.verify=false", "a checkpoint of a run with data.verify=false")],
    "export": [(r"--data-root DIR", "data_root=DIR")],
    "load": [],
}


def api_message(message: str, function: str) -> str:
    for pattern, replacement in [*KEYWORDS[function], *COMMON]:
        message = re.sub(pattern, replacement, message)
    return message


def in_api_words(function: str) -> Callable[[F], F]:
    """Decorate the public function `function` (train, evaluate, export, load): its errors
    name its keywords, not the commands' flags. The commands call the undecorated function,
    `__wrapped__`."""
    def decorate(api: F) -> F:
        @functools.wraps(api)
        def phrased(*args, **kwargs):
            try:
                return api(*args, **kwargs)
            except (UserError, Interrupted, Stopped, Diverged) as error:
                if error.args and isinstance(error.args[0], str):
                    error.args = (api_message(error.args[0], function), *error.args[1:])
                raise
        return phrased  # type: ignore[return-value]
    return decorate
