"""Explanations: `Classifier.explain`'s maps mean something (they add up to the logit, they
point at the pixels that matter, and they depend on what the network learned), for the MLP and
the LeNet; and mnist-predict --explain and mnist-eval --plot draw them."""

import json

import numpy as np
import PIL.Image
import pytest

import mnist_gluon
from mnist_gluon.cli import eval_command, predict_command, run
from mnist_gluon.errors import UserError
from support import write_idx

IMAGES = 200  # test images per check
BLANK = np.zeros((28, 28), np.uint8)


@pytest.fixture(scope="module", params=["mlp", "lenet"])
def trained(request, model, lenet_model):
    """Each kind of network, trained on MNIST and loaded for prediction."""
    return mnist_gluon.load(model if request.param == "mlp" else lenet_model)


def logit_gaps(classifier, images, targets) -> np.ndarray:
    """The target class's logit on each image less its logit on the blank image."""
    rows = np.arange(len(images))
    return (classifier.logits(images)[rows, targets]
            - classifier.logits(BLANK)[0, targets])


def relative_errors(classifier, images, maps) -> np.ndarray:
    targets = classifier.logits(images).argmax(axis=1)
    gaps = logit_gaps(classifier, images, targets)
    return np.abs(maps.sum(axis=(1, 2)) - gaps) / np.abs(gaps)


def test_integrated_gradients_add_up_to_the_logit_gap_from_the_blank_image(trained, test_set):
    images = test_set.images[:IMAGES]
    errors = relative_errors(trained, images, trained.explain(images))
    if trained.architecture.kind == "mlp":  # exact: the integral in closed form
        assert np.median(errors) < 1e-4 and errors.max() < 1e-3
    else:  # quadrature over the path
        assert np.median(errors) < 0.01 and np.percentile(errors, 95) < 0.05


def test_the_closed_form_equals_the_path_integral_it_replaces(model, test_set):
    """The ReLU MLP's exact integrated gradients against a fine Riemann sum of gradients."""
    attributor = mnist_gluon.load(model).attributor
    assert attributor.exact
    pixels = test_set.images[:20].reshape(20, -1).astype(np.float32)
    targets = attributor.logits(pixels).argmax(axis=1)
    steps = 1000
    scales = (np.arange(steps) + 0.5) / steps
    riemann = pixels * attributor.averaged_gradient(scales[:, None, None] * pixels[None],
                                                    targets, np.full(steps, 1 / steps))
    exact = attributor.attribute(pixels, targets, "integrated_gradients")
    assert np.abs(exact - riemann).max() < 0.01 * np.abs(exact).max()


def deletion(classifier, images, maps, targets, fraction, rng):
    """The target's logit after blanking the top `fraction` of pixels by the map, and after
    blanking as many inked pixels at random."""
    count = round(fraction * images[0].size)
    ranked, chance = images.reshape(len(images), -1).copy(), images.reshape(len(images), -1).copy()
    for image, top, random, attribution in zip(images, ranked, chance, maps, strict=True):
        top[np.argsort(-attribution.reshape(-1), kind="stable")[:count]] = 0
        inked = np.flatnonzero(image.reshape(-1) > 0)
        random[rng.choice(inked, size=min(count, len(inked)), replace=False)] = 0
    rows = np.arange(len(images))
    return (classifier.logits(ranked)[rows, targets], classifier.logits(chance)[rows, targets])


@pytest.mark.parametrize("method", ["integrated_gradients", "gradient_x_input", "smoothgrad"])
def test_blanking_the_top_ranked_pixels_lowers_the_logit_more_than_blanking_random_ink(
        trained, test_set, method):
    images = test_set.images[:IMAGES]
    targets = trained.logits(images).argmax(axis=1)
    maps = trained.explain(images, method=method)
    rng = np.random.default_rng(0)
    top, random = deletion(trained, images, maps, targets, 0.05, rng)
    assert np.mean(top < random) >= 0.9
    # the deletion curve: the logit as ever more pixels are blanked, ranked against random
    curves = [deletion(trained, images, maps, targets, f, rng) for f in (0.02, 0.05, 0.1, 0.2)]
    ranked_area, random_area = (np.mean([curve[side] for curve in curves]) for side in (0, 1))
    assert ranked_area < random_area


def rank_correlations(a: np.ndarray, b: np.ndarray, images: np.ndarray) -> np.ndarray:
    """Spearman's correlation of two maps of each image, over its inked pixels (elsewhere
    every map here is zero: it would count as agreement)."""
    out = []
    for x, y, image in zip(a, b, images, strict=True):
        inked = image.reshape(-1) > 0
        ranks = [np.argsort(np.argsort(m.reshape(-1)[inked])) for m in (x, y)]
        out.append(np.corrcoef(*ranks)[0, 1])
    return np.array(out)


def test_maps_of_a_network_with_reinitialised_weights_are_different_maps(trained, test_set):
    """Adebayo et al.'s sanity check: an explanation that survives randomising the weights
    explains the image, not the model."""
    from mnist_gluon.inference.classifier import Classifier
    from mnist_gluon.model import build_model, pixel_classifier

    images = test_set.images[:IMAGES]
    random_net = build_model(trained.architecture, trained.context)
    untrained = Classifier(trained.checkpoint, random_net,
                           pixel_classifier(random_net, trained.normalization))
    targets = trained.logits(images).argmax(axis=1)
    for method in ("integrated_gradients", "gradient_x_input", "smoothgrad"):
        learned = trained.explain(images, method=method, target=targets)
        assert np.median(rank_correlations(learned, trained.explain(
            images, method=method, target=targets), images)) == pytest.approx(1)
        random = untrained.explain(images, method=method, target=targets)
        assert np.median(rank_correlations(learned, random, images)) < 0.5


def test_a_map_explains_the_class_asked_for(model, test_set):
    classifier = mnist_gluon.load(model)
    images = test_set.images[:10]
    predicted = classifier.predict(images).labels
    np.testing.assert_array_equal(classifier.explain(images),
                                  classifier.explain(images, target=predicted))
    other = (predicted + 1) % 10
    maps = classifier.explain(images, target=other)
    np.testing.assert_allclose(maps.sum(axis=(1, 2)), logit_gaps(classifier, images, other),
                               rtol=1e-4)
    threes = classifier.explain(images, target=3)
    np.testing.assert_allclose(threes.sum(axis=(1, 2)),
                               logit_gaps(classifier, images, np.full(10, 3)), rtol=1e-4)


def test_explain_takes_what_predict_takes_and_the_blank_image(model, test_set, tmp_path):
    classifier = mnist_gluon.load(model)
    images = test_set.images[:3]
    maps = classifier.explain(images)
    assert maps.shape == (3, 28, 28) and maps.dtype == np.float32
    np.testing.assert_allclose(classifier.explain(images.reshape(3, 784) / 255.0), maps,
                               rtol=1e-4, atol=1e-4)
    one = classifier.explain(images[0])
    assert one.shape == (1, 28, 28)
    np.save(tmp_path / "three.npy", images)
    np.testing.assert_array_equal(classifier.explain(str(tmp_path / "three.npy")), maps)
    assert not classifier.explain(BLANK).any()  # from the blank to itself: nothing to explain
    assert (maps[images == 0] == 0).all()  # a pixel without ink gets no share


def test_smoothgrad_is_reproducible_and_not_the_plain_gradient(model, test_set):
    classifier = mnist_gluon.load(model)
    images = test_set.images[:5]
    smooth = classifier.explain(images, method="smoothgrad")
    np.testing.assert_array_equal(smooth, classifier.explain(images, method="smoothgrad"))
    assert not np.allclose(smooth, classifier.explain(images, method="gradient_x_input"))


@pytest.mark.parametrize("keywords,words", [
    ({"method": "shap"}, "integrated_gradients, gradient_x_input or smoothgrad"),
    ({"target": 10}, "target=10 must be a class of this model (0-9)"),
    ({"target": -1}, "target=-1"),
    ({"target": [1, 2]}, "or one per image (3)"),
    ({"target": "3"}, "target='3'"),
    ({"target": True}, "target=True"),
])
def test_a_bad_method_or_target_is_one_line_naming_the_keyword(model, test_set, keywords,
                                                               words):
    with pytest.raises(UserError, match=None) as raised:
        mnist_gluon.load(model).explain(test_set.images[:3], **keywords)
    message = str(raised.value)
    assert words in message and "\n" not in message


# --- the commands ---------------------------------------------------------------------------

def test_mnist_predict_explain_writes_a_heatmap_per_input(model, test_set, tmp_path, capsys):
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir(), second.mkdir()
    PIL.Image.fromarray(255 - test_set.images[0]).save(first / "digit.png")
    PIL.Image.fromarray(255 - test_set.images[1]).save(second / "digit.png")
    write_idx(tmp_path / "three-idx3-ubyte", test_set.images[2:5])
    out = tmp_path / "maps"
    code = run(predict_command, [str(model), str(first / "digit.png"), str(second / "digit.png"),
                                 str(tmp_path / "three-idx3-ubyte"), "--explain", str(out),
                                 "--json"])
    printed, err = capsys.readouterr()
    assert code == 0 and "wrote 5 heatmaps" in err
    answers = json.loads(printed)
    written = [answer["explanation"] for answer in answers]
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["digit.explained.png", "digit-2.explained.png", *(
            f"three-idx3-ubyte-{i}.explained.png" for i in range(3))])
    assert sorted(written) == sorted(str(p) for p in out.iterdir())
    for answer in answers:
        picture = np.asarray(PIL.Image.open(answer["explanation"]).convert("RGB"), np.int32)
        assert picture.shape == (300, 280, 3)
        red = (picture[..., 0] > 150) & (picture[..., 1] < 80)
        assert red.sum() > 100  # the ink that raised the predicted class is drawn red


def test_mnist_predict_explain_into_a_file_is_refused_before_any_work(model, test_set,
                                                                      tmp_path, capsys):
    np.save(tmp_path / "one.npy", test_set.images[:1])
    (tmp_path / "taken").write_text("mine")
    for folder, words in [(tmp_path / "taken", "'--explain': Directory"),
                          (tmp_path / "taken/maps", "--explain folder")]:
        code = run(predict_command, [str(model), str(tmp_path / "one.npy"), "--explain",
                                     str(folder)])
        out, err = capsys.readouterr()
        assert code == 2 and words in err and len(err.strip().splitlines()) == 1 and not out
        assert (tmp_path / "taken").read_text() == "mine"


def test_mnist_eval_plot_explains_its_most_confident_mistakes(model, mnist_dir, tmp_path,
                                                              capsys):
    assert run(eval_command, [str(model), "--data-root", str(mnist_dir), "--plot",
                              str(tmp_path / "plots")]) == 0
    assert "mistakes-explained.png" in capsys.readouterr().err
    picture = PIL.Image.open(tmp_path / "plots/mistakes-explained.png")
    assert picture.size == (960, 1000)
    colours = np.asarray(picture.convert("RGB"), np.int32)
    assert ((colours[..., 2] > 150) & (colours[..., 0] < 80)).sum() > 500  # blue: lowered
