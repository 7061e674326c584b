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


def test_a_ctrl_c_swallowed_by_a_finalizer_is_raised_at_the_next_check(ctrl_c_recorded):
    processes = ctrl_c_recorded
    assert processes.catching() and not processes.interrupted()
    processes.check_interrupt()  # nothing came: a no-op
    cycle = SignalsOnCollection()
    cycle.self = cycle  # only the cyclic collector frees it
    del cycle
    gc.collect()  # Python prints "Exception ignored in ... __del__" and drops the KeyboardInterrupt
    assert processes.interrupted()
    with pytest.raises(KeyboardInterrupt):
        processes.check_interrupt()


def test_an_error_after_a_ctrl_c_exits_130_as_the_ctrl_c_does(ctrl_c_recorded, tmp_path, capsys):
    """A Ctrl+C can land where a library swallows it and fails later instead (in a query,
    SQLAlchemy invalidates the connection; in a finalizer, Python drops the KeyboardInterrupt; the
    next query raises PendingRollbackError): once one came, the command's error exits 130."""
    from study import cli

    command = ["ui", "--store", str(tmp_path / "none")]  # fails at once: no store there
    assert cli.main(command) == 2  # bad input: a --store with no store in it
    assert "no MLflow store" in capsys.readouterr().err
    processes._received.append(signal.SIGINT)  # as the handler records a Ctrl+C
    assert cli.main(command) == 130
    assert capsys.readouterr().err.strip() == "interrupted"


def test_after_a_ctrl_c_a_trial_s_error_queues_it_again_rather_than_failing_it(ctrl_c_recorded):
    from study.runner import interruption

    error = RuntimeError("(sqlalchemy.exc.PendingRollbackError) Can't reconnect until invalid transaction is rolled back")
    assert not interruption(error)
    processes._received.append(signal.SIGINT)
    assert interruption(error)


def test_a_ctrl_c_inside_a_deferred_block_is_raised_at_its_end_and_only_then(ctrl_c_recorded):
    """Writes to the stores run `deferred`: a Ctrl+C inside one lets the write finish (raised
    inside a database call, it left SQLite's write lock held), then stops the command."""
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with processes.deferred():
            with processes.deferred():  # nested: raised at the outermost end only
                os.kill(os.getpid(), signal.SIGINT)
                steps.append("inner write finished")
            steps.append("outer write finished")
    assert steps == ["inner write finished", "outer write finished"]
    with processes.deferred():  # an earlier Ctrl+C is not raised again by a later block (clean-up writes)
        steps.append("clean-up write")
    assert processes.interrupted()
    with pytest.raises(KeyboardInterrupt):  # outside any block: raised where it lands
        os.kill(os.getpid(), signal.SIGINT)
        steps.append("never")
    assert steps[-1] == "clean-up write"


def test_a_deferred_block_raises_at_once_on_a_second_ctrl_c_and_after_an_error(ctrl_c_recorded):
    """Ctrl+C twice stops a write that hangs; an error that ends a block a Ctrl+C came in is
    raised as the interruption (chained); `raising=False` leaves it for the next check."""
    steps = []
    with pytest.raises(KeyboardInterrupt):
        with processes.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("first recorded")
            os.kill(os.getpid(), signal.SIGINT)
            steps.append("never")
    assert steps == ["first recorded"]
    with pytest.raises(KeyboardInterrupt) as raised:
        with processes.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            raise OSError("the write failed")
    assert isinstance(raised.value.__cause__, OSError)
    with processes.deferred(raising=False):
        os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        processes.check_interrupt()
