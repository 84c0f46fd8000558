#!/usr/bin/env python
"""Measure mnist-gluon's speed on this machine, against PyTorch and JAX, in one run.

    pip install -e ".[bench]"
    make .venv-jax                 # JAX in a venv of its own (Python 3.11+, its own numpy)
    python scripts/bench.py --json bench.json

Training throughput is that of `mnist_gluon.training.loop.train_epoch`, the loop `mnist-train`
runs, with the step, threads and engine `mnist-train` chooses (for base.yaml: the compiled step
on every core), on the real MNIST training set normalised as `mnist-train` does, with
base.yaml's recipe (NAG, momentum 0.9, weight decay 5e-4). PyTorch trains the same MLP on the
same data, in the same order, with the same optimizer, epoch for epoch in alternation with ours,
so the ratio holds while the machine's speed drifts. So does JAX, in its own interpreter
(scripts/jax_peer.py), with each epoch compiled as one scan over its steps; `--part jax_runs`
sets it against whole `mnist-train` runs instead, their epochs as metrics.jsonl records them.
`--checkpoints A,B` times mnist-eval on each of several checkpoints in turn (a pruned run's
best.params against its compressed model.mnc); `--explain A,B` times `Classifier.explain`, each
method in turn, on 1,000 test images of each checkpoint.
The LeNet is timed as whole processes, `mnist-train` against scripts/torch_peer.py: in one
process, PyTorch's epochs ran faster than they do alone, and the two frameworks' thread pools
share the cores. Peers use every core, at their default threads. Figures are medians over
repetitions after warm-up, with the range. Shared machines are noisy: compare ratios, not
absolute times, across runs.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import importlib.util
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

# Forward 2*(784*128 + 128*10) and backward 2*784*128 + 2*(2*128*10): the first layer needs
# no gradient for its input.
FLOP_PER_SAMPLE = 409_088
GFLOPS_PER_CORE = 250.0  # measured on these cores for matrices of this shape (issue 3)
AUGMENT_BATCH = 128
# The environment as the user ran bench.py, before a part chose its engine and threads for the
# figures it takes in-process (OMP_NUM_THREADS=1, say): every process a part starts (mnist-train,
# a peer) gets this one, and so chooses its threads as it would for the user.
USER_ENVIRONMENT = dict(os.environ)


def matmul_gflops(rows: int, repeats: int = 20) -> float:
    """This machine's float32 matrix-product speed on the first layer's shape (rows x 784 by
    784 x 128), through numpy's BLAS on all cores: the ceiling the FLOP bound is taken against."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal((rows, 784), dtype=np.float32)
    b = rng.standard_normal((784, 128), dtype=np.float32)
    for _ in range(3):
        a @ b
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - started)
    return 2 * rows * 784 * 128 / min(times) / 1e9


def summary(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values)}


# --- ours --------------------------------------------------------------------------------------

class Ours:
    """mnist-train's own training step, on the real data, for one batch size."""

    def __init__(self, config, prepared, batch_size: int):
        from mnist_gluon import engine
        from mnist_gluon.device import resolve_contexts
        from mnist_gluon.mxnet_compat import mx
        from mnist_gluon.training.kernel_choice import choose_kernels
        from mnist_gluon.training.optim import learning_rate
        from mnist_gluon.training.trainer import build_trainer

        self.prepared = prepared
        self.batch_size = batch_size
        self.ctxs = resolve_contexts("cpu")
        kernels = choose_kernels(config, self.ctxs, None)  # as mnist-train chooses them
        self.config = config = kernels.config
        self.step_kind = kernels.step or "mxnet graph"
        mx.random.seed(config.seed)
        self.model = build_trainer(config, self.ctxs, prepared.augmentation, kernels=kernels,
                                   threads=engine.team_size(engine.threads_in_effect()),
                                   background=prepared.background)
        self.steps = prepared.num_train // batch_size
        self.lr_at = lambda step: learning_rate(step, self.steps, config.train)

    def epoch(self, order: np.ndarray) -> float:
        from mnist_gluon.checkpoint import EpochProgress
        from mnist_gluon.training.loop import train_epoch
        from mnist_gluon.training.run import dropout_reseeder
        from mnist_gluon.training.step import plan_epoch

        started = time.perf_counter()
        steps = plan_epoch(order, self.prepared.train_labels, self.batch_size, self.ctxs,
                           self.prepared.augmentation, self.config.seed, 1)
        train_epoch(self.model.step, self.prepared.train, steps, self.batch_size, self.lr_at,
                    EpochProgress(epoch=1), first_step=0, reseed=dropout_reseeder(self.config))
        return time.perf_counter() - started


# --- PyTorch -----------------------------------------------------------------------------------

class Torch:
    """The same MLP, data, order and optimizer in PyTorch, written the fast way: tensors in
    memory, one gather per batch, loss and accuracy summed without a sync per step."""

    def __init__(self, prepared, batch_size: int, config):
        import torch

        self.torch = torch
        images = prepared.train[0].inputs[0].asnumpy()
        labels = prepared.train_labels.astype(np.int64)
        self.images = torch.from_numpy(images)
        self.labels = torch.from_numpy(labels)
        self.batch_size = batch_size
        torch.manual_seed(config.seed)
        self.net = torch.nn.Sequential(torch.nn.Linear(784, config.model.hidden), torch.nn.ReLU(),
                                       torch.nn.Linear(config.model.hidden, 10))
        self.optimizer = torch.optim.SGD(self.net.parameters(), lr=config.train.lr,
                                         momentum=config.train.momentum, nesterov=True,
                                         weight_decay=config.train.weight_decay)
        self.loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")

    def epoch(self, order: np.ndarray) -> float:
        torch = self.torch
        started = time.perf_counter()
        order_t = torch.from_numpy(order.astype(np.int64))
        loss_sum = torch.zeros(())
        correct = torch.zeros((), dtype=torch.int64)
        steps = len(order) // self.batch_size
        for step in range(steps):
            index = order_t[step * self.batch_size : (step + 1) * self.batch_size]
            images, labels = self.images[index], self.labels[index]
            self.optimizer.zero_grad(set_to_none=True)
            logits = self.net(images)
            loss = self.loss_fn(logits, labels)
            (loss / self.batch_size).backward()
            self.optimizer.step()
            loss_sum += loss.detach()
            correct += (logits.detach().argmax(dim=1) == labels).sum()
        float(loss_sum), int(correct)
        return time.perf_counter() - started


# --- JAX ---------------------------------------------------------------------------------------

class Jax:
    """The same MLP, initial parameters, data, order and optimizer in JAX, each epoch one
    compiled `lax.scan`, run by scripts/jax_peer.py in `python` (an interpreter with JAX)."""

    def __init__(self, prepared, batch_size: int, config, net, lr_at, python: str,
                 cores: int | None = None):
        self.folder = tempfile.TemporaryDirectory()
        folder = Path(self.folder.name)
        arrays = {name: param.data().asnumpy() for name, param in
                  zip(("w1", "b1", "w2", "b2"), net.collect_params().values(), strict=True)}
        np.savez(folder / "data.npz", images=prepared.train[0].inputs[0].asnumpy(),
                 labels=prepared.train_labels, momentum=config.train.momentum,
                 wd=config.train.weight_decay, **arrays)
        self.batch_size, self.lr_at = batch_size, lr_at
        # `cores`: pinned to that many cores (JAX's XLA otherwise uses every core for a product).
        pin = None if cores is None else (lambda: os.sched_setaffinity(0, range(cores)))
        self.process = subprocess.Popen([python, str(REPO / "scripts/jax_peer.py"), str(folder)],
                                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                                        preexec_fn=pin, env=USER_ENVIRONMENT)
        ready = self.process.stdout.readline().split()
        if not ready or ready[0] != "ready":
            raise RuntimeError(f"scripts/jax_peer.py did not start under {python}")
        self.version = ready[1]

    def epoch(self, order: np.ndarray) -> float:
        steps = len(order) // self.batch_size
        plan = Path(self.folder.name) / "order.npz"
        np.savez(plan, steps=order[: steps * self.batch_size].reshape(steps, self.batch_size),
                 lrs=np.array([self.lr_at(step) for step in range(steps)], np.float32))
        self.process.stdin.write(f"epoch {plan}\n")
        self.process.stdin.flush()
        return float(self.process.stdout.readline().split()[0])

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()
        self.folder.cleanup()


def jax_version(python: str) -> str:
    return subprocess.run([python, "-c", "import jax; print(jax.__version__)"], check=True,
                          capture_output=True, text=True).stdout.strip()


# --- whole processes ---------------------------------------------------------------------------

def time_process(argv: list[str], repeats: int, env: dict) -> dict:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, env=env)
        times.append(time.perf_counter() - started)
    return summary(times)


def processes(data_root: str, repeats: int) -> dict:
    bin_dir = Path(sys.executable).parent
    env = USER_ENVIRONMENT
    results = {}
    with tempfile.TemporaryDirectory() as scratch:
        run = Path(scratch) / "run"
        train = [str(bin_dir / "mnist-train"), "--config", str(REPO / "configs/base.yaml"),
                 "--data-root", data_root, "--set", "train.epochs=1",
                 "--set", "train.warmup_epochs=0", "--out", str(run), "--force", "--quiet"]
        results["train_one_epoch_process_s"] = time_process(train, repeats, env)
        evaluate = [str(bin_dir / "mnist-eval"), "--checkpoint", str(run / "best.params"),
                    "--data-root", data_root]
        results["eval_process_s"] = time_process(evaluate, repeats, env)
        results["train_help_s"] = time_process([str(bin_dir / "mnist-train"), "--help"],
                                               repeats, env)
        results["eval_help_s"] = time_process([str(bin_dir / "mnist-eval"), "--help"],
                                              repeats, env)
    return results


# --- whole training processes: start-up, against a plain PyTorch script, side by side ------

class Trainer:
    """`mnist-train` of this checkout, or of another whose src folder is `src` (say a worktree
    of the commit before a change), run in this interpreter."""

    def __init__(self, src: Path, data_root: str, scratch: Path, name: str):
        self.data_root, self.scratch, self.name = data_root, scratch, name
        self.env = {**USER_ENVIRONMENT, "PYTHONPATH": str(src)}
        self.runs = 0

    def start(self, config: str, *settings: str) -> tuple[subprocess.Popen, Path]:
        self.runs += 1
        out = self.scratch / f"{self.name}-{self.runs}"
        command = [sys.executable, "-c", "from mnist_gluon.cli import train_main; train_main()",
                   "--config", config, "--data-root", self.data_root, "--out", str(out),
                   "--quiet", *(arg for setting in settings for arg in ("--set", setting))]
        return subprocess.Popen(command, env=self.env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL), out

    def run(self, config: str, *settings: str) -> tuple[float, list[float]]:
        """(the process's wall seconds, each epoch's seconds as metrics.jsonl has them)."""
        started = time.perf_counter()
        process, out = self.start(config, *settings)
        if process.wait():
            raise RuntimeError(f"{self.name}: mnist-train exited with {process.returncode}")
        return time.perf_counter() - started, epoch_seconds(out)


def epoch_seconds(run_dir: Path) -> list[float]:
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [json.loads(line)["seconds"] for line in lines]


def in_turn(trainers: list[Trainer], repeats: int, figure, *settings: str,
            config: str = "base") -> dict:
    """`figure(wall, epoch_seconds)` of `config` runs with `settings`, trainers in turn
    `repeats` times after a round that warms the page cache; with two, their ratio."""
    values: dict[str, list[float]] = {t.name: [] for t in trainers}
    for round_ in range(repeats + 1):
        for trainer in trainers:
            result = figure(*trainer.run(config, *settings))
            if round_:
                values[trainer.name].append(result)
    figures = {name: summary(found) for name, found in values.items()}
    if len(trainers) == 2:
        this, other = (values[t.name] for t in trainers)
        figures["ratio"] = summary([a / b for a, b in zip(this, other, strict=True)])
    return figures


def against_torch_script(trainer: Trainer, data_root: str, repeats: int,
                         torch_threads: int) -> dict:
    """scripts/torch_peer.py's wall time over mnist-train's, 3 epochs at batch 64, in turn."""
    script = [sys.executable, str(REPO / "scripts/torch_peer.py"), "--data-root", data_root,
              "--epochs", "3", "--batch-size", "64", "--out", str(trainer.scratch / "torch")]
    env = {**USER_ENVIRONMENT, "OMP_NUM_THREADS": str(torch_threads)}
    ours, torch_s = [], []
    for round_ in range(repeats + 1):
        started = time.perf_counter()
        subprocess.run(script, check=True, stdout=subprocess.DEVNULL, env=env)
        elapsed = time.perf_counter() - started
        wall, _ = trainer.run("base", "train.epochs=3", "train.batch_size=64")
        if round_:
            torch_s.append(elapsed)
            ours.append(wall)
    return {"torch_script_s": summary(torch_s), "mnist_train_s": summary(ours),
            "ratio": summary([t / o for t, o in zip(torch_s, ours, strict=True)])}


NO_AUGMENTATION = ("data.augment.shift=0", "data.augment.elastic.alpha=0")


def lenet_processes(trainer: Trainer, data_root: str, repeats: int) -> dict:
    """lenet.yaml without augmentation, 2 epochs at batch 128, as whole processes in turn:
    scripts/torch_peer.py's wall time over mnist-train's, and each one's epochs."""
    script = [sys.executable, str(REPO / "scripts/torch_peer.py"), "--data-root", data_root,
              "--model", "lenet", "--epochs", "2", "--out", str(trainer.scratch / "torch")]
    ours, torch_s, epochs = [], [], []
    for round_ in range(repeats + 1):
        started = time.perf_counter()
        subprocess.run(script, check=True, stdout=subprocess.DEVNULL, env=USER_ENVIRONMENT)
        elapsed = time.perf_counter() - started
        wall, seconds = trainer.run("lenet", "train.epochs=2", *NO_AUGMENTATION)
        if round_:
            torch_s.append(elapsed)
            ours.append(wall)
            epochs += seconds
    return {"lenet": {"torch_script_s": summary(torch_s), "mnist_train_s": summary(ours),
                      "mnist_train_epoch_s": summary(epochs),
                      "ratio": summary([t / o for t, o in zip(torch_s, ours, strict=True)])}}


def jax_runs(args, batch_size: int, epochs: int = 8) -> dict:
    """base.yaml's whole mnist-train runs at `batch_size` against the JAX peer's epochs, in
    turn: each side's median samples/s over its epochs after the first (mnist-train's as its
    metrics.jsonl records them), and their ratio, per round."""
    from mnist_gluon.config import load_config
    from mnist_gluon.data import epoch_order
    from mnist_gluon.mxnet_compat import mx
    from mnist_gluon.training.data import prepare_data

    config = load_config(REPO / "configs/base.yaml", [
        f"data.root={args.data_root}", "device=cpu", "data.download=false",
        f"train.batch_size={batch_size}"])
    prepared = prepare_data(config, [mx.cpu()])
    ours = Ours(config, prepared, batch_size)  # JAX starts from its initial parameters
    peer = Jax(prepared, batch_size, config, ours.model.net, ours.lr_at, args.jax_python)
    samples = ours.steps * batch_size
    rates: dict[str, list[float]] = {"mnist_train": [], "jax": []}
    with tempfile.TemporaryDirectory() as scratch:
        trainer = Trainer(REPO / "src", args.data_root, Path(scratch), "this")
        for round_ in range(args.process_repeats + 1):
            _, seconds = trainer.run("base", f"train.epochs={epochs}",
                                     f"train.batch_size={batch_size}",
                                     "track.tensorboard=false")
            jax_s = [peer.epoch(epoch_order(prepared.num_train, config.seed, e + 1))
                     for e in range(epochs)]
            if round_:  # the first round warms the page cache and compiles JAX's scan
                rates["mnist_train"].append(samples / statistics.median(seconds[1:]))
                rates["jax"].append(samples / statistics.median(jax_s[1:]))
    peer.close()
    return {f"jax_runs_batch_{batch_size}": {
        "mnist_train_samples_per_s": summary(rates["mnist_train"]),
        "jax_samples_per_s": summary(rates["jax"]),
        "ratio": summary([o / j for o, j in zip(rates["mnist_train"], rates["jax"],
                                                 strict=True)])}}


def side_by_side(trainer: Trainer, config: str, epochs: int, *extra: str) -> dict:
    """Per-epoch seconds (after the first epoch) of a run alone, then of two started together."""
    settings = (f"train.epochs={epochs}", *extra)
    alone = statistics.median(trainer.run(config, *settings)[1][1:])
    pair = [trainer.start(config, *settings) for _ in range(2)]
    for process, _ in pair:
        process.wait()
    together = [statistics.median(epoch_seconds(out)[1:]) for _, out in pair]
    return {"alone_epoch_s": alone, "side_by_side_epoch_s": together,
            "slowdown": max(together) / alone}


def whole_processes(args) -> dict:
    figures: dict = {}
    with tempfile.TemporaryDirectory() as scratch:
        trainers = [Trainer(REPO / "src", args.data_root, Path(scratch), "this")]
        if args.baseline:
            trainers.append(Trainer(args.baseline.resolve(), args.data_root, Path(scratch),
                                    "baseline"))
        # The process's wall time minus its one epoch's; an epoch's steps at batch 64.
        figures["fixed_cost_s"] = in_turn(trainers, args.process_repeats,
                                          lambda wall, epochs: wall - epochs[0],
                                          "train.epochs=1")
        figures["epoch_s_batch_64"] = in_turn(trainers, args.process_repeats,
                                              lambda wall, epochs: statistics.median(epochs[1:]),
                                              "train.epochs=3", "train.batch_size=64")
        # best.yaml's epochs (the elastic distortion's), the first left out.
        figures["best_epoch_s"] = in_turn(trainers, args.process_repeats,
                                          lambda wall, epochs: statistics.median(epochs[1:]),
                                          "train.epochs=4", config="best")
        if not args.no_torch:
            figures["torch_script"] = against_torch_script(trainers[0], args.data_root,
                                                           args.process_repeats,
                                                           args.torch_threads)
        for trainer in trainers:
            for name, config, extra in (("base", "base", ()),
                                        ("base_batch_64", "base", ("train.batch_size=64",)),
                                        ("best", "best", ()),
                                        ("lenet", "lenet", NO_AUGMENTATION)):
                figures[f"side_by_side_{name}_{trainer.name}"] = side_by_side(
                    trainer, config, args.sharing_epochs if config != "lenet" else 3, *extra)
    return figures


# --- evaluation --------------------------------------------------------------------------------

def evaluation(model, prepared, data_root: str, repeats: int) -> dict:
    """mnist-eval's inference: raw test pixels through the classifier with its in-graph
    normalisation, in one batch of 10,000."""
    from mnist_gluon.data import DATASETS, PIXELS, read_split
    from mnist_gluon.model import pixel_classifier, predict_logits
    from mnist_gluon.mxnet_compat import mx

    test = read_split(DATASETS["mnist"], "test", data_root, download=False)
    pixels = mx.nd.array(test.images.reshape(-1, PIXELS), dtype="uint8")
    classifier = pixel_classifier(model.net, prepared.normalization)
    for _ in range(3):
        predict_logits(classifier, pixels)
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        predict_logits(classifier, pixels)
        times.append(time.perf_counter() - started)
    return {"eval_10k_ms": summary([t * 1000 for t in times]),
            "eval_samples_per_s": len(pixels) / statistics.median(times)}


def checkpoints_in_turn(paths: list[str], data_root: str, repeats: int) -> dict:
    """Whole `mnist-eval` processes on each checkpoint in turn (a pruned run's best.params and
    its model.mnc, say), then, in this process, each one's `load` and its forward pass over the
    10,000 test images, as mnist-eval runs it."""
    import mnist_gluon
    from mnist_gluon.data import DATASETS, PIXELS, read_split
    from mnist_gluon.model import predict_logits
    from mnist_gluon.mxnet_compat import mx

    argv = {path: [str(Path(sys.executable).parent / "mnist-eval"), "--checkpoint", path,
                   "--data-root", data_root] for path in paths}
    walls: dict[str, list[float]] = {path: [] for path in paths}
    for round in range(repeats + 1):  # the first round warms the caches up, uncounted
        for path in paths:
            started = time.perf_counter()
            subprocess.run(argv[path], check=True, stdout=subprocess.DEVNULL,
                           env=USER_ENVIRONMENT)
            if round:
                walls[path].append(time.perf_counter() - started)
    test = read_split(DATASETS["mnist"], "test", data_root, download=False)
    pixels = mx.nd.array(test.images.reshape(-1, PIXELS), dtype="uint8")
    figures = {}
    for path in paths:
        loads, forwards = [], []
        for _ in range(max(repeats, 5)):
            started = time.perf_counter()
            classifier = mnist_gluon.load(path, "cpu")
            loads.append(time.perf_counter() - started)
            predict_logits(classifier.pixel_net, pixels)
            started = time.perf_counter()
            predict_logits(classifier.pixel_net, pixels)
            forwards.append(time.perf_counter() - started)
        figures[path] = {"bytes": Path(path).stat().st_size,
                         "mnist_eval_process_s": summary(walls[path]),
                         "load_ms": summary([t * 1000 for t in loads]),
                         "eval_10k_ms": summary([t * 1000 for t in forwards])}
    return figures


def explanations(paths: list[str], data_root: str, repeats: int, images: int = 1000) -> dict:
    """Maps per second of `Classifier.explain` for `images` test images, each method in turn
    (after one uncounted round), for each checkpoint, as mnist-predict --explain and
    /v1/explain compute them: batched on the checkpoint's device."""
    from mnist_gluon.data import DATASETS, read_split

    test = read_split(DATASETS["mnist"], "test", data_root, download=False)
    return {path: explanation_speed(path, test.images[:images], repeats) for path in paths}


def explanation_speed(path: str, pixels: np.ndarray, repeats: int) -> dict:
    import mnist_gluon
    from mnist_gluon.explain import METHODS

    classifier = mnist_gluon.load(path, "cpu")
    attributor = classifier.attributor
    targets = classifier.logits(pixels).argmax(axis=1)
    ways = {method: lambda method=method: classifier.explain(pixels, method=method)
            for method in METHODS}
    if attributor.exact:  # a ReLU MLP's: also by the quadrature the closed form replaces
        ways["quadrature_integrated_gradients"] = lambda: attributor.attribute(
            pixels.reshape(len(pixels), -1), targets, "integrated_gradients", closed_form=False)
    times: dict[str, list[float]] = {way: [] for way in ways}
    for round in range(repeats + 1):
        for way, explain in ways.items():
            started = time.perf_counter()
            explain()
            if round:
                times[way].append(time.perf_counter() - started)
    return {"model": classifier.architecture.describe(),
            "exact_integrated_gradients": attributor.exact,
            **{f"{way}_maps_per_s": len(pixels) / statistics.median(times[way]) for way in ways},
            **{f"{way}_s": summary(times[way]) for way in ways}}


# --- augmentation ------------------------------------------------------------------------------

def augmentation(config, data_root: str, repeats: int, batch_size: int = AUGMENT_BATCH,
                 shift: int | None = None) -> dict:
    """Epoch time with random shifts (configs/best.yaml's, unless `shift` is given) and with
    elastic distortion (Simard et al.'s alpha 34, sigma 4) against none, in alternation."""
    import dataclasses

    from mnist_gluon.config import AugmentConfig, ElasticConfig, load_config
    from mnist_gluon.data import epoch_order
    from mnist_gluon.mxnet_compat import mx
    from mnist_gluon.training.data import prepare_data

    if shift is None:
        shift = load_config(REPO / "configs/best.yaml").data.augment.shift
    kinds = {"none": AugmentConfig(), "shift": AugmentConfig(shift=shift),
             "elastic": AugmentConfig(elastic=ElasticConfig(alpha=34, sigma=4))}
    times: dict[str, list[float]] = {name: [] for name in kinds}
    runners = {}
    for name, augment in kinds.items():
        changed = dataclasses.replace(config, data=dataclasses.replace(config.data,
                                                                       augment=augment))
        runners[name] = Ours(changed, prepare_data(changed, [mx.cpu()]), batch_size)
    for rep in range(repeats + 1):
        order = epoch_order(runners["none"].prepared.num_train, config.seed, rep + 1)
        names = list(kinds) if rep % 2 else list(reversed(kinds))
        for name in names:
            seconds = runners[name].epoch(order)
            if rep:
                times[name].append(seconds)
    none = statistics.median(times["none"])
    return {"augment_batch_size": batch_size, "augment_shift": shift,
            "epoch_s_without_augmentation": summary(times["none"]),
            "epoch_s_with_shift": summary(times["shift"]),
            "epoch_s_with_elastic": summary(times["elastic"]),
            "augmentation_overhead": statistics.median(times["shift"]) / none - 1,
            "elastic_overhead": statistics.median(times["elastic"]) / none - 1}


# --- our kernels against MXNet's own operators --------------------------------------------------

def kernels(config, prepared, repeats: int, steps: int = 400) -> dict:
    """Each compiled kernel against the MXNet operators it replaces, in alternation: the update
    of base.yaml's MLP (gradients in place), and best.yaml's elastic warp of a batch of 256."""
    from mnist_gluon import kernels as compiled
    from mnist_gluon.config import load_config
    from mnist_gluon.model import Architecture, build_model, named_parameters
    from mnist_gluon.mxnet_compat import mx
    from mnist_gluon.training.augment import augmentation
    from mnist_gluon.training.optim import Updater

    if (missing := compiled.load()) is not None:
        raise SystemExit(f"bench.py: error: {missing}; make builds the kernels")
    net = build_model(Architecture(hidden=config.model.hidden), mx.cpu())
    for param in named_parameters(net).values():
        param.grad()[:] = mx.nd.random.normal(shape=param.shape) * 0.01
    updaters = {kind: Updater(named_parameters(net), config.train, mx.cpu(),
                              compiled=kind == compiled.COMPILED)
                for kind in (compiled.COMPILED, compiled.MXNET)}

    def update(kind: str) -> float:
        started = time.perf_counter()
        for _ in range(steps):
            updaters[kind].step(0.1, 256)
        mx.nd.waitall()
        return (time.perf_counter() - started) / steps * 1e6

    best = load_config(REPO / "configs/best.yaml")
    images, labels = prepared.train[0].inputs
    order = np.random.default_rng(0).permutation(prepared.num_train)[:256]
    warps = {}
    for kind in (compiled.COMPILED, compiled.MXNET):
        strategy = augmentation(best.data.augment, prepared.normalization, kind)
        block = strategy.gather()
        block.initialize()
        block.hybridize(static_alloc=True, static_shape=True)
        columns = [mx.nd.array(c, dtype=c.dtype)
                   for c in strategy.step_columns(order, prepared.train_labels, 42, 1)]
        warps[kind] = (block, columns)

    def warp(kind: str) -> float:
        block, columns = warps[kind]
        started = time.perf_counter()
        for _ in range(steps // 10):
            block(images, labels, *columns)[0].wait_to_read()
        return (time.perf_counter() - started) / (steps // 10) * 1e3

    times: dict[str, list[float]] = {}
    for rep in range(repeats + 1):
        kinds = [compiled.COMPILED, compiled.MXNET][:: 1 if rep % 2 else -1]
        for name, timed in (("update_us", update), ("elastic_ms_256", warp)):
            for kind in kinds:
                value = timed(kind)
                if rep:
                    times.setdefault(f"{name}_{kind}", []).append(value)
    figures = {name: summary(values) for name, values in times.items()}
    for name in ("update_us", "elastic_ms_256"):
        figures[f"{name}_speedup"] = (statistics.median(times[f"{name}_mxnet"])
                                      / statistics.median(times[f"{name}_compiled"]))
    return {"kernels": figures}


# --- the run -----------------------------------------------------------------------------------

def bench_batch_size(config, prepared, batch_size: int, repeats: int, use_torch: bool,
                     jax_python: str | None, cores: int, jax_cores: int | None = None) -> dict:
    from mnist_gluon.data import epoch_order
    from mnist_gluon.training.step import plan_epoch

    runners = {"ours": Ours(config, prepared, batch_size)}
    ours = runners["ours"]
    if use_torch:
        runners["torch"] = Torch(prepared, batch_size, config)
    if jax_python:
        runners["jax"] = Jax(prepared, batch_size, config, ours.model.net, ours.lr_at,
                             jax_python, jax_cores)
    times: dict[str, list[float]] = {name: [] for name in runners}
    ratios: dict[str, list[float]] = {name: [] for name in runners if name != "ours"}
    samples = ours.steps * batch_size
    for rep in range(repeats + 1):  # the first is warm-up (and JAX's compilation)
        order = epoch_order(prepared.num_train, config.seed, rep + 1)
        names = list(runners)
        names = names[rep % len(names):] + names[: rep % len(names)]  # each takes each turn
        seconds = {name: runners[name].epoch(order) for name in names}
        if rep == 0:
            continue
        for name, value in seconds.items():
            times[name].append(value)
            if name != "ours":
                ratios[name].append(value / seconds["ours"])
    if "jax" in runners:
        runners["jax"].close()
    ours_rate = samples / statistics.median(times["ours"])
    order = epoch_order(prepared.num_train, config.seed, 99)
    started = time.perf_counter()
    plan_epoch(order, prepared.train_labels, batch_size, ours.ctxs, prepared.augmentation,
               config.seed, 99)
    data_s = time.perf_counter() - started
    result = {
        "ours_step": ours.step_kind,
        "ours_samples_per_s": ours_rate,
        "ours_epoch_s": summary(times["ours"]),
        "flop_bound_fraction": ours_rate * FLOP_PER_SAMPLE / (cores * GFLOPS_PER_CORE * 1e9),
        "plan_epoch_share": data_s / statistics.median(times["ours"]),
    }
    for name, peer in (("torch", "pytorch"), ("jax", "jax")):
        if name in runners:
            result.update({
                f"{name}_samples_per_s": samples / statistics.median(times[name]),
                f"{name}_epoch_s": summary(times[name]),
                f"ratio_vs_{peer}": statistics.median(ratios[name]),
                f"ratio_vs_{peer}_range": [min(ratios[name]), max(ratios[name])],
            })
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", default=str(REPO.parent / "shared/data/mnist"),
                        help="folder with the MNIST IDX files")
    parser.add_argument("--batch-sizes", default="64,256")
    parser.add_argument("--repeats", type=int, default=7, help="timed epochs per batch size")
    parser.add_argument("--process-repeats", type=int, default=3)
    parser.add_argument("--no-torch", action="store_true", help="skip the PyTorch comparison")
    parser.add_argument("--no-processes", action="store_true",
                        help="skip timing whole mnist-train / mnist-eval processes")
    parser.add_argument("--no-jax", action="store_true", help="skip the JAX comparison")
    parser.add_argument("--jax-python", default=str(REPO / ".venv-jax/bin/python"),
                        help="an interpreter with JAX [default: .venv-jax, from make .venv-jax]")
    parser.add_argument("--jax-cores", type=int, metavar="N",
                        help="pin JAX to N cores (default: all; mnist-train trains on one)")
    parser.add_argument("--torch-threads", type=int, default=os.cpu_count() or 1,
                        help="PyTorch's intra-op threads [default: all cores]")
    parser.add_argument("--whole-processes", action="store_true",
                        help="only the whole-process figures: mnist-train's fixed cost, "
                             "scripts/torch_peer.py against it, and runs side by side")
    parser.add_argument("--baseline", type=Path, metavar="SRC",
                        help="with --whole-processes: another checkout's src folder, whose "
                             "mnist-train takes turns with this one's")
    parser.add_argument("--sharing-epochs", type=int, default=4,
                        help="epochs of each run alone and side by side")
    parser.add_argument("--checkpoints", metavar="A,B",
                        help="only mnist-eval of these checkpoints in turn (a pruned run's "
                             "best.params and its model.mnc), whole processes and in-process")
    parser.add_argument("--explain", metavar="A,B",
                        help="only Classifier.explain's maps per second on these checkpoints")
    parser.add_argument("--json", type=Path, help="also write the figures here as JSON")
    parser.add_argument("--part", help=argparse.SUPPRESS)  # one part, in a process of its own
    args = parser.parse_args()

    if args.part is not None:
        print(json.dumps(run_part(args.part, args)))
        return 0
    if args.whole_processes or args.checkpoints or args.explain:
        figures = (whole_processes(args) if args.whole_processes
                   else checkpoints_in_turn(args.checkpoints.split(","), args.data_root,
                                            args.process_repeats) if args.checkpoints
                   else explanations(args.explain.split(","), args.data_root, args.repeats))
        print(json.dumps(figures, indent=2))
        if args.json:
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
        return 0
    if not args.no_torch and importlib.util.find_spec("torch") is None:
        print("bench.py: error: PyTorch is not installed; pip install -e '.[bench]' or pass "
              "--no-torch", file=sys.stderr)
        return 2
    if not args.no_jax and not Path(args.jax_python).exists():
        print(f"bench.py: error: {args.jax_python} does not exist; make .venv-jax, pass "
              "--jax-python, or pass --no-jax", file=sys.stderr)
        return 2
    # Each part runs in a process of its own, because MXNet's engine is chosen once per process,
    # as mnist-train and mnist-eval choose it (mnist_gluon.engine).
    parts = [f"batch:{b}" for b in args.batch_sizes.split(",")]
    parts += [] if args.no_jax else [f"jax_runs:{b}" for b in args.batch_sizes.split(",")]
    parts += [] if args.no_torch else ["lenet"]
    parts += ["kernels", "augmentation", "evaluation"]
    figures: dict = {"flop_per_sample": FLOP_PER_SAMPLE, "engines": {}}
    for part in parts:
        result = json.loads(subprocess.run([sys.executable, __file__, *sys.argv[1:],
                                            "--part", part], check=True, text=True,
                                           stdout=subprocess.PIPE).stdout)
        figures["machine"] = result.pop("machine")
        figures["engines"][part] = result.pop("engine")
        figures.update(result)
    add_matmul_bounds(figures)
    if not args.no_processes:
        figures.update(processes(args.data_root, args.process_repeats))

    print_table(figures)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


def add_matmul_bounds(figures: dict) -> None:
    """Each figure against this machine's matrix-product speed, measured here, in a process
    whose BLAS threads no MXNet setting has touched."""
    for key, row in figures.items():
        if key.startswith("batch_") and isinstance(row, dict):
            row["measured_matmul_gflops"] = peak = matmul_gflops(int(key[6:]))
            row["measured_bound_fraction"] = (row["ours_samples_per_s"] * FLOP_PER_SAMPLE
                                              / (peak * 1e9))
    forward_flop = 2 * (784 * 128 + 128 * 10) * 10_000
    figures["eval_10k_floor_ms_at_measured_matmul"] = (forward_flop
                                                       / (matmul_gflops(10_000) * 1e9) * 1000)


def run_part(part: str, args) -> dict:
    """One part of the benchmark, on the engine mnist-train or mnist-eval would choose for it."""
    from mnist_gluon import engine

    kind, _, batch = part.partition(":")
    if kind == "evaluation":
        engine.choose(engine.inference_settings("cpu"))
    elif kind in ("batch", "jax_runs"):  # as mnist-train chooses them for base.yaml
        from mnist_gluon import kernels
        from mnist_gluon.config import load_config

        base = load_config(REPO / "configs/base.yaml", ["device=cpu"])
        engine.choose_training(engine.training_threads(
            base.threads, kernels.step_may_run(base)))
    else:
        engine.choose_training()
    if kind == "jax_runs":
        return {"machine": {}, "engine": {}, **jax_runs(args, int(batch))}

    from mnist_gluon.config import load_config
    from mnist_gluon.mxnet_compat import mx
    from mnist_gluon.training.data import prepare_data

    torch = None
    if not args.no_torch and kind == "batch":
        import torch

        torch.set_num_threads(args.torch_threads)
    jax_python = None if args.no_jax else args.jax_python
    config = load_config(REPO / "configs/base.yaml", [f"data.root={args.data_root}",
                                                      "device=cpu", "data.download=false"])
    prepared = prepare_data(config, [mx.cpu()])
    cores = os.cpu_count() or 1
    figures: dict = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cores": cores, "python": platform.python_version(),
                    "mxnet": mx.__version__, "numpy": np.__version__,
                    "torch": None if args.no_torch else package_version("torch"),
                    "torch_threads": None if args.no_torch else args.torch_threads,
                    "jax": jax_version(jax_python) if jax_python else None},
        "engine": {k: os.environ.get(k) for k in ("MXNET_ENGINE_TYPE", "OMP_NUM_THREADS")},
    }
    if kind == "batch":
        result = bench_batch_size(config, prepared, int(batch), args.repeats, torch is not None,
                                  jax_python, cores, args.jax_cores)
        figures[f"batch_{batch}"] = result
        for key in ("ratio_vs_pytorch", "ratio_vs_jax", "ours_samples_per_s",
                    "torch_samples_per_s", "jax_samples_per_s"):
            if key in result:
                figures[f"{key}_batch_{batch}"] = result[key]
    elif kind == "augmentation":
        figures.update(augmentation(config, args.data_root, args.repeats))
    elif kind == "kernels":
        figures.update(kernels(config, prepared, args.repeats))
    elif kind == "lenet":
        with tempfile.TemporaryDirectory() as scratch:
            trainer = Trainer(REPO / "src", args.data_root, Path(scratch), "this")
            figures.update(lenet_processes(trainer, args.data_root, args.process_repeats))
    else:
        model = Ours(config, prepared, AUGMENT_BATCH).model
        figures.update(evaluation(model, prepared, args.data_root, max(args.repeats, 10)))
    return figures


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def print_table(figures: dict) -> None:
    machine = figures["machine"]
    print(f"machine: {machine['platform']}, {machine['cores']} cores, mxnet {machine['mxnet']}, "
          f"torch {machine['torch']} ({machine['torch_threads']} threads), "
          f"jax {machine['jax']}")
    for part, settings in figures["engines"].items():
        chosen = ", ".join(f"{k}={v}" for k, v in settings.items() if v) or "MXNet's defaults"
        print(f"engine for {part}: {chosen}")
    print(f"{'batch':>6} {'ours samples/s':>15} {'torch samples/s':>16} {'ratio':>6} "
          f"{'range':>11} {'jax samples/s':>14} {'ratio':>6} {'range':>11} "
          f"{'of 250 GF/core':>14} {'of measured':>11}")

    def cell(value, spec: str, width: int) -> str:
        return format("-" if value is None else format(value, spec), f">{width}")

    def span(row: dict, key: str) -> str:
        values = row.get(key)
        return cell(None if values is None else f"{values[0]:.2f}-{values[1]:.2f}", "", 11)

    for key, row in figures.items():
        if key.startswith("batch_"):
            print(f"{key[6:]:>6} {row['ours_samples_per_s']:>15,.0f} "
                  f"{cell(row.get('torch_samples_per_s'), ',.0f', 16)} "
                  f"{cell(row.get('ratio_vs_pytorch'), '.2f', 6)} "
                  f"{span(row, 'ratio_vs_pytorch_range')} "
                  f"{cell(row.get('jax_samples_per_s'), ',.0f', 14)} "
                  f"{cell(row.get('ratio_vs_jax'), '.2f', 6)} {span(row, 'ratio_vs_jax_range')} "
                  f"{row['flop_bound_fraction']:>14.1%} {row['measured_bound_fraction']:>11.1%}")
        elif key.startswith("jax_runs_batch_"):
            print(f"mnist-train's epochs at batch {key[15:]}: "
                  f"{row['mnist_train_samples_per_s']['median']:,.0f} samples/s, JAX "
                  f"{row['jax_samples_per_s']['median']:,.0f}: ratio {row['ratio']['median']:.2f} "
                  f"({row['ratio']['min']:.2f}-{row['ratio']['max']:.2f})")
    print(f"random shifts (data.augment.shift={figures['augment_shift']}) at batch "
          f"{figures['augment_batch_size']}: {figures['augmentation_overhead']:+.1%} epoch time "
          f"({figures['epoch_s_with_shift']['median']:.3f} s against "
          f"{figures['epoch_s_without_augmentation']['median']:.3f} s)")
    print(f"elastic distortion (alpha 34, sigma 4): {figures['elastic_overhead']:+.1%} epoch "
          f"time ({figures['epoch_s_with_elastic']['median']:.3f} s)")
    if "lenet" in figures:
        le = figures["lenet"]
        print(f"lenet.yaml's LeNet, 2 epochs without augmentation, whole processes: mnist-train "
              f"{le['mnist_train_s']['median']:.1f} s ({le['mnist_train_epoch_s']['median']:.2f} "
              f"s an epoch), scripts/torch_peer.py {le['torch_script_s']['median']:.1f} s: "
              f"ratio {le['ratio']['median']:.2f} ({le['ratio']['min']:.2f}-"
              f"{le['ratio']['max']:.2f})")
    k = figures["kernels"]
    for name, what in (("update_us", "us per update of every parameter"),
                       ("elastic_ms_256", "ms per elastic warp of 256 images")):
        print(f"compiled kernel: {k[f'{name}_compiled']['median']:.1f} {what}, against "
              f"{k[f'{name}_mxnet']['median']:.1f} on MXNet's operators "
              f"({k[f'{name}_speedup']:.1f}x)")
    ms = figures["eval_10k_ms"]
    print(f"evaluation of 10,000 test images: {ms['median']:.1f} ms "
          f"(min {ms['min']:.1f}, max {ms['max']:.1f}); "
          f"{figures['eval_samples_per_s']:,.0f} samples/s; the FLOP floor at this machine's "
          f"measured matmul speed is {figures['eval_10k_floor_ms_at_measured_matmul']:.1f} ms")
    for key in ("train_one_epoch_process_s", "eval_process_s", "train_help_s", "eval_help_s"):
        if key in figures:
            s = figures[key]
            print(f"{key}: {s['median']:.2f} s (min {s['min']:.2f}, max {s['max']:.2f})")


if __name__ == "__main__":
    sys.exit(main())
