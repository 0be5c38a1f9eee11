"""Stopping a run cleanly: SIGTERM (schedulers, before preemption) and Ctrl-C become a flag the loop checks."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator


class StopRequest:
    """Turns SIGTERM / SIGINT into a flag the loop checks after each step."""

    def __init__(self) -> None:
        self.signal: str | None = None

    def _handle(self, signum, frame) -> None:
        under_torchrun = "TORCHELASTIC_RUN_ID" in os.environ
        # A second Ctrl-C stops at once; torchrun forwards a second Ctrl-C to its workers as SIGTERM.
        if self.signal is not None and (signum == signal.SIGINT or under_torchrun):
            raise KeyboardInterrupt
        self.signal = signal.Signals(signum).name
        if self.signal == "SIGINT" and os.environ.get("RANK", "0") == "0":  # a person is waiting: say what comes
            limit = " (torchrun kills the workers after its --shutdown-timeout, 30 s by default)" if under_torchrun else ""
            print(f"\nSIGINT: stopping after this step and writing last.pt{limit}; Ctrl-C again: stop at once, "
                  "without it", file=sys.stderr, flush=True)

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopRequest]:
        """Route SIGTERM/SIGINT to the flag while the block runs, then restore the previous handlers."""
        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
        with contextlib.suppress(ValueError):  # not the main thread: leave signals alone
            for s in previous:
                signal.signal(s, self._handle)
        try:
            yield self
        finally:
            with contextlib.suppress(ValueError):
                for s, handler in previous.items():
                    signal.signal(s, handler)

