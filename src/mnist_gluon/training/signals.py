"""Stopping a run cleanly on SIGINT or SIGTERM.

The first signal is only noted: the training loop asks after every step, finishes it, writes a
checkpoint and ends with exit status 128 + the signal's number. A second SIGINT (Ctrl-C twice)
raises KeyboardInterrupt at once; every checkpoint file is written atomically, so that cannot
leave one half-written.
"""

from __future__ import annotations

import signal
import sys
import threading

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


class StopSignals:
    """A context manager that installs the handlers and restores the previous ones."""

    def __init__(self, prog: str):
        self.prog = prog
        self.signum: int | None = None
        self.previous: dict = {}

    def received(self) -> int | None:
        return self.signum

    def _handle(self, signum: int, frame) -> None:
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
