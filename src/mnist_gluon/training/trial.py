"""A run inside a sweep: the trial's mnist-train reports each epoch's validation accuracy to
the Optuna study that started it, and ends when the study's pruner says so. The sweep tells the
run its trial through the environment."""

from __future__ import annotations

import os

PRUNERS = ("none", "median", "hyperband")
# How a trial's run finds its trial: set by the sweep for the mnist-train it starts.
ENV_STORAGE, ENV_STUDY = "MNIST_GLUON_SWEEP_STORAGE", "MNIST_GLUON_SWEEP_STUDY"
ENV_TRIAL, ENV_PRUNER = "MNIST_GLUON_SWEEP_TRIAL", "MNIST_GLUON_SWEEP_PRUNER"


def make_pruner(kind: str, epochs: int):
    import optuna

    if kind == "median":  # from the third trial on, below the median at the same epoch
        return optuna.pruners.MedianPruner(n_startup_trials=2, n_warmup_steps=0)
    if kind == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs)
    return optuna.pruners.NopPruner()


class TrialJudge:
    """Inside a trial's mnist-train: reports each epoch's validation accuracy to the study,
    and stops the run when the study's pruner says so."""

    def __init__(self, trial, pruner: str):
        self.trial, self.pruner = trial, pruner

    @classmethod
    def from_environment(cls, epochs: int) -> TrialJudge | None:
        """The judge of the trial the sweep started this run for; None outside a sweep."""
        if ENV_TRIAL not in os.environ:
            return None
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        pruner = os.environ[ENV_PRUNER]
        study = optuna.load_study(study_name=os.environ[ENV_STUDY],
                                  storage=os.environ[ENV_STORAGE],
                                  pruner=make_pruner(pruner, epochs))
        return cls(optuna.trial.Trial(study, int(os.environ[ENV_TRIAL])), pruner)

    def __call__(self, epoch: int, val_accuracy: float | None) -> str | None:
        if val_accuracy is None:
            return None
        self.trial.report(val_accuracy, epoch)
        if not self.trial.should_prune():
            return None
        self.trial.set_user_attr("pruned_at_epoch", epoch)
        return (f"pruned: the sweep's {self.pruner} pruner stopped the run after epoch "
                f"{epoch} (validation accuracy {val_accuracy:.4f})")
