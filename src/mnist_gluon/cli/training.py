"""mnist-train, mnist-sweep and mnist-launch: the commands that train."""

from __future__ import annotations

import dataclasses
import signal
from pathlib import Path

import click

from ..errors import Interrupted, Stopped
from ..sweep.search import SAMPLERS
from ..sweep.study import INSTALL
from ..training.trial import PRUNERS
from .options import CONTEXT, config_help, data_root_option, debug_option, version


@click.command("mnist-train", context_settings=CONTEXT)
@click.option("--config", "config_path", metavar="FILE|NAME",
              help=config_help("Config; keys it leaves out keep their defaults") + "  "
                   "[default: none]")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config key, e.g. --set train.lr=0.01; repeatable.")
@click.option("--out", type=click.Path(), default=None,
              help="Run folder.  [default: runs/<config file name>]")
@data_root_option("Folder holding the dataset's IDX files (sets data.root).  "
                  "[default: $MXNET_HOME/datasets/<name>]")
@click.option("--resume", "resume_dir", type=click.Path(), default=None,
              help="Continue the run saved in this folder, with its saved config.")
@click.option("--refit", "refit_dir", type=click.Path(), default=None,
              help="Train RUN_DIR's config again on the whole training set (no validation "
                   "split) for the epochs its validation chose.  [--out default: RUN_DIR-refit]")
@click.option("--force", is_flag=True, help="Overwrite a run already in the output folder.")
@click.option("--print-config", is_flag=True, help="Print the resolved config as YAML and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar: one line per epoch.")
@debug_option
@version
def train_command(config_path, overrides, out, data_root, resume_dir, refit_dir, force,
                  print_config, quiet):
    """Train the MLP on MNIST (or Fashion-MNIST) and write a run folder: config.yaml,
    metrics.jsonl, last.params and best.params (best validation accuracy)."""
    from ..config import config_to_yaml, fit_warmup

    overrides = list(overrides) + ([f"data.root={data_root}"] if data_root else [])
    config, run_dir, refit_of = resolve_run(config_path, overrides, out, resume_dir, refit_dir)
    if config.data.root is not None:  # so that eval and --resume find it from any folder
        config.data.root = str(Path(config.data.root).expanduser().resolve())
    if (note := fit_warmup(config)) is not None:
        click.echo(f"mnist-train: {note}", err=True)
    if print_config:
        click.echo(config_to_yaml(config), nl=False)
        return

    from .. import engine

    engine.choose(engine.training_settings(config.train.batch_size, config.device,
                                           config.train.kvstore))
    from ..training.run import run_training
    from ..training.signals import StopSignals
    from ..training.trial import TrialJudge

    judge = TrialJudge.from_environment(config.train.epochs)  # None outside mnist-sweep
    try:
        with StopSignals("mnist-train") as signals:
            summary = run_training(config, run_dir, resume=resume_dir is not None, force=force,
                                   quiet=quiet, stop_signal=signals.received, judge=judge,
                                   refit_of=refit_of)
    except KeyboardInterrupt:
        kept = (f"the last checkpoint is intact; continue with: mnist-train --resume {run_dir}"
                if (run_dir / "last.params").exists() else
                "no checkpoint had been written; mnist-train --resume "
                f"{run_dir} starts it again")
        raise Interrupted(f"interrupted; {kept}") from None
    from ..inference.plots import missing, plot_curves

    if not summary.wrote:
        return
    if (note := missing()) is None:
        plot_curves([dataclasses.asdict(r) for r in summary.epochs], run_dir / "curves.png")
    else:
        click.echo(f"no curves.png written; {note}")
    if refit_of is not None:
        click.echo(f"refit on the whole training set for the {config.train.epochs} epochs "
                   f"that validation chose in {refit_of}; this model has no validation figure")
    best = summary.best_val_accuracy
    click.echo(f"done: best validation accuracy {best:.4f} at epoch {summary.best_epoch}; "
               if best is not None else "done: ", nl=False)
    click.echo(f"evaluate with: mnist-eval --checkpoint {summary.best_checkpoint}")


def resolve_run(config_path, overrides: list[str], out, resume_dir, refit_dir):
    """(config, run folder, the run a refit's epochs come from) for train's options."""
    from ..config import config_file, load_config

    if refit_dir is not None:
        if config_path is not None or resume_dir is not None:
            raise click.UsageError("--refit uses the run's saved config; drop --config and "
                                   "--resume")
        refit_of, epochs = Path(refit_dir), chosen_epochs(Path(refit_dir))
        config = load_config(refit_of / "config.yaml",
                             [*overrides, "data.val_size=0", f"train.epochs={epochs}"])
        return config, Path(out) if out else refit_of.parent / f"{refit_of.name}-refit", refit_of
    if resume_dir is not None:
        if config_path is not None:
            raise click.UsageError("--resume uses the run's saved config; drop --config")
        run_dir = Path(resume_dir)
        saved = run_dir / "config.yaml"
        if not saved.exists():
            raise click.UsageError(f"{run_dir} holds no run to resume (no config.yaml); pass "
                                   "a folder that mnist-train wrote")
        return load_config(saved, overrides), run_dir, None
    config = load_config(config_file(config_path) if config_path else None, overrides)
    name = Path(config_path).stem if config_path else "default"
    return config, Path(out) if out else Path("runs") / name, None


def chosen_epochs(run_dir: Path) -> int:
    """The epoch whose validation accuracy was best in `run_dir`: how long a refit trains."""
    from ..checkpoint import read_sidecar

    if not (run_dir / "best.json").exists() or not (run_dir / "config.yaml").exists():
        raise click.UsageError(f"{run_dir} holds no finished run (no best.json or "
                               "config.yaml); pass a folder that mnist-train wrote")
    best = read_sidecar(run_dir / "best.params")
    if best.best_val_accuracy is None:
        raise click.UsageError(f"{run_dir} was trained without a validation set, so no epoch "
                               "count was chosen there; refit a run that had one")
    return best.best_epoch


@click.command("mnist-sweep", context_settings=CONTEXT)
@click.option("--config", "config_path", required=True, metavar="FILE|NAME",
              help=config_help("The config every trial starts from"))
@click.option("--grid", multiple=True, metavar="KEY=V1,V2,...",
              help="Values to try for one key; repeat for more keys (their product is the "
                   "grid).")
@click.option("--range", "ranges", multiple=True, metavar="KEY=LOW:HIGH[:log]",
              help="A range to search for one key, log-scaled with :log; integers at both ends "
                   "give integers. Repeatable.")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key in every trial; repeatable.")
@click.option("--trials", type=click.IntRange(1, None), default=None,
              help="Trials this folder runs in all.  [default: the whole grid]")
@click.option("--sampler", type=click.Choice(SAMPLERS), default=None,
              help="How trials are drawn: every grid point, at random, or by Optuna's TPE.  "
                   "[default: grid, or tpe with --range]")
@click.option("--pruner", type=click.Choice(PRUNERS), default="none", show_default=True,
              help="Stop trials early on the validation accuracy they report each epoch.")
@click.option("--random", "random_count", type=click.IntRange(1, None), default=None,
              help="Short for --sampler random --trials N.")
@click.option("--seed", type=int, default=0, show_default=True, help="The sampler's seed.")
@click.option("--jobs", type=click.IntRange(1, None), default=1, show_default=True,
              help="Trials run at once, each in its own process.")
@click.option("--out", type=click.Path(), required=True, help="The sweep's folder.")
@click.option("--storage", default=None, metavar="URL",
              help="The Optuna study's database, e.g. postgresql://user@host/db; sweeps on "
                   "other machines that name it share the search.  [default: sqlite in --out]")
@click.option("--study", "study_name", default=None,
              help="The study's name in the storage.  [default: the --out folder's name]")
@data_root_option("Folder with the dataset's IDX files (sets data.root in every trial).")
@debug_option
@version
def sweep_command(config_path, grid, ranges, overrides, trials, sampler, pruner, random_count,
                  seed, jobs, out, storage, study_name, data_root):
    """Search hyperparameters with Optuna: every trial a normal mnist-train run folder, chosen
    on validation accuracy, never on the test set. Writes results.csv, results.json and
    best.yaml; the same command again continues the search and resumes interrupted trials."""
    try:
        import optuna  # noqa: F401
    except ImportError:
        raise click.UsageError(f"mnist-sweep needs optuna: {INSTALL}") from None
    from ..config import config_file
    from ..files import atomic_write_text
    from ..sweep.search import Search, parse_grid, parse_ranges, prepare
    from ..sweep.study import (
        Sweep,
        Terminated,
        best_trial,
        open_study,
        results,
        terminate_on_sigterm,
        write_results,
    )

    out_dir = Path(out)
    base = list(overrides) + ([f"data.root={Path(data_root).resolve()}"] if data_root else [])
    axes = parse_grid(list(grid)) + parse_ranges(list(ranges))
    sampler = sampler or ("random" if random_count else "tpe" if ranges else "grid")
    search = Search(config_file(config_path).resolve(), tuple(base), tuple(axes), sampler,
                    pruner, seed)
    prepare(out_dir, search)
    storage = storage or f"sqlite:///{(out_dir / 'study.db').resolve()}"
    study = open_study(search, storage, study_name or out_dir.resolve().name)
    say = lambda text: click.echo(f"mnist-sweep: {text}", err=True)  # noqa: E731
    continuing = "the trials saved checkpoints: run the same command again to continue"
    terminate_on_sigterm()
    try:
        statuses = Sweep(study, search, out_dir, storage, say).run(random_count or trials,
                                                                   jobs)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted; {continuing}") from None
    except Terminated:
        raise Stopped(f"stopped by SIGTERM; {continuing}", signal.SIGTERM) from None
    rows = results(study, search)
    if rows:
        write_results(rows, out_dir)
        keys = [k for k in rows[0] if k not in ("trial", "finished")]
        click.echo("  ".join(["trial", *keys]))
        for row in sorted(rows, key=lambda r: -(r["best_val_accuracy"] or 0)):
            click.echo("  ".join([row["trial"], *(str(row[k]) for k in keys)]))
    best = best_trial(study)
    if best is not None:
        name, accuracy, text = best
        atomic_write_text(out_dir / "best.yaml", text)
        click.echo(f"\n# best: {name}, validation accuracy {accuracy:.4f} (written to "
                   f"{out_dir / 'best.yaml'})")
        click.echo(text, nl=False)
    return 1 if any(code != 0 for code in statuses.values()) else 0


@click.command("mnist-launch", context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.option("-n", "--workers", type=click.IntRange(1, None), required=True,
              help="Number of workers: each runs COMMAND.")
@click.option("-s", "--servers", type=click.IntRange(1, None), default=1, show_default=True,
              help="Number of parameter servers.")
@click.option("-H", "--hostfile", type=click.Path(dir_okay=False), default=None,
              help="Run over ssh on these hosts, one per line: the scheduler on the first, "
                   "servers and workers in turn.  [default: all on 127.0.0.1]")
@click.option("--ssh", "ssh_command", default="ssh -o BatchMode=yes", show_default=True,
              help="The ssh command for --hostfile, e.g. 'ssh -i KEY -p 2222'.")
@click.option("--stall-timeout", type=click.FloatRange(0, None), default=600.0,
              show_default=True, metavar="SECONDS",
              help="Stop the cluster when a worker on this machine has used no CPU for this "
                   "long (stopped, or stuck); 0 never does.")
@debug_option
@version
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def launch_command(workers, servers, hostfile, ssh_command, stall_timeout, command):
    """Run a distributed mnist-train on MXNet's parameter-server kvstore: a scheduler,
    SERVERS servers and WORKERS workers, wired by DMLC_* variables, on 127.0.0.1 or over ssh
    on the hosts of --hostfile. If any process dies, every other one is stopped and the exit
    status is non-zero. Example: mnist-launch -n 2 -s 1 -- mnist-train --config
    configs/base.yaml --set train.kvstore=dist_sync"""
    import shlex

    from ..distributed.launch import launch, read_hostfile

    hosts = read_hostfile(hostfile) if hostfile else None
    command = list(command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise click.UsageError("give the command to run after --, e.g. -- mnist-train ...")
    return launch(command, workers, servers,
                  lambda text: click.echo(f"mnist-launch: {text}", err=True), hosts,
                  tuple(shlex.split(ssh_command)), stall_timeout)
