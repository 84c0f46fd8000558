"""Stopping a run cleanly on SIGINT or SIGTERM.

Once training has begun, the first signal is only noted: the training loop asks after every
step, finishes it, writes a checkpoint and ends with exit status 128 + the signal's number. A
second SIGINT (Ctrl-C twice) raises KeyboardInterrupt at once; every checkpoint file is written
atomically, so that cannot leave one half-written. Before the loop first asks (reading or
downloading the data, building the network), there is nothing to save: a signal stops the run
at once.
"""

from __future__ import annotations

import signal
import sys
import threading

from ..errors import Stopped

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """A context manager that installs the handlers and restores the previous ones."""

    def __init__(self, prog: str):
        self.prog = prog
        self.signum: int | None = None
        self.previous: dict = {}
        self.training = False  # whether the loop has asked yet: a step is there to finish

    def received(self) -> int | None:
        self.training = True
        return self.signum

    def _handle(self, signum: int, frame) -> None:
        if not self.training:  # a download, say: nothing to finish or save
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            raise Stopped(f"stopped by {signal.Signals(signum).name} before training began; "
                          "nothing was trained", signum)
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.signum = signum
        print(f"{self.prog}: {signal.Signals(signum).name} received; finishing this step and "
              "saving a checkpoint (Ctrl-C again quits at once)", file=sys.stderr, flush=True)

    def __enter__(self) -> StopSignals:
        if threading.current_thread() is not threading.main_thread():
            return self  # only the main thread may catch signals: a caller's thread gets none
        for signum in STOP_SIGNALS:
            self.previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc_info) -> None:
        for signum, handler in self.previous.items():
            signal.signal(signum, handler)
