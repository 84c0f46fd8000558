import gzip
import shutil

import numpy as np
import pytest

from mnist_gluon.data import (
    DATASETS,
    epoch_order,
    fit_normalization,
    gluon_cache_root,
    normalise,
    parse_idx,
    read_split,
    split_steps,
    split_validation,
)
from mnist_gluon.errors import DataError
from support import MNIST_FILES, idx_bytes, write_idx

MNIST = DATASETS["mnist"]
TRAIN_LABEL_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
TEST_LABEL_COUNTS = [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --- the IDX format --------------------------------------------------------------------------

def test_idx_round_trip_keeps_shape_and_values():
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    decoded = parse_idx(idx_bytes(array), "x")
    assert decoded.shape == (2, 3, 4)
    np.testing.assert_array_equal(decoded, array)


def test_idx_other_item_types_decode_big_endian():
    raw = bytes([0, 0, 0x0C, 1]) + (2).to_bytes(4, "big") + (258).to_bytes(4, "big") + (
        (-1).to_bytes(4, "big", signed=True))
    np.testing.assert_array_equal(parse_idx(raw, "ints"), [258, -1])


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", r"x is not an IDX file: only 0 bytes"),
        (b"\x00\x00\x08\x01\x00\x00", r"x is truncated: its header needs 8 bytes"),
        (b"PK\x03\x04" + bytes(20), r"x is not an IDX file: bad magic number"),
        (b"\x00\x00\x07\x01" + bytes(8), r"bad magic number"),
        (bytes([0, 0, 8, 1]) + (5).to_bytes(4, "big") + bytes(3),
         r"x is truncated, or its header's dimensions are wrong: .*5 items"),
        # a header that claims more than any IDX file holds is not read on
        (bytes([0, 0, 8, 3]) + (60000).to_bytes(4, "big") + (2800).to_bytes(4, "big") * 2,
         r"x's header claims 60000x2800x2800 items .* its dimensions are wrong"),
        (bytes([0, 0, 8, 1]) + (2).to_bytes(4, "big") + bytes(3), r"longer than its header says"),
    ],
)
def test_malformed_idx_is_a_data_error_naming_the_file(raw, message):
    with pytest.raises(DataError, match=message):
        parse_idx(raw, "x")


# --- the real files ---------------------------------------------------------------------------

def test_real_mnist_training_split_has_the_published_counts(mnist_dir):
    split = read_split(MNIST, "train", mnist_dir, download=False)
    assert split.images.shape == (60000, 28, 28) and split.images.dtype == np.uint8
    assert np.bincount(split.labels).tolist() == TRAIN_LABEL_COUNTS
    assert split.checksums["train-images-idx3-ubyte.gz"] == MNIST.train_images.content_sha1


def test_real_mnist_test_split_has_the_published_counts(mnist_dir):
    split = read_split(MNIST, "test", mnist_dir, download=False)
    assert np.bincount(split.labels).tolist() == TEST_LABEL_COUNTS


def test_uncompressed_files_are_read_and_verified_by_their_content(mnist_dir, tmp_path):
    for name in MNIST_FILES[2:]:
        (tmp_path / name.removesuffix(".gz")).write_bytes(gzip.decompress(
            (mnist_dir / name).read_bytes()))
    split = read_split(MNIST, "test", tmp_path, download=False, verify=True)
    assert np.bincount(split.labels).tolist() == TEST_LABEL_COUNTS


def test_fashion_mnist_is_found_in_debians_folder(fashion_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))  # an empty Gluon cache
    split = read_split(DATASETS["fashion-mnist"], "test", download=False)
    assert split.images.shape == (10000, 28, 28)
    assert np.bincount(split.labels).tolist() == [1000] * 10


def test_default_root_is_gluons_cache_under_mxnet_home(mnist_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("MXNET_HOME", str(tmp_path))
    cache = tmp_path / "datasets" / "mnist"
    cache.mkdir(parents=True)
    for name in MNIST_FILES[2:]:
        shutil.copy(mnist_dir / name, cache / name)
    assert gluon_cache_root("mnist") == cache
    assert len(read_split(MNIST, "test", download=False).labels) == 10000


def test_checksum_mismatch_names_the_file_and_the_way_out(mnist_dir, tmp_path):
    shutil.copy(mnist_dir / MNIST_FILES[2], tmp_path / MNIST_FILES[2])
    labels = gzip.decompress((mnist_dir / MNIST_FILES[3]).read_bytes())
    altered = labels[:8] + bytes([(labels[8] + 1) % 10]) + labels[9:]
    (tmp_path / MNIST_FILES[3]).write_bytes(gzip.compress(altered))
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte\.gz fails its checksum.*"
                                         r"--set data\.verify=false"):
        read_split(MNIST, "test", tmp_path, download=False)
    assert len(read_split(MNIST, "test", tmp_path, download=False, verify=False).labels) == 10000


def test_damaged_gzip_is_reported(mnist_dir, tmp_path):
    shutil.copy(mnist_dir / MNIST_FILES[3], tmp_path / MNIST_FILES[3])
    (tmp_path / MNIST_FILES[2]).write_bytes((mnist_dir / MNIST_FILES[2]).read_bytes()[:5000])
    with pytest.raises(DataError, match=r"t10k-images-idx3-ubyte\.gz is a damaged gzip file"):
        read_split(MNIST, "test", tmp_path, download=False)


def own_files(folder, images, labels):
    write_idx(folder / "t10k-images-idx3-ubyte", images)
    write_idx(folder / "t10k-labels-idx1-ubyte", labels)


def test_images_and_labels_of_different_lengths_are_rejected(tmp_path):
    own_files(tmp_path, np.zeros((5, 28, 28), np.uint8), np.zeros(4, np.uint8))
    with pytest.raises(DataError, match="has 5 images but .* has 4 labels"):
        read_split(MNIST, "test", tmp_path, download=False, verify=False)


def test_images_of_the_wrong_size_are_rejected(tmp_path):
    own_files(tmp_path, np.zeros((5, 32, 32), np.uint8), np.zeros(5, np.uint8))
    with pytest.raises(DataError, match=r"shape \(5, 32, 32\), not uint8 images of 28x28"):
        read_split(MNIST, "test", tmp_path, download=False, verify=False)


def test_labels_beyond_the_classes_are_rejected(tmp_path):
    own_files(tmp_path, np.zeros((2, 28, 28), np.uint8), np.array([1, 12], np.uint8))
    with pytest.raises(DataError, match="has label 12, beyond the 10 classes"):
        read_split(MNIST, "test", tmp_path, download=False, verify=False)


def test_a_directory_in_place_of_a_file_is_reported(tmp_path):
    (tmp_path / "t10k-images-idx3-ubyte").mkdir()
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(2, np.uint8))
    with pytest.raises(DataError, match="is a directory, not a file"):
        read_split(MNIST, "test", tmp_path, download=False, verify=False)


def test_missing_files_without_download_say_which_and_where(tmp_path):
    with pytest.raises(DataError) as error:
        read_split(MNIST, "test", tmp_path, download=False)
    assert str(error.value) == (
        f"mnist files missing from {tmp_path} (t10k-images-idx3-ubyte.gz, "
        "t10k-labels-idx1-ubyte.gz); copy the four mnist files (train-images-idx3-ubyte.gz, "
        "train-labels-idx1-ubyte.gz, t10k-images-idx3-ubyte.gz, t10k-labels-idx1-ubyte.gz; gzip "
        f"or uncompressed) into {tmp_path}, or pass --data-root DIR pointing at a folder that "
        "has them")


# --- downloads, from a real HTTP server on 127.0.0.1 ---------------------------------------

def test_missing_files_are_downloaded_verified_and_written_whole(mnist_dir, http_server, tmp_path):
    served, url = http_server
    for name in MNIST_FILES[2:]:
        shutil.copy(mnist_dir / name, served / name)
    root = tmp_path / "fresh" / "mnist"
    split = read_split(MNIST, "test", root, download=True, mirrors=[url])
    assert np.bincount(split.labels).tolist() == TEST_LABEL_COUNTS
    assert sorted(p.name for p in root.iterdir()) == sorted(MNIST_FILES[2:])  # no temp files
    assert (root / MNIST_FILES[2]).read_bytes() == (mnist_dir / MNIST_FILES[2]).read_bytes()


def test_download_falls_through_to_the_next_mirror(mnist_dir, http_server, closed_port_url,
                                                   tmp_path):
    served, url = http_server
    (served / "good").mkdir()
    (served / "bad").mkdir()
    for name in MNIST_FILES[2:]:
        shutil.copy(mnist_dir / name, served / "good" / name)
        (served / "bad" / name).write_bytes(b"not the file")
    mirrors = [closed_port_url, url + "missing/", url + "bad/", url + "good/"]
    split = read_split(MNIST, "test", tmp_path / "m", download=True, mirrors=mirrors)
    assert len(split.labels) == 10000


def test_offline_download_is_one_clear_error_naming_folder_and_files(closed_port_url, tmp_path):
    root = tmp_path / "m"
    with pytest.raises(DataError) as error:
        read_split(MNIST, "test", root, download=True, mirrors=[closed_port_url])
    message = str(error.value)
    assert "could not download t10k-images-idx3-ubyte.gz" in message
    assert f"into {root}" in message and "--data-root" in message
    assert all(name in message for name in MNIST_FILES)
    assert not root.exists()  # a failed download creates no folder


def test_a_mirror_serving_a_corrupt_file_leaves_nothing_behind(http_server, tmp_path):
    served, url = http_server
    for name in MNIST_FILES[2:]:
        (served / name).write_bytes(gzip.compress(b"\x00\x00\x08\x01" + bytes(4)))
    with pytest.raises(DataError, match="checksum mismatch"):
        read_split(MNIST, "test", tmp_path / "m", download=True, mirrors=[url])
    assert not (tmp_path / "m").exists()


# --- splits, normalisation, batches -----------------------------------------------------------

def test_validation_split_is_disjoint_seeded_and_complete():
    images = np.arange(100, dtype=np.uint8).reshape(100, 1, 1)
    labels = np.arange(100)
    train_i, train_l, val_i, val_l = split_validation(images, labels, 10, seed=3)
    assert len(val_l) == 10 and len(train_l) == 90
    assert sorted(np.concatenate([train_l, val_l]).tolist()) == list(range(100))
    again = split_validation(images, labels, 10, seed=3)
    np.testing.assert_array_equal(again[3], val_l)
    assert not np.array_equal(split_validation(images, labels, 10, seed=4)[3], val_l)


def test_validation_split_must_leave_training_data():
    with pytest.raises(DataError, match="leaves no training data"):
        split_validation(np.zeros((5, 1, 1)), np.zeros(5), 5, seed=0)


def test_normalised_training_pixels_have_zero_mean_and_unit_variance(mnist_dir):
    images = read_split(MNIST, "test", mnist_dir, download=False).images
    norm = fit_normalization(images)
    flat = normalise(images, norm)
    assert flat.shape == (10000, 784) and flat.dtype == np.float32
    assert abs(flat.mean()) < 1e-4 and abs(flat.std() - 1) < 1e-4
    assert abs(norm.mean - 0.1325) < 0.001 and abs(norm.std - 0.3105) < 0.001


def test_the_normalisation_is_the_exact_mean_and_std_rounded_once():
    from decimal import Context, Decimal
    from fractions import Fraction

    # More pixels than one slice of the sums, and values at both ends of the range.
    images = np.random.default_rng(3).integers(0, 256, (700, 28, 28), dtype=np.uint8)
    images[0], images[1] = 0, 255
    pixels = [int(v) for v in images.reshape(-1)]
    n = len(pixels)
    mean = Fraction(sum(pixels), 255 * n)
    variance = sum((Fraction(v, 255) - mean) ** 2 for v in pixels) / n
    exact = Context(prec=60)
    std = exact.sqrt(exact.divide(Decimal(variance.numerator), Decimal(variance.denominator)))
    norm = fit_normalization(images)
    assert (norm.mean, norm.std) == (float(mean), float(std))


def test_each_epoch_has_its_own_seeded_order():
    first = epoch_order(1000, seed=1, epoch=1)
    np.testing.assert_array_equal(first, epoch_order(1000, seed=1, epoch=1))
    assert not np.array_equal(first, epoch_order(1000, seed=1, epoch=2))
    assert not np.array_equal(first, epoch_order(1000, seed=2, epoch=1))
    assert sorted(first.tolist()) == list(range(1000))


def batch_indices(order, batch_size, ctxs):
    return [[parts[0] for parts in step]
            for step in split_steps([order.astype(np.int32)], batch_size, ctxs)]


def test_steps_are_full_shuffled_batches_that_drop_the_remainder():
    from mnist_gluon.mxnet_compat import mx

    order = epoch_order(103, seed=0, epoch=1)
    steps = batch_indices(order, 10, [mx.cpu()])
    assert len(steps) == 10 and all(len(parts) == 1 for parts in steps)
    seen = np.concatenate([parts[0].asnumpy() for parts in steps])
    assert [parts[0].shape for parts in steps] == [(10,)] * 10
    np.testing.assert_array_equal(seen, order[:100])  # the last 3 are dropped this epoch
    assert len(set(seen.tolist())) == 100 and seen.tolist() != sorted(seen.tolist())


def test_steps_give_each_device_its_own_equal_share_of_the_batch():
    from mnist_gluon.mxnet_compat import mx

    order = epoch_order(40, seed=3, epoch=2)
    steps = batch_indices(order, 8, [mx.cpu(0), mx.cpu(1)])
    assert len(steps) == 5
    for step, (first, second) in enumerate(steps):
        assert first.context == mx.cpu(0) and second.context == mx.cpu(1)
        np.testing.assert_array_equal(np.concatenate([first.asnumpy(), second.asnumpy()]),
                                      order[step * 8 : step * 8 + 8])


def test_a_single_step_epoch_still_gives_one_batch():
    from mnist_gluon.mxnet_compat import mx

    steps = batch_indices(epoch_order(12, seed=0, epoch=1), 10, [mx.cpu()])
    assert len(steps) == 1 and steps[0][0].shape == (10,)
