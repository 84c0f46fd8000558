"""SIGINT and SIGTERM: the first is noted, a second Ctrl-C quits at once."""

import os
import signal
import time

import pytest

from mnist_gluon.training.signals import StopSignals


def test_the_first_ctrl_c_is_noted_and_a_second_quits_at_once():
    with StopSignals("mnist-train") as signals:
        assert signals.received() is None
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(0.05)
        assert signals.received() == signal.SIGINT
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler
