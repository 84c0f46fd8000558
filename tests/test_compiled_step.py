"""The MLP's compiled training step (mnist_gluon.training.compiled_step): a step matches a
float64 reference within float32's rounding; whole runs end on the same bits on any number of
threads, with either instruction set's products, stopped and resumed or not; the sidecar says
which step trained a run; `kernels: mxnet` on one thread trains exactly as the code before the
compiled step did; and the step leaves a busy neighbour its cores."""

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from mnist_gluon import engine, kernels
from mnist_gluon.config import load_config
from mnist_gluon.errors import Stopped
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.training.run import run_training
from support import BIN, REPO, stop_at

NAG = ["train.optimizer=nag", "train.lr=0.2", "train.momentum=0.9",
       "train.weight_decay=5e-4", "train.warmup_epochs=1", "model.hidden=128"]
BEFORE = "97f168c"  # main before the compiled step: what kernels: mxnet must still train
CLEAN = {name: value for name, value in os.environ.items()
         if name not in ("OMP_NUM_THREADS", "MXNET_ENGINE_TYPE", "GOMP_SPINCOUNT",
                         "OMP_WAIT_POLICY", "MNIST_GLUON_ISA")}


def saved(run_dir) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(run_dir.iterdir())
            if p.suffix in (".params", ".states")}


def sidecar(run_dir) -> dict:
    return json.loads((run_dir / "last.json").read_text())


def train(config, out, *settings, env=None, python=None):
    """mnist-train as a process of its own (it chooses its threads before MXNet starts)."""
    command = ([python, "-c", "from mnist_gluon.cli import train_main; train_main()"]
               if python else [str(BIN / "mnist-train")])
    done = subprocess.run([*command, "--config", str(config), "--out", str(out), "--quiet",
                           *(arg for s in settings for arg in ("--set", s))],
                          capture_output=True, text=True, env={**CLEAN, **(env or {})},
                          timeout=300)
    assert done.returncode == 0, done.stderr
    return out


def reference_step(x, y, params, momenta, lr, momentum, wd, smoothing):
    """One step of the MLP in float64: softmax cross-entropy with label smoothing, summed
    over the batch, then MXNet's NAG (the momentum's last term reads the new weight)."""
    w1, b1, w2, b2 = (p.astype(np.float64) for p in params)
    batch, classes = len(x), len(b2)
    x = x.astype(np.float64)
    h = np.maximum(x @ w1.T + b1, 0)
    z = h @ w2.T + b2
    z = z - z.max(axis=1, keepdims=True)
    log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    loss = -(1 - smoothing) * log_p[np.arange(batch), y] - smoothing * log_p.mean(axis=1)
    target = np.full((batch, classes), smoothing / classes)
    target[np.arange(batch), y] += 1 - smoothing
    dz = np.exp(log_p) - target
    dh = (dz @ w2) * (h > 0)
    grads = (dh.T @ x, dh.sum(axis=0), dz.T @ h, dz.sum(axis=0))
    updated = []
    for w, g, m in zip((w1, b1, w2, b2), grads, momenta, strict=True):
        g, m = g / batch, momentum * m.astype(np.float64)
        w = w - m + (1 + momentum) * (m - lr * (g + wd * w))
        updated.append((w, m - lr * (g + wd * w)))
    return updated, loss.sum(), int((np.argmax(z, axis=1) == y).sum())


def test_a_step_matches_a_float64_reference(small_mnist):
    assert kernels.load() is None
    from mnist_gluon.data import DATASETS, fit_normalization, normalise, read_split

    split = read_split(DATASETS["mnist"], "train", small_mnist, download=False, verify=False)
    norm = fit_normalization(split.images)
    images = normalise(split.images, norm)
    labels = split.labels.astype(np.float32)
    background = float(normalise(np.zeros((1, 1), np.uint8), norm)[0, 0])
    rng = np.random.default_rng(0)
    params = [(rng.standard_normal(shape) * scale).astype(np.float32)
              for shape, scale in (((128, 784), 0.05), ((128,), 0.1), ((10, 128), 0.1),
                                   ((10,), 0.1))]
    momenta = [(rng.standard_normal(p.shape) * 0.01).astype(np.float32) for p in params]
    batch = rng.permutation(len(images))[:100].astype(np.int32)
    w1, m1 = mx.nd.array(params[0]), mx.nd.array(momenta[0])
    rest = [mx.nd.array(a) for a in (*params[1:], *momenta[1:])]
    mirror, even, odd = mx.nd.zeros((2 * w1.size,)), mx.nd.zeros((2,)), mx.nd.zeros((2,))
    mx.nd.mnist_mlp_mirror(w1, m1, mirror, to_mirror=1)
    stats = mx.nd.mnist_mlp_step(
        mirror, *rest, mx.nd.array(images), mx.nd.array(labels),
        mx.nd.array(batch[None], dtype="int32"), mx.nd.array([0.1]), even, odd, kind="nag",
        momentum=0.9, wd=5e-4, rescale_grad=1 / 100, smoothing=0.1, threads=2,
        background=repr(background)).asnumpy()
    mx.nd.mnist_mlp_mirror(w1, m1, mirror, to_mirror=0)
    got = [w1, *rest[:3], m1, *rest[3:]]
    expected, loss, correct = reference_step(images[batch], split.labels[batch].astype(int),
                                             params, momenta, 0.1, 0.9, 5e-4, 0.1)
    for i, (weight, momentum) in enumerate(expected):
        for value, want in ((got[i], weight), (got[4 + i], momentum)):
            error = np.abs(value.asnumpy() - want).max() / np.abs(want).max()
            assert error < 2e-6, (i, error)
    assert stats[0, 0] == pytest.approx(loss, rel=1e-5)
    assert stats[0, 1] == correct
    np.testing.assert_array_equal(even.asnumpy(), stats[0])  # the step's sums, added


@pytest.mark.parametrize("augment", [[], ["data.augment.shift=1"]], ids=["plain", "shifted"])
def test_one_two_and_three_threads_end_on_the_same_bits(small_config, tmp_path, augment):
    runs = {threads: train(small_config, tmp_path / f"threads-{threads}", *NAG, *augment,
                           f"threads={threads}")
            for threads in (1, 2, 3)}
    assert [sidecar(run)["threads"] for run in runs.values()] == [1, 2, 3]
    assert sidecar(runs[1])["kernels"]["mlp_step"] in ("avx512", "avx2")
    assert saved(runs[1]) == saved(runs[2]) == saved(runs[3])


def test_the_avx2_products_run_where_avx_512_does_and_are_as_exact(small_config, tmp_path):
    avx2 = {"MNIST_GLUON_ISA": "avx2"}
    one = train(small_config, tmp_path / "one", *NAG, "threads=1", env=avx2)
    two = train(small_config, tmp_path / "two", *NAG, "threads=2", env=avx2)
    assert sidecar(one)["kernels"]["mlp_step"] == "avx2"
    assert saved(one) == saved(two)
    assert sidecar(one)["best_val_accuracy"] > 0.85


def test_a_run_stopped_between_calls_resumes_to_the_bits_of_one_never_stopped(small_config,
                                                                              tmp_path):
    # Saves every 7 steps: calls of 7 steps, odd ones included (the sums alternate by step).
    settings = [*NAG, "checkpoint.every_steps=7"]
    whole = tmp_path / "whole"
    run_training(load_config(small_config, settings), whole, quiet=True)
    parts = tmp_path / "parts"
    with pytest.raises(Stopped):
        run_training(load_config(small_config, settings), parts, quiet=True,
                     stop_signal=stop_at(5))
    assert sidecar(parts)["step"] == 35
    run_training(load_config(small_config, settings), parts, resume=True, quiet=True)
    assert sidecar(whole)["kernels"]["mlp_step"] in ("avx512", "avx2")
    assert saved(parts) == saved(whole)
    assert (parts / "metrics.jsonl").read_text().count("\n") == 2


def test_a_diverging_run_names_the_step_inside_a_call(small_config, tmp_path):
    done = subprocess.run([str(BIN / "mnist-train"), "--config", str(small_config), "--out",
                           str(tmp_path / "run"), "--quiet", "--set", "train.optimizer=sgd",
                           "--set", "train.lr=1e30", "--set", "train.warmup_epochs=0",
                           "--set", "train.lr_schedule=none"],
                          capture_output=True, text=True, env=CLEAN, timeout=300)
    assert done.returncode == 1
    assert "the loss became non-finite at step 2 (epoch 1)" in done.stderr


def test_kernels_mxnet_on_one_thread_trains_as_the_code_before_the_compiled_step(
        small_config, tmp_path):
    before = tmp_path / "before"
    before.mkdir()
    archive = subprocess.run(["git", "-C", str(REPO), "archive", BEFORE, "src/mnist_gluon"],
                             capture_output=True, check=True)
    subprocess.run(["tar", "-x", "-C", str(before)], input=archive.stdout, check=True)
    old = train(small_config, tmp_path / "old", *NAG, "kernels=mxnet", python=sys.executable,
                env={"PYTHONPATH": str(before / "src")})
    new = train(small_config, tmp_path / "new", *NAG, "kernels=mxnet", "threads=1")
    assert sidecar(old)["threads"] == sidecar(new)["threads"] == 1
    assert "mlp_step" not in sidecar(new)["kernels"]
    assert saved(old) == saved(new)


def test_the_step_leaves_a_busy_neighbour_its_cores():
    cores = len(os.sched_getaffinity(0))
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"])
                for _ in range(cores)]
    try:
        time.sleep(1)
        assert [engine.free_cores(cores) for _ in range(20)] == [1] * 20
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()
