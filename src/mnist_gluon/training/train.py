"""`train`: the whole run that mnist-train makes, from a config's name to a finished run folder,
for the command line and for Python alike."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .. import engine, kernels
from ..config import Config, config_file, config_to_dict, load_config
from ..errors import ConfigError, Interrupted
from ..files import check_path_names
from .curves import plot_curves
from .signals import StopSignals
from .trial import TrialJudge

if TYPE_CHECKING:  # MXNet is imported only once the engine is chosen
    from .run import Run


def train(config: str | Path | Config | None = "base", out: str | Path | None = None, *,
          set: Sequence[str] = (), resume: bool = False, refit: str | Path | None = None,
          force: bool = False, quiet: bool = False, say: Callable[[str], None] | None = None,
          **overrides: Any) -> Run:
    """Train a model and return its run folder as a `Run`: the run `mnist-train` makes.

    `config` is a YAML file, the name of a bundled config (`"base"`, `"best"`, ...), a `Config`,
    or None for the defaults. `out` is the run folder (default `runs/<config name>`).
    `set` takes mnist-train's `--set` strings (`["train.lr=0.01"]`, values read as YAML), and
    `overrides` then set config keys from Python values: `seed=1`, `train={"epochs": 2}` (a
    mapping sets the keys it holds, leaving the section's others), or dotted,
    `**{"train.epochs": 2}`.

    `resume=True` continues the run saved in `out` with its saved config (`overrides` still
    apply); `refit` names a finished run folder whose config is trained again on the whole
    training set, for the epochs its validation chose. `force` replaces a run already in
    `out`. The progress bar shows on a terminal unless `quiet`; `say` takes the notes that
    mnist-train prints on stderr (default: stderr).

    SIGINT or SIGTERM ends the run after a checkpoint (`Stopped`); a loss that stops being
    finite raises `Diverged`; a config, data or folder the run cannot use raises the
    `UserError` that mnist-train prints as one line.
    """
    say = say or (lambda text: print(f"mnist_gluon.train: {text}", file=sys.stderr))
    config, run_dir, refit_of = plan_run(config, out, resume, refit, set, overrides)
    # First: anything below may import MXNet, which reads the threads once.
    parallel = config.model.kind == "lenet" or kernels.step_may_run(config)
    if (note := engine.choose_training(engine.training_threads(config.threads, parallel),
                                       engine.recorded_threads(run_dir) if resume else None,
                                       engine.runs_on_one_cpu(config.device))) is not None:
        say(note)
    if force and not resume:
        keep_teacher(config, run_dir)
    for note in fit_short_run(config):
        say(note)
    from .run import run_training

    judge = TrialJudge.from_environment(config.train.epochs)  # None outside mnist-sweep
    try:
        with StopSignals("mnist-train") as signals:
            run = run_training(config, run_dir, resume=resume, force=force, quiet=quiet,
                               stop_signal=signals.received, judge=judge, refit_of=refit_of)
    except KeyboardInterrupt:
        kept = (f"the last checkpoint is intact; continue with: mnist-train --resume {run_dir}"
                if (run_dir / "last.params").exists() else
                "no checkpoint had been written; mnist-train --resume "
                f"{run_dir} starts it again" if (run_dir / "config.yaml").exists() else
                "nothing had been written; run the same command again")
        raise Interrupted(f"interrupted; {kept}") from None
    if run.written:
        plot_curves([vars(epoch) for epoch in run.history], run.folder / "curves.png")
    return run


def plan_run(config: str | Path | Config | None, out: str | Path | None = None,
             resume: bool = False, refit: str | Path | None = None, strings: Sequence[str] = (),
             overrides: Mapping[str, Any] | None = None) -> tuple[Config, Path, Path | None]:
    """(the run's config, its folder, the run a refit's epochs come from): what `train`
    would run, checked, without running it. `strings` and `overrides` are `train`'s `set` and
    `overrides`."""
    settings = list(flat(overrides or {}))
    if refit is not None:
        refit_of = Path(refit)
        epochs = chosen_epochs(refit_of)
        config = load_config(refit_of / "config.yaml", strings,
                             [*settings, ("data.val_size", 0), ("train.epochs", epochs)])
        run_dir = Path(out) if out else refit_of.parent / f"{refit_of.name}-refit"
    elif resume:
        if out is None:
            raise ConfigError("resuming needs the run folder to continue; pass it as out")
        run_dir, refit_of = Path(out), None
        saved = run_dir / "config.yaml"
        if not saved.exists():
            raise ConfigError(f"{run_dir} holds no run to resume (no config.yaml); pass a "
                              "folder that mnist-train wrote")
        config = load_config(saved, strings, settings)
    else:
        refit_of, path = None, None
        if isinstance(config, Config):  # checked again, with the overrides on top
            settings = [*flat(config_to_dict(config)), *settings]
        elif config is not None:
            path = config_file(config)
        run_dir = Path(out) if out else Path("runs") / (path.stem if path else "default")
        config = load_config(path, strings, settings)
    check_path_names(run_dir, "output folder")
    if config.data.root is not None:  # so that eval and --resume find it from any folder
        config.data.root = str(Path(config.data.root).expanduser().resolve())
    return config, run_dir, refit_of


def keep_teacher(config: Config, run_dir: Path) -> None:
    """Refuse a --force that would clear the run's own teacher out of its folder (the run
    then trained from it, and could never be resumed)."""
    from .run_folder import is_run_file

    teacher = config.train.distill.teacher
    if teacher is None:
        return
    path = Path(teacher).expanduser().resolve()
    if path.parent == run_dir.resolve() and is_run_file(path):
        raise ConfigError(f"train.distill.teacher {teacher} is in {run_dir}, which --force "
                          "clears; copy the teacher elsewhere and name the copy, or pass "
                          "--out DIR")


def chosen_epochs(run_dir: Path) -> int:
    """The epoch whose validation accuracy was best in `run_dir`: how long a refit trains."""
    from ..checkpoint import read_sidecar

    if not (run_dir / "best.json").exists() or not (run_dir / "config.yaml").exists():
        raise ConfigError(f"{run_dir} holds no finished run (no best.json or config.yaml); "
                          "pass a folder that mnist-train wrote")
    best = read_sidecar(run_dir / "best.params")
    if best.best_val_accuracy is None:
        raise ConfigError(f"{run_dir} was trained without a validation set, so no epoch count "
                          "was chosen there; refit a run that had one")
    return best.best_epoch


def flat(values: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
    """`{"train": {"lr": 0.1}}` and `{"train.lr": 0.1}` alike -> ("train.lr", 0.1)."""
    for key, value in values.items():
        if isinstance(value, Mapping) and value:
            yield from flat(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}", value


def fit_short_run(config: Config) -> list[str]:
    """A short try of a longer recipe (`--set train.epochs=1`) still trains as the recipe
    would: a warm-up as long as the run or longer is cut to half the run, and a weight
    average that would start after the run's end starts halfway through it instead. Returns
    a line saying what changed, for each change."""
    t, notes = config.train, []
    if t.warmup_epochs >= t.epochs:
        before, t.warmup_epochs = t.warmup_epochs, t.epochs / 2
        notes.append(f"train.warmup_epochs={before:g} does not fit a {t.epochs}-epoch run; "
                     f"warming up for {t.warmup_epochs:g} epochs instead")
    start = t.average.start_epoch
    if start is not None and start > t.epochs:
        t.average.start_epoch = t.epochs // 2 + 1
        notes.append(f"train.average.start_epoch={start} does not fit a {t.epochs}-epoch run; "
                     f"averaging the weights from epoch {t.average.start_epoch} instead")
    return notes
