"""A plain trial: for each replicate, draw the training set, build, fit and measure a model.

`run_trials` knows nothing of Optuna or MLflow. It reports each epoch to an observer, which may
answer "stop" (that is how pruning reaches in), and returns a `TrialResult` per trial that the
runner tells Optuna and logs to MLflow. Replicates of several trials train together in packs
(`multifit`); a trial ends at its first pruned or diverged replicate exactly as it would alone.
Compression trials start from a trained base instead (`compression.pipeline`).
"""

from __future__ import annotations

import threading
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np

from study import batched, measure
from study.batched import cached, compile_ahead, compiled, fit_together, graph_key, keys_of, width_bucket
from study.datasets import Data, train_rows
from study.keras_compat import keras
from study.multifit import Member, pack_key
from study.names import STOPPED, TrialState
from study.processes import check_interrupt
from study.replicate import (
    ReplicateResult,
    TrialObserver,
    TrialResult,
    build_for,
    fit_metrics,
    measure_model,
    model_metrics,
    noise_floor,
    prepare_inputs,
    save_model,
)
from study.schema import Setup


def start_replicate(setup: Setup, data: Data, seed: int) -> tuple[Data, keras.Model]:
    """The inputs and the (uncompiled) model of one replicate. The model is built right after
    seeding, so a seed gives the same initial weights and dropout generators whatever else is
    built in the process."""
    keras.utils.set_random_seed(seed)
    inputs = prepare_inputs(setup, data, seed)
    return inputs, build_for(setup, data, inputs, compiled=False)


def end_replicate(
    setup: Setup, data: Data, index: int, seed: int, inputs: Data, model: keras.Model, fitted, workdir: Path
) -> ReplicateResult:
    """Measure and save one trained replicate (unless it was pruned or diverged)."""
    status = TrialState(fitted.stopped) if fitted.stopped in STOPPED else TrialState.FINISHED
    result = ReplicateResult(index, seed, status, fitted.reason, fitted.history, {}, None, None)
    if status == TrialState.DIVERGED:
        return result
    metrics, outputs = measure_model(model, data.task, inputs, noise_floor(setup, data))
    if not measure.all_finite(metrics):
        result.status, result.reason = TrialState.DIVERGED, "the trained model's predictions are not finite"
        return result
    path = Path(workdir) / "models" / f"r{index}.keras"
    save_model(model, path)
    metrics.update(model_metrics(model, path))
    metrics.update(fit_metrics(fitted))
    result.metrics, result.test_outputs, result.model_path = metrics, outputs["test"].astype(np.float32), path
    return result


# ------------------------------------------------------------------------- trials in packs
@dataclass
class TrialJob:
    """One trial to train: `replicates` models of `setup`, seeds seed, seed+1, ..."""

    setup: Setup
    data: Data
    seed: int
    replicates: int
    workdir: Path
    observer: TrialObserver | None = None


class _Trial:
    """A job while its replicates train: what has ended, and where the trial was cut.

    A trial ends at its first replicate that is pruned or diverges, as it would trained one
    replicate after another: later replicates are stopped and dropped, earlier ones finish.
    Replicate 0 reports its epochs as they happen (the pruner watches it); a later replicate's
    epochs reach the observer when it ends, after the replicates before it, as they would alone.
    """

    def __init__(self, job: TrialJob):
        self.job = job
        self.result = TrialResult(task=job.data.task)
        self.cut: int | None = None  # the first replicate that was pruned or diverged
        self.error: BaseException | None = None

    def dropped(self, index: int) -> bool:
        return self.error is not None or (self.cut is not None and index > self.cut)

    def on_epoch(self, index: int):
        observer = self.job.observer

        def hook(epoch: int, metrics: dict[str, float]) -> str | None:
            if self.dropped(index):
                return f"replicate {self.cut} of this trial stopped it"
            if index == 0 and observer is not None:
                with _OBSERVING:  # a pack training in another lane may be telling its own
                    return observer.epoch(index, epoch, metrics)
            return None

        return hook

    def on_stop(self, index: int, fitted) -> None:
        if fitted.stopped in STOPPED and (self.cut is None or index < self.cut):
            self.cut = index

    def end(self, index: int, seed: int, inputs: Data, model, fitted) -> None:
        if self.dropped(index):
            return
        replicate = end_replicate(self.job.setup, self.job.data, index, seed, inputs, model, fitted, self.job.workdir)
        self.result.replicates.append(replicate)
        if self.job.observer is not None:
            with _OBSERVING:
                self.job.observer.replicate_end(replicate)
        if replicate.status != TrialState.FINISHED:
            self.cut = index


def pack_key_of(job: TrialJob) -> tuple:
    """Trials whose replicates can train in one pack share this key (see `multifit.pack_key`); MLPs
    and CNNs of standard conv layers also by depth, width bucket, optimizer, whether they have
    dropout and penalties (and a CNN's kernel and stride), so that each pack is one batched model
    (`batched.shape_key`)."""
    key = pack_key(job.setup.train, job.data.task, train_rows(job.data, job.setup.dataset))
    model = job.setup.model
    shape = (model.depth, width_bucket(model.units), model.activation, job.setup.train.optimizer, model.dropout > 0,
             model.l1 > 0 or model.l2 > 0, compiled(job.setup.train))
    if model.kind == "mlp" or model.depth == 0:
        return (*key, "mlp", *shape)
    if model.conv == "standard":
        return (*key, "cnn", *shape, model.kernel_size, model.stride)
    return key


def run_trials(jobs: list[TrialJob], pack: int = 1, following: list[TrialJob] | None = None) -> list[TrialResult | BaseException]:
    """Train the jobs' replicates in packs of at most `pack` models (1: one at a time), grouped by
    `pack_key_of`, a trial's replicates in order. Returns each job's result, or the exception that
    stopped its pack (the other packs go on). KeyboardInterrupt is raised as is. Several packs
    train side by side (`LANES`); one at a time, the next one's graph compiles while a pack
    trains. After the last pack, the graph of the first pack of the `following` jobs (the trials
    likely asked next) compiles, which this call does not train."""
    trials = [_Trial(job) for job in jobs]
    chunks = _chunks(trials, pack)
    ahead = _chunks([_Trial(job) for job in following or []], pack)[:1]
    if LANES > 1 and len(chunks) > 1:
        _in_lanes(chunks, ahead)
    else:
        for k, chunk in enumerate(chunks):
            chosen = _left(chunk)
            if chosen:
                _train_pack(chosen, next((later for later in map(_left, chunks[k + 1 :] + ahead) if later), []))
    if not ahead:
        settle_ahead()
    return [trial.error if trial.error is not None else trial.result for trial in trials]


def _left(chunk: list[tuple[_Trial, int]]) -> list[tuple[_Trial, int]]:
    """A chunk's models not dropped by now (a trial cut in an earlier pack)."""
    return [(trial, index) for trial, index in chunk if not trial.dropped(index)]


# Packs that train at once, each in a thread of its own (a lane). A batched model's epoch is one
# graph call that leaves Python (and the GIL) while it runs, but a narrow model's steps are too
# small to keep both cores busy, and its pack's Python (judging epochs, building, measuring,
# saving and logging models) runs between calls; a second pack fills what the first leaves idle.
# Only packs whose every model trains in the batched engine go side by side; the others train
# alone. A trial's packs never do (its replicates end in order, as they would one after another).
LANES = 2

_OBSERVING = threading.RLock()  # observers (the stores) hear one lane at a time


@dataclass
class _Waiting:
    """A chunk's models, built, waiting for a lane."""

    order: int  # the chunk's place among the call's: a trial's replicates end in this order
    built: list  # (trial, index, seed, inputs, member) each (`_build`)
    graphs: set[tuple] | None = field(init=False)  # its models' (`batched.keys_of`; None: one trains outside the engine)

    def __post_init__(self) -> None:
        self.graphs = keys_of([entry[-1] for entry in self.built])


def _in_lanes(chunks: list[list[tuple[_Trial, int]]], ahead: list[list[tuple[_Trial, int]]]) -> None:
    """Train the chunks as packs, up to `LANES` at once, the most arithmetic first (the last to
    start should not be the longest). Every pack's models are built first, in this thread: seeding
    TensorFlow clears its caches, which must not happen while a lane's graph runs (a call holds at
    most `pack` models, as many as one pack). A lane trains a pack; when it ends, this thread
    measures, saves and tells its models while the others train. On Ctrl+C (or any error here) the
    lanes stop at their next epoch before it is raised; a second Ctrl+C stops the wait for them."""
    _fresh_session()
    waiting = [_Waiting(order, _build(_left(chunk))) for order, chunk in enumerate(chunks)]
    waiting.sort(key=lambda w: _arithmetic(w.built), reverse=True)
    running: dict[Future, _Waiting] = {}
    stop = threading.Event()
    try:
        while waiting or running:
            check_interrupt()  # one a lane's write to the stores recorded
            chosen = _next_chunk(waiting, running) if len(running) < LANES else None
            if chosen is None:
                _finish_lanes(running, one=True)
                continue
            waiting.remove(chosen)
            chosen = _Waiting(chosen.order, [entry for entry in chosen.built if not entry[0].dropped(entry[1])])
            if not chosen.built:
                continue
            if chosen.graphs is None:  # a model outside the batched engine: alone, here
                _finish_lanes(running)
                _fit(chosen.built)
                _end(chosen.built)
                continue
            running[_lane(stop, chosen.built)] = chosen
            if not waiting and ahead:
                _PENDING.append(_compile_following(_left(ahead[0]), _keys(running.values())))
    except BaseException:
        stop.set()
        wait(running)  # each lane stops at its next epoch (a second Ctrl+C: a lane stuck in a write is left, a daemon)
        raise


def _lane(stop: threading.Event, built: list) -> Future:
    """Train `built` as one pack in a thread of its own, which stops at its next epoch once `stop` is set."""
    future: Future = Future()
    future.set_running_or_notify_cancel()

    def run() -> None:
        batched.LANE.stop = stop
        try:
            _fit(built)
            future.set_result(None)
        except BaseException as exc:  # KeyboardInterrupt: `_fit` keeps other errors in the trials
            future.set_exception(exc)

    threading.Thread(target=run, name="study-lane", daemon=True).start()
    return future


def _keys(packs) -> set[tuple]:
    """The graphs the packs (`_Waiting`) train with."""
    return set().union(*(w.graphs or set() for w in packs))


def _finish_lanes(running: dict[Future, _Waiting], one: bool = False) -> None:
    """Wait for the packs training in lanes (for the first to end, if `one`) and end them here:
    measured, saved and told. A lane's KeyboardInterrupt is raised here."""
    while running:
        done, _ = wait(running, timeout=0.5, return_when=FIRST_COMPLETED)  # Ctrl+C reaches this thread between waits
        for future in done:
            chosen = running.pop(future)
            future.result()  # KeyboardInterrupt only
            _end(chosen.built)
        if done and one:
            return


def _next_chunk(waiting: list[_Waiting], running: dict[Future, _Waiting]) -> _Waiting | None:
    """The first waiting chunk that can train beside the running ones: none of its trials is
    training or waits in an earlier chunk (a trial's replicates end in order), and none of its
    graphs is a running pack's (the two would take turns in one graph)."""
    busy_trials = {id(entry[0]) for w in running.values() for entry in w.built}
    busy_graphs = _keys(running.values())
    for w in waiting:
        trials = {id(entry[0]) for entry in w.built}
        earlier = {id(entry[0]) for other in waiting if other.order < w.order for entry in other.built}
        if trials.isdisjoint(busy_trials | earlier) and busy_graphs.isdisjoint(w.graphs or set()):
            return w
    return None


def _arithmetic(built: list) -> float:
    """A rough measure of a pack's training arithmetic, to order the packs by: its models' epochs
    times their (padded) hidden layers' weights."""
    total = 0.0
    for trial, *_ in built:
        setup = trial.job.setup
        total += setup.train.epochs * (setup.model.depth + 1) * width_bucket(setup.model.units) ** 2
    return total


_PENDING: list = []  # the wait of the graph compiling ahead, if one is (`_compile_following`)


def settle_ahead() -> None:
    """Wait for the graph compiling ahead, if one is, and cache it. `run_trials` leaves the one of
    its `following` jobs compiling while its caller logs the trials (the runner settles it at the
    end of the pack); a pack settles it before clearing Keras' session. A wait a Ctrl+C cut short
    stays pending."""
    while _PENDING:
        _PENDING[-1]()
        _PENDING.pop()


def _chunks(trials: list[_Trial], pack: int) -> list[list[tuple[_Trial, int]]]:
    """The trials' replicates as packs: grouped by `pack_key_of`, each group split into packs of
    near-equal size (10 models at `pack: 8` are 5 + 5, one shape)."""
    units: dict[tuple, list[tuple[_Trial, int]]] = {}
    for trial in trials:
        for index in range(trial.job.replicates):
            units.setdefault(pack_key_of(trial.job), []).append((trial, index))
    chunks = []
    for group in units.values():
        count = -(-len(group) // pack)
        size = -(-len(group) // count)
        chunks += [group[start : start + size] for start in range(0, len(group), size)]
    return chunks


def _train_pack(chosen: list[tuple[_Trial, int]], next_pack: list[tuple[_Trial, int]]) -> None:
    """Build the chosen replicates' models, train them as one pack, then measure each. The graph
    of `next_pack` compiles meanwhile, and while they are measured (`_compile_following`)."""
    _fresh_session()
    built = _build(chosen)
    if not built:
        return
    _PENDING.append(_compile_following(next_pack, keys_of([member for *_, member in built])))
    _fit(built)
    _end(built)


def _fresh_session() -> None:
    """Clear Keras' session before a call's models are built, once the graph compiling ahead (whose
    thread's graph lives in that session) is cached."""
    settle_ahead()
    keras.backend.clear_session()


def _build(chosen: list[tuple[_Trial, int]]) -> list:
    """The chosen replicates' models, built (a trial whose model cannot be built fails alone):
    (trial, index, seed, inputs, member) each."""
    built = []
    for trial, index in chosen:
        job = trial.job
        seed = job.seed + index
        try:
            inputs, model = start_replicate(job.setup, job.data, seed)
        except Exception as exc:
            trial.error = trial.error or exc
            continue
        member = Member(
            model, job.setup.train, job.data.task, (inputs.x_train, inputs.y_train), (inputs.x_val, inputs.y_val),
            seed, on_epoch=trial.on_epoch(index), on_stop=partial(trial.on_stop, index),
        )
        built.append((trial, index, seed, inputs, member))
    return [entry for entry in built if entry[0].error is None]


def _fit(built: list) -> None:
    """Train the built models as one pack; an error there fails every trial in it."""
    try:
        fit_together([member for *_, member in built])
    except Exception as exc:
        for trial, *_ in built:
            trial.error = trial.error or exc


def _end(built: list) -> None:
    """Measure, save and tell each trained model (`_Trial.end`), unless its pack failed."""
    for trial, index, seed, inputs, member in built:
        if trial.error is not None:
            continue
        try:
            trial.end(index, seed, inputs, member.model, member.result)
        except Exception as exc:
            trial.error = exc


def _compile_following(next_pack: list[tuple[_Trial, int]], busy: set[tuple] | None):
    """Start compiling the following pack's batched graph while packs train whose graphs are
    `busy` (`batched.keys_of`; None: some model trains outside the engine, and nothing compiles);
    returns the function that waits for it. Its shape is read from a model built for its first
    replicate and thrown away, unseeded: only while every training model trains batched, whose
    randomness is its own (a Keras model's dropout would draw from the global generator), and
    after they are built; the following pack seeds each of its models anew before building it."""
    if busy is None or not next_pack:
        return lambda: None
    trial, index = next_pack[0]
    job = trial.job
    shape = _shape_of(job, len(next_pack))
    known = _GRAPH_OF.get(shape)
    if known is not None and (known in busy or cached(known)):
        return lambda: None  # its graph is ready: no model to build
    try:
        inputs = prepare_inputs(job.setup, job.data, job.seed + index)
        model = build_for(job.setup, job.data, inputs, compiled=False)
    except Exception:  # noqa: BLE001 - that pack meets the error itself, where it fails its trial alone
        return lambda: None
    member = Member(model, job.setup.train, job.data.task, (inputs.x_train, inputs.y_train), (inputs.x_val, inputs.y_val),
                    job.seed + index)
    key = graph_key(member, len(next_pack))
    if key is not None:
        _GRAPH_OF[shape] = key
    return compile_ahead(member, len(next_pack), busy=busy)  # a shape training now compiles once


_GRAPH_OF: dict[tuple, tuple] = {}  # a pack's `_shape_of` -> its graph's key, once a model was built for them


def _shape_of(job: TrialJob, count: int) -> tuple:
    """What names the graph of a pack of `count` models of `job`'s trial without building one: what
    `pack_key_of` groups by (batches, depth, width bucket, activation, optimizer, whether there is
    dropout, a penalty, XLA), and what it leaves to the data: the inputs' shape (before polynomial
    features, so their degree too), the validation set's length and the outputs. The values members
    hold in tensors (rates, penalty and dropout values, epoch budgets, early stopping) are not in
    it: packs equal here train with the same graph. A wrong match could only cost a graph compiled
    at the pack's first run instead of ahead, never other weights."""
    data = job.data
    return (pack_key_of(job), job.setup.model.poly_degree, data.x_train.shape[1:], len(data.x_val), data.n_classes, count)


def run_trial(
    setup: Setup, data: Data, seed: int, replicates: int, workdir: Path, observer: TrialObserver | None = None,
    pack: int = 1,
) -> TrialResult:
    """Train `replicates` models of `setup` with seeds seed, seed+1, ... (`pack` at a time); the
    trial ends at a replicate that diverges or at the first one's pruning."""
    outcome = run_trials([TrialJob(setup, data, seed, replicates, Path(workdir), observer)], pack)[0]
    if isinstance(outcome, BaseException):
        raise outcome
    return outcome
