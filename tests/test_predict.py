"""mnist-predict: images of any kind, .npy and IDX files, folders, bad files."""

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mnist_gluon.cli import predict_command, run
from support import as_drawn, write_idx


def predictions(capsys, *args) -> tuple[int, list[dict], str]:
    code = run(predict_command, [*map(str, args), "--json"])
    out, err = capsys.readouterr()
    return code, json.loads(out), err


def write_array(path: Path, array: np.ndarray) -> Path:
    np.save(path, array)
    return path


def test_drawn_colour_and_inverted_images_of_any_size_get_the_digits_own_label(
        model, test_set, tmp_path, capsys):
    picked = range(12)
    code, raw, _ = predictions(capsys, "--checkpoint", model, *[
        write_array(tmp_path / f"raw{i}.npy", test_set.images[i]) for i in picked])
    assert code == 0
    for i in picked:
        Image.fromarray(as_drawn(test_set.images[i])).save(tmp_path / f"drawn{i:02d}.png")
        Image.fromarray(as_drawn(test_set.images[i])).save(tmp_path / f"drawn{i:02d}.jpg",
                                                           quality=90)
    code, drawn, _ = predictions(capsys, "--checkpoint", model, "--top-k", "2",
                                 *sorted(tmp_path.glob("drawn*")))
    assert code == 0 and len(drawn) == 24
    by_file = {Path(d["path"]).name: d for d in drawn}
    agree = [by_file[f"drawn{i:02d}.{ext}"]["label"] == raw[i]["label"]
             for i in picked for ext in ("png", "jpg")]
    assert sum(agree) >= 22, drawn  # the preprocessing gives back MNIST's form
    assert sum(r["label"] == test_set.labels[i] for i, r in zip(picked, raw, strict=True)) >= 11
    first = drawn[0]
    assert set(first) == {"path", "label", "top_k"} and len(first["top_k"]) == 2
    assert first["top_k"][0]["label"] == first["label"]
    assert first["top_k"][0]["probability"] >= first["top_k"][1]["probability"]


def test_a_28x28_grey_png_white_on_black_is_taken_as_it_is(model, test_set, tmp_path, capsys):
    Image.fromarray(test_set.images[0]).save(tmp_path / "seven.png")
    code, out, _ = predictions(capsys, "--checkpoint", model, tmp_path / "seven.png")
    assert code == 0 and out[0]["label"] == 7


def test_npy_stacks_and_idx_files_give_one_prediction_per_image(model, test_set, tmp_path,
                                                                 capsys):
    np.save(tmp_path / "floats.npy", test_set.images[:5].reshape(5, 784) / 255.0)
    write_idx(tmp_path / "five-idx3-ubyte", test_set.images[:5])
    code, out, _ = predictions(capsys, "--checkpoint", model, tmp_path / "floats.npy",
                               tmp_path / "five-idx3-ubyte")
    assert code == 0
    assert [(Path(o["path"]).name, o["index"]) for o in out] == (
        [("floats.npy", i) for i in range(5)] + [("five-idx3-ubyte", i) for i in range(5)])
    assert [o["label"] for o in out[:5]] == [o["label"] for o in out[5:]]
    assert [o["label"] for o in out[:5]] == test_set.labels[:5].tolist()


def test_a_folder_is_every_file_in_it_and_bad_files_are_reported_not_fatal(model, test_set,
                                                                           tmp_path, capsys):
    folder = tmp_path / "inbox"
    folder.mkdir()
    Image.fromarray(as_drawn(test_set.images[1])).save(folder / "a.png")
    (folder / "b.png").write_bytes(b"not an image at all")
    np.save(folder / "c.npy", np.zeros((3, 5)))
    Image.fromarray(as_drawn(test_set.images[2])).save(folder / "d.jpg")
    code, out, err = predictions(capsys, "--checkpoint", model, folder)
    assert code == 1
    assert [Path(o["path"]).name for o in out] == ["a.png", "d.jpg"]
    lines = err.strip().splitlines()
    assert len(lines) == 2 and "Traceback" not in err
    assert "b.png is not a PNG, JPEG or BMP image" in lines[0]
    assert "c.npy holds an array of shape (3, 5)" in lines[1]


def test_plain_output_is_one_line_per_image(model, test_set, tmp_path, capsys):
    np.save(tmp_path / "two.npy", test_set.images[:2])
    assert run(predict_command, ["--checkpoint", str(model), str(tmp_path / "two.npy")]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    ranked = r"\(7 [01]\.\d{3}  \d [01]\.\d{3}  \d [01]\.\d{3}\)"
    assert len(lines) == 2
    assert re.fullmatch(re.escape(f"{tmp_path / 'two.npy'}[0]: 7  ") + ranked, lines[0])


def test_fifos_devices_and_enormous_images_are_skipped_not_read(model, test_set, tmp_path,
                                                               capsys):
    """Reading a FIFO hangs and /dev/zero never ends; a small PNG can claim more pixels than
    memory holds. Each is named and skipped; the good file is still classified."""
    fifo = tmp_path / "pipe.png"
    os.mkfifo(fifo)
    device = tmp_path / "zero.png"
    device.symlink_to("/dev/zero")
    huge = tmp_path / "huge.png"
    Image.new("L", (5000, 4000)).save(huge)  # 20 million pixels, a 20 KB file
    good = tmp_path / "good.png"
    Image.fromarray(as_drawn(test_set.images[0])).save(good)
    code, out, err = predictions(capsys, "--checkpoint", model, fifo, device, huge, good)
    assert code == 1 and [Path(o["path"]).name for o in out] == ["good.png"]
    assert f"skipped: {fifo} is a FIFO, not a file" in err
    assert f"skipped: {device} is a device, not a file" in err
    assert f"skipped: {huge} is 5000 x 4000 pixels, more than the 16,777,216 allowed" in err


def test_a_png_the_decoder_would_refuse_is_refused_not_guessed(model, tmp_path, capsys):
    tall = tmp_path / "tall.png"
    Image.new("L", (1, 2_000_000), 255).save(tall)
    assert run(predict_command, ["--checkpoint", str(model), str(tall)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == (f"mnist-predict: error: {tall} is 1 x 2000000 pixels; a side "
                                 "over 1,000,000 pixels cannot be decoded\n")


def test_an_image_with_nothing_drawn_is_refused_not_given_a_label(model, test_set, tmp_path,
                                                                   capsys):
    """A fully transparent PNG (an empty canvas export) was predicted "5 (0.665)"."""
    empty = tmp_path / "empty.png"
    Image.new("RGBA", (280, 280), (0, 0, 0, 0)).save(empty)
    blank_paper = tmp_path / "paper.jpg"
    Image.new("RGB", (300, 300), (250, 250, 250)).save(blank_paper)
    good = tmp_path / "good.png"
    Image.fromarray(as_drawn(test_set.images[0])).save(good)
    code, out, err = predictions(capsys, "--checkpoint", model, empty, blank_paper, good)
    assert code == 1 and [Path(o["path"]).name for o in out] == ["good.png"]
    assert f"skipped: {empty} has nothing drawn on it" in err
    assert f"skipped: {blank_paper} has nothing drawn on it" in err
    # Alone, it is the command's error: one line, exit 2.
    assert run(predict_command, ["--checkpoint", str(model), str(empty)]) == 2
    assert capsys.readouterr().err.count("\n") == 1


def test_a_digit_drawn_on_a_transparent_background_is_read_as_drawn(model, test_set, tmp_path,
                                                                     capsys):
    """Canvas exports keep only the ink opaque: black strokes, and around them pixels whose
    colour is black too but fully transparent. Seen on paper, that is a dark digit on white."""
    picked = range(12)
    for i in picked:
        ink = np.kron(test_set.images[i], np.ones((8, 8))).astype(np.uint8)
        rgba = np.zeros(ink.shape + (4,), np.uint8)
        rgba[..., 3] = ink  # black everywhere, opaque only where the digit was drawn
        Image.fromarray(rgba, "RGBA").save(tmp_path / f"clear{i:02d}.png")
        Image.fromarray(np.stack([ink, ink], axis=-1), "LA").save(
            tmp_path / f"white-ink{i:02d}.png")  # white strokes, a see-through black around
    code, out, _ = predictions(capsys, "--checkpoint", model, *sorted(tmp_path.glob("*.png")))
    assert code == 0
    right = [p["label"] == test_set.labels[int(Path(p["path"]).stem[-2:])] for p in out]
    assert sum(right) >= 22, out


def test_nothing_drawn_is_refused_alike_from_an_array_a_npy_and_an_idx_file(model, test_set,
                                                                            tmp_path, capsys):
    """An all-zero .npy, an IDX file holding a blank image and an array given to the API were
    each called "5 (0.945)"."""
    import mnist_gluon
    from mnist_gluon.errors import DataError

    np.save(tmp_path / "zeros.npy", np.zeros((28, 28), np.uint8))
    np.save(tmp_path / "ones.npy", np.ones((2, 784), np.float32))  # 0-1 floats: 255 each
    write_idx(tmp_path / "two-idx3-ubyte", np.stack([test_set.images[0],
                                                     np.zeros((28, 28), np.uint8)]))
    for name, where in (("zeros.npy", "zeros.npy"), ("ones.npy", "ones.npy[0]"),
                        ("two-idx3-ubyte", "two-idx3-ubyte[1]")):
        assert run(predict_command, ["--checkpoint", str(model), str(tmp_path / name)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and f"{where} has nothing drawn on it" in err, err
    classifier = mnist_gluon.load(model)
    for blank in (np.zeros((28, 28)), np.full((3, 784), 17.0), [[0.0] * 784]):
        with pytest.raises(DataError, match="has nothing drawn on it"):
            classifier.predict(blank)
    assert classifier.predict(test_set.images[:2]).labels.shape == (2,)
