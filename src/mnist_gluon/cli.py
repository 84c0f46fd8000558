"""Command-line entry points: mnist-train, -eval, -predict, -export, -sweep, -launch, -serve.

This layer turns arguments into calls and results into output. A user's mistake (any
UserError, or a usage error) ends as one line on stderr and exit status 2; `--debug`
shows the traceback instead. MXNet is imported only once a command runs, so `--help`
answers at once.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
from pathlib import Path

import click

from . import __version__
from .errors import Diverged, Interrupted, Stopped, UserError

CONTEXT = {"help_option_names": ["-h", "--help"], "max_content_width": 100}
USAGE_ERROR = 2
version = click.version_option(__version__, message="%(prog)s %(version)s")

NORMALIZE_HELP = ("For a bare .params file without sidecar: the normalisation its script used "
                  "on pixels scaled to [0, 1] (0,1 for ToTensor alone).  [default: 0.1307,0.3081]")


def config_help(what: str) -> str:
    from .config import bundled_configs

    return (f"{what}: a YAML file, or the name of a config that ships with mnist-gluon "
            f"({', '.join(bundled_configs())}).")


@click.command("mnist-train", context_settings=CONTEXT)
@click.option("--config", "config_path", metavar="FILE|NAME",
              help=config_help("Config; keys it leaves out keep their defaults") + "  "
                   "[default: none]")
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
@version
def train_command(config_path, overrides, out, data_root, resume_dir, force, print_config, quiet,
                  debug):
    """Train the MLP on MNIST (or Fashion-MNIST) and write a run folder: config.yaml,
    metrics.jsonl, last.params and best.params (best validation accuracy)."""
    from .config import config_file, config_to_yaml, fit_warmup, load_config

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
        config = load_config(config_file(config_path) if config_path else None, overrides)
        name = Path(config_path).stem if config_path else "default"
        run_dir = Path(out) if out else Path("runs") / name
    if config.data.root is not None:  # so that eval and --resume find it from any folder
        config.data.root = str(Path(config.data.root).expanduser().resolve())
    if (note := fit_warmup(config)) is not None:
        click.echo(f"mnist-train: {note}", err=True)
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
    from .plots import missing, plot_curves

    if not summary.wrote:
        return
    if (note := missing()) is None:
        plot_curves([dataclasses.asdict(r) for r in summary.epochs], run_dir / "curves.png")
    else:
        click.echo(f"no curves.png written; {note}")
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
@click.option("--normalize", default=None, metavar="MEAN,STD", help=NORMALIZE_HELP)
@click.option("--no-download", is_flag=True, help="Never download missing data files.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of tables.")
@click.option("--plot", "plot_dir", type=click.Path(file_okay=False), default=None,
              help="Also write confusion.png and mistakes.png (the most confidently wrong test "
                   "images) into this folder; needs the plot extra.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks of errors.")
@version
def eval_command(checkpoint_path, data_root, dataset, device, normalize, no_download, as_json,
                 plot_dir, debug):
    """Evaluate a checkpoint on the test set: accuracy, loss, per-class precision, recall and
    F1, macro averages and the confusion matrix."""
    from .device import parse_device

    parse_device(device)
    bare_normalization = parse_normalize(normalize)

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
    if plot_dir is not None:
        write_eval_plots(evaluation, Path(plot_dir))


def write_eval_plots(evaluation, folder: Path) -> None:
    from .errors import OutputError
    from .export import CLASS_NAMES
    from .metrics import softmax
    from .plots import missing, plot_confusion, plot_mistakes

    if (note := missing()) is not None:
        click.echo(f"mnist-eval: no pictures written; {note}", err=True)
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"--plot folder {folder} cannot be created ({error.strerror})") from None
    classes = CLASS_NAMES[evaluation.dataset]
    plot_confusion(evaluation.report.confusion, classes, folder / "confusion.png")
    plot_mistakes(evaluation.images, evaluation.labels, softmax(evaluation.logits), classes,
                  folder / "mistakes.png")
    click.echo(f"wrote {folder / 'confusion.png'} and {folder / 'mistakes.png'}", err=True)


def parse_normalize(text: str | None):
    from .data import Normalization

    if text is None:
        return None
    try:
        mean, std = (float(part) for part in text.split(","))
    except ValueError:
        raise click.BadParameter("write MEAN,STD, e.g. 0.1307,0.3081",
                                 param_hint="--normalize") from None
    if std <= 0:
        raise click.BadParameter("STD must be greater than 0", param_hint="--normalize")
    return Normalization(mean, std)


@click.command("mnist-predict", context_settings=CONTEXT)
@click.option("--checkpoint", "checkpoint_path", required=True, type=click.Path(),
              help="A .params file from mnist-train (or a plain Gluon script's).")
@click.argument("inputs", nargs=-1, required=True, type=click.Path())
@click.option("--top-k", "top_k", type=click.IntRange(1, None), default=3, show_default=True,
              help="How many classes to show per image.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, gpu or gpu:N.")
@click.option("--normalize", default=None, metavar="MEAN,STD", help=NORMALIZE_HELP)
@click.option("--json", "as_json", is_flag=True,
              help="Print a JSON list: one object per image with path, label and top_k.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks of errors.")
@version
def predict_command(checkpoint_path, inputs, top_k, device, normalize, as_json, debug):
    """Classify images: PNG/JPEG/BMP files of any size (a dark digit on light paper is
    inverted, cropped and centred the way MNIST's digits are), .npy arrays and IDX files of
    28x28 images, or folders of them. A file that cannot be read is reported and skipped;
    the exit status is then 1."""
    from .device import parse_device

    parse_device(device)
    bare_normalization = parse_normalize(normalize)

    from .errors import DataError
    from .images import expand, load_inputs
    from .predict import load_classifier, predict

    classifier, _ = load_classifier(checkpoint_path, device, bare_normalization)
    paths = expand([Path(p) for p in inputs])
    if not paths:
        raise DataError(f"no files to classify in {', '.join(inputs)}")
    results, failed = [], 0
    for path in paths:
        try:
            results.extend(predict(classifier, load_inputs(path), top_k))
        except DataError as error:
            failed += 1
            click.echo(f"mnist-predict: skipped: {error}", err=True)
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results]))
    else:
        for r in results:
            where = r.path + (f"[{r.index}]" if r.index is not None else "")
            ranked = "  ".join(f"{label} {p:.3f}" for label, p in r.top_k)
            click.echo(f"{where}: {r.label}  ({ranked})")
    return 1 if failed else 0


@click.command("mnist-export", context_settings=CONTEXT)
@click.option("--checkpoint", "checkpoint_path", required=True, type=click.Path(),
              help="A .params file from mnist-train.")
@click.option("--format", "fmt", type=click.Choice(["mxnet", "onnx"]), default="mxnet",
              show_default=True, help="mxnet: *-symbol.json + *-0000.params; onnx: one .onnx.")
@click.option("--out", type=click.Path(), required=True, help="Folder to write the export to.")
@click.option("--quantize", type=click.Choice(["int8"]), default=None,
              help="INT8 with MXNet's quantization (MKLDNN), calibrated on training images; "
                   "reports accuracy and speed against float on the test set.")
@click.option("--data-root", type=click.Path(), default=None,
              help="Folder with the dataset's IDX files (int8 calibration and check).")
@click.option("--normalize", default=None, metavar="MEAN,STD", help=NORMALIZE_HELP)
@click.option("--force", is_flag=True, help="Replace an export already in --out.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks of errors.")
@version
def export_command(checkpoint_path, fmt, out, quantize, data_root, normalize, force, debug):
    """Export a checkpoint for serving. The exported model takes raw pixels (float32, 0-255,
    N x 784) with the normalisation inside the graph, and returns logits; model.json beside
    it describes input, output and class names."""
    bare_normalization = parse_normalize(normalize)

    from .export import export_checkpoint
    from .predict import load_classifier

    classifier, checkpoint = load_classifier(checkpoint_path, "cpu", bare_normalization)
    calibration = test = None
    if quantize:
        calibration, test = quantization_data(checkpoint, data_root)
    exported = export_checkpoint(classifier, checkpoint, Path(out), fmt, quantize, calibration,
                                 test, force)
    for path in exported.files:
        click.echo(f"wrote {path}")
    if exported.figures:
        f = exported.figures
        click.echo(f"int8 on {f['images']} test images: accuracy {f['int8_accuracy']:.4f} "
                   f"(float32 {f['float32_accuracy']:.4f}); {f['int8_ms']:.1f} ms against "
                   f"{f['float32_ms']:.1f} ms, {f['speedup']:.2f}x faster")


@click.command("mnist-sweep", context_settings=CONTEXT)
@click.option("--config", "config_path", required=True, metavar="FILE|NAME",
              help=config_help("The config every trial starts from"))
@click.option("--grid", multiple=True, required=True, metavar="KEY=V1,V2,...",
              help="Values to try for one key; repeat for more keys (their product is run).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE",
              help="Override a key in every trial; repeatable.")
@click.option("--random", "random_count", type=int, default=None,
              help="Run this many trials drawn from the grid instead of all of it.")
@click.option("--seed", type=int, default=0, show_default=True, help="For --random.")
@click.option("--jobs", type=click.IntRange(1, None), default=1, show_default=True,
              help="Trials run at once, each in its own process.")
@click.option("--out", type=click.Path(), required=True, help="The sweep's folder.")
@click.option("--data-root", type=click.Path(), default=None,
              help="Folder with the dataset's IDX files (sets data.root in every trial).")
@click.option("--debug", is_flag=True, help="Show Python tracebacks of errors.")
@version
def sweep_command(config_path, grid, overrides, random_count, seed, jobs, out, data_root,
                  debug):
    """Run a grid (or a random part of it) of mnist-train trials, each a normal run folder,
    and pick the best on validation accuracy, never on the test set. Writes results.csv,
    results.json and best.yaml; the same command again skips finished trials and resumes
    interrupted ones."""
    from .config import config_file
    from .files import atomic_write_text
    from .sweep import (
        best_trial,
        parse_grid,
        plan_trials,
        prepare,
        results,
        run_trials,
        write_results,
    )

    out_dir, base_config = Path(out), config_file(config_path).resolve()
    base = list(overrides) + ([f"data.root={Path(data_root).resolve()}"] if data_root else [])
    trials = plan_trials(parse_grid(list(grid)), random_count, seed)
    prepare(out_dir, base_config, base, trials)
    say = lambda text: click.echo(f"mnist-sweep: {text}", err=True)  # noqa: E731
    try:
        statuses = run_trials(trials, out_dir, base_config, base, jobs, say)
    except KeyboardInterrupt:
        raise Interrupted("interrupted; the trials saved checkpoints: run the same command "
                          "again to continue") from None
    rows = results(trials, out_dir)
    write_results(rows, out_dir)
    keys = [k for k in rows[0] if k not in ("trial", "finished")]
    click.echo("  ".join(["trial", *keys]))
    for row in sorted(rows, key=lambda r: -(r["best_val_accuracy"] or 0)):
        click.echo("  ".join([row["trial"], *(str(row[k]) for k in keys)]))
    best = best_trial(rows)
    if best is not None:
        text = (out_dir / best["trial"] / "config.yaml").read_text()  # the resolved config
        atomic_write_text(out_dir / "best.yaml", text)
        click.echo(f"\n# best: {best['trial']}, validation accuracy "
                   f"{best['best_val_accuracy']:.4f} (written to {out_dir / 'best.yaml'})")
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
@click.option("--debug", is_flag=True, help="Show Python tracebacks of errors.")
@version
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def launch_command(workers, servers, hostfile, ssh_command, debug, command):
    """Run a distributed mnist-train on MXNet's parameter-server kvstore: a scheduler,
    SERVERS servers and WORKERS workers, wired by DMLC_* variables, on 127.0.0.1 or over ssh
    on the hosts of --hostfile. If any process dies, every other one is stopped and the exit
    status is non-zero. Example: mnist-launch -n 2 -s 1 -- mnist-train --config
    configs/base.yaml --set train.kvstore=dist_sync"""
    import shlex

    from .launch import launch, read_hostfile

    hosts = read_hostfile(hostfile) if hostfile else None
    command = list(command)
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        raise click.UsageError("give the command to run after --, e.g. -- mnist-train ...")
    return launch(command, workers, servers,
                  lambda text: click.echo(f"mnist-launch: {text}", err=True), hosts,
                  tuple(shlex.split(ssh_command)))


@click.command("mnist-serve", context_settings=CONTEXT)
@click.option("--checkpoint", "checkpoint_path", required=True, type=click.Path(),
              help="A .params file from mnist-train (or a plain Gluon script's).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; 0.0.0.0 opens the server to the network.")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True,
              help="Port to listen on; 0 picks a free one.")
@click.option("--token", envvar="MNIST_SERVE_TOKEN", default=None,
              help="Require 'Authorization: Bearer TOKEN' on /v1/*; better passed in "
                   "$MNIST_SERVE_TOKEN, which other users cannot see in ps.  [default: none]")
@click.option("--max-body", "max_body", type=click.IntRange(1024, None), default=4 << 20,
              show_default=True, help="Largest request body in bytes; larger ones get 413.")
@click.option("--max-images", type=click.IntRange(1, None), default=256, show_default=True,
              help="Most images in one JSON request; more get 413.")
@click.option("--max-batch", type=click.IntRange(1, None), default=16, show_default=True,
              help="Answer up to this many waiting images in one forward pass (dynamic "
                   "micro-batching: about 2x the requests/s of JSON pixels under load); 1 "
                   "answers each request on its own.")
@click.option("--max-wait-ms", type=click.FloatRange(0, 1000), default=0.0,
              show_default=True,
              help="How long a batch waits for more requests; 0 takes only those already "
                   "waiting, so a lone request is never delayed.")
@click.option("--device", default="cpu", show_default=True, help="auto, cpu, gpu or gpu:N.")
@click.option("--normalize", default=None, metavar="MEAN,STD", help=NORMALIZE_HELP)
@click.option("--access-log", is_flag=True, help="Log every request on stderr.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks of errors.")
@version
def serve_command(checkpoint_path, host, port, token, max_body, max_images, max_batch,
                  max_wait_ms, device, normalize, access_log, debug):
    """Serve a checkpoint over HTTP: POST /v1/predict (an image upload, or JSON pixels for a
    batch), GET /v1/model, /healthz and /metrics (Prometheus), and at / a page to draw a digit
    on. Needs the serve extra: pip install "mnist-gluon[serve]"."""
    from .device import parse_device

    parse_device(device)
    bare_normalization = parse_normalize(normalize)
    if token is not None and not token.strip():
        raise click.BadParameter("the token is empty", param_hint="--token")
    missing = [name for name in ("fastapi", "uvicorn", "prometheus_client", "multipart")
               if importlib.util.find_spec(name) is None]
    if missing:
        raise click.UsageError(f"mnist-serve needs {', '.join(missing)}: "
                               'pip install "mnist-gluon[serve]"')
    from .serve import Limits, ServeOptions, serve_checkpoint

    say = lambda text: click.echo(f"mnist-serve: {text}", err=True)  # noqa: E731
    options = ServeOptions(token, Limits(max_body, max_images), max_batch, max_wait_ms)
    serve_checkpoint(Path(checkpoint_path), host, port, options, device, bare_normalization,
                     access_log, say)


def quantization_data(checkpoint, data_root):
    """5,000 training images to calibrate on, and the test set to check the result with."""
    from .data import DATASETS, read_split

    spec = DATASETS[checkpoint.dataset]
    data = checkpoint.meta.get("config", {}).get("data", {})
    root = data_root if data_root is not None else data.get("root")
    train = read_split(spec, "train", root, download=data.get("download", True))
    test = read_split(spec, "test", root, download=data.get("download", True))
    calibration = train.images[:5000].reshape(-1, 784)
    return calibration, (test.images.reshape(-1, 784).astype("float32"), test.labels)


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


def predict_main() -> None:
    sys.exit(run(predict_command))


def export_main() -> None:
    sys.exit(run(export_command))


def sweep_main() -> None:
    sys.exit(run(sweep_command))


def launch_main() -> None:
    sys.exit(run(launch_command))


def serve_main() -> None:
    sys.exit(run(serve_command))


@click.group("mnist", context_settings=CONTEXT)
@version
def mnist_group():
    """Train the MNIST MLP with MXNet Gluon, and evaluate, predict with, export, sweep,
    launch and serve it. Each command is also installed as mnist-COMMAND."""


for _name, _command in (("train", train_command), ("eval", eval_command),
                        ("predict", predict_command), ("export", export_command),
                        ("sweep", sweep_command), ("launch", launch_command),
                        ("serve", serve_command)):
    mnist_group.add_command(_command, _name)


def main() -> None:
    sys.exit(run(mnist_group))


if __name__ == "__main__":
    main()
