import contextlib
import json
import re
from pathlib import Path

import numpy as np
import pytest

from mnist_gluon.checkpoint import Sidecar, read_checkpoint, signed
from mnist_gluon.config import TrainConfig
from mnist_gluon.data import Normalization
from mnist_gluon.errors import CheckpointError, OutputError
from mnist_gluon.files import atomic_write, sha256_of
from mnist_gluon.model import Architecture, build_model, named_parameters
from mnist_gluon.mxnet_compat import gluon, mx
from mnist_gluon.training.optim import Updater
from mnist_gluon.training.run_folder import prepare_run_dir
from mnist_gluon.training.saver import save_checkpoint
from support import snapshot, unwritable

ARCH = Architecture(hidden=16)
SIDECAR = Sidecar(ARCH, Normalization(0.1, 0.3), epoch=1)


@pytest.fixture
def saved(tmp_path):
    net = build_model(ARCH, mx.cpu())
    updater = Updater(named_parameters(net), TrainConfig(optimizer="adam"), mx.cpu())
    path = tmp_path / "last.params"
    save_checkpoint(path, net, updater, SIDECAR)
    return path, net


def test_a_checkpoint_reads_back_with_its_meaning(saved):
    path, net = saved
    checkpoint = read_checkpoint(path)
    assert checkpoint.architecture == ARCH
    assert checkpoint.normalization == Normalization(0.1, 0.3)
    np.testing.assert_array_equal(checkpoint.arrays["fc1.weight"], net.fc1.weight.data().asnumpy())
    sidecar = json.loads(path.with_suffix(".json").read_text())
    assert sidecar["params_sha256"] == sha256_of(path)
    assert sidecar["states_sha256"] == sha256_of(path.with_suffix(".states"))


@contextlib.contextmanager
def edited_sidecar(params_path: Path, resign: bool = False):
    """The sidecar of `params_path` as parsed JSON, written back changed on leaving, as a hand
    with a text editor would; with `resign`, its own checksum is made to match again, as one
    who knows the format would."""
    sidecar_path = params_path.with_suffix(".json")
    sidecar = json.loads(sidecar_path.read_text())
    yield sidecar
    if resign:
        sidecar = signed(sidecar)
    sidecar_path.write_text(json.dumps(sidecar))


def test_checkpoints_of_the_same_weights_are_written_once_and_each_reads_back(tmp_path):
    # An epoch's end: epoch-NNNN, best and last hold the same weights.
    net = build_model(ARCH, mx.cpu())
    updater = Updater(named_parameters(net), TrainConfig(optimizer="adam"), mx.cpu())
    last = tmp_path / "last.params"
    copies = [(tmp_path / "epoch-0001.params", SIDECAR), (tmp_path / "best.params", SIDECAR)]
    save_checkpoint(last, net, updater, SIDECAR, copies=copies)
    for suffix in (".params", ".states"):
        inodes = {p.with_suffix(suffix).stat().st_ino for p in [last, *(c for c, _ in copies)]}
        assert len(inodes) == 1  # the disk space of one checkpoint
    for path in [last, *(c for c, _ in copies)]:
        sidecar = json.loads(path.with_suffix(".json").read_text())
        assert sidecar["states_file"] == path.with_suffix(".states").name
        np.testing.assert_array_equal(read_checkpoint(path).arrays["fc1.weight"],
                                      net.fc1.weight.data().asnumpy())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        f"{name}{suffix}" for name in ("last", "epoch-0001", "best")
        for suffix in (".params", ".states", ".json"))  # no temporaries left


def test_a_changed_params_file_is_refused_not_loaded(saved):
    path, _ = saved
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(CheckpointError, match="does not match the checksum in last.json"):
        read_checkpoint(path)


def test_a_sidecar_that_disagrees_with_its_params_is_refused(saved):
    path, _ = saved
    with edited_sidecar(path, resign=True) as sidecar:
        sidecar["architecture"]["hidden"] = 64
    with pytest.raises(CheckpointError, match=r"fc1\.weight has shape \(16, 784\) but the "
                                              r"architecture says \(64, 784\)"):
        read_checkpoint(path)


@pytest.mark.parametrize("key, value, message", [
    ("normalization", {"mean": 0.1, "std": 0.3001}, "was changed after it was written"),
    ("architecture", {"inputs": 784, "hidden": 16, "activation": "bogus", "classes": 10,
                      "dropout": 0.0}, "was changed after it was written"),
])
def test_an_edited_sidecar_is_refused_not_believed(saved, key, value, message):
    """A changed std once moved accuracy from 97.55% to 58.93% without a word."""
    path, _ = saved
    with edited_sidecar(path) as sidecar:
        sidecar[key] = value
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


@pytest.mark.parametrize("key, value, message", [
    ("normalization", {"mean": 0.1, "std": 0}, r"impossible normalization 0\.1, 0\.0 "),
    ("architecture", {"inputs": 784, "hidden": 16, "activation": "bogus", "classes": 10,
                      "dropout": 0.0}, "impossible activation 'bogus'"),
])
def test_a_re_signed_sidecar_is_still_checked_for_sense(saved, key, value, message):
    path, _ = saved
    with edited_sidecar(path, resign=True) as sidecar:
        sidecar[key] = value
    with pytest.raises(CheckpointError, match=message):
        read_checkpoint(path)


@pytest.mark.parametrize("key, value, message", [
    ("normalization", {"mean": "0.1307", "std": 0.3081},
     "garbles normalization.mean: '0.1307' is not a number"),
    ("architecture", {"inputs": 784, "hidden": 16.5, "activation": "relu", "classes": 10,
                      "dropout": 0.0}, "garbles architecture.hidden: 16.5 is not an integer"),
    ("architecture", {"inputs": 784, "hidden": 16, "activation": "relu", "classes": 10,
                      "dropout": 0.0, "heads": 2}, "garbles architecture: unknown key 'heads'"),
    ("epoch", "3", "garbles epoch: '3' is not an integer"),
    ("metrics", [1, 2], "garbles metrics: not an object"),
    ("data", {"name": "mnist", "sha1": {"x": 1}}, "garbles data.sha1: {'x': 1} is not an object"),
    ("versions", None, "garbles versions: None is not an object"),
])
def test_a_re_signed_sidecar_of_the_wrong_types_is_refused_by_name(saved, key, value, message):
    """`"mean": "0.1307"`, re-signed, crashed every command that read it with a TypeError."""
    path, _ = saved
    with edited_sidecar(path, resign=True) as sidecar:
        sidecar[key] = value
    with pytest.raises(CheckpointError, match=re.escape(message)):
        read_checkpoint(path)


def test_a_sidecar_without_its_own_checksum_is_refused(saved):
    """Without `sidecar_sha256` the integrity check was skipped altogether."""
    path, _ = saved
    with edited_sidecar(path) as sidecar:
        del sidecar["sidecar_sha256"]
        sidecar["normalization"]["std"] = 0.5  # what the check would have caught
    with pytest.raises(CheckpointError, match="has no sidecar_sha256, so nothing proves it"):
        read_checkpoint(path)


@pytest.mark.parametrize("content", [b"", b"\x00" * 7, np.random.default_rng(0).bytes(5000)])
def test_empty_truncated_or_random_files_are_not_checkpoints(tmp_path, content):
    path = tmp_path / "x.params"
    path.write_bytes(content)
    with pytest.raises(CheckpointError, match="is not an MXNet parameter file"):
        read_checkpoint(path)


def test_a_truncated_params_file_is_not_a_checkpoint(saved, tmp_path):
    path, _ = saved
    (tmp_path / "cut.params").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="not an MXNet parameter file"):
        read_checkpoint(tmp_path / "cut.params")


def test_another_models_parameters_are_refused(tmp_path):
    net = gluon.nn.HybridSequential()
    net.add(gluon.nn.Dense(64, in_units=784), gluon.nn.Dense(32, in_units=64),
            gluon.nn.Dense(10, in_units=32))
    net.initialize()
    net.save_parameters(str(tmp_path / "deep.params"))
    with pytest.raises(CheckpointError, match="is not a two-layer MLP"):
        read_checkpoint(tmp_path / "deep.params")


def test_a_missing_checkpoint_says_what_to_pass(tmp_path):
    with pytest.raises(CheckpointError, match=r"nope\.params does not exist; pass a \.params"):
        read_checkpoint(tmp_path / "nope.params")


@pytest.mark.parametrize("naming", ["sequential", "attributes"])
def test_a_bare_gluon_params_file_is_read_by_its_shapes(tmp_path, naming):
    if naming == "sequential":
        net = gluon.nn.HybridSequential()
        net.add(gluon.nn.Dense(20, activation="relu", in_units=784),
                gluon.nn.Dense(10, in_units=20))
    else:
        net = build_model(Architecture(hidden=20), mx.cpu(), initialize=False)
    net.initialize()
    net.save_parameters(str(tmp_path / "bare.params"))
    checkpoint = read_checkpoint(tmp_path / "bare.params", Normalization(0.0, 1.0))
    assert checkpoint.architecture == Architecture(hidden=20)
    assert checkpoint.normalization == Normalization(0.0, 1.0)
    assert checkpoint.sidecar is None


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = tmp_path / "f.txt"
    path.write_text("old")

    def failing(temporary):
        temporary.write_text("half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        atomic_write(path, failing)
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["f.txt"]


def test_an_existing_run_is_not_overwritten_without_force(tmp_path):
    (tmp_path / "metrics.jsonl").write_text("{}\n")
    (tmp_path / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    with pytest.raises(OutputError, match=r"already holds a run \(metrics\.jsonl\); pass "
                                          r"--resume .* --force .* --out DIR"):
        prepare_run_dir(tmp_path, force=False)
    assert snapshot(tmp_path) == before


def test_force_clears_the_old_runs_files_but_not_the_users(tmp_path):
    for name in ("metrics.jsonl", "config.yaml", "last.params", "last.json", "epoch-0002.states"):
        (tmp_path / name).write_text("x")
    (tmp_path / "notes.txt").write_text("mine")
    prepare_run_dir(tmp_path, force=True)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_a_file_in_the_way_of_the_output_folder_is_reported(tmp_path):
    (tmp_path / "run").write_text("x")
    with pytest.raises(OutputError, match="is a file, not a folder"):
        prepare_run_dir(tmp_path / "run", force=False)


def test_an_unwritable_output_folder_is_reported(tmp_path):
    parent = tmp_path / "locked"
    parent.mkdir()
    with unwritable(parent), pytest.raises(OutputError, match="is not writable"):
        prepare_run_dir(parent / "run", force=False)
