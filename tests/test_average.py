"""Stochastic weight averaging: the mean of the end-of-epoch weights, validated beside them,
kept by best.params when it validates better, and resumed exactly."""

import json

import numpy as np

from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.config import load_config
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.training.run import run_training
from support import stopped_then_resumed

# Adam at a constant 0.01 on the small slice: the average of epochs 2 and 3 validates better
# than epoch 3's own weights.
SWA = ["train.epochs=3", "train.lr=0.01", "train.lr_schedule=none",
       "train.average.start_epoch=2", "checkpoint.keep=3"]


def arrays(path):
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items() if k != "count"}


def test_the_average_is_the_mean_of_the_end_of_epoch_weights(small_config, tmp_path):
    out = tmp_path / "run"
    run_training(load_config(small_config, SWA), out, quiet=True)
    live = [arrays(out / f"epoch-{e:04d}.params") for e in (2, 3)]
    average = arrays(out / "last.average")
    for name in average:
        np.testing.assert_allclose(average[name], (live[0][name] + live[1][name]) / 2,
                                   rtol=1e-5, atol=1e-7)
    assert read_checkpoint(out / "last.params").sidecar.average_count == 2


def test_the_average_is_validated_beside_the_live_weights_and_can_be_the_best(small_config,
                                                                             tmp_path):
    out = tmp_path / "run"
    run_training(load_config(small_config, SWA), out, quiet=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows[0]["average_val_accuracy"] is None  # before start_epoch
    assert all(r["average_val_accuracy"] is not None for r in rows[1:])
    best = read_checkpoint(out / "best.params")
    scores = [max(r["val_accuracy"], r["average_val_accuracy"] or 0) for r in rows]
    assert best.sidecar.best_val_accuracy == max(scores)
    assert best.sidecar.weights == "average" and best.sidecar.best_epoch == 3
    kept = arrays(out / "best.params")
    for name, value in arrays(out / "epoch-0003.average").items():
        np.testing.assert_array_equal(kept[name], value)
    assert read_checkpoint(out / "last.params").sidecar.weights == "live"


def test_a_run_stopped_inside_the_averaging_resumes_the_same_average(small_config, tmp_path):
    reference = tmp_path / "reference"
    run_training(load_config(small_config, SWA), reference, quiet=True)
    stopped = stopped_then_resumed(small_config, SWA, tmp_path / "stopped", 120)
    for name in ("last.params", "last.average", "best.params"):
        resumed, expected = arrays(stopped / name), arrays(reference / name)
        for key in expected:
            np.testing.assert_array_equal(resumed[key], expected[key], err_msg=f"{name} {key}")
