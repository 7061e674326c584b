"""Processes we start stop with their parent, whatever signal it gets; Ctrl+C is never lost.

Worker processes and the MLflow UI server ask the kernel (Linux prctl PR_SET_PDEATHSIG) for
SIGTERM when their parent dies, even by kill -9; SIGTERM is then handled as Ctrl+C is, so a
running trial is marked failed and queued again before the process exits.

Python raises Ctrl+C as KeyboardInterrupt wherever the main thread is, and the cyclic garbage
collector runs finalizers and weakref callbacks anywhere (during `import tensorflow`, Alembic's
migrations, training): a KeyboardInterrupt raised inside one is printed as "Exception ignored"
and dropped, and the sweep would run on to exit 0. `catch_interrupts` also records the signal, and
`check_interrupt()`, called at the points where stopping is safe (after the stores are set up,
after TensorFlow is imported, before each ask, after each pack trains, after each batched epoch),
raises it again. A trial's writes to the stores run `deferred` (a Ctrl+C waits for the write to
finish), and the clean-up after one runs `shielded` (a second one is ignored until it is done).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
from collections.abc import Iterator

PR_SET_PDEATHSIG = 1


def die_with_parent(parent: int | None = None) -> None:
    """Have the kernel send this process SIGTERM when its parent dies (Linux; elsewhere a no-op).
    `parent` is the pid the caller expects as its parent: if it is already gone, exit now."""
    if sys.platform.startswith("linux"):
        import ctypes.util  # here, not at the top: ctypes.util imports subprocess, and `study` imports this
        # module before it can record a Ctrl+C (__main__), so its own imports are the window a Ctrl+C is lost in

        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if parent is not None and os.getppid() != parent:
        os._exit(143)  # the parent died before the request took effect


_received: list[int] = []  # Ctrl+C or SIGTERM seen by this process (catch_interrupts)
_deferring: list[int] = []  # signals received before each open `deferred` block began, outermost first


def _record(signum, frame):
    _received.append(signum)
    outermost = _deferring[:1]  # one read: a thread of training packs (a lane) may end its block meanwhile
    if not outermost or len(_received) - outermost[0] >= 2:  # a second one inside a deferred write: stop now
        raise KeyboardInterrupt


def catch_interrupts() -> None:
    """Ctrl+C raises KeyboardInterrupt and is recorded, so one that a finalizer swallowed is
    raised again by `check_interrupt`. Installed whatever the inherited disposition: a `study run`
    started with SIGINT ignored (`&` in a script) still stops on Ctrl+C."""
    signal.signal(signal.SIGINT, _record)


def catching() -> bool:
    """Whether this process records Ctrl+C (`catch_interrupts`)."""
    return signal.getsignal(signal.SIGINT) is _record


def interrupted() -> bool:
    """Whether a Ctrl+C or SIGTERM reached this process since `catch_interrupts`."""
    return bool(_received)


def check_interrupt() -> None:
    """Raise KeyboardInterrupt if a Ctrl+C came, even one a finalizer swallowed (else nothing)."""
    if _received:
        raise KeyboardInterrupt


def terminate_as_interrupt() -> None:
    """Handle SIGTERM as Ctrl+C (KeyboardInterrupt, recorded), so that the same clean-up runs."""
    signal.signal(signal.SIGTERM, _record)


@contextlib.contextmanager
def shielded(*signals: int) -> Iterator[None]:
    """`signals` (Ctrl+C and SIGTERM if none named) ignored inside the block, as they were outside
    after it: the clean-up after one (trials marked interrupted and queued again, runs closed) is
    not cut short by a second, which would leave it half-written."""
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in signals or (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def deferred(raising: bool = True) -> Iterator[None]:
    """Ctrl+C and SIGTERM recorded inside the block and raised as KeyboardInterrupt at the end of
    the outermost one (where `catch_interrupts` is on), also where the block ends in an error (the
    error is then its consequence); with `raising=False`, left for the next `check_interrupt`. For
    writes to the stores: raised inside a database call, the KeyboardInterrupt left the interrupted
    connection holding SQLite's write lock until its frames were freed, and the clean-up's own
    writes waited out the busy timeout (`benchmarks/stop_latency.py`), or left a session that
    failed every later query. A second signal inside the block is raised at once: a write that
    hangs (a server that does not answer) is stopped by pressing Ctrl+C again."""
    _deferring.append(len(_received))
    try:
        yield
    except Exception as exc:
        came = len(_received) > _deferring[-1]
        if came and raising and len(_deferring) == 1:
            raise KeyboardInterrupt from exc
        raise
    finally:
        before = _deferring.pop()
    if raising and not _deferring and len(_received) > before:
        raise KeyboardInterrupt
