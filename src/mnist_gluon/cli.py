"""Command-line entry points: `mnist-train` and `mnist-eval`.

This layer turns arguments into calls and results into output. A user's mistake (any
UserError, or a usage error) ends as one line on stderr and exit status 2; `--debug`
shows the traceback instead. MXNet is imported only once a command runs, so `--help`
answers at once.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from .errors import Diverged, Interrupted, Stopped, UserError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
USAGE_ERROR = 2


@click.command("mnist-train", context_settings=CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="YAML config file; keys not in it keep their defaults.  [default: none]")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override one config key, e.g. --set train.lr=0.01; repeatable.")
@click.option("--out", type=click.Path(), default=None,
              help="Run folder.  [default: runs/<config file name>]")
@click.option("--data-root", type=click.Path(), default=None,
              help="Folder holding the dataset's IDX files (sets data.root).  "
                   "[default: $MXNET_HOME/datasets/<name>]")
@click.option("--resume", "resume_dir", type=click.Path(), default=None,
              help="Continue the run saved in this folder, with its saved config.")
@click.option("--force", is_flag=True, help="Overwrite a run already in the output folder.")
@click.option("--print-config", is_flag=True, help="Print the resolved config as YAML and exit.")
@click.option("--quiet", is_flag=True, help="No progress bar: one line per epoch.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks of errors.")
def train_command(config_path, overrides, out, data_root, resume_dir, force, print_config, quiet,
                  debug):
    """Train the MLP on MNIST (or Fashion-MNIST) and write a run folder: config.yaml,
    metrics.jsonl, last.params and best.params (best validation accuracy)."""
    from .config import config_to_yaml, load_config

    overrides = list(overrides) + ([f"data.root={data_root}"] if data_root else [])
    if resume_dir is not None:
        if config_path is not None:
            raise click.UsageError("--resume uses the run's saved config; drop --config")
        run_dir = Path(resume_dir)
        saved = run_dir / "config.yaml"
        if not saved.exists():
            raise click.UsageError(f"{run_dir} holds no run to resume (no config.yaml); pass "
                                   "a folder that mnist-train wrote")
        config = load_config(saved, overrides)
    else:
        config = load_config(config_path, overrides)
        name = Path(config_path).stem if config_path else "default"
        run_dir = Path(out) if out else Path("runs") / name
    if print_config:
        click.echo(config_to_yaml(config), nl=False)
        return

    from .stopping import StopSignals
    from .train import run_training

    try:
        with StopSignals("mnist-train") as signals:
            summary = run_training(config, run_dir, config_name=run_dir.name,
                                   resume=resume_dir is not None, force=force, quiet=quiet,
                                   stop_signal=signals.received)
    except KeyboardInterrupt:
        kept = (f"the last checkpoint is intact; continue with: mnist-train --resume {run_dir}"
                if (run_dir / "last.params").exists() else "no checkpoint had been written")
        raise Interrupted(f"interrupted; {kept}") from None
    best = summary.best_val_accuracy
    click.echo(f"done: best validation accuracy {best:.4f} at epoch {summary.best_epoch}; "
               if best is not None else "done: ", nl=False)
    click.echo(f"evaluate with: mnist-eval --checkpoint {summary.best_checkpoint}")


@click.command("mnist-eval", context_settings=CONTEXT)
@click.option("--checkpoint", "checkpoint_path", required=True, type=click.Path(),
              help="A .params file: from mnist-train, or saved by a plain Gluon script.")
@click.option("--data-root", type=click.Path(), default=None,
              help="Folder holding the test set's IDX files.  "
                   "[default: the checkpoint's, else $MXNET_HOME/datasets/<name>]")
@click.option("--dataset", type=click.Choice(["mnist", "fashion-mnist"]), default=None,
              help="Dataset to test on.  [default: the one the checkpoint was trained on]")
@click.option("--device", default="auto", show_default=True,
              help="auto, cpu, gpu or gpu:N.")
@click.option("--normalize", default=None, metavar="MEAN,STD",
              help="For a bare .params file without sidecar: the normalisation its script "
                   "used on pixels scaled to [0, 1] (0,1 for ToTensor alone).  "
                   "[default: 0.1307,0.3081]")
@click.option("--no-download", is_flag=True, help="Never download missing data files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks of errors.")
def eval_command(checkpoint_path, data_root, dataset, device, normalize, no_download, as_json,
                 debug):
    """Evaluate a checkpoint on the test set: accuracy, loss, per-class precision, recall and
    F1, macro averages and the confusion matrix."""
    from .data import Normalization
    from .device import parse_device

    parse_device(device)
    bare_normalization = None
    if normalize is not None:
        try:
            mean, std = (float(part) for part in normalize.split(","))
        except ValueError:
            raise click.BadParameter("write MEAN,STD, e.g. 0.1307,0.3081",
                                     param_hint="--normalize") from None
        if std <= 0:
            raise click.BadParameter("STD must be greater than 0", param_hint="--normalize")
        bare_normalization = Normalization(mean, std)

    from .evaluate import evaluate_checkpoint
    from .metrics import format_report

    evaluation = evaluate_checkpoint(checkpoint_path, data_root, device, dataset,
                                     bare_normalization, download=not no_download)
    if as_json:
        payload = {"checkpoint": str(evaluation.checkpoint), "dataset": evaluation.dataset,
                   **evaluation.report.to_dict()}
        click.echo(json.dumps(payload))
    else:
        click.echo(format_report(evaluation.report,
                                 f"{evaluation.checkpoint} on the {evaluation.dataset} test set"))


def run(command: click.Command, argv: list[str] | None = None) -> int:
    """Run a click command; map user mistakes to one stderr line and exit status 2."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    prog = command.name
    try:
        result = command.main(args=args, prog_name=prog, standalone_mode=False)
    except Interrupted as interruption:
        click.echo(f"{prog}: {interruption}", err=True)
        return 130
    except Stopped as stop:
        click.echo(f"{prog}: {stop}", err=True)
        return stop.exit_status
    except Diverged as error:
        if debug:
            raise
        click.echo(f"{prog}: error: {error}", err=True)
        return 1
    except click.Abort:
        click.echo(f"{prog}: interrupted", err=True)
        return 130
    except click.ClickException as error:
        if debug:
            raise
        click.echo(f"{prog}: error: {error.format_message()} (see {prog} --help)", err=True)
        return USAGE_ERROR
    except UserError as error:
        if debug:
            raise
        click.echo(f"{prog}: error: {error}", err=True)
        return USAGE_ERROR
    return result if isinstance(result, int) else 0


def train_main() -> None:
    sys.exit(run(train_command))


def eval_main() -> None:
    sys.exit(run(eval_command))
