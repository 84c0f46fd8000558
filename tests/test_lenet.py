"""model.kind: lenet through every command: training (resumed after SIGKILL), evaluation,
prediction, serving, sweeps, dist_sync and TensorBoard; and a plain Gluon LeNet's file."""

import json
import random
import re
import signal
import subprocess

import numpy as np
from PIL import Image

from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.cli import eval_command, predict_command, run, sweep_command
from mnist_gluon.config import load_config
from mnist_gluon.files import sha256_of
from mnist_gluon.inference.classifier import load
from mnist_gluon.mxnet_compat import gluon, mx
from mnist_gluon.training.run import run_training
from support import BIN, LENET, fetch, kill_once_saved, serving


def params_of(path) -> dict:
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def test_the_sidecar_records_the_lenet_it_trained(lenet_model):
    arch = read_checkpoint(lenet_model).architecture
    assert (arch.kind, arch.channels, arch.hidden, arch.activation) == ("lenet", [8, 16], 64,
                                                                       "relu")
    assert set(params_of(lenet_model)) == {f"{layer}.{kind}" for kind in ("weight", "bias")
                                           for layer in ("conv1", "conv2", "fc1", "fc2")}


def test_mnist_eval_scores_a_lenet_as_its_run_validated_it(lenet_model, mnist_dir, capsys):
    assert run(eval_command, ["--checkpoint", str(lenet_model), "--data-root",
                              str(mnist_dir)]) == 0
    accuracy = float(re.search(r"accuracy (\S+)", capsys.readouterr().out).group(1))
    assert accuracy > 0.95
    validated = read_checkpoint(lenet_model).sidecar.best_val_accuracy
    assert abs(accuracy - validated) < 0.02


def test_a_killed_lenet_run_resumes_to_bit_identical_parameters(small_config, tmp_path):
    overrides = [*LENET, "train.epochs=2", "data.augment.shift=1", "model.dropout=0.2"]
    reference = tmp_path / "reference"
    subprocess.run([str(BIN / "mnist-train"), "--config", str(small_config), "--out",
                    str(reference), "--quiet", *[f"--set={o}" for o in overrides]], check=True)
    run_dir, seed = tmp_path / "killed", random.Random().randrange(10**6)
    target = random.Random(seed).randrange(1, 95)
    process = subprocess.Popen(
        [str(BIN / "mnist-train"), "--config", str(small_config), "--out", str(run_dir),
         "--quiet", *[f"--set={o}" for o in overrides], "--set", "checkpoint.every_steps=1"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    kill_once_saved(process, run_dir, target)
    assert process.returncode == -signal.SIGKILL, f"the run ended before the kill (seed {seed})"
    subprocess.run([str(BIN / "mnist-train"), "--resume", str(run_dir), "--quiet"], check=True)
    left, right = params_of(run_dir / "last.params"), params_of(reference / "last.params")
    assert left.keys() == right.keys()
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=f"{name}, seed {seed}")


def test_mnist_predict_and_mnist_serve_give_a_lenet_s_answers(lenet_model, test_set, tmp_path,
                                                              capsys):
    classifier = load(lenet_model)
    images = test_set.images[:6]
    for i, image in enumerate(images):
        Image.fromarray(image).save(tmp_path / f"{i}.png")
    expected = classifier.probabilities(images.reshape(6, -1)).argmax(axis=1)
    assert run(predict_command, ["--checkpoint", str(lenet_model), "--json",
                                 *[str(tmp_path / f"{i}.png") for i in range(6)]]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert [p["label"] for p in printed] == expected.tolist()
    with serving(lenet_model) as (url, _, _):
        body = json.dumps({"pixels": images.reshape(6, -1).tolist()}).encode()
        status, _, answer = fetch(url + "v1/predict", "POST", body,
                                  {"Content-Type": "application/json"})
        _, _, model = fetch(url + "v1/model")
    assert status == 200
    assert [p["label"] for p in json.loads(answer)["predictions"]] == expected.tolist()
    assert json.loads(model)["architecture"]["kind"] == "lenet"


def test_a_sweep_trains_lenets_and_picks_one_on_validation(small_config, tmp_path):
    out = tmp_path / "sweep"
    assert run(sweep_command, ["--config", str(small_config), "--out", str(out),
                               "--grid", "model.hidden=16,32", "--set", "train.epochs=1",
                               *[a for o in LENET for a in ("--set", o)]]) == 0
    rows = json.loads((out / "results.json").read_text())
    assert len(rows) == 2 and all(r["state"] == "complete" for r in rows)
    for row in rows:
        arch = read_checkpoint(out / row["trial"] / "best.params").architecture
        assert (arch.kind, arch.channels, arch.hidden) == ("lenet", [4, 8], row["model.hidden"])


def test_two_dist_sync_workers_train_one_lenet(small_config, tmp_path):
    process = subprocess.run(
        [str(BIN / "mnist-launch"), "-n", "2", "-s", "1", "--", str(BIN / "mnist-train"),
         "--config", str(small_config), "--out", str(tmp_path / "dist"), "--quiet",
         "--set", "train.kvstore=dist_sync", "--set", "train.optimizer=nag", "--set",
         "train.batch_size=50", "--set", "train.epochs=1",
         *[a for o in LENET for a in ("--set", o)]],
        capture_output=True, text=True, timeout=180)
    assert process.returncode == 0, process.stderr
    digests = re.findall(r"\[rank (\d)/2\] parameters sha256 (\w+)", process.stdout)
    assert len(digests) == 2 and digests[0][1] == digests[1][1]
    assert read_checkpoint(tmp_path / "dist" / "last.params").architecture.kind == "lenet"


def test_tensorboard_shows_a_lenet_s_convolutions(small_config, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_training(load_config(small_config, [*LENET, "train.epochs=1"]), tmp_path / "run",
                 quiet=True)
    seen = EventAccumulator(str(tmp_path / "run"), size_guidance={"histograms": 0})
    seen.Reload()
    assert {"weights/conv1.weight", "weights/conv2.bias"} <= set(seen.Tags()["histograms"])


def plain_gluon_lenet(kernel: int = 5):
    """What a plain Gluon script's LeNet saves: a HybridSequential, names 0.weight, ..."""
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Conv2D(6, kernel, activation="relu"), gluon.nn.MaxPool2D(2, 2),
            gluon.nn.Conv2D(16, kernel, activation="relu"), gluon.nn.MaxPool2D(2, 2),
            gluon.nn.Dense(48, activation="relu"), gluon.nn.Dense(10))
    net.initialize(mx.init.Xavier())
    return net


def test_a_plain_gluon_lenet_s_file_evaluates_bare(test_set, tmp_path):
    net = plain_gluon_lenet()
    pixels = test_set.images[:200].reshape(200, 1, 28, 28).astype(np.float32) / 255
    expected = net(mx.nd.array((pixels - 0.1307) / 0.3081)).asnumpy()
    net.save_parameters(str(tmp_path / "lenet.params"))
    classifier = load(tmp_path / "lenet.params")
    arch = classifier.architecture
    assert (arch.kind, arch.channels, arch.hidden) == ("lenet", [6, 16], 48)
    logits = classifier.pixel_net(mx.nd.array(test_set.images[:200].reshape(200, -1))).asnumpy()
    np.testing.assert_allclose(logits, expected, rtol=1e-4, atol=1e-4)


def test_a_lenet_of_another_shape_is_refused_naming_the_one_needed(tmp_path, capsys):
    net = plain_gluon_lenet(kernel=3)
    net(mx.nd.zeros((1, 1, 28, 28)))
    net.save_parameters(str(tmp_path / "lenet3.params"))
    assert run(eval_command, ["--checkpoint", str(tmp_path / "lenet3.params")]) == 2
    err = capsys.readouterr().err
    assert "two 5x5 convolutions from 1 channel" in err and len(err.splitlines()) == 1


def test_lenet_runs_that_validate_every_epoch_are_the_same_run(mnist_dir, tmp_path):
    """Three runs of lenet.yaml side by side, on 10,000 training images, each validating on
    the other 50,000 after every epoch, end with the same parameters: validation must not
    touch the weights training reads (MKLDNN would reorder them, at a moment that depends on
    timing)."""
    runs = [subprocess.Popen([str(BIN / "mnist-train"), "--config", "lenet", "--data-root",
                              str(mnist_dir), "--out", str(tmp_path / f"run{i}"), "--quiet",
                              "--set", "train.epochs=3", "--set", "data.val_size=50000"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
            for i in range(3)]
    for process in runs:
        assert process.wait(timeout=600) == 0, process.stderr.read()
        process.stderr.close()
    digests = {sha256_of(tmp_path / f"run{i}" / "last.params") for i in range(3)}
    assert len(digests) == 1
