"""Train and evaluate an MLP on MNIST with Apache MXNet Gluon, from Python as from the command
line: each function below is what the command of the same job runs.

    import mnist_gluon

    run = mnist_gluon.train("base", "runs/quick", train={"epochs": 2})  # mnist-train
    report = mnist_gluon.evaluate(run.best_checkpoint)                   # mnist-eval
    print(report.accuracy, report.confusion)
    classifier = mnist_gluon.load(run.best_checkpoint)                   # mnist-predict
    labels, probabilities = classifier.predict("digit.png")
    mnist_gluon.export(run.best_checkpoint, "export", "onnx")            # mnist-export

    from mnist_gluon import mx  # MXNet itself, importable beside numpy 2

A mistake the user can fix raises a `UserError` (`mnist_gluon.errors` has its kinds) whose
message is the line the commands print, naming these functions' keywords where the commands
name their flags (`force=True` for `--force`). Nothing here imports MXNet until it is used.
"""

from __future__ import annotations

import importlib

from .errors import UserError

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
        from .errors import in_api_words

        value = in_api_words(name)(value)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*__all__, "__version__"])
