"""Train and evaluate an MLP on MNIST with Apache MXNet Gluon."""

__version__ = "0.1.0"
