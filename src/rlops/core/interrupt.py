"""A process-wide "stop requested" flag set by Ctrl-C (SIGINT) and checked by long loops.

Python raises ``KeyboardInterrupt`` wherever the main thread happens to be
when SIGINT arrives. If that is inside a ``__del__`` method or a weakref
callback, the interpreter prints "Exception ignored" and carries on, and the
interrupt is lost. The CLI's handler therefore also sets :data:`STOP`; the
training loop checks it at every iteration boundary and raises
``KeyboardInterrupt`` there, so Ctrl-C always stops a run.
"""

from __future__ import annotations

import signal
import threading
from types import FrameType

STOP = threading.Event()
"""Set once the user asked to stop (SIGINT); cleared when a run starts."""


def check() -> None:
    """Raise ``KeyboardInterrupt`` if a stop was requested."""
    if STOP.is_set():
        raise KeyboardInterrupt


def _handler(signum: int, frame: FrameType | None) -> None:
    STOP.set()
    raise KeyboardInterrupt


def install() -> None:
    """Make SIGINT set :data:`STOP` as well as raise ``KeyboardInterrupt`` (main thread only)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGINT, _handler)
