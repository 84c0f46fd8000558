"""The documentation tells the truth: every message the Troubleshooting page quotes is what the
command it names prints; the site builds with `mkdocs build --strict` and carries every option
of every command, every public name of the API and every config key; the files and columns it
documents are the ones the commands write; and the README is a front page whose quick start
names only what exists."""

import fcntl
import html
import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_gluon.checkpoint import signed
from mnist_gluon.cli import mnist_group
from support import BIN, REPO, billion_laughs, idx_bytes, tiny_disk, unwritable

README = (REPO / "README.md").read_text()
DOCS = REPO / "docs"
TRAINING = (DOCS / "training.md").read_text()


def quoted_messages() -> list[str]:
    """The messages in the first column of the Troubleshooting table."""
    rows = [line for line in (DOCS / "troubleshooting.md").read_text().splitlines()
            if line.startswith("| `")]
    return [message for row in rows for message in re.findall(r"`([^`]+)`", row.split(" | ")[0])]


def pattern(message: str) -> re.Pattern:
    """A quoted message as a pattern: "…" (and the spaces beside it) stands for whatever the
    command put there."""
    parts = re.split(r"\s*…\s*", message)
    return re.compile(".*?".join(re.escape(part) for part in parts), re.DOTALL)


class Scene:
    """Where the reproductions run: a fresh folder, the small slice of MNIST, a trained run."""

    def __init__(self, tmp: Path, small_mnist: Path, small_config: Path, trained: Path,
                 fashion_dir: Path, closed_url: str):
        self.tmp, self.small, self.config, self.trained = tmp, small_mnist, small_config, trained
        self.fashion, self.closed = fashion_dir, closed_url

    def file(self, name: str, text: str) -> Path:
        (self.tmp / name).write_text(text)
        return self.tmp / name

    def changed_params(self) -> Path:
        copy = self.run_copy() / "best.params"
        raw = bytearray(copy.read_bytes())
        raw[-1] ^= 0xFF
        copy.write_bytes(bytes(raw))
        return copy

    def run(self, name: str, *args, timeout: int = 300, env: dict | None = None) -> str:
        done = subprocess.run([str(BIN / name), *map(str, args)], capture_output=True,
                              text=True, cwd=self.tmp, timeout=timeout,
                              env={**os.environ, **(env or {})})
        return done.stdout + done.stderr

    def train(self, *args) -> str:
        return self.run("mnist-train", "--config", self.config, "--out", self.tmp / "new",
                        *args)

    def run_copy(self) -> Path:
        copy = self.tmp / "run"
        shutil.copytree(self.trained, copy)
        return copy

    def data_with(self, name: str, content: bytes) -> Path:
        folder = self.tmp / "data"
        shutil.copytree(self.small, folder)
        (folder / name).write_bytes(content)
        return folder

    def edited(self, change, resign: bool) -> Path:
        copy = self.run_copy()
        sidecar = copy / "best.json"
        meta = json.loads(sidecar.read_text())
        change(meta)
        sidecar.write_text(json.dumps(signed(meta) if resign else meta))
        return copy / "best.params"


def gz_labels_damaged(s: Scene) -> str:
    folder = s.data_with("train-labels-idx1-ubyte", b"")
    (folder / "train-labels-idx1-ubyte").unlink()
    (folder / "train-labels-idx1-ubyte.gz").write_bytes(b"\x1f\x8b\x08\x00garbage")
    return s.train("--data-root", folder)


def gz_bomb(s: Scene) -> str:
    import gzip

    bomb = s.tmp / "ten-idx3-ubyte.gz"
    bomb.write_bytes(gzip.compress(idx_bytes(np.zeros((10, 28, 28), np.uint8)))
                     + gzip.compress(bytes(1 << 20)))
    return s.run("mnist-predict", "--checkpoint", s.trained / "best.params", bomb)


def fifo_skipped(s: Scene) -> str:
    os.mkfifo(s.tmp / "pipe.png")
    np.save(s.tmp / "digit.npy", np.eye(28) * 255)
    return s.run("mnist-predict", "--checkpoint", s.trained / "best.params",
                 s.tmp / "pipe.png", s.tmp / "digit.npy")


def damaged_compressed(s: Scene) -> str:
    s.run("mnist-export", s.trained, "--format", "compressed", "--out", s.tmp / "small")
    mnc = s.tmp / "small" / "model.mnc"
    mnc.write_bytes(mnc.read_bytes()[:-10])
    return s.run("mnist-eval", "--checkpoint", mnc, "--data-root", s.small)


def start_held_out_other_images(s: Scene) -> str:
    return s.train("--set", "seed=8", "--set", "train.prune.sparsity=0.9", "--set",
                   f"train.prune.start_from={s.trained}")


def blank_image(s: Scene) -> str:
    Image.new("RGBA", (64, 64), (0, 0, 0, 0)).save(s.tmp / "empty.png")
    return s.run("mnist-predict", "--checkpoint", s.trained / "best.params", s.tmp / "empty.png")


def folder_in_use(s: Scene) -> str:
    copy = s.run_copy()
    with open(copy / ".lock", "w") as lock:  # as a running mnist-train holds it
        fcntl.flock(lock, fcntl.LOCK_EX)
        lock.write(f"{os.getpid()}\n")
        lock.flush()
        return s.run("mnist-train", "--resume", copy, "--set", "train.epochs=2")


def unwritable_out(s: Scene) -> str:
    parent = s.tmp / "locked"
    parent.mkdir()
    with unwritable(parent):
        return s.train("--out", parent / "run")


def another_model(s: Scene) -> str:
    from mnist_gluon.mxnet_compat import gluon, mx

    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(64, in_units=784), gluon.nn.Dense(32, in_units=64),
            gluon.nn.Dense(10, in_units=32))
    net.initialize(mx.init.Xavier())
    net.save_parameters(str(s.tmp / "three.params"))
    return s.run("mnist-eval", "--checkpoint", s.tmp / "three.params")


def without(s: Scene, *names: str) -> Path:
    copy = s.run_copy()
    for name in names:
        for path in copy.glob(name):
            path.unlink()
    return copy


def full_disk(s: Scene) -> str:
    with tiny_disk(s.tmp / "disk", "48k") as disk:  # the 100 KB parameters do not fit
        return s.run("mnist-export", "--checkpoint", s.trained / "best.params", "--out",
                     disk / "export")


def stalled_worker(s: Scene) -> str:
    process = subprocess.Popen(
        [str(BIN / "mnist-launch"), "-n", "2", "-s", "1", "--stall-timeout", "3", "--",
         str(BIN / "mnist-train"), "--config", str(s.config), "--out", str(s.tmp / "dist"),
         "--quiet", "--set", "train.kvstore=dist_sync", "--set", "train.epochs=100000"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines = []
    for line in process.stderr:
        lines.append(line)
        if (started := re.search(r"worker 1: pid (\d+)", line)) is not None:
            os.kill(int(started[1]), signal.SIGSTOP)
            break
    lines.append(process.communicate(timeout=120)[1])
    return "".join(lines)


def stopped_by_sigterm(s: Scene) -> str:
    process = subprocess.Popen([str(BIN / "mnist-train"), "--config", str(s.config), "--out",
                                str(s.tmp / "long"), "--set", "train.epochs=1000"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("epoch 1/1000"):
            break
    process.send_signal(signal.SIGTERM)
    return process.communicate(timeout=60)[1]


# Each quoted message, and how to make the command it names print it.
REPRODUCE = {
    "mnist files missing from … (train-images-idx3-ubyte.gz, train-labels-idx1-ubyte.gz); "
    "copy the four mnist files (…) into …":
        lambda s: s.train("--data-root", s.tmp / "none", "--set", "data.download=false"),
    "could not download train-images-idx3-ubyte.gz (…Connection refused…); …":
        lambda s: s.train("--data-root", s.tmp / "none", "--set", "data.download=true",
                          "--set", f"data.mirrors=[{s.closed}]"),
    "… fails its checksum (content sha1 …, expected …)":
        lambda s: s.train("--set", "data.verify=true"),
    "… is truncated, or its header's dimensions are wrong: header says … items …":
        lambda s: s.train("--data-root", s.data_with(
            "train-labels-idx1-ubyte", (s.small / "train-labels-idx1-ubyte").read_bytes()[:-7])),
    "… is a damaged gzip file …": gz_labels_damaged,
    "… is not an IDX file: bad magic number …":
        lambda s: s.train("--data-root", s.data_with("train-labels-idx1-ubyte", b"PK\3\4" * 9)),
    "… inflates to more than the … bytes its IDX header promises; replace it": gz_bomb,
    "unknown config key train.batchsize; did you mean train.batch_size?":
        lambda s: s.train("--set", "train.batchsize=1"),
    "train.optimizer is 'adamw'; choose one of sgd, nag, adam, rmsprop (did you mean adam?)":
        lambda s: s.train("--set", "train.optimizer=adamw"),
    "device 'gpu' asks for GPU 0 but this machine has no GPU visible to MXNet; …":
        lambda s: s.train("--set", "device=gpu"),
    "seed is -1; it must be in [0, 2**32)": lambda s: s.train("--set", "seed=-1"),
    "train.lr must be a finite number, got inf": lambda s: s.train("--set", "train.lr=.inf"),
    "train.weight_decay is 1e+39; MXNet computes in float32, which holds numbers up to "
    "3.403e+38": lambda s: s.train("--set", "train.weight_decay=1e39"),
    "config file /dev/zero is a device, not a file":
        lambda s: s.run("mnist-train", "--config", "/dev/zero"),
    "config file … stands for more than 100,000 values once its aliases are expanded; …":
        lambda s: s.run("mnist-train", "--config", s.file("laughs.yaml", billion_laughs())),
    "… best.json is a checkpoint's sidecar; pass its parameter file, … best.params":
        lambda s: s.run("mnist-eval", "--checkpoint", s.trained / "best.json"),
    "… nothing to resume: all its … epochs are trained …":
        lambda s: s.run("mnist-train", "--resume", s.run_copy()),
    "mnist-predict: skipped: … pipe.png is a FIFO, not a file": fifo_skipped,
    "… has nothing drawn on it (its grey levels span 0 of 255); send an image of a digit":
        blank_image,
    "… already holds a run (…); pass --resume …, --force …, or --out DIR":
        lambda s: s.train("--out", s.run_copy()),
    "… is in use by a running mnist-train (PID …); …": folder_in_use,
    "output folder … is not writable (…)": unwritable_out,
    "… does not match the checksum in best.json: the file was changed or damaged …":
        lambda s: s.run("mnist-eval", "--checkpoint", s.changed_params()),
    "sidecar … best.json was changed after it was written …":
        lambda s: s.run("mnist-eval", "--checkpoint", s.edited(
            lambda m: m["normalization"].update(std=0.5), resign=False)),
    "… holds an impossible normalization …":
        lambda s: s.run("mnist-eval", "--checkpoint", s.edited(
            lambda m: m["normalization"].update(std=0), resign=True)),
    "… garbles normalization.mean: '0.1307' is not a number; restore it":
        lambda s: s.run("mnist-eval", "--checkpoint", s.edited(
            lambda m: m["normalization"].update(mean="0.1307"), resign=True)),
    "… has no sidecar_sha256, so nothing proves it is the one mnist-train wrote; …":
        lambda s: s.run("mnist-eval", "--checkpoint", s.edited(
            lambda m: m.pop("sidecar_sha256"), resign=False)),
    "… is not an MXNet parameter file …":
        lambda s: s.run("mnist-eval", "--checkpoint", s.file("x.params", "not parameters")),
    "… is not a two-layer MLP …": another_model,
    "compressed model … is damaged: it holds … bytes after its header, which declares … "
    "(truncated or appended to); export it again (mnist-export --format compressed)":
        damaged_compressed,
    "train.prune.start_from=… was trained on mnist holding out the validation images of seed "
    "…; this run has mnist, seed 8, val_size …: set the same, or it would validate on images "
    "its start was trained on": start_held_out_other_images,
    "train.privacy.delta is …, not below 1 / the … training examples (…): a guarantee that "
    "weak allows one example in the release; use 1e-5 or less":
        lambda s: s.train("--set", "train.privacy.noise_multiplier=1", "--set",
                          "train.privacy.delta=0.01"),
    "train.privacy.target_epsilon=… cannot be met in … steps at train.batch_size=… (… "
    "examples): even noise_multiplier 100 spends …; raise target_epsilon, or lower "
    "train.epochs or train.batch_size":
        lambda s: s.train("--set", "train.privacy.target_epsilon=0.0001", "--set",
                          "train.privacy.delta=1e-5"),
    "train.distill.teacher cannot be used with train.privacy (a teacher trained without "
    "privacy on the same images); remove one of them":
        lambda s: s.train("--set", "train.privacy.noise_multiplier=1", "--set",
                          "train.privacy.delta=1e-5", "--set", "train.distill.teacher=x.params"),
    "model.hidden was … in the run being resumed, now 64; it cannot change on --resume: start "
    "a new run with --out DIR":
        lambda s: s.run("mnist-train", "--resume", s.run_copy(), "--set", "model.hidden=64"),
    "… holds no run to resume (no config.yaml); …":
        lambda s: s.run("mnist-train", "--resume", s.tmp),
    "… has no sidecar last.json, so the run cannot be resumed …":
        lambda s: s.run("mnist-train", "--resume", without(s, "*.json"), "--set",
                        "train.epochs=2"),
    "… last.states is missing or does not match last.params's sidecar; …":
        lambda s: s.run("mnist-train", "--resume", without(s, "*.states"), "--set",
                        "train.epochs=2"),
    "cannot write …: the disk holding … is full; free some space and run the command again":
        full_disk,
    "the worker command trains with train.kvstore=local, so each worker would train alone …":
        lambda s: s.run("mnist-launch", "-n", "2", "--", BIN / "mnist-train", "--config",
                        s.config),
    "worker 1 (pid …) has used no CPU for … s (stopped); stopping every process of the cluster":
        stalled_worker,
    "OMP_NUM_THREADS='two' is not a number of threads; set it to a whole number such as 1, or "
    "unset it (training uses 1)":
        lambda s: s.run("mnist-train", "--config", s.config, "--out", s.tmp / "new",
                        env={"OMP_NUM_THREADS": "two"}),
    "resuming on the 1 OpenMP thread this run was trained on, not OMP_NUM_THREADS=2: its "
    "numbers depend on the count":
        lambda s: s.run("mnist-train", "--resume", s.run_copy(), "--set", "train.epochs=2",
                        env={"OMP_NUM_THREADS": "2"}),
    "the loss became non-finite at step … (epoch …); …":
        lambda s: s.train("--set", "train.lr=1e30", "--set", "train.optimizer=sgd"),
    "the weights blew up in epoch … (… batches were skipped as non-finite; …)":
        lambda s: s.train("--set", "train.lr=1e30", "--set", "train.optimizer=sgd", "--set",
                          "train.skip_nonfinite=true"),
    "stopped by SIGTERM at epoch …, step … of …; saved …; continue with: mnist-train "
    "--resume …": stopped_by_sigterm,
    "--random N is short for --sampler random --trials N; drop --sampler tpe, or --random":
        lambda s: s.run("mnist-sweep", "--config", s.config, "--out", s.tmp / "sweep",
                        "--range", "train.lr=0.01:0.1", "--random", "2", "--sampler", "tpe"),
    "mnist-eval: warning: … was trained on mnist, not fashion-mnist; these figures are for "
    "images it never learned":
        lambda s: s.run("mnist-eval", "--checkpoint", s.trained / "best.params", "--dataset",
                        "fashion-mnist", "--data-root", s.fashion),
}


def test_every_quoted_message_has_a_reproduction_and_every_reproduction_is_quoted():
    assert sorted(quoted_messages()) == sorted(REPRODUCE)


@pytest.fixture(scope="module")
def trained(small_mnist, tmp_path_factory) -> Path:
    from mnist_gluon.cli import run, train_command

    out = tmp_path_factory.mktemp("readme") / "run"
    assert run(train_command, [
        "--out", str(out), "--quiet", "--set", "device=cpu", "--set", "model.hidden=32",
        "--set", "train.epochs=1", "--set", "data.verify=false", "--set", "data.val_size=500",
        "--data-root", str(small_mnist)]) == 0
    return out


@pytest.mark.parametrize("message", sorted(REPRODUCE))
def test_each_troubleshooting_message_is_what_the_command_prints(message, tmp_path, small_mnist,
                                                                 small_config, trained,
                                                                 fashion_dir, closed_port_url):
    scene = Scene(tmp_path, small_mnist, small_config, trained, fashion_dir, closed_port_url)
    printed = REPRODUCE[message](scene)
    assert pattern(message).search(printed), printed[-3000:]


# --- the site ---------------------------------------------------------------------------------

COMMANDS = sorted(mnist_group.commands.items())


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> dict[str, str]:
    """The documentation site, built as `make docs` builds it (strict: a broken link, a missing
    page or a warning fails): each page's text, by its path."""
    out = tmp_path_factory.mktemp("site")
    done = subprocess.run([str(BIN / "mkdocs"), "build", "--strict", "--site-dir", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=600,
                          env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})
    assert done.returncode == 0, done.stderr[-3000:]
    return {str(page.relative_to(out)): html.unescape(re.sub(r"<[^>]+>", " ", page.read_text()))
            for page in out.rglob("*.html")}


@pytest.mark.parametrize("name, command", COMMANDS, ids=[name for name, _ in COMMANDS])
def test_every_option_is_in_the_commands_help_and_on_the_commands_page(name, command, site):
    helped = subprocess.run([str(BIN / f"mnist-{name}"), "--help"], capture_output=True,
                            text=True).stdout
    page = site["commands/index.html"]
    assert f"mnist-{name}" in page
    for option in command.params:
        names = [o for o in option.opts + option.secondary_opts if o.startswith("-")]
        if not names:
            continue  # an argument
        assert any(re.search(re.escape(o) + r"(?![\w-])", helped) for o in names), (name, names)
        assert any(re.search(re.escape(o) + r"(?![\w-])", page) for o in names), (name, names)


def test_every_public_name_has_its_reference_on_the_api_page(site):
    import mnist_gluon

    page = site["api/index.html"]
    missing = [name for name in mnist_gluon.__all__ if not re.search(rf"\b{name}\b", page)]
    assert missing == []
    assert "Load a checkpoint for prediction" in page  # load's docstring, generated


def test_every_config_key_is_on_the_configs_page_with_its_default(site):
    from mnist_gluon.config import Config, config_to_dict
    from mnist_gluon.training.train import flat

    page = site["configs/index.html"]
    for key, default in flat(config_to_dict(Config())):
        shown = "null" if default is None else str(default).lower() if isinstance(
            default, bool) else str(default)
        row = re.search(re.escape(key) + r"\s+(.*?)\s{2,}" + re.escape(shown), page)
        assert row is not None, (key, shown)


def test_the_readme_is_a_front_page(site):
    lines = README.splitlines()
    assert len(lines) <= 250
    assert any("make train" in line for line in lines[:10])
    assert not re.search(r"\bissue\b|\bgoal\b", README, re.IGNORECASE)
    for page in re.findall(r"\]\((docs/[\w-]+)\.md\)", README):
        assert f"{page.removeprefix('docs/')}/index.html" in site, page
    # The site's pages, BENCHMARKS.md included (the speed page), speak of nothing a visitor
    # cannot see.
    for text in (README, (REPO / "BENCHMARKS.md").read_text(),
                 *(p.read_text() for p in DOCS.glob("*.md"))):
        assert not re.search(r"\bissue[ -]\d+\b|\bour [\d.]+% goal\b", text, re.IGNORECASE)


def test_one_device_default_across_the_commands():
    defaults = {name: option.default for name, command in COMMANDS
                for option in command.params if option.name == "device"}
    assert set(defaults) >= {"eval", "predict", "serve"} and set(defaults.values()) == {"auto"}


# --- files and columns ------------------------------------------------------------------------

def table_entries(text: str, after: str) -> list[str]:
    """The first column's names of the first table after `after`."""
    start = text.index(after)
    rows = []
    for line in text[start:].splitlines()[1:]:
        if line.startswith("| `"):
            rows.append(line)
        elif rows and not line.startswith("|"):
            break
    return [name for row in rows for name in re.findall(r"`([^`]+)`", row.split(" | ")[0])]


def as_regex(name: str) -> re.Pattern:
    """A documented file name as a pattern: NNN(N) are digits, X a checkpoint's stem, * any."""
    text = re.escape(name).replace("NNNN", r"\d{4}").replace("NNN", r"\d{3}")
    text = text.replace(r"\*", ".*").replace("X", r"(last|best|previous|epoch-\d{4})")
    return re.compile(text.rstrip("/") + "$")


def test_the_run_folder_holds_what_the_readme_says(small_config, tmp_path):
    run_dir = tmp_path / "run"
    done = subprocess.run([str(BIN / "mnist-train"), "--config", str(small_config), "--out",
                           str(run_dir), "--set", "train.average.start_epoch=1", "--set",
                           "track.tensorboard=true", "--quiet"], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    documented = [as_regex(n) for n in table_entries(TRAINING, "The run folder:")]
    written = [p.name for p in run_dir.iterdir()]
    # Each X.params comes with its X.json sidecar and X.states, as the text beside it says.
    params = [re.compile(p.pattern.replace(r"\.params", r"\.(params|json|states)"))
              for p in documented]
    undocumented = [n for n in written if not any(p.match(n) for p in params)]
    assert undocumented == []
    missing = [p.pattern for p in documented if not any(p.match(n) for n in written)]
    assert missing == []
    columns = re.findall(r"`(\w+)`", [line for line in TRAINING.splitlines()
                                      if line.startswith("| `metrics.jsonl`")][0])
    row = json.loads((run_dir / "metrics.jsonl").read_text().splitlines()[0])
    assert columns == list(row)


def test_the_sweep_folder_and_its_columns_are_what_the_readme_says(small_config, tmp_path):
    out = tmp_path / "sweep"
    done = subprocess.run([str(BIN / "mnist-sweep"), "--config", str(small_config), "--out",
                           str(out), "--grid", "train.lr=0.001,0.002", "--set",
                           "train.epochs=1"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    documented = [as_regex(n) for n in table_entries(TRAINING, "The sweep folder holds:")]
    written = [p.name for p in out.iterdir()]
    assert [n for n in written if not any(p.match(n) for p in documented)] == []
    assert [p.pattern for p in documented if not any(p.match(n) for n in written)] == []
    results = [line for line in TRAINING.splitlines() if line.startswith("| `results.csv`")][0]
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    described = re.findall(r"`(\w+)`", results.split(" | ")[1])
    assert header == [described[0], "train.lr", *described[1:]]
    assert "# best: trial-00" in done.stdout and "(written to " in done.stdout
