"""Processes we start stop with their parent, whatever signal it gets.

Worker processes and the MLflow UI server ask the kernel (Linux prctl PR_SET_PDEATHSIG) for
SIGTERM when their parent dies, even by kill -9; SIGTERM is then handled as Ctrl+C is, so a
running trial is marked failed and queued again before the process exits.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux; elsewhere a no-op).
    `parent` is the pid the caller expects as its parent: if it is already gone, exit now."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(143)  # the parent died before the request took effect


def terminate_as_interrupt() -> None:
    """Handle SIGTERM as Ctrl+C (KeyboardInterrupt), so that the same clean-up runs."""

    def handler(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)
