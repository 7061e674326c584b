"""The project's one vocabulary: every metric, state and tag, named once.

A metric is a typed record (group, split, name, task). Its sweep-file name, its MLflow key and
its report column derive from the record, as do the per-epoch curve names, the Keras log keys
they come from and the early-stopping monitors; so `val/loss` (final), `epoch/val_loss` (its
per-epoch curve in MLflow), `val_loss` (that curve in a history row) and `val_data_loss` (Keras'
log key, our data loss without the weight penalties) are one quantity seen from four places.
Every check of "is this metric measured for this task" goes through `measured_for`.
States and tags are `StrEnum`s, so they compare equal to the strings stored in Optuna and MLflow.
No TensorFlow, no I/O: every module may import this one.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

CLASSIFICATION, REGRESSION = "classification", "regression"
TASKS = (CLASSIFICATION, REGRESSION)
SPLITS = ("train", "val", "test")
EPOCH_PREFIX = "epoch/"  # per-epoch curves: epoch/<split>_<name>, with the epoch as the step
COLUMN_PREFIX = "metrics."  # how the report's tables (MLflow's search_runs frames) name a metric

# Controls a compression trial is compared with (metrics <group>/<split>/<name>, see Metric).
CONTROL_GROUPS = ("control", "scratch_e", "scratch_b")

# The task each quantity is measured for (None: both).
_TASK_OF_NAME = {"accuracy": CLASSIFICATION, "mae": REGRESSION}


@dataclass(frozen=True)
class Metric:
    """One final metric of a trial.

    group: train, val or test (a split of the data); gap, model, fit, data; artifact (measured on
    the compressed file); control (the trial's equal-training control: the base fine-tuned for the
    same extra epochs as a fine-tuned file, or a distilled student's hard-label twin); scratch_e and
    scratch_b (structured pruning's shrunk architecture trained from a fresh initialisation for the
    same epochs, and for the same compute; Liu et al. 2019).
    split: the data split it was measured on, where there is one.
    """

    group: str
    name: str
    split: str | None = None
    doc: str = ""

    @property
    def key(self) -> str:
        """The name in the sweep file's `objective`, in MLflow, in runs.csv and verdicts.json."""
        if self.group == "artifact" and self.split:
            return f"artifact/{self.split}_{self.name}"
        if self.group in CONTROL_GROUPS:
            return f"{self.group}/{self.split}/{self.name}"
        return f"{self.group}/{self.name}"

    @property
    def column(self) -> str:
        """The report's column (MLflow's `search_runs` frame)."""
        return COLUMN_PREFIX + self.key

    @property
    def task(self) -> str | None:
        """'classification' or 'regression' if only that task measures it, else None."""
        return _TASK_OF_NAME.get(self.name)

    @property
    def compression_only(self) -> bool:
        """Measured only by compression trials (sweeps with a base)."""
        return self.group in ("artifact", *CONTROL_GROUPS) or self.key in _COMPRESSION_MODEL_KEYS


@dataclass(frozen=True)
class EpochMetric:
    """A per-epoch curve: `split` is train (running means over the epoch's batches) or val."""

    split: str
    name: str  # loss (data loss, penalties excluded), accuracy or mae

    @property
    def short(self) -> str:
        """Its key in a history row: train_loss, val_accuracy."""
        return f"{self.split}_{self.name}"

    @property
    def key(self) -> str:
        """Its MLflow key (logged with the epoch as the step)."""
        return EPOCH_PREFIX + self.short

    @property
    def keras_key(self) -> str:
        """The key in Keras' epoch logs (our loss metric is `data_loss`, which leaves out the penalties)."""
        name = "data_loss" if self.name == "loss" else self.name
        return name if self.split == "train" else f"val_{name}"

    @property
    def monitor(self) -> str:
        """Its name as an early-stopping monitor or pruning objective in the sweep file: val/loss."""
        return f"{self.split}/{self.name}"

    @property
    def task(self) -> str | None:
        return _TASK_OF_NAME.get(self.name)


def _split_metrics() -> list[Metric]:
    return [Metric(split, name, split) for split in SPLITS for name in ("loss", "accuracy", "mae")]


_COMPRESSION_MODEL_KEYS = ("model/nonzero_params", "model/sparsity", "model/macs", "model/macs_nonzero")

# Every final metric a trial can report, and so every name an objective may use.
FINAL: dict[str, Metric] = {m.key: m for m in [
    *_split_metrics(),
    Metric("gap", "loss", doc="test/loss - train/loss: how much worse held-out data fares"),
    Metric("gap", "accuracy", doc="train/accuracy - test/accuracy"),
    Metric("model", "params"),
    Metric("model", "size_bytes", doc="the saved Keras model (architecture + weights, no optimizer state)"),
    Metric("fit", "seconds"),
    Metric("fit", "epochs", doc="epochs actually run (early stopping and pruning end sooner)"),
    Metric("fit", "best_epoch", doc="epoch of the best monitored validation value (the one early stopping restores)"),
    Metric("fit", "stopped_epoch", doc="the epoch where early stopping stopped training; 0 when it ran to the end"),
    # what the report needs to put intervals and references on the errors above
    Metric("train", "loss_se", "train", doc="standard error of the mean loss over the split's examples"),
    Metric("test", "loss_se", "test"),
    Metric("data", "train_size", doc="examples the model trained on"),
    Metric("data", "test_size", doc="examples the held-out metrics were measured on"),
    Metric("data", "chance_error", doc="held-out error of a constant guess: the commonest training class, or the training mean"),
    Metric("data", "noise_floor", doc="training error of the noiseless labelling: flipped-label fraction, or the known σ²"),
    # compression sweeps: measured on the artifact file (.tflite or .qpack) and the stored weights
    *(Metric("artifact", name, split) for split in ("val", "test") for name in ("loss", "accuracy", "mae")),
    Metric("artifact", "size_bytes"),
    Metric("artifact", "gzip_bytes", doc="what the file takes compressed: where pruning and clustering show"),
    Metric("artifact", "compression_ratio", doc="the base's float32 TFLite bytes / this artifact's bytes"),
    Metric("artifact", "gzip_compression_ratio"),
    Metric("artifact", "latency_ms", doc="median single-example invoke on LiteRT, one thread, after a warm-up"),
    Metric("artifact", "latency_iqr_ms", doc="its spread: the interquartile range of the invokes timed"),
    Metric("artifact", "bits"),
    Metric("model", "nonzero_params"),
    Metric("model", "sparsity"),
    Metric("model", "macs", doc="multiply-accumulates per example"),
    Metric("model", "macs_nonzero", doc="the same, skipping zero weights"),
    # the equal-training control (distillation's hard-label student, or the base fine-tuned for as
    # many epochs as the file) and structured pruning's Scratch-E and Scratch-B (see Metric)
    *(Metric(group, name, split) for group in CONTROL_GROUPS for split in SPLITS for name in ("loss", "accuracy")),
    *(Metric(group, "epochs", "fit", doc="epochs the control trained") for group in CONTROL_GROUPS),
]}
FINAL_KEYS = tuple(FINAL)
COMPRESSION_KEYS = tuple(k for k, m in FINAL.items() if m.compression_only)

# Per-epoch curves, and the monitors early stopping and the pruners may watch (the val/ ones).
EPOCH: dict[str, EpochMetric] = {
    m.short: m for m in (EpochMetric(split, name) for split in ("train", "val") for name in ("loss", "accuracy", "mae"))
}
MONITORS: dict[str, EpochMetric] = {m.monitor: m for m in EPOCH.values() if m.split == "val"}
KERAS_KEYS: dict[str, str] = {m.keras_key: m.short for m in EPOCH.values()}  # Keras log key -> history key
TRAIN_LOSS, VAL_LOSS = EPOCH["train_loss"], EPOCH["val_loss"]


def task_of(key: str) -> str | None:
    """The task a metric (final, per-epoch or monitor) is measured for, or None for both.
    Unknown names are read by their last word, so a typo is still refused for the wrong task."""
    for table in (FINAL, EPOCH, MONITORS):
        if key in table:
            return table[key].task
    if key.startswith(EPOCH_PREFIX) and key[len(EPOCH_PREFIX):] in EPOCH:
        return EPOCH[key[len(EPOCH_PREFIX):]].task
    return _TASK_OF_NAME.get(key.rsplit("/", 1)[-1].rsplit("_", 1)[-1])


def measured_for(key: str, task: str) -> bool:
    """Whether a trial on `task` data measures the metric `key`."""
    needs = task_of(key)
    return needs is None or needs == task


def on_test_set(key: str) -> bool:
    """Whether a final metric is measured on the test split (gap/ metrics too: test minus train).
    Choosing trials by one of them leaks the test set into the choice; its validation twin is fair."""
    metric = FINAL.get(key)
    return metric is not None and (metric.split == "test" or metric.group == "gap")


def validation_twin(key: str) -> str | None:
    """The validation metric measured like `key` on the validation split, if there is one."""
    twin = key.replace("test/", "val/", 1).replace("artifact/test_", "artifact/val_", 1)
    return twin if twin != key and twin in FINAL else None


def column(key: str) -> str:
    """The report's column of a metric key."""
    return COLUMN_PREFIX + key


# --------------------------------------------------------------------------------- states
class TrialState(StrEnum):
    """How a trial (and its MLflow run's `study.state`) ended, or that it is still running."""

    RUNNING = "running"
    FINISHED = "finished"
    PRUNED = "pruned"  # stopped by the pruner
    DIVERGED = "diverged"  # a non-finite loss or prediction
    FAILED = "failed"  # an error
    INTERRUPTED = "interrupted"  # Ctrl+C or a dead worker: queued again with the same settings


REFERENCE_ROLES = ("base", "control", "finetuned", "scratch")  # runs of models trials compare with, not trials

STOPPED = (TrialState.PRUNED, TrialState.DIVERGED)  # Optuna's PRUNED, MLflow's KILLED


class SweepState(StrEnum):
    """The sweep run's `study.state`."""

    RUNNING = "running"
    COMPLETE = "complete"  # the budget of trials is done
    EXHAUSTED = "exhausted"  # every setting of a finite space ran
    PARTIAL = "partial"  # a deadline ended it before its budget of trials
    INTERRUPTED = "interrupted"
    FAILED = "failed"


class Role(StrEnum):
    """What an MLflow run is (`study.role`)."""

    SWEEP = "sweep"
    TRIAL = "trial"
    REPLICATE = "replicate"
    BASE = "base"  # a compression sweep's trained base model
    CONTROL = "control"  # distillation's student trained on hard labels
    FINETUNED = "finetuned"  # the base fine-tuned for a fine-tuned file's extra epochs: its equal-training control
    SCRATCH = "scratch"  # structured pruning's shrunk architecture from a fresh initialisation (Scratch-E, Scratch-B)


# ----------------------------------------------------------------------------------- tags
class Tag(StrEnum):
    """Our MLflow tags."""

    ROLE = "study.role"
    NAME = "study.name"  # the sweep: the file's stem, the Optuna study and the MLflow experiment
    STATE = "study.state"
    REASON = "study.reason"  # why a trial was pruned, diverged or failed
    ERROR = "study.error"  # the traceback of a failed trial
    SWEEP_HASH = "study.sweep_hash"
    CONFIG_HASH = "study.config_hash"
    SWEEP_RUN = "study.sweep_run"  # a trial run's sweep run (trial runs are top-level: the UI folds nested ones)
    TRIAL = "study.trial"
    SAMPLED = "study.sampled"  # the settings the sampler chose, as a JSON list
    REPLICATE = "study.replicate"
    BEST = "study.best"  # 'true' on the best run (the Pareto set, for several objectives)
    MODEL_KEY = "study.model_key"  # a reference model's content key
    METHOD = "study.method"
    ARTIFACT = "study.artifact"  # what the compressed file is, in words
    DEPLOYABLE = "study.deployable"  # 'true': a runtime (LiteRT) runs the file
    BASE_RUN_ID = "study.base_run_id"
    WIDTHS = "study.widths"  # structured pruning: the width each hidden layer kept, as JSON
    CONTROL_RUN_ID = "study.control_run_id"  # the equal-training control's run
    SCRATCH_E_RUN_ID = "study.scratch_e_run_id"  # structured pruning: Scratch-E's run
    SCRATCH_B_RUN_ID = "study.scratch_b_run_id"  # and Scratch-B's


def tag_column(tag: Tag) -> str:
    """The report's column of a tag."""
    return f"tags.{tag.value}"


class Attr(StrEnum):
    """Our attributes of Optuna trials (user attrs) and of the Optuna study."""

    STATE = "study_state"  # a trial's TrialState, finer than Optuna's (diverged, interrupted)
    REASON = "study_reason"
    SKIPPED = "study_skipped"  # why a trial does not count: 'budget' (asked over it) or 'repeat'
    RUN_ID = "mlflow_run_id"  # a trial's MLflow run
    SWEEP_RUN_ID = "mlflow_sweep_run_id"  # the study's: its sweep's MLflow run
    EXPERIMENT_ID = "mlflow_experiment_id"
    CONFIG_HASH = "config_hash"
    METRICS = "metrics"
    DESCRIPTION = "description"
    ROUND = "study_round"  # a trial's round of seeds: round k trains seeds seed + k·R ... (study run --until-decided)
    LOOKS = "study_looks"  # the study's planned looks at its claims (--until-decided): each is tested at α / looks
    ROUNDS = "study_rounds"  # the study's rounds of added seeds: which settings, and the claims that asked for them
    SWEEP_FILE = "sweep_file"
    PACK = "study_pack"  # how many trials trained together in the trial's pack (blame for a dead worker needs 1)
    DATA_DIGEST = "data_digest"  # the study's dataset (content digest) now; a trial's: the one it ran on
