"""mnist_gluon's compiled kernels: over whole runs, validation included, the fused update leaves
the parameters MXNet's own operators leave, bit for bit, on one process and on a parameter
server; an install without the library says so and trains as kernels: mxnet does, or refuses
in one line where it could not; the library builds from the installed package."""

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_distributed import launch

import mnist_gluon
from mnist_gluon import kernels
from mnist_gluon.checkpoint import signed
from mnist_gluon.config import TrainConfig, load_config
from mnist_gluon.errors import Stopped
from mnist_gluon.model import Architecture, build_model, named_parameters, predict_logits
from mnist_gluon.mxnet_compat import autograd, gluon, mx
from mnist_gluon.training.optim import Updater
from mnist_gluon.training.run import run_training
from support import BIN, LENET, stop_at

BASE_UPDATE = ["train.optimizer=nag", "train.lr=0.2", "train.momentum=0.9",
               "train.weight_decay=5e-4", "train.warmup_epochs=1"]
ELASTIC = ["data.augment.shift=1", "data.augment.elastic.alpha=20"]


def saved(run_dir: Path) -> dict[str, bytes]:
    """What a run leaves that the update decides: parameters, optimizer state, averages."""
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())
            if p.suffix in (".params", ".states", ".average")}


def recorded_kernels(run_dir: Path) -> dict[str, str]:
    return json.loads((run_dir / "last.json").read_text())["kernels"]


# The MLP's compiled step (test_compiled_step.py) trains an MLP of NAG or SGD on one CPU; these
# take MXNet's graph: skip_nonfinite, another optimizer, two devices, a LeNet.
@pytest.mark.parametrize("settings", [
    [*BASE_UPDATE, "train.skip_nonfinite=true"],
    ["train.optimizer=sgd", "train.lr=0.1", "train.momentum=0.9", "train.weight_decay=5e-4",
     "train.clip_gradient=0.05", "train.skip_nonfinite=true"],
    [*BASE_UPDATE, "train.epochs=3", "data.augment.shift=1", "train.average.start_epoch=2",
     "train.skip_nonfinite=true"],
    ["train.optimizer=adam", "train.lr=0.003", "train.weight_decay=1e-4"],
    [*BASE_UPDATE, "device=cpu:0,1"],
    [*BASE_UPDATE, *LENET, "model.dropout=0.2", "data.augment.shift=1"],
], ids=["base-nag", "sgd-momentum-clipped", "best-averaging", "adam", "two-devices", "lenet"])
def test_a_run_on_the_fused_update_ends_bit_identical_to_one_on_mxnets_operators(
        small_config, tmp_path, settings):
    # The cosine schedule's last rates are where MXNet's own parser of an operator's floats
    # reads another number than the nearest float: the fused update must read the same.
    files = {}
    for kind in (kernels.COMPILED, kernels.MXNET):
        run_dir = tmp_path / kind
        run_training(load_config(small_config, [*settings, f"kernels={kind}"]), run_dir,
                     quiet=True)
        assert recorded_kernels(run_dir) == {"update": kind}
        files[kind] = saved(run_dir)
    assert files[kernels.COMPILED] == files[kernels.MXNET]
    assert len(files[kernels.COMPILED]) >= 3


# MXNet's parser reads this rate (the cosine schedule's last of a 3-epoch base.yaml run) as
# 2.6938924e-06, a float below the nearest one, 2.6938926e-06.
MISREAD_RATE = 2.6938926112052286e-06


@pytest.mark.parametrize("optimizer", ["nag", "sgd", "adam"])
def test_the_fused_update_computes_with_the_rate_mxnet_reads_not_the_nearest_float(optimizer):
    cfg = TrainConfig(optimizer=optimizer, lr=MISREAD_RATE, lr_schedule="none", momentum=0.9,
                      weight_decay=5e-4)
    nets = {}
    for kind in ("fused", "ops"):
        mx.random.seed(7)
        nets[kind] = build_model(Architecture(hidden=16), mx.cpu())
    updaters = {kind: Updater(named_parameters(net), cfg, mx.cpu(), compiled=kind == "fused")
                for kind, net in nets.items()}
    assert updaters["fused"].kernel == kernels.COMPILED
    assert updaters["ops"].kernel == kernels.MXNET
    rng = np.random.default_rng(0)
    for _ in range(3):
        images = mx.nd.array(rng.standard_normal((32, 784)).astype(np.float32))
        labels = mx.nd.array(rng.integers(0, 10, 32).astype(np.float32))
        for kind, net in nets.items():
            with autograd.record():
                loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(images), labels)
            loss.backward()
            updaters[kind].step(MISREAD_RATE, 32)
    for name, param in named_parameters(nets["fused"]).items():
        assert (param.data().asnumpy() == named_parameters(nets["ops"])[name].data().asnumpy()
                ).all(), name


def test_an_update_right_after_validation_writes_the_weights_validation_read():
    """MXNet hands an extension operator a copy of an input held in MKLDNN's layout, so an
    in-place update of such a weight would be lost. Validation's forward pass (inference, 5,000
    images, hybridized) is where a weight could be left in that layout: the update after it
    must still change the network that the next step and the next validation use."""
    cfg = TrainConfig(optimizer="nag", lr=0.1, momentum=0.9, weight_decay=5e-4)
    rng = np.random.default_rng(1)
    images = mx.nd.array(rng.standard_normal((5000, 784)).astype(np.float32))
    nets, updaters = {}, {}
    for kind in ("fused", "ops"):
        mx.random.seed(7)
        nets[kind] = build_model(Architecture(hidden=128), mx.cpu())
        nets[kind].hybridize(static_alloc=True, static_shape=True)
        updaters[kind] = Updater(named_parameters(nets[kind]), cfg, mx.cpu(),
                                 compiled=kind == "fused")
    for _ in range(3):
        logits = {kind: predict_logits(net, images) for kind, net in nets.items()}
        np.testing.assert_array_equal(logits["fused"], logits["ops"])
        batch = images[:64]
        labels = mx.nd.array(rng.integers(0, 10, 64).astype(np.float32))
        for kind, net in nets.items():
            with autograd.record():
                loss = gluon.loss.SoftmaxCrossEntropyLoss()(net(batch), labels)
            loss.backward()
            updaters[kind].step(0.1, 64)
    before = predict_logits(nets["fused"], images)
    assert not np.array_equal(before, logits["fused"])  # the last update took
    for name, param in named_parameters(nets["fused"]).items():
        assert (param.data().asnumpy() == named_parameters(nets["ops"])[name].data().asnumpy()
                ).all(), name


def test_a_dist_sync_run_updates_on_the_server_with_the_fused_kernel_bit_identically(
        small_config, tmp_path):
    files = {}
    for kind in (kernels.COMPILED, kernels.MXNET):
        process = launch(small_config, tmp_path / kind, "--set", f"kernels={kind}")
        try:
            _, err = process.communicate(timeout=120)
        finally:
            process.kill()
        assert process.returncode == 0, err
        assert recorded_kernels(tmp_path / kind) == {"update": kind}
        files[kind] = saved(tmp_path / kind)
    assert files[kernels.COMPILED] == files[kernels.MXNET]


@pytest.fixture(scope="module")
def without_library(tmp_path_factory) -> Path:
    """The package as an install without the compiled library has it: an sdist built where
    there was no compiler."""
    folder = tmp_path_factory.mktemp("no-kernels")
    shutil.copytree(Path(mnist_gluon.__file__).parent, folder / "mnist_gluon",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__"))
    return folder


def train_from(folder: Path, *args: str, **env: str) -> subprocess.CompletedProcess:
    probe = ("import sys; from mnist_gluon import cli; "
             f"sys.exit(cli.run(cli.train_command, {list(args)!r}))")
    return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(folder), **env}, timeout=300)


NO_COMPILER = {"CXX": "/nonexistent/g++"}


def test_without_the_library_or_a_compiler_a_run_says_so_once_and_updates_to_the_same_numbers(
        without_library, small_config, tmp_path):
    done = train_from(without_library, "--config", str(small_config), "--out",
                      str(tmp_path / "fallback"), "--quiet", *sum((["--set", s]
                                                                  for s in BASE_UPDATE), []),
                      XDG_CACHE_HOME=str(tmp_path / "cache"), **NO_COMPILER)
    assert done.returncode == 0, done.stderr
    said = [line for line in (done.stdout + done.stderr).splitlines() if "kernels" in line]
    assert said == ["mnist-train: mnist_gluon's compiled kernels are not available "
                    "(libmnist_kernels.so was not built for this install, and cannot be built "
                    "here: no C++ compiler (g++, or $CXX) on the PATH); the MLP's training "
                    "step runs on MXNet's own operators, as with kernels: mxnet"]
    assert recorded_kernels(tmp_path / "fallback") == {"update": kernels.MXNET}
    run_training(load_config(small_config, [*BASE_UPDATE, "kernels=mxnet"]),
                 tmp_path / "mxnet", quiet=True)
    assert saved(tmp_path / "fallback") == saved(tmp_path / "mxnet")


def test_an_elastic_run_without_the_library_or_a_compiler_distorts_on_mxnets_operators(
        without_library, small_config, tmp_path):
    out = tmp_path / "elastic"
    settings = sum((["--set", s] for s in ELASTIC), [])
    done = train_from(without_library, "--config", str(small_config), "--out", str(out),
                      "--quiet", "--set", "train.epochs=1", *settings,
                      XDG_CACHE_HOME=str(tmp_path / "cache"), **NO_COMPILER)
    assert done.returncode == 0, done.stderr
    said = [line for line in (done.stdout + done.stderr).splitlines() if "kernels" in line]
    assert said == ["mnist-train: mnist_gluon's compiled kernels are not available "
                    "(libmnist_kernels.so was not built for this install, and cannot be built "
                    "here: no C++ compiler (g++, or $CXX) on the PATH); the update and the "
                    "elastic distortion run on MXNet's own operators, as with kernels: mxnet"]
    assert recorded_kernels(out) == {"update": kernels.MXNET, "elastic": kernels.MXNET}


def test_an_install_without_the_library_builds_it_at_first_use_once_into_the_users_cache(
        without_library, small_config, tmp_path):
    cache = tmp_path / "cache"
    settings = sum((["--set", s] for s in ELASTIC), [])
    first = train_from(without_library, "--config", str(small_config), "--out",
                       str(tmp_path / "first"), "--quiet", "--set", "train.epochs=1", *settings,
                       XDG_CACHE_HOME=str(cache))
    assert first.returncode == 0, first.stderr
    assert "mnist-gluon: compiling its kernels for this install, once, into " in first.stderr
    assert recorded_kernels(tmp_path / "first") == {"update": kernels.COMPILED,
                                                    "elastic": kernels.COMPILED}
    assert len(list(cache.glob("mnist-gluon/kernels/*/libmnist_kernels.so"))) == 1
    second = train_from(without_library, "--config", str(small_config), "--out",
                        str(tmp_path / "second"), "--quiet", "--set", "train.epochs=1",
                        *settings, XDG_CACHE_HOME=str(cache), **NO_COMPILER)
    assert second.returncode == 0, second.stderr
    assert "kernels" not in second.stdout + second.stderr
    assert saved(tmp_path / "second") == saved(tmp_path / "first")


def test_the_library_builds_from_an_installed_package_and_then_runs_compiled(
        without_library, small_config, tmp_path):
    build = [sys.executable, "-m", "mnist_gluon.kernels.build"]
    env = {**os.environ, "PYTHONPATH": str(without_library)}
    done = subprocess.run(build, capture_output=True, text=True, env={**env, **NO_COMPILER})
    assert done.returncode == 1
    assert done.stderr.splitlines() == [
        "mnist_gluon kernels: no C++ compiler (g++, or $CXX) on the PATH"]
    built = without_library / "mnist_gluon" / "kernels" / kernels.LIBRARY.name
    assert not built.exists()
    try:
        done = subprocess.run(build, capture_output=True, text=True, env=env)
        assert done.returncode == 0, done.stderr
        assert built.is_file()
        done = train_from(without_library, "--config", str(small_config), "--out",
                          str(tmp_path / "run"), "--quiet", "--set", "train.epochs=1",
                          *sum((["--set", s] for s in ELASTIC), []),
                          XDG_CACHE_HOME=str(tmp_path / "empty-cache"), **NO_COMPILER)
        assert done.returncode == 0, done.stderr
        assert "kernels" not in done.stdout + done.stderr
        assert recorded_kernels(tmp_path / "run") == {"update": kernels.COMPILED,
                                                      "elastic": kernels.COMPILED}
    finally:
        built.unlink(missing_ok=True)


def test_a_run_distorted_before_the_compiled_kernels_resumes_on_mxnets_distortion(
        small_config, tmp_path):
    settings = [*ELASTIC, "train.epochs=2"]
    reference = tmp_path / "reference"
    run_training(load_config(small_config, [*settings, "kernels=mxnet"]), reference, quiet=True)
    run_dir = tmp_path / "old"
    with pytest.raises(Stopped):
        run_training(load_config(small_config, [*settings, "kernels=mxnet"]), run_dir,
                     quiet=True, stop_signal=stop_at(70, signal.SIGTERM))
    # As an older mnist-gluon wrote them: no `kernels` in the config or the sidecar.
    config = run_dir / "config.yaml"
    config.write_text("".join(line for line in config.read_text().splitlines(keepends=True)
                              if not line.startswith("kernels:")))
    for sidecar in run_dir.glob("*.json"):
        record = json.loads(sidecar.read_text())
        record.pop("kernels", None)
        sidecar.write_text(json.dumps(signed(record)))
    done = subprocess.run([str(BIN / "mnist-train"), "--resume", str(run_dir), "--quiet"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert ("mnist-train: resuming with the elastic distortion the run began with: "
            "kernels=mxnet") in done.stdout + done.stderr
    assert saved(run_dir)["last.params"] == saved(reference)["last.params"]
    assert recorded_kernels(run_dir)["elastic"] == kernels.MXNET
