"""train.pretrain: the network trained before its first step on digits drawn from fonts,
prepared as MNIST's were. They teach it real digits without a training image being read, the
run records what they were drawn from, a resumed run does not draw them again, and every misuse
is one line before anything is written."""

import hashlib
import json
import os
import shutil

import numpy as np
import pytest
from scipy import ndimage

from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.cli import run, train_command
from mnist_gluon.config import PretrainConfig, load_config
from mnist_gluon.data import normalise
from mnist_gluon.model import Architecture, network_holding, predict_logits
from mnist_gluon.mxnet_compat import mx
from mnist_gluon.pretraining.pretrain import pretrain
from mnist_gluon.pretraining.rendered_digits import font_files, render_digits
from mnist_gluon.privacy.coverage import PUBLIC_NORMALIZATION
from mnist_gluon.training.run import run_training

FONTS = "/usr/share/fonts/truetype"
PRETRAIN = ["train.pretrain.images=2000", "train.pretrain.epochs=2"]


def test_rendered_digits_are_prepared_as_mnist_was_and_drawn_from_the_seed():
    images, labels = render_digits(300, seed=3, fonts=font_files(FONTS))
    assert images.shape == (300, 28, 28) and images.dtype == np.uint8
    assert set(labels) == set(range(10))
    off_centre = []
    for image in images:
        rows, cols = np.nonzero(image)
        assert np.ptp(rows) < 20 and np.ptp(cols) < 20  # scaled into a 20 x 20 box
        centre = ndimage.center_of_mass(image.astype(np.float64))
        off_centre.append(np.abs(np.subtract(centre, 14)).max())
    # Its mass at the centre, unless that would push the box out of the field.
    assert np.median(off_centre) < 0.5 and np.mean(np.array(off_centre) < 1) > 0.9
    again, same_labels = render_digits(300, seed=3, fonts=font_files(FONTS))
    other, _ = render_digits(300, seed=4, fonts=font_files(FONTS))
    assert np.array_equal(images, again) and np.array_equal(labels, same_labels)
    assert not np.array_equal(images, other)


@pytest.mark.parametrize("arch", [Architecture(), Architecture(kind="lenet", channels=[4, 8],
                                                                 hidden=32)], ids=["mlp", "lenet"])
def test_pretrained_weights_already_read_real_handwritten_digits(arch, test_set):
    arrays, record = pretrain(arch, PUBLIC_NORMALIZATION, mx.cpu(),
                              PretrainConfig(images=6000, epochs=3, fonts=FONTS), seed=0)
    net = network_holding(arch, arrays, mx.cpu())
    inputs = mx.nd.array(normalise(test_set.images[:2000], PUBLIC_NORMALIZATION))
    accuracy = (predict_logits(net, inputs).argmax(axis=1) == test_set.labels[:2000]).mean()
    assert accuracy > 0.5  # against 0.1 for the initialised network
    assert (record.images, record.epochs) == (6000, 3)


def test_the_run_records_its_fonts_and_a_resumed_run_does_not_pretrain_again(small_config,
                                                                               tmp_path):
    run_dir = tmp_path / "run"
    run_training(load_config(small_config, [*PRETRAIN, "train.epochs=1"]), run_dir, quiet=True)
    record = read_checkpoint(run_dir / "last.params").sidecar.pretrained
    fonts = font_files(FONTS)
    digest = hashlib.sha256()
    for font in fonts:
        digest.update(font.name.encode() + b"\0" + font.read_bytes())
    assert record.fonts == [font.name for font in fonts]
    assert record.fonts_sha256 == digest.hexdigest()
    first = json.loads((run_dir / "last.json").read_text())["pretrained"]

    run_training(load_config(small_config, [*PRETRAIN, "train.epochs=2"]), run_dir,
                 resume=True, quiet=True)
    resumed = json.loads((run_dir / "last.json").read_text())
    assert resumed["epoch"] == 2 and resumed["pretrained"] == first  # seconds included


def test_a_file_that_cannot_draw_the_digits_is_left_out_and_nothing_waits_on_a_pipe(tmp_path):
    folder = tmp_path / "fonts"
    folder.mkdir()
    (folder / "junk.ttf").write_bytes(b"not a font\n" * 100)
    os.mkfifo(folder / "pipe.ttf")
    real = font_files(FONTS)[0]
    shutil.copy(real, folder / real.name)
    assert font_files(str(folder)) == [folder / real.name]


@pytest.mark.parametrize("overrides, message", [
    (["train.pretrain.fonts={empty}"],
     "train.pretrain.fonts={empty} holds no .ttf font that draws the digits; install some "
     "(Debian: fonts-dejavu-core) or point it at a folder of them"),
    (["data.name=fashion-mnist"],
     "train.pretrain.images is 2000; it must be null with data.name=fashion-mnist, "
     "model.classes other than 10 (it draws the 10 digits) or train.prune.start_from"),
    (["train.pretrain.images=10"], "train.pretrain.images is 10; it must be null, or in "
                                   "[1000, 200000]"),
    (["train.pretrain.epochs=0"], "train.pretrain.epochs is 0; it must be in [1, 100]"),
])
def test_each_misuse_is_one_line_exit_2_and_no_folder(small_config, tmp_path, capsys,
                                                      overrides, message):
    empty = tmp_path / "no-fonts"
    empty.mkdir()
    (empty / "junk.ttf").write_bytes(b"not a font\n" * 100)
    out = tmp_path / "run"
    args = ["--config", str(small_config), "--out", str(out), "--quiet"]
    for override in [*PRETRAIN, *overrides]:
        args += ["--set", override.format(empty=empty)]
    assert run(train_command, args) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"mnist-train: error: {message.format(empty=empty)}")
    assert err.count("\n") == 1 and not out.exists()
