"""Ctrl+C is never lost (study/processes.py): one raised inside a finalizer, which Python prints
and drops, is recorded and raised again at the next safe point."""

from __future__ import annotations

import gc
import os
import signal

import pytest

from study import processes

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store


class SignalsOnCollection:
    """An object whose finalizer runs when the garbage collector frees it: Ctrl+C arrives there."""

    def __del__(self):
        os.kill(os.getpid(), signal.SIGINT)  # the handler runs here, inside the finalizer


def test_a_ctrl_c_swallowed_by_a_finalizer_is_raised_at_the_next_check():
    before = signal.getsignal(signal.SIGINT)
    processes._received.clear()
    try:
        processes.catch_interrupts()
        assert processes.catching() and not processes.interrupted()
        processes.check_interrupt()  # nothing came: a no-op
        cycle = SignalsOnCollection()
        cycle.self = cycle  # only the cyclic collector frees it
        del cycle
        gc.collect()  # Python prints "Exception ignored in ... __del__" and drops the KeyboardInterrupt
        assert processes.interrupted()
        with pytest.raises(KeyboardInterrupt):
            processes.check_interrupt()
    finally:
        signal.signal(signal.SIGINT, before)
        processes._received.clear()
