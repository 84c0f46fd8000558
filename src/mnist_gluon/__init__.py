"""Train and evaluate an MLP on MNIST with Apache MXNet Gluon, from Python as from the command
line: each function below is what the command of the same job runs.

    import mnist_gluon

    run = mnist_gluon.train("base", "runs/quick", train={"epochs": 2})  # mnist-train
    report = mnist_gluon.evaluate(run.best_checkpoint)                   # mnist-eval
    print(report.accuracy, report.confusion)
    classifier = mnist_gluon.load(run.best_checkpoint)                   # mnist-predict
    labels, probabilities = classifier.predict("digit.png")
    maps = classifier.explain("digit.png")                               # what it looked at
    mnist_gluon.export(run.best_checkpoint, "export", "onnx")            # mnist-export

    from mnist_gluon import mx  # MXNet itself, importable beside numpy 2

A mistake the user can fix raises a `UserError` (`mnist_gluon.errors` has its kinds) whose
message is the line the commands print, naming these functions' keywords where the commands
name their flags (`force=True` for `--force`); an argument of the wrong type is one too, as a
flag's is. Nothing here imports MXNet until it is used.
"""

from __future__ import annotations

import functools
import importlib
import re
import reprlib
from collections.abc import Callable
from typing import TypeVar

from .errors import ConfigError, Diverged, Interrupted, Stopped, UserError

__version__ = "0.1.0"

# Each public name, and the module that defines it: imported when the name is first used, so
# that a command's start-up, and a function's choice of MXNet's engine, come before MXNet.
_PUBLIC = {
    "train": "training.train", "Run": "training.run",
    "load": "inference.classifier", "Classifier": "inference.classifier",
    "Predictions": "inference.classifier",
    "evaluate": "inference.evaluate", "Report": "inference.evaluate",
    "export": "inference.export", "Exported": "inference.export",
    "mx": "mxnet_compat",
}
_FUNCTIONS = ("train", "load", "evaluate", "export")  # whose errors speak the API's words
__all__ = ["Classifier", "Exported", "Predictions", "Report", "Run", "UserError", "evaluate",
           "export", "load", "mx", "train"]


def __getattr__(name: str):
    if name not in _PUBLIC:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    if name in _FUNCTIONS:
        value = in_api_words(name)(value)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])


# --- the API's edge: arguments checked as the flags are, errors in the API's words -------

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
    (r"--quantize ('\w+')", r"quantize=\1"),
    (r"--quantize (\w+)", r'quantize="\1"'),
    (r"--plot folder", "plot folder"),
    (r"--dataset (\S+)", r"dataset=\1"),
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
    """Decorate the public function `function` (train, evaluate, export, load) as
    `mnist_gluon` exports it: each argument is checked against its annotation, as click checks
    a flag's type, and its errors name its keywords, not the commands' flags. The commands
    call the undecorated function."""
    def decorate(api: F) -> F:
        @functools.wraps(api)
        def phrased(*args, **kwargs):
            check_arguments(api, function, args, kwargs)
            try:
                return api(*args, **kwargs)
            except (UserError, Interrupted, Stopped, Diverged) as error:
                if error.args and isinstance(error.args[0], str):
                    error.args = (api_message(error.args[0], function), *error.args[1:])
                raise
        return phrased  # type: ignore[return-value]
    return decorate


def check_arguments(api: Callable, function: str, args: tuple, kwargs: dict) -> None:
    """A ConfigError for an argument `api` does not take, or of a type its annotation does
    not admit (`force="yes"`, `device=0`); `**overrides` are the config's to check."""
    import inspect

    signature = inspect.signature(api)
    try:
        bound = signature.bind(*args, **kwargs)
    except TypeError as error:
        raise ConfigError(f"mnist_gluon.{function}: {error}; its arguments are "
                          f"{', '.join(signature.parameters)}") from None
    for name, value in bound.arguments.items():
        parameter = signature.parameters[name]
        hint = annotation(api, name)
        if parameter.kind is parameter.VAR_KEYWORD or hint is None or admits(hint, value):
            continue
        raise ConfigError(f"mnist_gluon.{function}: {name} must be {described(hint)}, not "
                          f"{reprlib.repr(value)}")


def annotation(api: Callable, name: str):
    """The annotation of `api`'s parameter `name`, evaluated; None when it cannot be."""
    hint = api.__annotations__.get(name)
    if isinstance(hint, str):
        try:
            hint = eval(hint, api.__globals__)  # noqa: S307 - our own annotations
        except Exception:
            return None
    return hint


def admits(hint, value) -> bool:
    import collections.abc
    import os
    import types
    import typing

    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is typing.Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(admits(arg, value) for arg in args)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type) and issubclass(hint, os.PathLike):
        return isinstance(value, os.PathLike)
    if origin is tuple:
        return isinstance(value, (tuple, list)) and len(value) == len(args)
    if origin is collections.abc.Sequence:
        return isinstance(value, (tuple, list)) and all(admits(args[0], v) for v in value)
    if origin is collections.abc.Callable:
        return callable(value)
    if origin is collections.abc.Mapping:
        return isinstance(value, collections.abc.Mapping)
    return isinstance(hint, type) and isinstance(value, hint)


def described(hint) -> str:
    import types
    import typing

    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(described(arg) for arg in typing.get_args(hint))
    names = {bool: "True or False", str: "a string", int: "an integer", float: "a number",
             type(None): "None"}
    if hint in names:
        return names[hint]
    origin = typing.get_origin(hint)
    if origin is tuple:
        return "a (mean, std) pair"
    if origin is not None:  # Sequence[str], Callable[...], Mapping[...]
        kind = {"Sequence": "list of strings", "Callable": "function", "Mapping": "dict"}
        return f"a {kind.get(origin.__name__, origin.__name__)}"
    return f"a {getattr(hint, '__name__', hint)}"
