"""mnist-train, mnist-sweep and mnist-launch: the commands that train."""

from __future__ import annotations

from pathlib import Path

import click

from ..sweep.search import SAMPLERS
from ..training.trial import PRUNERS
from .options import CONTEXT, config_help, data_root_option, debug_option, version

# Processes started at once, bounded: each is a whole Python with MXNet (about 200 MB).
MAX_WORKERS, MAX_SERVERS, MAX_JOBS = 256, 64, 64


@click.command("mnist-train", context_settings=CONTEXT)
@click.option("--config", "config_path", metavar="FILE|NAME",
              help=config_help("Config; keys it leaves out keep their defaults") + "  "
                   "[default: none]")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config key, e.g. --set train.lr=0.01; repeatable.")
@click.option("--epochs", type=int, default=None, metavar="N",
              help="Short for --set train.epochs=N.")
@click.option("--lr", default=None, metavar="X", help="Short for --set train.lr=X.")
@click.option("--batch-size", type=int, default=None, metavar="N",
              help="Short for --set train.batch_size=N.")
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
def train_command(config_path, overrides, epochs, lr, batch_size, out, data_root, resume_dir,
                  refit_dir, force, print_config, quiet):
    """Train the MLP (or a LeNet: model.kind) on MNIST (or Fashion-MNIST) and write a run
    folder: config.yaml, metrics.jsonl, last.params and best.params (best validation
    accuracy)."""
    from ..training.train import plan_run, train

    if refit_dir is not None and (config_path is not None or resume_dir is not None):
        raise click.UsageError("--refit uses the run's saved config; drop --config and --resume")
    if resume_dir is not None and config_path is not None:
        raise click.UsageError("--resume uses the run's saved config; drop --config")
    shorthands = {"train.epochs": epochs, "train.lr": lr, "train.batch_size": batch_size}
    overrides = [*overrides, *(f"{key}={value}" for key, value in shorthands.items()
                               if value is not None),
                 *([f"data.root={data_root}"] if data_root else [])]
    out = resume_dir if resume_dir is not None else out
    if print_config:
        from ..config import config_to_yaml
        from ..training.train import fit_short_run

        config, _, _ = plan_run(config_path, out, resume_dir is not None, refit_dir, overrides)
        for note in fit_short_run(config):
            click.echo(f"mnist-train: {note}", err=True)
        click.echo(config_to_yaml(config), nl=False)
        return
    run = train(config_path, out, set=overrides, resume=resume_dir is not None,
                refit=refit_dir, force=force, quiet=quiet,
                say=lambda text: click.echo(f"mnist-train: {text}", err=True))
    if not run.written:
        return
    rank = run.prefix  # rank 0 of a distributed run ends as it went on: each line says whose
    if refit_dir is not None:
        click.echo(f"{rank}refit on the whole training set for the {run.config.train.epochs} "
                   f"epochs that validation chose in {Path(refit_dir)}; this model has no "
                   "validation figure")
    best = run.best_val_accuracy
    click.echo(rank + (f"done: best validation accuracy {best:.4f} at epoch {run.best_epoch}; "
                       if best is not None else "done: "), nl=False)
    click.echo(f"evaluate with: mnist-eval --checkpoint {run.best_checkpoint}")


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
@click.option("--jobs", type=click.IntRange(1, MAX_JOBS), default=1, show_default=True,
              help=f"Trials run at once, each in its own process; 1 to {MAX_JOBS}.")
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
        from ..errors import install_command

        raise click.UsageError(f"mnist-sweep needs optuna: {install_command('sweep')}"
                               ) from None
    from ..config import config_file
    from ..sweep.search import Search, parse_grid, parse_ranges
    from ..sweep.study import run_sweep

    base = list(overrides) + ([f"data.root={Path(data_root).resolve()}"] if data_root else [])
    axes = parse_grid(list(grid)) + parse_ranges(list(ranges))
    if random_count is not None and (sampler not in (None, "random") or trials is not None):
        given = f"--sampler {sampler}" if sampler not in (None, "random") else "--trials"
        raise click.UsageError(f"--random N is short for --sampler random --trials N; drop "
                               f"{given}, or --random")
    sampler = sampler or ("random" if random_count else "tpe" if ranges else "grid")
    search = Search(config_file(config_path).resolve(), tuple(base), tuple(axes), sampler,
                    pruner, seed)
    done = run_sweep(search, Path(out), storage, study_name, random_count or trials, jobs,
                     lambda text: click.echo(f"mnist-sweep: {text}", err=True))
    if done.rows:
        keys = [k for k in done.rows[0] if k not in ("trial", "finished")]
        click.echo("  ".join(["trial", *keys]))
        for row in sorted(done.rows, key=lambda r: -(r["best_val_accuracy"] or 0)):
            click.echo("  ".join([row["trial"], *(str(row[k]) for k in keys)]))
    if done.best is not None:
        name, accuracy, text = done.best
        click.echo(f"\n# best: {name}, validation accuracy {accuracy:.4f} (written to "
                   f"{Path(out) / 'best.yaml'})")
        click.echo(text, nl=False)
    return 1 if done.failed else 0


@click.command("mnist-launch", context_settings={**CONTEXT, "ignore_unknown_options": True})
@click.option("-n", "--workers", type=click.IntRange(1, MAX_WORKERS), required=True,
              help=f"Number of workers, 1 to {MAX_WORKERS}: each runs COMMAND.")
@click.option("-s", "--servers", type=click.IntRange(1, MAX_SERVERS), default=1,
              show_default=True, help=f"Number of parameter servers, 1 to {MAX_SERVERS}.")
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
