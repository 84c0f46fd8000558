"""mnist-export --format compressed: one model.mnc file holding a pruned network through shared
values, which every command and `load()` take as they take a checkpoint, and whose reader
refuses a damaged or hostile file in one line."""

import json
import struct
import subprocess
import zlib

import numpy as np
import pytest

import mnist_gluon
from mnist_gluon.checkpoint import read_checkpoint
from mnist_gluon.cli import export_command, run
from mnist_gluon.compression.codebook import kmeans
from mnist_gluon.compression.mnc import HEADER, MAGIC, encode, packed, read_compressed
from mnist_gluon.errors import CheckpointError
from mnist_gluon.files import sha256_of
from mnist_gluon.mxnet_compat import mx
from support import BIN, REPO, fetch, serving


@pytest.fixture(scope="module")
def pruned(model, mnist_dir, tmp_path_factory):
    """The session's MLP pruned to 90% in one more epoch: (its run folder, its model.mnc)."""
    from mnist_gluon.config import load_config
    from mnist_gluon.training.run import run_training

    folder = tmp_path_factory.mktemp("pruned")
    config = load_config(model.parent / "config.yaml", [
        "train.epochs=1", "train.lr=0.01", "train.warmup_epochs=0",
        "train.prune.sparsity=0.9", "train.prune.schedule=one_shot",
        f"train.prune.start_from={model}"])
    run_training(config, folder / "run", quiet=True)
    assert run(export_command, [str(folder / "run"), "--format", "compressed",
                                "--out", str(folder / "export")]) == 0
    return folder / "run", folder / "export" / "model.mnc"


def test_the_file_holds_the_pruned_weights_through_their_codebooks(pruned):
    run_dir, mnc = pruned
    dense = read_checkpoint(run_dir / "best.params")
    decoded = read_compressed(mnc)
    assert decoded.architecture == dense.architecture
    assert decoded.normalization == dense.normalization
    for name, weights in dense.arrays.items():
        got = decoded.arrays[name]
        if name.endswith(".bias"):
            np.testing.assert_array_equal(got, weights, err_msg=name)
            continue
        np.testing.assert_array_equal(got == 0, weights == 0, err_msg=name)  # the same zeros
        centroids, index = kmeans(weights[weights != 0], 32)
        np.testing.assert_array_equal(got[weights != 0], centroids[index], err_msg=name)
    assert mnc.stat().st_size < 0.12 * 4 * sum(a.size for a in dense.arrays.values())


def test_a_lenet_round_trips_too(lenet_model, tmp_path):
    checkpoint = read_checkpoint(lenet_model)
    path = tmp_path / "lenet.mnc"
    path.write_bytes(encode(checkpoint))
    decoded = read_compressed(path)
    assert decoded.architecture == checkpoint.architecture
    for name in ("conv1.weight", "conv2.weight", "fc1.weight", "fc2.weight"):
        weights, got = checkpoint.arrays[name], decoded.arrays[name]
        shared = np.unique(got)
        assert len(shared) <= 32, name
        # Each weight is stored as the nearest of its layer's shared values.
        nearest = shared[np.abs(weights[..., None] - shared).argmin(axis=-1)]
        np.testing.assert_array_equal(got, nearest, err_msg=name)


def test_load_predict_eval_and_serve_take_the_file_and_answer_as_its_network(
        pruned, test_set, mnist_dir, tmp_path):
    _, mnc = pruned
    decoded = read_compressed(mnc)
    # The same network by another road: its arrays as a bare .params file.
    bare = tmp_path / "decoded.params"
    mx.nd.save(str(bare), {name: mx.nd.array(a) for name, a in decoded.arrays.items()})
    norm = decoded.normalization
    images = test_set.images[:500]
    expected = mnist_gluon.load(bare, normalization=(norm.mean, norm.std)).predict(images)
    got = mnist_gluon.load(mnc).predict(images)
    np.testing.assert_array_equal(got.labels, expected.labels)
    np.testing.assert_allclose(got.probabilities, expected.probabilities, atol=1e-6)
    assert mnist_gluon.load(mnc.parent).predict(images[:5]).labels.tolist() == (
        expected.labels[:5].tolist())  # the export's folder stands for its file

    seven = REPO / "docs" / "seven.png"
    printed = subprocess.run([str(BIN / "mnist-predict"), "--checkpoint", str(mnc), str(seven)],
                             capture_output=True, text=True, timeout=120)
    label = mnist_gluon.load(bare, normalization=(norm.mean, norm.std)).predict(seven).labels[0]
    assert printed.returncode == 0 and printed.stdout.startswith(f"{seven}: {label}  ("), (
        printed.stdout + printed.stderr)

    report = mnist_gluon.evaluate(mnc, data_root=str(mnist_dir))
    dense_report = mnist_gluon.evaluate(bare, data_root=str(mnist_dir),
                                        normalization=(norm.mean, norm.std))
    assert report.accuracy == dense_report.accuracy
    assert report.dataset == "mnist"

    with serving(mnc) as (url, _, _):
        body = json.dumps({"pixels": images[:20].reshape(20, -1).tolist()}).encode()
        status, _, answer = fetch(url + "v1/predict", "POST", body,
                                  {"Content-Type": "application/json"})
        info = json.loads(fetch(url + "v1/model")[2])
    assert status == 200
    run_dir = mnc.parent.parent / "run"
    assert info["checkpoint"]["sha256"] == sha256_of(mnc)
    assert info["exported_from"]["sha256"] == sha256_of(run_dir / "best.params")
    assert info["exported_from"]["sparsity"] == json.loads(
        (run_dir / "best.json").read_text())["sparsity"]
    assert [row["label"] for row in json.loads(answer)["predictions"]] == (
        expected.labels[:20].tolist())


def test_export_refuses_to_overwrite_or_to_compress_twice(pruned, capsys):
    run_dir, mnc = pruned
    before = mnc.read_bytes()
    assert run(export_command, [str(run_dir), "--format", "compressed",
                                "--out", str(mnc.parent)]) == 2
    assert "--force" in capsys.readouterr().err
    assert run(export_command, [str(mnc), "--format", "compressed",
                                "--out", str(mnc.parent / "again")]) == 2
    assert "compressed already" in capsys.readouterr().err
    assert mnc.read_bytes() == before
    assert sorted(p.name for p in mnc.parent.iterdir()) == ["model.mnc"]


def body_of(path) -> bytes:
    """The decompressed body of a .mnc file, to make hostile files from."""
    import lzma

    from mnist_gluon.compression.mnc import FILTERS

    return lzma.decompress(path.read_bytes()[HEADER.size:], format=lzma.FORMAT_RAW,
                           filters=FILTERS)


def described(body: bytes) -> tuple[dict, bytes]:
    (size,) = struct.unpack_from("<I", body)
    return json.loads(body[4:4 + size]), body[4 + size:]


def with_description(description: dict, rest: bytes) -> bytes:
    text = json.dumps(description).encode()
    return struct.pack("<I", len(text)) + text + rest


def hostile_files(mnc) -> dict[tuple[str, str], bytes]:
    """Files a careless or hostile writer could make, each with a valid header and CRC unless
    its damage is to them: (what it is, what the refusal says) -> its bytes."""
    raw = mnc.read_bytes()
    body = body_of(mnc)
    description, rest = described(body)
    huge = json.loads(json.dumps(description))
    huge["architecture"]["hidden"] = 100_000
    huge["layers"][0]["shape"] = [100_000, 784]
    huge["layers"][1]["shape"] = [100_000]
    huge["layers"][2]["shape"] = [10, 100_000]
    past = bytearray(rest)
    k = description["layers"][0]["codebook"]
    past[4 * k + 784 * 128 // 8 + 30] = k  # a kept weight naming a shared value past the codebook
    unkept = json.loads(json.dumps(description))
    unkept["layers"][0]["kept"] += 1
    nan = bytearray(rest)
    nan[0:4] = struct.pack("<f", float("nan"))
    wrong_std = json.loads(json.dumps(description))
    wrong_std["normalization"]["std"] = 0
    other_shape = json.loads(json.dumps(description))
    other_shape["layers"][2]["shape"] = [10, 64]
    payload = raw[HEADER.size:]
    fields = (MAGIC, 1, 1 << 31, len(payload))  # a body size beyond any network's
    crc = zlib.crc32(payload, zlib.crc32(HEADER.pack(*fields, 0)[:-4]))
    garbled = struct.pack("<I", 5) + b"{oops" + rest

    def told(text: dict, layers: bytes = rest) -> bytes:
        return packed(with_description(text, layers))

    return {
        ("empty", "is not a compressed model"): b"",
        ("just the magic", "inside its header"): MAGIC,
        ("truncated header", "inside its header"): raw[:HEADER.size - 3],
        ("truncated payload", "truncated or appended"): raw[:len(raw) // 2],
        ("appended to", "truncated or appended"): raw + b"\0" * 16,
        ("a flipped bit in the payload", "CRC-32"): raw[:-40] + bytes([raw[-40] ^ 16]) + raw[-39:],
        ("a flipped bit in the header", "CRC-32"): raw[:13] + bytes([raw[13] ^ 1]) + raw[14:],
        ("version 2", "of version 2"): packed(body, version=2),
        ("a huge declared body", "declares a body"): HEADER.pack(*fields, crc) + payload,
        ("a network of 78 million weights", "16,777,216 parameters"): told(huge),
        ("an index past the codebook", "past its"): told(description, bytes(past)),
        ("a shared value that is NaN", "not finite"): told(description, bytes(nan)),
        ("a bitmap that keeps other weights", "bitmap keeps other"): told(unkept, rest + b"\0"),
        ("a std of 0", "impossible normalisation"): told(wrong_std),
        ("layers of another shape", "do not fit its architecture"): told(other_shape),
        ("a description that is not JSON", "not JSON"): packed(garbled),
        ("a description longer than the body", "description claims"): packed(
            struct.pack("<I", 1 << 30) + rest),
        ("a body shorter than its layers", "its layers take"): packed(body[:-100]),
        ("a body longer than its layers", "its layers take"): packed(body + b"\0" * 7),
    }


def test_the_reader_refuses_damaged_and_hostile_files_in_one_line(pruned, tmp_path):
    _, mnc = pruned
    for (what, says), content in hostile_files(mnc).items():
        path = tmp_path / "model.mnc"
        path.write_bytes(content)
        with pytest.raises(CheckpointError) as refused:
            read_compressed(path)
        message = str(refused.value)
        assert "\n" not in message and str(path) in message and says in message, (what, message)
        assert "export it again" in message or "is not a compressed model" in message, what


def test_every_truncation_and_every_flipped_byte_is_refused(pruned, tmp_path):
    _, mnc = pruned
    raw = mnc.read_bytes()
    path = tmp_path / "model.mnc"
    for cut in range(0, len(raw), 97):
        path.write_bytes(raw[:cut])
        with pytest.raises(CheckpointError):
            read_compressed(path)
    for at in range(0, len(raw), 89):
        path.write_bytes(raw[:at] + bytes([raw[at] ^ 0xFF]) + raw[at + 1:])
        with pytest.raises(CheckpointError):
            read_compressed(path)


def test_the_commands_refuse_a_damaged_file_without_a_traceback(pruned, tmp_path):
    _, mnc = pruned
    raw = mnc.read_bytes()
    damaged = tmp_path / "model.mnc"
    damaged.write_bytes(raw[: len(raw) - 10])
    for command in (["mnist-eval", "--checkpoint", str(damaged), "--data-root", "/nowhere"],
                    ["mnist-predict", "--checkpoint", str(damaged), str(tmp_path)],
                    ["mnist-serve", "--checkpoint", str(damaged), "--port", "0"]):
        done = subprocess.run([str(BIN / command[0]), *command[1:]], capture_output=True,
                              text=True, timeout=120)
        assert done.returncode != 0, command
        assert "Traceback" not in done.stderr, command
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and "is damaged" in lines[0], (command, done.stderr)
