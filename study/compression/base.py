"""Reference models of a compression sweep: the bases trials compress (one per seed: replicate r
compresses the base trained with seed + r, so intervals over replicates include the base's
variance), and the controls files are compared with: the base fine-tuned for as many extra epochs
as a fine-tuned file got (its equal-training control), structured pruning's shrunk architecture
trained from scratch (Scratch-E and Scratch-B, Liu et al. 2019), and the hard-label students that
distilled students are compared with.

A reference trained from a spec is identified by a hash of everything that determines it (its
setup, the seed and the data's content) and trained once: other trials, workers and later
sessions find its MLflow run (tag `study.model_key`) and reuse its model. A file lock in the
store's folder keeps two local workers from training it at once; across machines, `study init`
trains every replicate's base before the workers start. A base can also be an earlier run's
model, by run id or as the best trial of another sweep: then every replicate compresses that one
model, and only the fine-tuning is repeated.
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
from study.schema import CompressSpec, Setup, TrainSpec

MODEL_ARTIFACT = "model/model.keras"


@dataclass
class Reference:
    role: str  # 'base' or 'control'
    model_path: Path
    run_id: str | None
    metrics: dict[str, float] = field(default_factory=dict)
    float_bytes: int = 0  # its float32 TFLite file: the denominator of compression ratios
    float_gzip_bytes: int = 0
    key: str = ""  # its content key (model_key), or run-<id> for an earlier run's model


def _hash(meaning: dict) -> str:
    from importlib.metadata import version

    meaning = {**meaning, "versions": [version("tensorflow"), version("study")]}
    return hashlib.sha256(json.dumps(meaning, sort_keys=True).encode()).hexdigest()[:20]


def model_key(setup: Setup, seed: int, data_digest: str) -> str:
    """Hash of everything that determines a trained reference model."""
    return _hash({"setup": setup.model_dump(mode="json", exclude={"compress"}), "seed": seed, "data": data_digest})


class References:
    """Finds, trains (once) and logs the reference models of one sweep."""

    def __init__(self, sweep: Sweep, tracker, store):
        self.sweep, self.tracker, self.store = sweep, tracker, store
        self.cache = store.root / "cache" / "models"
        self.loaded: dict[str, Reference] = {}

    # ---------------------------------------------------------------------------------- base
    def base(self, data, seed: int | None = None) -> Reference:
        """The base replicate `seed` compresses: trained with that seed (each replicate its own
        base), or the earlier run's model. Without a seed, every replicate's base of the sweep is
        made ready (as `study init` and `study run` do before any worker starts) and the first returned."""
        spec = self.sweep.config.base
        if spec is None:
            raise StudyError("this sweep has no base section")
        if seed is None:
            first = self.sweep.config.seed
            return [self.base(data, first + r) for r in range(self.sweep.config.replicates)][0]
        if spec.model is not None:
            return self.trained(Role.BASE, self._base_setup(), data, seed)
        run_id = spec.run or self._best_run_of(spec.sweep or "")  # the schema requires one of model, run, sweep
        return self._from_run(run_id, data)

    def _base_setup(self) -> Setup:
        """The base's model and training (a base trained here), on the sweep's data."""
        spec = self.sweep.config.base
        tree = self.sweep.defaults()
        tree.pop("compress", None)
        if spec is not None and spec.model is not None:
            tree["model"] = spec.model.model_dump()
            tree["train"] = (spec.train or self.sweep.config.train).model_dump()
        return Setup.model_validate(tree)

    def base_train(self) -> TrainSpec:
        """How the base was trained: the scratch controls train the shrunk architecture the same way.
        For an earlier run's model, read from that run's logged settings."""
        spec = self.sweep.config.base
        if spec is None:
            raise StudyError("this sweep has no base section")
        if spec.model is not None:
            return spec.train or self.sweep.config.train
        run_id = spec.run or self._best_run_of(spec.sweep or "")
        tree: dict = {}
        for key, value in self.tracker.get_run(run_id).data.params.items():
            if key.startswith("train."):
                *path, last = key.split(".")[1:]
                node = tree
                for part in path:
                    node = node.setdefault(part, {})
                node[last] = value
        try:
            return TrainSpec.model_validate(tree, strict=False)
        except ValueError as error:
            raise StudyError(f"base.run: run {run_id}'s train settings cannot be read back ({error}); "
                             "the scratch controls need them") from None

    # ------------------------------------------------------------------------------ controls
    def finetuned(self, base: Reference, setup: Setup, data, seed: int, epochs: int) -> Reference:
        """The equal-training control of a fine-tuned file: `base` fine-tuned for `epochs` with the
        trial's train settings, seed and inputs; shared by every trial (and sweep) that asks for it."""
        from study.compression.pipeline import finetuned_base

        meaning = {"role": Role.FINETUNED.value, "base": base.key, "train": setup.train.model_dump(mode="json"),
                   "epochs": epochs, "dataset": setup.dataset.model_dump(mode="json"), "seed": seed, "data": data.digest}
        params = {"base_run_id": base.run_id or "", "epochs": epochs, "seed": seed,
                  **flatten({"train": setup.train.model_dump(mode="python")})}
        return self.trained_by(Role.FINETUNED, _hash(meaning), params,
                               lambda: finetuned_base(base.model_path, setup, data, seed, epochs))

    def scratch(self, architecture, train: TrainSpec, setup: Setup, data, seed: int) -> Reference:
        """`architecture` (a Keras model: its weights are ignored) from a fresh initialisation,
        trained with `train` (Scratch-E or Scratch-B: the epochs say which); shared by content, so
        magnitude and random structured pruning at one fraction share theirs."""
        from study.compression.pipeline import from_scratch

        meaning = {"role": Role.SCRATCH.value, "architecture": json.loads(architecture.to_json()),
                   "train": train.model_dump(mode="json"), "dataset": setup.dataset.model_dump(mode="json"),
                   "seed": seed, "data": data.digest}
        widths = {layer.name: int(layer.weights[-1].shape[0]) for layer in architecture.layers if layer.weights}
        params = {"widths": json.dumps(widths), "seed": seed, **flatten({"train": train.model_dump(mode="python")})}
        return self.trained_by(Role.SCRATCH, _hash(meaning), params, lambda: from_scratch(architecture, train, setup, data, seed))

    def control(self, setup: Setup, data, seed: int) -> Reference:
        """The distilled student's architecture and training, on hard labels alone."""
        return self.trained(Role.CONTROL, setup.model_copy(update={"compress": CompressSpec()}), data, seed)

    # ------------------------------------------------------------------------------ training
    def trained(self, role: str, setup: Setup, data, seed: int) -> Reference:
        key = model_key(setup, seed, data.digest)
        return self._once(role, key, lambda: self._train(role, key, setup, data, seed))

    def trained_by(self, role: str, key: str, params: dict, train) -> Reference:
        """The reference `key`, found or trained once by `train()` -> (final metrics, Keras model)
        and logged with `params`."""
        def log() -> Reference:
            started_ms = int(time.time() * 1000)
            metrics, model = train()
            if not measure.all_finite({k: v for k, v in metrics.items() if not k.startswith("fit/")}):
                raise StudyError(f"the {role} model's training diverged; change the train settings")
            from study.replicate import save_model

            with tempfile.TemporaryDirectory(prefix="study-ref-") as folder:
                path = Path(folder) / "model.keras"
                save_model(model, path)
                run_id = self.tracker.log_reference(role, key, params, metrics, path, started_ms)
            return Reference(role, self._download(run_id, key), run_id, metrics)

        return self._once(role, key, log)

    def _once(self, role: str, key: str, make) -> Reference:
        if key in self.loaded:
            return self.loaded[key]
        reference = self._find(key, role)
        if reference is None:
            from filelock import FileLock

            lock_path = self.store.root / "locks" / f"{key}.lock"
            lock_path.parent.mkdir(parents=True, exist_ok=True)
            with FileLock(str(lock_path)):  # another local worker may be training it right now
                reference = self._find(key, role) or make()
        reference.key = key
        self.loaded[key] = self._with_float_sizes(reference) if role == Role.BASE else reference
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
        reference = Reference(Role.BASE, self._download(run_id, f"run-{run_id}"), run_id, dict(run.data.metrics), key=f"run-{run_id}")
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
