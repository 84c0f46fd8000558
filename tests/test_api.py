"""The public Python API: the functions the commands run, for a script or a notebook."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest

import mnist_gluon
from mnist_gluon.errors import CheckpointError, ConfigError
from support import BIN, as_drawn


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_train_makes_the_run_that_mnist_train_makes(small_config, tmp_path):
    run = mnist_gluon.train(small_config, tmp_path / "api", train={"epochs": 1}, quiet=True)
    subprocess.run([BIN / "mnist-train", "--config", str(small_config), "--out",
                    str(tmp_path / "cli"), "--set", "train.epochs=1", "--quiet"],
                   check=True, capture_output=True)
    for name in ("last.params", "best.params", "config.yaml"):
        assert sha256(tmp_path / "api" / name) == sha256(tmp_path / "cli" / name)
    assert run.best_checkpoint == tmp_path / "api" / "best.params"
    assert [epoch.epoch for epoch in run.history] == [1]
    assert run.best_val_accuracy == run.history[0].val_accuracy
    assert run.config.train.epochs == 1


def test_a_section_given_as_a_mapping_keeps_the_configs_other_keys(small_config, tmp_path):
    as_mapping = mnist_gluon.train(small_config, tmp_path / "a", train={"epochs": 1},
                                   quiet=True)
    dotted = mnist_gluon.train(small_config, tmp_path / "b", quiet=True,
                               **{"train.epochs": 1})
    assert as_mapping.config == dotted.config
    assert as_mapping.config.train.batch_size == 50  # from the YAML file
    assert sha256(tmp_path / "a/last.params") == sha256(tmp_path / "b/last.params")


def test_a_config_object_trains_with_overrides_on_top(small_config, tmp_path):
    from mnist_gluon.config import load_config

    run = mnist_gluon.train(load_config(small_config), tmp_path / "run", seed=3,
                            train={"epochs": 1}, quiet=True)
    assert run.config.seed == 3 and run.config.model.hidden == 32


def test_resume_continues_the_run_in_its_folder(small_config, tmp_path):
    mnist_gluon.train(small_config, tmp_path / "run", train={"epochs": 1}, quiet=True)
    run = mnist_gluon.train(None, tmp_path / "run", resume=True, train={"epochs": 2},
                            quiet=True)
    assert [epoch.epoch for epoch in run.history] == [1, 2]


def test_evaluate_reports_what_mnist_eval_json_prints(model, mnist_dir):
    report = mnist_gluon.evaluate(model, data_root=str(mnist_dir))
    printed = subprocess.run([BIN / "mnist-eval", "--checkpoint", str(model), "--json",
                              "--data-root", str(mnist_dir)],
                             check=True, capture_output=True, text=True).stdout
    assert report.to_dict() == json.loads(printed)
    assert report.accuracy == json.loads(printed)["accuracy"]
    assert report.confusion.sum() == 10_000 and report.confusion.shape == (10, 10)
    assert str(report).startswith(f"{model} on the mnist test set")


def test_the_report_draws_the_confusion_matrix_and_the_worst_mistakes_explained(model, mnist_dir,
                                                                      tmp_path):
    report = mnist_gluon.evaluate(model, data_root=str(mnist_dir))
    written = report.plot(tmp_path / "plots")
    assert [path.name for path in written] == ["confusion.png", "mistakes.png",
                                               "mistakes-explained.png"]
    for path in written:
        assert PIL.Image.open(path).size[0] >= 700


def test_predict_takes_arrays_of_either_shape_and_scale(model, test_set):
    classifier = mnist_gluon.load(model)
    images = test_set.images[:200]
    as_uint8 = classifier.predict(images)
    assert as_uint8.labels.shape == (200,)
    assert as_uint8.probabilities.shape == (200, 10)
    np.testing.assert_allclose(as_uint8.probabilities.sum(axis=1), 1.0)
    assert np.mean(as_uint8.labels == test_set.labels[:200]) > 0.9
    flat_floats = classifier.predict(images.reshape(200, 784).astype(np.float32) / 255)
    np.testing.assert_array_equal(flat_floats.labels, as_uint8.labels)
    one, = classifier.predict(images[0]).labels
    assert one == as_uint8.labels[0]


def test_predict_on_a_png_and_a_pil_image_agrees_with_mnist_predict(model, test_set, tmp_path):
    drawn = as_drawn(test_set.images[0])
    path = tmp_path / "drawn.png"
    PIL.Image.fromarray(drawn).save(path)
    printed = subprocess.run([BIN / "mnist-predict", "--checkpoint", str(model), str(path),
                              "--json"], check=True, capture_output=True, text=True).stdout
    classifier = mnist_gluon.load(model)
    from_file = classifier.predict(path)
    from_image = classifier.predict(PIL.Image.fromarray(drawn))
    assert from_file.labels[0] == json.loads(printed)[0]["label"] == test_set.labels[0]
    np.testing.assert_array_equal(from_file.probabilities, from_image.probabilities)
    both = classifier.predict([path, test_set.images[1]])
    assert list(both.labels) == [test_set.labels[0], test_set.labels[1]]


def test_the_classifier_holds_the_network_as_trained_and_what_its_sidecar_says(model,
                                                                                test_set):
    from mnist_gluon import mx

    classifier = mnist_gluon.load(model)
    assert classifier.architecture.hidden == 128
    norm = classifier.normalization
    images = test_set.images[:50].reshape(50, 784).astype(np.float32)
    logits = classifier.net(mx.nd.array((images / 255 - norm.mean) / norm.std)).asnumpy()
    np.testing.assert_array_equal(logits.argmax(axis=1),
                                  classifier.predict(test_set.images[:50]).labels)


def test_errors_are_the_typed_errors_the_commands_print(model, tmp_path):
    missing = tmp_path / "nothing.params"
    with pytest.raises(CheckpointError) as raised:
        mnist_gluon.load(missing)
    printed = subprocess.run([BIN / "mnist-eval", "--checkpoint", str(missing)],
                             capture_output=True, text=True).stderr
    assert printed.strip() == f"mnist-eval: error: {raised.value}"
    with pytest.raises(ConfigError, match="unknown config key train.learning_rat"):
        mnist_gluon.train("base", tmp_path / "run", **{"train.learning_rat": 0.1})
    with pytest.raises(mnist_gluon.UserError, match="not pixel values"):
        mnist_gluon.load(model).predict(np.array(["a"]))


def test_importing_the_package_leaves_mxnet_unloaded_until_it_is_used():
    probe = ("import sys, mnist_gluon; print('mxnet' in sys.modules); "
             "from mnist_gluon import mx; print('mxnet' in sys.modules, mx.nd.ones(2).sum())")
    printed = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True,
                             text=True).stdout.split("\n")
    assert printed[0] == "False"
    assert printed[1].startswith("True")


def test_every_public_name_says_what_it_is():
    for name in mnist_gluon.__all__:
        assert getattr(mnist_gluon, name).__doc__, name
    assert sorted(dir(mnist_gluon)) == sorted([*mnist_gluon.__all__, "__version__"])


def test_a_refused_train_leaves_the_folder_free_and_names_the_apis_keywords(small_config,
                                                                           tmp_path):
    out = tmp_path / "run"
    mnist_gluon.train(small_config, out, train={"epochs": 1}, quiet=True)
    with pytest.raises(mnist_gluon.UserError) as refused:
        mnist_gluon.train(small_config, out, train={"epochs": 1}, quiet=True)
    message = str(refused.value)
    assert "resume=True" in message and "force=True" in message and "out=DIR" in message
    assert "--" not in message
    # The same process goes on: neither call is told the folder is in use by itself.
    resumed = mnist_gluon.train(small_config, out, resume=True, train={"epochs": 2}, quiet=True)
    assert [epoch.epoch for epoch in resumed.history] == [1, 2]
    again = mnist_gluon.train(small_config, out, force=True, train={"epochs": 1}, quiet=True)
    assert [epoch.epoch for epoch in again.history] == [1]


def test_a_missing_data_folder_is_named_with_the_data_keyword(small_config, tmp_path):
    with pytest.raises(mnist_gluon.UserError) as missing:
        mnist_gluon.train(small_config, tmp_path / "run", data={"root": str(tmp_path / "none"),
                                                                "download": False})
    assert 'pass data={"root": DIR}' in str(missing.value)
    assert "--" not in str(missing.value)
    assert not (tmp_path / "run").exists()


def test_the_commands_keep_their_flags_in_the_same_message(small_config, tmp_path):
    done = subprocess.run([BIN / "mnist-train", "--config", str(small_config), "--out",
                           str(tmp_path / "run"), "--data-root", str(tmp_path / "none"), "--set",
                           "data.download=false"], capture_output=True, text=True)
    assert done.returncode == 2
    assert "or pass --data-root DIR pointing at a folder" in done.stderr


@pytest.mark.parametrize("call, words", [
    (lambda m: mnist_gluon.train("base", "out", force="yes"),
     "mnist_gluon.train: force must be True or False, not 'yes'"),
    (lambda m: mnist_gluon.train(123), "config must be a string or a Path or a Config or None"),
    (lambda m: mnist_gluon.train("base", "out", set="train.lr=1"),
     "set must be a list of strings, not 'train.lr=1'"),
    (lambda m: mnist_gluon.load(m, device=0), "mnist_gluon.load: device must be a string, not 0"),
    (lambda m: mnist_gluon.load(m, bogus=1), "got an unexpected keyword argument 'bogus'"),
    (lambda m: mnist_gluon.evaluate(m, download="no"), "download must be True or False"),
    (lambda m: mnist_gluon.evaluate(m, 3), "dataset must be a string or None, not 3"),
    (lambda m: mnist_gluon.export(m, 5), "mnist_gluon.export: out must be a string or a Path"),
    (lambda m: mnist_gluon.export(m, "out", format=None), "format must be a string, not None"),
])
def test_every_api_argument_is_checked_as_its_flag_is(model, tmp_path, monkeypatch, call,
                                                      words):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as refused:
        call(model)
    assert words in str(refused.value)
    assert list(tmp_path.iterdir()) == []
