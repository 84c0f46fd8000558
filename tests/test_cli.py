"""The commands as a user runs them: real processes for the end-to-end paths, the same entry
point in-process for the table of bad inputs."""

import gzip
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from mnist_gluon import __version__
from mnist_gluon.checkpoint import signed
from mnist_gluon.cli import eval_command, run, train_command
from mnist_gluon.mxnet_compat import autograd, gluon, mx
from support import BIN, MNIST_FILES, REPO, snapshot, unwritable


def command(name, *args, env=None, cwd=None):
    return subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, cwd=cwd, timeout=600)


@pytest.fixture(scope="session")
def trained(small_mnist, tmp_path_factory):
    """A run folder trained for one epoch on the small slice of real MNIST."""
    out = tmp_path_factory.mktemp("trained") / "run"
    code = run(train_command, [
        "--out", str(out), "--quiet", "--set", "device=cpu", "--set", "model.hidden=32",
        "--set", "train.epochs=1", "--set", "data.verify=false", "--set", "data.val_size=500",
        "--data-root", str(small_mnist)])
    assert code == 0
    return out


# --- end to end, as processes ---------------------------------------------------------------

def test_smoke_config_trains_and_evaluates_on_the_real_data(mnist_dir, tmp_path):
    trained = command("mnist-train", "--config", REPO / "configs/smoke.yaml", "--data-root",
                      mnist_dir, "--out", tmp_path / "run")
    assert trained.returncode == 0, trained.stderr
    # Not a terminal: one plain line per epoch, no progress bar.
    assert "epoch 1/1" in trained.stdout and "\r" not in trained.stdout
    assert "mnist-eval --checkpoint" in trained.stdout
    evaluated = command("mnist-eval", "--checkpoint", tmp_path / "run/best.params",
                        "--data-root", mnist_dir, "--json")
    assert evaluated.returncode == 0, evaluated.stderr
    result = json.loads(evaluated.stdout)
    assert result["accuracy"] > 0.9
    assert result["examples"] == 10000
    assert len(result["per_class"]) == 10
    assert np.array(result["confusion_matrix"]).sum() == 10000


def test_a_newcomers_first_try_trains_and_evaluates_from_any_folder(mnist_dir, tmp_path):
    """The bundled config by name, one epoch of a recipe with a one-epoch warm-up, and the
    data folder given relative to where the user stands."""
    work, elsewhere = tmp_path / "work", tmp_path / "elsewhere"
    work.mkdir(), elsewhere.mkdir()
    trained = command("mnist-train", "--config", "base", "--set", "train.epochs=1", "--set",
                      "device=cpu", "--data-root", os.path.relpath(mnist_dir, work), "--quiet",
                      cwd=work)
    assert trained.returncode == 0, trained.stderr
    assert "warming up for 0.5 epochs instead" in trained.stderr
    saved = yaml.safe_load((work / "runs/base/config.yaml").read_text())
    assert saved["data"]["root"] == str(Path(mnist_dir).resolve())
    evaluated = command("mnist-eval", "--checkpoint", work / "runs/base/best.params", "--json",
                        cwd=elsewhere)
    assert evaluated.returncode == 0, evaluated.stderr
    assert json.loads(evaluated.stdout)["accuracy"] > 0.95
    assert list(elsewhere.iterdir()) == []


def test_help_names_the_bundled_configs_and_every_command_tells_its_version():
    shown = " ".join(command("mnist-train", "--help").stdout.split())
    assert ("(base, best, distilled, fashion, fashion-best, fashion-distilled, fashion-lenet, "
            "lenet, lenet-pruned, private, private-lenet, pruned, smoke)") in shown.replace(
                "mnist- gluon", "mnist-gluon")
    for name in ["mnist", "mnist-train", "mnist-eval", "mnist-predict", "mnist-export",
                 "mnist-sweep", "mnist-launch", "mnist-serve"]:
        result = command(name, "--version")
        assert (result.returncode, result.stdout) == (0, f"{name} {__version__}\n")


@pytest.mark.parametrize("module", ["mnist_gluon", "mnist_gluon.cli"])
def test_the_package_runs_as_one_command_group(module):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True,
                            text=True)
    assert result.returncode == 0
    listed = re.findall(r"^  (\w+) ", result.stdout.split("Commands:")[1], re.MULTILINE)
    assert listed == ["eval", "export", "launch", "predict", "serve", "sweep", "train"]
    assert "mnist train" in subprocess.run(
        [sys.executable, "-m", module, "train", "--help"], capture_output=True, text=True).stdout


def test_eval_prints_accuracy_per_class_scores_and_the_confusion_matrix(trained, mnist_dir):
    result = command("mnist-eval", "--checkpoint", trained / "best.params", "--data-root",
                     mnist_dir)
    assert result.returncode == 0, result.stderr
    assert "accuracy 0." in result.stdout and "(10000 examples)" in result.stdout
    assert "precision" in result.stdout and "confusion matrix" in result.stdout


def test_eval_finds_the_data_in_gluons_cache_under_mxnet_home(trained, mnist_dir, tmp_path):
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "mnist").symlink_to(mnist_dir)
    bare = tmp_path / "copy.params"
    shutil.copy(trained / "best.params", bare)  # no sidecar, so no data root recorded
    result = command("mnist-eval", "--checkpoint", bare, "--json", "--no-download",
                     env={"MXNET_HOME": str(tmp_path)})
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["examples"] == 10000


def test_resume_continues_a_run_with_its_saved_config(trained, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    assert run(train_command, ["--resume", str(run_dir), "--set", "train.epochs=2", "--quiet"]) == 0
    assert "resuming at epoch 2" in capsys.readouterr().out
    rows = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]
    assert json.loads((run_dir / "last.json").read_text())["epoch"] == 2


def test_help_answers_without_importing_mxnet():
    probe = ("import sys; from mnist_gluon import cli; "
             "cli.run(cli.train_command, ['--help']); cli.run(cli.eval_command, ['--help']); "
             "cli.run(cli.serve_command, ['--help']); "
             "print('mxnet' in sys.modules, 'fastapi' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "--config" in result.stdout and "--checkpoint" in result.stdout
    assert "--max-batch" in result.stdout
    assert result.stdout.strip().endswith("False False")


def test_print_config_prints_the_resolved_config_and_writes_nothing(tmp_path):
    result = command("mnist-train", "--config", REPO / "configs/base.yaml", "--set",
                     "train.lr=0.02", "--print-config", cwd=tmp_path)
    assert result.returncode == 0
    printed = yaml.safe_load(result.stdout)
    assert printed["train"]["lr"] == 0.02 and printed["model"]["hidden"] == 128
    assert list(tmp_path.iterdir()) == []


def test_a_traceback_shows_only_with_debug(tmp_path):
    plain = command("mnist-train", "--set", "train.lr=-1", "--out", tmp_path / "r")
    assert plain.returncode == 2 and "Traceback" not in plain.stderr
    debug = command("mnist-train", "--set", "train.lr=-1", "--out", tmp_path / "r", "--debug")
    assert "Traceback" in debug.stderr and "ConfigError" in debug.stderr


# --- a parameter file from a plain Gluon script ---------------------------------------------

class DocumentMLP(gluon.Block):
    """The document's model as a plain script writes it."""

    def __init__(self):
        super().__init__()
        self.fc1 = gluon.nn.Dense(128, activation="relu")
        self.fc2 = gluon.nn.Dense(10)

    def forward(self, x):
        return self.fc2(self.fc1(x))


@pytest.mark.parametrize("mean, std", [(0.1307, 0.3081), (0.0, 1.0)])
def test_a_bare_params_file_from_a_plain_gluon_script_evaluates(mnist_dir, tmp_path, capsys,
                                                                mean, std):
    from mnist_gluon.data import DATASETS, read_split

    split = read_split(DATASETS["mnist"], "train", mnist_dir, download=False)
    images = mx.nd.array((split.images[:20000].reshape(-1, 784) / 255.0 - mean) / std)
    labels = mx.nd.array(split.labels[:20000])
    mx.random.seed(0)
    net = DocumentMLP()
    net.initialize(mx.init.Xavier())
    trainer = gluon.Trainer(net.collect_params(), "adam", {"learning_rate": 0.002})
    loss_fn = gluon.loss.SoftmaxCrossEntropyLoss()
    for start in range(0, 20000, 100):
        with autograd.record():
            loss = loss_fn(net(images[start:start + 100]), labels[start:start + 100])
        loss.backward()
        trainer.step(100)
    net.save_parameters(str(tmp_path / "plain.params"))

    args = ["--checkpoint", str(tmp_path / "plain.params"), "--data-root", str(mnist_dir), "--json"]
    if (mean, std) != (0.1307, 0.3081):
        args += ["--normalize", f"{mean},{std}"]
    assert run(eval_command, args) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] > 0.9


# --- bad input: one line on stderr, exit 2, no traceback, nothing on disk changed ------------

class Scene:
    """What a bad-input case may build on: a scratch folder and real, small inputs."""

    def __init__(self, tmp: Path, small: Path, mnist: Path, trained: Path, closed_url: str):
        self.tmp, self.small, self.mnist, self.trained, self.closed_url = (
            tmp, small, mnist, trained, closed_url)

    def file(self, name: str, content: bytes | str) -> Path:
        path = self.tmp / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    def data_with(self, name: str, content: bytes) -> Path:
        """A copy of the small dataset with one file replaced."""
        folder = self.tmp / "data"
        shutil.copytree(self.small, folder, dirs_exist_ok=True)
        (folder / name).write_bytes(content)
        return folder

    def checkpoint_copy(self) -> Path:
        folder = self.tmp / "ckpt"
        shutil.copytree(self.trained, folder, dirs_exist_ok=True)
        return folder / "best.params"

    def train(self, *args) -> list[str]:
        return ["--out", str(self.tmp / "run"), "--set", "device=cpu", "--set",
                "train.epochs=1", "--set", "data.val_size=500", *map(str, args)]

    def on_small(self, *args) -> list[str]:
        return self.train("--data-root", self.small, "--set", "data.verify=false", *args)


def small_file(scene: Scene, name: str) -> bytes:
    return (scene.small / name).read_bytes()


def corrupt_sidecar(scene: Scene) -> list[str]:
    params = scene.checkpoint_copy()
    meta = json.loads(params.with_suffix(".json").read_text())
    meta["architecture"]["classes"] = 12
    meta = signed(meta)  # re-signed, as one who knows the format would
    params.with_suffix(".json").write_text(json.dumps(meta))
    return ["--checkpoint", str(params)]


def edited_sidecar(scene: Scene) -> list[str]:
    params = scene.checkpoint_copy()
    meta = json.loads(params.with_suffix(".json").read_text())
    meta["normalization"]["std"] *= 2
    params.with_suffix(".json").write_text(json.dumps(meta))
    return ["--checkpoint", str(params)]


def changed_params(scene: Scene) -> list[str]:
    params = scene.checkpoint_copy()
    raw = bytearray(params.read_bytes())
    raw[-10] ^= 0x55
    params.write_bytes(bytes(raw))
    return ["--checkpoint", str(params)]


def other_model(scene: Scene) -> list[str]:
    net = gluon.nn.Dense(10, in_units=784)
    net.initialize()
    net.save_parameters(str(scene.tmp / "linear.params"))
    return ["--checkpoint", str(scene.tmp / "linear.params")]


def sidecar_not_json(scene: Scene) -> list[str]:
    params = scene.checkpoint_copy()
    params.with_suffix(".json").write_text("{oops")
    return ["--checkpoint", str(params)]


def run_copy(scene: Scene) -> Path:
    return scene.checkpoint_copy().parent


def damaged_states(scene: Scene) -> list[str]:
    run_dir = run_copy(scene)
    for states in run_dir.glob("*.states"):  # every checkpoint resume could fall back on
        states.write_bytes(b"\x00" * 100)
    return ["--resume", str(run_dir)]


def data_file_is_a_folder(scene: Scene) -> list[str]:
    folder = scene.data_with("train-labels-idx1-ubyte", b"")
    (folder / "train-labels-idx1-ubyte").unlink()
    (folder / "train-labels-idx1-ubyte").mkdir()
    return scene.on_small("--data-root", folder)


def resume_without_sidecars(scene: Scene) -> list[str]:
    run_dir = run_copy(scene)
    for sidecar in run_dir.glob("*.json"):
        sidecar.unlink()
    return ["--resume", str(run_dir)]


def resume_another_models_params(scene: Scene) -> list[str]:
    run_dir = run_copy(scene)
    for sidecar in run_dir.glob("*.json"):
        sidecar.unlink()
    other_model(scene)
    shutil.copy(scene.tmp / "linear.params", run_dir / "last.params")
    return ["--resume", str(run_dir)]


def existing_run(scene: Scene) -> list[str]:
    scene.file("run/metrics.jsonl", '{"epoch": 1}\n')
    scene.file("run/last.params", b"precious")
    return scene.on_small()


def symlink_loop(scene: Scene) -> list[str]:
    (scene.tmp / "a.params").symlink_to(scene.tmp / "b.params")
    (scene.tmp / "b.params").symlink_to(scene.tmp / "a.params")
    return ["--checkpoint", str(scene.tmp / "a.params")]


TRAIN_CASES = {
    "negative seed": (lambda s: s.on_small("--set", "seed=-1"),
                      r"seed is -1; it must be in \[0, 2\*\*32\)"),
    "seed too large": (lambda s: s.on_small("--set", "seed=1180591620717411303424"),
                       r"seed is 1180591620717411303424; it must be in"),
    "learning rate .inf (YAML)": (lambda s: s.on_small("--set", "train.lr=.inf"),
                               r"train\.lr must be a finite number, got inf"),
    "huge hidden layer": (lambda s: s.on_small("--set", "model.hidden=1000000000000"),
                          r"model\.hidden is 1000000000000; it must be in \[1, 100000\]"),
    "tab in YAML": (lambda s: ["--config", s.file("c.yaml", "train:\n\tlr: 0.1\n")],
                    r"line 2: found character '\\t' .* \(indent with spaces, not tabs\)"),
    "malformed YAML": (lambda s: ["--config", s.file("c.yaml", "train: [1, 2\n")],
                       r"c\.yaml is not valid YAML at line"),
    "config not a mapping": (lambda s: ["--config", s.file("c.yaml", "just text\n")],
                             "must hold a mapping"),
    "missing config file": (lambda s: ["--config", s.tmp / "none.yaml"], "does not exist"),
    "unknown key": (lambda s: ["--set", "train.lrr=0.1"],
                    r"unknown config key train\.lrr; did you mean train\.lr\?"),
    "unknown key in file": (lambda s: ["--config", s.file("c.yaml", "modle: {hidden: 3}\n")],
                            "unknown config key modle; did you mean model?"),
    "wrong type": (lambda s: ["--set", "train.batch_size=big"],
                   r"train\.batch_size must be an integer"),
    "zero batch size": (lambda s: ["--set", "train.batch_size=0"], r"train\.batch_size is 0"),
    "negative learning rate": (lambda s: ["--set", "train.lr=-0.1"], r"train\.lr is -0\.1"),
    "unknown optimizer": (lambda s: ["--set", "train.optimizer=lion"],
                          "choose one of sgd, nag, adam, rmsprop"),
    "override without =": (lambda s: ["--set", "train.lr"], "is not KEY=VALUE"),
    "unknown option": (lambda s: ["--epoch", "3"], r"No such option.*--epoch.*--epochs"),
    "config with resume": (lambda s: ["--config", s.file("c.yaml", ""), "--resume", s.tmp],
                           "--resume uses the run's saved config"),
    "resume of no run": (lambda s: ["--resume", s.tmp / "empty"], "holds no run to resume"),
    "resume changing the model": (
        lambda s: ["--resume", run_copy(s), "--set", "model.hidden=64"],
        r"model\.hidden was 32 in the run being resumed, now 64; it cannot change on --resume"),
    "resume with damaged optimizer state": (damaged_states, "the run cannot resume exactly"),
    # GPU 63: absent here, and on any machine with a GPU or a few.
    "gpu absent": (lambda s: s.on_small("--set", "device=gpu:63"),
                   "asks for GPU 63 but this machine"),
    "bad device string": (lambda s: ["--set", "device=cuda"], "device is 'cuda'"),
    "data missing, no download": (
        lambda s: s.train("--data-root", s.tmp / "nodata", "--set", "data.download=false"),
        r"mnist files missing from .*nodata \(train-images-idx3-ubyte\.gz, "
        r"train-labels-idx1-ubyte\.gz\); copy the four mnist files"),
    "data missing, mirrors offline": (
        lambda s: s.train("--data-root", s.tmp / "nodata", "--set",
                          f"data.mirrors=[{s.closed_url}]"),
        r"could not download train-images-idx3-ubyte\.gz .*--data-root"),
    "corrupt data file": (
        lambda s: s.on_small("--data-root", s.data_with("train-images-idx3-ubyte",
                                                        b"\x89PNG" + bytes(100))),
        r"train-images-idx3-ubyte is not an IDX file: bad magic number"),
    "truncated data file": (
        lambda s: s.on_small("--data-root", s.data_with(
            "train-labels-idx1-ubyte", small_file(s, "train-labels-idx1-ubyte")[:-7])),
        r"train-labels-idx1-ubyte is truncated"),
    "truncated gzip data file": (
        lambda s: s.train("--data-root", s.data_with(
            "train-images-idx3-ubyte.gz", (s.mnist / MNIST_FILES[0]).read_bytes()[:4000])),
        r"train-images-idx3-ubyte\.gz is a damaged gzip file"),
    "empty data file": (lambda s: s.on_small("--data-root", s.data_with(
        "train-labels-idx1-ubyte", b"")), r"is not an IDX file: only 0 bytes"),
    "images and labels disagree": (
        lambda s: s.on_small("--data-root", s.data_with(
            "train-labels-idx1-ubyte", small_file(s, "t10k-labels-idx1-ubyte"))),
        r"has 3000 images but .* has 1000 labels"),
    "checksum mismatch": (
        lambda s: s.train("--data-root", s.data_with(
            "train-labels-idx1-ubyte.gz",
            gzip.compress(small_file(s, "train-labels-idx1-ubyte")))),
        r"train-(images|labels)-idx\d-ubyte(\.gz)? fails its checksum"),
    "data file is a folder": (data_file_is_a_folder, "is a directory, not a file"),
    "data file longer than its header": (
        lambda s: s.on_small("--data-root", s.data_with(
            "train-labels-idx1-ubyte", small_file(s, "train-labels-idx1-ubyte") + b"\0" * 5)),
        "is longer than its header says"),
    "resume without sidecars": (resume_without_sidecars, "has no sidecar last.json"),
    "resume of another model's parameters": (resume_another_models_params,
                                             "is not a two-layer MLP"),
    "resume changing the batch size": (
        lambda s: ["--resume", run_copy(s), "--set", "train.batch_size=32"],
        r"train\.batch_size was 64 in the run being resumed, now 32"),
    "zero checkpoint interval": (lambda s: ["--set", "checkpoint.every_steps=0"],
                                 r"checkpoint\.every_steps is 0"),
    "negative checkpoints kept": (lambda s: ["--set", "checkpoint.keep=-1"],
                                  r"checkpoint\.keep is -1"),
    "skip_nonfinite not a boolean": (lambda s: ["--set", "train.skip_nonfinite=maybe"],
                                     r"train\.skip_nonfinite must be true or false"),
    "infinite learning rate": (lambda s: ["--set", "train.lr=inf"],
                               r"train\.lr must be a finite number, got 'inf'"),
    "dropout of 1 or more": (lambda s: ["--set", "model.dropout=1.5"],
                             r"model\.dropout is 1\.5"),
    "distributed kvstore without a cluster": (
        lambda s: s.on_small("--set", "train.kvstore=dist_sync"),
        r"train\.kvstore=dist_sync needs a cluster \(DMLC_ROLE.* not set\); start it with: "
        r"mnist-launch -n WORKERS"),
    "existing run": (existing_run, r"already holds a run .*--resume .*--force"),
    "output is a file": (lambda s: s.on_small("--out", s.file("taken", "x")),
                         "is a file, not a folder"),
    "validation swallows the data": (lambda s: s.on_small("--set", "data.val_size=3000"),
                                     "leaves no training data"),
}

EVAL_CASES = {
    "missing checkpoint": (lambda s: ["--checkpoint", s.tmp / "none.params"],
                           r"none\.params does not exist"),
    "checkpoint is a folder": (lambda s: ["--checkpoint", s.tmp],
                               "is a folder that holds no run .best.params. and no export"),
    "empty checkpoint": (lambda s: ["--checkpoint", s.file("e.params", b"")],
                         "is not an MXNet parameter file"),
    "random bytes checkpoint": (
        lambda s: ["--checkpoint", s.file("r.params", np.random.default_rng(1).bytes(3000))],
        "is not an MXNet parameter file"),
    "truncated checkpoint": (
        lambda s: ["--checkpoint", s.file("t.params", (s.trained / "best.params").read_bytes()
                                          [:5000])], "is not an MXNet parameter file"),
    "params changed after writing": (changed_params, "does not match the checksum"),
    "sidecar disagrees with params": (corrupt_sidecar, "the sidecar belongs to another model"),
    "sidecar not JSON": (sidecar_not_json, "is not readable JSON"),
    "sidecar edited": (edited_sidecar, r"best\.json was changed after it was written"),
    "another model": (other_model, "is not a two-layer MLP"),
    "gpu absent": (lambda s: ["--checkpoint", s.trained / "best.params", "--device", "gpu:63"],
                   "asks for GPU 63 .* the other commands: --device cpu"),
    "the sidecar instead of the params": (
        lambda s: ["--checkpoint", s.trained / "best.json"],
        r"best\.json is a checkpoint's sidecar; pass its parameter file, .*best\.params"),
    "a symbolic link loop": (symlink_loop, r"a\.params is a symbolic link to nothing"),
    "bad normalize": (lambda s: ["--checkpoint", s.trained / "best.params", "--normalize", "x"],
                      r"--normalize must be two numbers, MEAN,STD \(e.g. 0.1307,0.3081\)"),
    "normalize with a sidecar": (
        lambda s: ["--checkpoint", s.trained / "best.params", "--normalize", "0,1"],
        "--normalize is for bare .params files"),
    "test data missing": (
        lambda s: ["--checkpoint", s.trained / "best.params", "--data-root", s.tmp / "nodata",
                   "--no-download"], "mnist files missing from"),
    "no checkpoint option": (lambda s: [], r"give the checkpoint as the first argument"),
}


@pytest.fixture
def scene(tmp_path, small_mnist, mnist_dir, trained, closed_port_url):
    work = tmp_path / "work"
    work.mkdir()
    return Scene(work, small_mnist, mnist_dir, trained, closed_port_url)


def assert_one_clear_line(cli, args, message, scene, capsys):
    before = snapshot(scene.tmp)
    trained_before = snapshot(scene.trained)
    code = run(cli, [str(a) for a in args])
    err = capsys.readouterr().err
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"{cli.name}: error: ")
    assert "Traceback" not in err
    assert re.search(message, lines[0]), lines[0]
    assert snapshot(scene.tmp) == before, "files changed"
    assert snapshot(scene.trained) == trained_before


@pytest.mark.parametrize("case", TRAIN_CASES)
def test_bad_training_input_is_one_line_exit_2_and_touches_nothing(case, scene, capsys):
    make_args, message = TRAIN_CASES[case]
    assert_one_clear_line(train_command, make_args(scene), message, scene, capsys)


@pytest.mark.parametrize("case", EVAL_CASES)
def test_bad_evaluation_input_is_one_line_exit_2_and_touches_nothing(case, scene, capsys):
    make_args, message = EVAL_CASES[case]
    assert_one_clear_line(eval_command, make_args(scene), message, scene, capsys)


def test_an_unwritable_output_folder_is_one_line_exit_2(scene, capsys):
    locked = scene.tmp / "locked"
    locked.mkdir()
    with unwritable(locked):
        assert_one_clear_line(train_command, scene.on_small("--out", locked / "run"),
                              "is not writable", scene, capsys)


def test_a_config_with_a_byte_order_mark_reads_in_any_locale(tmp_path):
    config = tmp_path / "bom.yaml"
    config.write_bytes("\ufeffseed: 3\n".encode())
    result = command("mnist-train", "--config", config, "--print-config",
                     env={"LC_ALL": "C", "PYTHONUTF8": "0", "PYTHONCOERCECLOCALE": "0"})
    assert result.returncode == 0, result.stderr
    assert yaml.safe_load(result.stdout)["seed"] == 3


def test_resuming_a_finished_run_says_there_is_nothing_to_resume(trained, tmp_path, capsys):
    run_dir = tmp_path / "run"
    shutil.copytree(trained, run_dir)
    assert run(train_command, ["--resume", str(run_dir), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "nothing to resume: all its 1 epochs are trained" in out
    assert "resuming at epoch" not in out



def test_eval_on_another_dataset_reads_that_dataset_not_the_runs_folder(trained, fashion_dir,
                                                                        capsys):
    """The run trained on a 1,000-image slice of MNIST in a folder of its own; asked for
    Fashion-MNIST, eval must not read that folder's MNIST images as if they were clothes."""
    code = run(eval_command, ["--checkpoint", str(trained / "best.params"), "--dataset",
                              "fashion-mnist", "--data-root", str(fashion_dir), "--json"])
    assert code == 0
    assert json.loads(capsys.readouterr().out)["examples"] == 10000
    code = run(eval_command, ["--checkpoint", str(trained / "best.params"), "--dataset",
                              "fashion-mnist", "--json"])
    assert code == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    assert result["dataset"] == "fashion-mnist" and result["examples"] == 10000


def test_eval_on_another_dataset_than_the_model_learned_says_so(trained, fashion_dir, capsys):
    """An MNIST model reported 4.2% on Fashion-MNIST and exited 0 without a word."""
    checkpoint = trained / "best.params"
    code = run(eval_command, ["--checkpoint", str(checkpoint), "--dataset", "fashion-mnist",
                              "--data-root", str(fashion_dir), "--json"])
    out, err = capsys.readouterr()
    assert code == 0 and json.loads(out)["trained_on"] == "mnist"
    assert err == (f"mnist-eval: warning: {checkpoint} was trained on mnist, not fashion-mnist; "
                   "these figures are for images it never learned\n")
    assert run(eval_command, ["--checkpoint", str(checkpoint), "--json"]) == 0
    assert capsys.readouterr().err == ""  # its own dataset: no word


def test_a_one_epoch_try_of_the_best_recipe_is_fitted_not_refused(capsys):
    assert run(train_command, ["--config", "best", "--set", "train.epochs=1",
                               "--print-config"]) == 0
    out, err = capsys.readouterr()
    assert "averaging the weights from epoch 1 instead" in err
    assert yaml.safe_load(out)["train"]["average"]["start_epoch"] == 1


def test_the_recipe_script_fails_loudly_without_mnist_train(tmp_path):
    """Outside a `make` venv it said "No such file or directory"; it must exit non-zero
    with a line saying what to do."""
    done = subprocess.run(["bash", str(REPO / "scripts" / "compare_recipes.sh")], cwd=tmp_path,
                          capture_output=True, text=True,
                          env={"PATH": "/usr/bin:/bin", "MNIST_TRAIN": str(tmp_path / "none")})
    assert done.returncode == 2
    assert done.stderr == ("compare_recipes.sh: error: no mnist-train found; run 'make train' "
                           "first, or set MNIST_TRAIN=/path/to/mnist-train\n")


def test_epochs_lr_and_batch_size_are_shorthands_for_set_shown_in_help(capsys):
    assert run(train_command, ["--config", "base", "--epochs", "3", "--lr", "0.05",
                               "--batch-size", "128", "--print-config"]) == 0
    printed = yaml.safe_load(capsys.readouterr().out)["train"]
    assert (printed["epochs"], printed["lr"], printed["batch_size"]) == (3, 0.05, 128)
    helped = command("mnist-train", "--help").stdout
    for flag, key in (("--epochs", "train.epochs"), ("--lr", "train.lr"),
                      ("--batch-size", "train.batch_size")):
        assert flag in helped and f"Short for --set {key}=" in helped
    assert run(train_command, ["--config", "base", "--epochs", "0", "--print-config"]) == 2
    assert "train.epochs is 0; it must be in [1, 100000]" in capsys.readouterr().err


def test_the_checkpoint_commands_take_the_checkpoint_or_its_run_folder_first(trained, tmp_path):
    folder = trained.parent if trained.name.endswith(".params") else trained
    for name, args in (("mnist-eval", ["--json"]), ("mnist-export", ["--out", tmp_path / "e"])):
        done = command(name, folder, *args)
        assert done.returncode == 0, done.stderr
    np.save(tmp_path / "digit.npy", np.eye(28) * 255)
    by_folder = command("mnist-predict", folder, tmp_path / "digit.npy")
    by_option = command("mnist-predict", "--checkpoint", folder / "best.params",
                        tmp_path / "digit.npy")
    assert by_folder.returncode == 0 and by_folder.stdout == by_option.stdout != ""
    assert command("mnist-eval", folder, "--checkpoint", folder).stderr == (
        f"mnist-eval: error: the checkpoint is given twice ({folder} and --checkpoint {folder}); "
        "give it once (see mnist-eval --help)\n")
    assert command("mnist-eval").stderr == (
        "mnist-eval: error: give the checkpoint as the first argument, e.g. runs/base (its "
        "best.params), or with --checkpoint PATH (see mnist-eval --help)\n")
