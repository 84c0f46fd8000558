"""train.distill: a student learns from a teacher checkpoint's answers on its own batches."""

import json

import numpy as np
import pytest

from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.cli import run, train_command
from mnist_gluon.config import load_config
from mnist_gluon.files import sha256_of
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.training.distill import distillation_loss
from mnist_gluon.training.run import run_training
from support import LENET, stopped_then_resumed


@pytest.fixture(scope="module")
def teacher(small_mnist, tmp_path_factory):
    """A LeNet trained on small_config's data: a teacher for its MLP students."""
    from support import write_small_config

    folder = tmp_path_factory.mktemp("teacher")
    config = write_small_config(folder / "small.yaml", small_mnist)
    run_training(load_config(config, [*LENET, "train.epochs=2"]), folder / "run", quiet=True)
    return folder / "run" / "best.params"


def params_of(path) -> dict:
    return {k: v.asnumpy() for k, v in mx.nd.load(str(path)).items()}


def test_the_loss_is_weighted_kl_at_the_temperature_plus_cross_entropy():
    rng = np.random.default_rng(0)
    student, teacher = rng.normal(size=(5, 10)) * 3, rng.normal(size=(5, 10)) * 3
    labels_loss = rng.uniform(size=5)
    temperature, weight = 4.0, 0.7
    got = distillation_loss(mx.nd, mx.nd.array(student), mx.nd.array(teacher),
                            mx.nd.array(labels_loss), temperature, weight).asnumpy()

    def log_softmax(z):
        z = z - z.max(axis=1, keepdims=True)
        return z - np.log(np.exp(z).sum(axis=1, keepdims=True))

    p_teacher = np.exp(log_softmax(teacher / temperature))
    kl = (p_teacher * (log_softmax(teacher / temperature)
                       - log_softmax(student / temperature))).sum(axis=1)
    np.testing.assert_allclose(got, weight * temperature**2 * kl + (1 - weight) * labels_loss,
                               rtol=1e-4, atol=1e-5)  # float32


def test_a_student_records_its_teacher_and_learns_from_it(small_config, teacher, tmp_path):
    run_dir = tmp_path / "student"
    plain = tmp_path / "plain"
    run_training(load_config(small_config, [f"train.distill.teacher={teacher}"]), run_dir,
                 quiet=True)
    run_training(load_config(small_config), plain, quiet=True)
    sidecar = read_checkpoint(run_dir / "last.params").sidecar
    assert sidecar.teacher.path == str(teacher.resolve())
    assert sidecar.teacher.sha256 == sha256_of(teacher)
    assert sidecar.architecture.kind == "mlp"  # the student is the run's own model
    assert params_of(run_dir / "last.params").keys() == params_of(plain / "last.params").keys()
    distilled = [json.loads(line)["val_accuracy"] for line in
                 (run_dir / "metrics.jsonl").read_text().splitlines()]
    alone = [json.loads(line)["val_accuracy"] for line in
             (plain / "metrics.jsonl").read_text().splitlines()]
    assert distilled != alone


def test_weight_zero_trains_exactly_as_without_a_teacher(small_config, teacher, tmp_path):
    run_training(load_config(small_config, [f"train.distill.teacher={teacher}",
                                            "train.distill.weight=0"]), tmp_path / "zero",
                 quiet=True)
    run_training(load_config(small_config), tmp_path / "plain", quiet=True)
    left, right = params_of(tmp_path / "zero/last.params"), params_of(
        tmp_path / "plain/last.params")
    for name in left:
        np.testing.assert_array_equal(left[name], right[name], err_msg=name)


def test_a_stopped_student_resumes_exactly_with_smoothing_averaging_and_shifts(
        small_config, teacher, tmp_path):
    overrides = [f"train.distill.teacher={teacher}", "train.label_smoothing=0.1",
                 "train.average.start_epoch=1", "data.augment.shift=1", "train.epochs=2"]
    run_training(load_config(small_config, overrides), tmp_path / "whole", quiet=True)
    stopped_then_resumed(small_config, overrides, tmp_path / "stopped", step=63)
    for kind in ("last", "best"):
        left = params_of(tmp_path / f"whole/{kind}.params")
        right = params_of(tmp_path / f"stopped/{kind}.params")
        for name in left:
            np.testing.assert_array_equal(left[name], right[name], err_msg=f"{kind} {name}")


def test_a_changed_teacher_is_refused_on_resume(small_config, teacher, tmp_path, capsys):
    copy = tmp_path / "teacher"
    copy.mkdir()
    for suffix in (".params", ".json", ".states"):
        (copy / f"best{suffix}").write_bytes(teacher.with_suffix(suffix).read_bytes())
    run_dir = tmp_path / "student"
    run_training(load_config(small_config, [f"train.distill.teacher={copy / 'best.params'}",
                                            "train.epochs=1"]), run_dir, quiet=True)
    run_training(load_config(small_config, [*LENET, "train.epochs=1"]), tmp_path / "other",
                 quiet=True)
    other = tmp_path / "other" / "best.params"
    for suffix in (".params", ".json"):
        (copy / f"best{suffix}").write_bytes(other.with_suffix(suffix).read_bytes())
    before = (run_dir / "last.params").read_bytes()
    capsys.readouterr()
    assert run(train_command, ["--resume", str(run_dir), "--set", "train.epochs=2"]) == 2
    err = capsys.readouterr().err
    assert "is not the teacher this run began with" in err and len(err.splitlines()) == 1
    assert (run_dir / "last.params").read_bytes() == before


@pytest.mark.parametrize("make, message", [
    (lambda t, tmp: tmp / "nothing.params", "does not exist"),
    (lambda t, tmp: bare(t, tmp), "has no sidecar: pass a checkpoint mnist-train wrote"),
    (lambda t, tmp: compressed(t, tmp), "is a compressed model"),
])
def test_a_teacher_that_is_not_one_of_ours_is_refused_in_one_line(small_config, teacher,
                                                                  tmp_path, capsys, make,
                                                                  message):
    path = make(teacher, tmp_path)
    out = tmp_path / "student"
    assert run(train_command, ["--config", str(small_config), "--out", str(out), "--set",
                               f"train.distill.teacher={path}"]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.splitlines()) == 1 and "train.distill.teacher" in err
    assert not out.exists()


def compressed(teacher, tmp_path):
    from mnist_gluon.compression.mnc import encode

    (tmp_path / "model.mnc").write_bytes(encode(read_checkpoint(teacher)))
    return tmp_path / "model.mnc"


def bare(teacher, tmp_path):
    (tmp_path / "bare.params").write_bytes(teacher.read_bytes())
    return tmp_path / "bare.params"


def test_a_teacher_of_another_dataset_is_refused(small_config, teacher, fashion_dir, tmp_path,
                                                 capsys):
    fashion = tmp_path / "fashion"
    run_training(load_config(small_config, [
        "data.name=fashion-mnist", f"data.root={fashion_dir}", "data.verify=true",
        "data.val_size=59000", "train.epochs=1"]), fashion, quiet=True)
    assert run(train_command, ["--config", str(small_config), "--out", str(tmp_path / "s"),
                               "--set", f"train.distill.teacher={fashion / 'best.params'}"]) == 2
    err = capsys.readouterr().err
    assert "was trained on fashion-mnist with 10 classes, this run is mnist" in err


def test_precomputed_soft_targets_are_the_teacher_s_answers_on_the_unaugmented_images(
        small_config, teacher, tmp_path):
    """Without augmentation, the student sees what the teacher saw: precomputed targets train
    it as the teacher inside the graph does, to float rounding (MKLDNN sums a batch of 50 and
    one of 2,500 in other orders)."""
    runs = {}
    for targets in ("batch", "precomputed"):
        runs[targets] = tmp_path / targets
        run_training(load_config(small_config, [f"train.distill.teacher={teacher}",
                                                f"train.distill.soft_targets={targets}"]),
                     runs[targets], quiet=True)
    left, right = params_of(runs["batch"] / "last.params"), params_of(
        runs["precomputed"] / "last.params")
    for name in left:
        np.testing.assert_allclose(left[name], right[name], atol=1e-4, err_msg=name)


def test_an_mlp_teacher_normalised_otherwise_answers_as_its_own_checkpoint_does(
        model, small_config, test_set):
    """The conftest model (an MLP of all of MNIST) teaches a student of small_config, whose
    images are normalised by other statistics: the change is folded into the teacher's first
    layer, so it answers as mnist-eval's network of it does."""
    from mnist_gluon.data import Normalization
    from mnist_gluon.inference.classifier import load
    from mnist_gluon.training.distill import read_teacher

    config = load_config(small_config, [f"train.distill.teacher={model}",
                                        "train.distill.soft_targets=precomputed"])
    pixels = test_set.images[:300].reshape(300, -1)
    student = Normalization(0.12, 0.29)
    teacher = read_teacher(config, student, pixels, [mx.cpu()])
    assert load(model).normalization != student
    expected = load(model).pixel_net(mx.nd.array(pixels)).asnumpy()
    np.testing.assert_allclose(teacher.targets, expected, rtol=1e-4, atol=1e-4)
