"""Reference models of a compression sweep: the base every trial compresses, and the hard-label
controls that distilled students are compared with.

A reference trained from a spec is identified by a hash of everything that determines it (its
setup, the seed and the data's content) and trained once: other trials, workers and later
sessions find its MLflow run (tag `study.model_key`) and reuse its model. A file lock in the
store's folder keeps two local workers from training it at once; across machines, `study init`
trains the base before the workers start. A base can also be an earlier run's model, by run id
or as the best trial of another sweep.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from study import measure
from study.config import Sweep, flatten
from study.errors import StudyError
from study.names import Role, TrialState
from study.schema import CompressSpec, Setup

MODEL_ARTIFACT = "model/model.keras"


@dataclass
class Reference:
    role: str  # 'base' or 'control'
    model_path: Path
    run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    float_bytes: int = 0  # its float32 TFLite file: the denominator of compression ratios
    float_gzip_bytes: int = 0


def model_key(setup: Setup, seed: int, data_digest: str) -> str:
    """Hash of everything that determines a trained reference model."""
    from importlib.metadata import version

    meaning = {
        "setup": setup.model_dump(mode="json", exclude={"compress"}),
        "seed": seed,
        "data": data_digest,
        "versions": [version("tensorflow"), version("study")],
    }
    return hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()[:20]


class References:
    """Finds, trains (once) and logs the reference models of one sweep."""

    def __init__(self, sweep: Sweep, tracker, store):
        self.sweep, self.tracker, self.store = sweep, tracker, store
        self.cache = store.root / "cache" / "models"
        self.loaded: dict[str, Reference] = {}

    # ---------------------------------------------------------------------------------- base
    def base(self, data) -> Reference:
        spec = self.sweep.config.base
        if spec is None:
            raise StudyError("this sweep has no base section")
        if spec.model is not None:
            tree = self.sweep.defaults()
            tree["model"] = spec.model.model_dump()
            tree["train"] = (spec.train or self.sweep.config.train).model_dump()
            tree.pop("compress", None)
            return self.trained(Role.BASE, Setup.model_validate(tree), data, self.sweep.config.seed)
        run_id = spec.run or self._best_run_of(spec.sweep or "")  # the schema requires one of model, run, sweep
        return self._from_run(run_id, data)

    def control(self, setup: Setup, data, seed: int) -> Reference:
        """The distilled student's architecture and training, on hard labels alone."""
        return self.trained(Role.CONTROL, setup.model_copy(update={"compress": CompressSpec()}), data, seed)

    # ------------------------------------------------------------------------------ training
    def trained(self, role: str, setup: Setup, data, seed: int) -> Reference:
        key = model_key(setup, seed, data.digest)
        if key in self.loaded:
            return self.loaded[key]
        reference = self._find(key, role)
        if reference is None:
            from filelock import FileLock

            lock_path = self.store.root / "locks" / f"{key}.lock"
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(lock_path)):  # another local worker may be training it right now
                reference = self._find(key, role) or self._train(role, key, setup, data, seed)
        self.loaded[key] = self._with_float_sizes(reference)
        return self.loaded[key]

    def _find(self, key: str, role: str) -> Reference | None:
        """A finished run of this model anywhere in the store: sweeps with the same base share it."""
        run = self.tracker.find_reference(key)
        if run is None:
            return None
        path = self._download(run.info.run_id, key)
        return Reference(role, path, run.info.run_id, dict(run.data.metrics))

    def _download(self, run_id: str, key: str) -> Path:
        path = self.cache / f"{key}.keras"
        if not path.exists():
            self.cache.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory() as folder:
                downloaded = self.tracker.download(run_id, MODEL_ARTIFACT, folder)
                partial = path.with_suffix(".partial")
                partial.write_bytes(downloaded.read_bytes())
                partial.replace(path)
        return path

    def _train(self, role: str, key: str, setup: Setup, data, seed: int) -> Reference:
        from study.objective import run_trial

        started_ms = int(time.time() * 1000)
        with tempfile.TemporaryDirectory(prefix="study-ref-") as folder:
            result = run_trial(setup, data, seed, 1, Path(folder)).replicates[0]
            if result.status != TrialState.FINISHED:
                raise StudyError(f"the {role} model could not be trained: {result.reason}; change its settings")
            params = {**flatten(setup.model_dump(mode="python", exclude={"compress"})), "seed": seed}
            run_id = self.tracker.log_reference(role, key, params, result.metrics, result.model_path, started_ms)
        return Reference(role, self._download(run_id, key), run_id, result.metrics)

    # ------------------------------------------------------------------------------ earlier runs
    def _best_run_of(self, sweep_name: str) -> str:
        best = self.tracker.best_trial_runs(sweep_name)
        if best is None:
            raise StudyError(f"base.sweep: no sweep {sweep_name!r} in this store; run it first or give base.run")
        if not best:
            raise StudyError(f"base.sweep: sweep {sweep_name!r} has no finished trial yet")
        if len(best) > 1:
            ids = ", ".join(r.info.run_id for r in best[:5])
            raise StudyError(f"base.sweep: sweep {sweep_name!r} has several best trials (a Pareto set); pick one with base.run ({ids})")
        return best[0].info.run_id

    def _from_run(self, run_id: str, data) -> Reference:
        if run_id in self.loaded:
            return self.loaded[run_id]
        try:
            run = self.tracker.get_run(run_id)
        except Exception:  # MLflow says "not found" in several ways, by store
            raise StudyError(f"base.run: no run {run_id!r} in this store") from None
        params = run.data.params
        if params.get("model.poly_degree", "1") != "1":
            raise StudyError(f"base.run: run {run_id} uses polynomial features; compression needs a model of the raw inputs")
        mine = {k: str(v) for k, v in flatten({"dataset": self.sweep.config.dataset.model_dump()}).items()}
        differ = [k for k, v in mine.items() if k in params and params[k] != v and k not in ("dataset.train_size", "dataset.label_noise")]
        if differ:
            raise StudyError(
                f"base.run: run {run_id} was trained on other data ({differ[0]}={params[differ[0]]}, this sweep has "
                f"{mine[differ[0]]}); use the same dataset settings"
            )
        reference = Reference(Role.BASE, self._download(run_id, f"run-{run_id}"), run_id, dict(run.data.metrics))
        self.loaded[run_id] = self._with_float_sizes(reference)
        return self.loaded[run_id]

    def _with_float_sizes(self, reference: Reference) -> Reference:
        """Measure the reference's own float32 TFLite file, once per process."""
        if reference.float_bytes:
            return reference
        from study.compression.export import to_tflite
        from study.keras_compat import keras

        model = keras.models.load_model(reference.model_path, compile=False)
        with tempfile.TemporaryDirectory() as folder:
            artifact = to_tflite(model, "float32", Path(folder) / "base.tflite")
            blob = artifact.path.read_bytes()
        reference.float_bytes, reference.float_gzip_bytes = len(blob), measure.gzip_size(blob)
        return reference
