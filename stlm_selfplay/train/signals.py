"""Graceful stop: SIGINT / SIGTERM set a flag that a training loop polls between steps.

    stop = install_stop_handlers()
    for step in ...:
        ...
        if stop.requested:        # (under DDP: distributed.any_rank(stop.requested, device))
            save a checkpoint; break
    stop.restore()

A second SIGINT while a stop is pending raises KeyboardInterrupt (the usual Ctrl-C twice).
"""

from __future__ import annotations

import signal
import sys
import threading


class StopRequest:
    def __init__(self):
        self.requested = False
        self.signal_name: str | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        if self.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.requested = True
        self.signal_name = signal.Signals(signum).name
        print(f"\n{self.signal_name} received: saving a checkpoint and stopping after this step "
              "(Ctrl-C again to abort without saving)", file=sys.stderr, flush=True)

    def restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous.clear()


def install_stop_handlers(signals=(signal.SIGINT, signal.SIGTERM)) -> StopRequest:
    """Route SIGINT/SIGTERM to a `StopRequest` (no-op outside the main thread)."""
    stop = StopRequest()
    if threading.current_thread() is threading.main_thread():
        for signum in signals:
            stop._previous[signum] = signal.signal(signum, stop._handle)
    return stop
