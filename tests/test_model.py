import numpy as np

from mnist_gluon.data import Normalization, normalise
from mnist_gluon.model import Architecture, build_model, named_parameters, pixel_classifier
from mnist_gluon.mxnet_compat import mx


def test_the_mlp_maps_784_pixels_to_10_logits():
    net = build_model(Architecture(), mx.cpu())
    out = net(mx.nd.random.normal(shape=(5, 784))).asnumpy()
    assert out.shape == (5, 10)
    # Logits, not probabilities: no softmax at the end (the loss applies it).
    assert not np.allclose(out.sum(axis=1), 1.0) and (out < 0).any()


def test_hidden_size_and_activation_are_configurable():
    net = build_model(Architecture(hidden=32, activation="tanh"), mx.cpu())
    assert net.fc1.weight.shape == (32, 784) and net.fc2.weight.shape == (10, 32)
    hidden = net.fc1(mx.nd.random.normal(shape=(4, 784)) * 100).asnumpy()
    assert np.abs(hidden).max() <= 1.0  # tanh saturates at +-1


def test_parameter_names_are_those_of_the_plain_gluon_script(tmp_path):
    net = build_model(Architecture(), mx.cpu())
    net.save_parameters(str(tmp_path / "m.params"))
    saved = set(mx.nd.load(str(tmp_path / "m.params")))
    assert saved == set(named_parameters(net)) == {"fc1.weight", "fc1.bias", "fc2.weight",
                                                   "fc2.bias"}


def test_dropout_acts_in_training_only():
    from mnist_gluon.mxnet_compat import autograd

    net = build_model(Architecture(dropout=0.5), mx.cpu())
    x = mx.nd.random.normal(shape=(8, 784))
    np.testing.assert_array_equal(net(x).asnumpy(), net(x).asnumpy())  # inference: no dropout
    with autograd.record():
        first, second = net(x).asnumpy(), net(x).asnumpy()
    assert not np.array_equal(first, second)


def test_the_pixel_classifier_folds_the_normalisation_into_the_first_layer():
    mx.random.seed(3)
    net = build_model(Architecture(hidden=32), mx.cpu())
    norm = Normalization(0.1307, 0.3081)
    pixels = np.random.default_rng(0).integers(0, 256, (50, 784)).astype(np.uint8)
    expected = net(mx.nd.array(normalise(pixels, norm))).asnumpy()
    got = pixel_classifier(net, norm)(mx.nd.array(pixels, dtype="uint8")).asnumpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got.argmax(axis=1), expected.argmax(axis=1))
