"""The project's one vocabulary (study/names.py): metric keys that round-trip, one quantity's four
names derived consistently, task checks that see through every spelling, and string enums."""

from __future__ import annotations

import json
import re
import typing

import pytest

from study import names
from study.names import (
    EPOCH,
    FINAL,
    FINAL_KEYS,
    KERAS_KEYS,
    MONITORS,
    Metric,
    Role,
    SweepState,
    Tag,
    TrialState,
)

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store


def parse(key: str) -> Metric:
    """A final metric key read back into its record, by the key's own grammar (written out here
    independently of Metric.key): group/name, artifact/<split>_<name>, and for the controls
    (control, scratch_e, scratch_b) <group>/<split>/<name>."""
    parts = key.split("/")
    if parts[0] in ("control", "scratch_e", "scratch_b"):
        return Metric(parts[0], parts[2], parts[1])
    group, rest = parts
    if group == "artifact" and re.fullmatch(r"(val|test)_(loss|accuracy|mae)", rest):
        split, name = rest.split("_", 1)
        return Metric("artifact", name, split)
    return Metric(group, rest, group if group in names.SPLITS else None)


# ------------------------------------------------------------------------------ final metrics
@pytest.mark.parametrize("key", FINAL_KEYS)
def test_every_final_key_round_trips_through_its_record(key):
    metric = FINAL[key]
    assert metric.key == key
    rebuilt = parse(key)
    assert (rebuilt.group, rebuilt.split, rebuilt.name) == (metric.group, metric.split, metric.name)
    assert rebuilt.key == key
    assert metric.column == names.column(key) == f"metrics.{key}"


def test_final_keys_are_distinct_and_cover_each_split_and_group():
    assert len(set(FINAL_KEYS)) == len(FINAL_KEYS) == len(FINAL)
    for split in names.SPLITS:
        for name in ("loss", "accuracy", "mae"):
            assert f"{split}/{name}" in FINAL
    for split in ("val", "test"):
        for name in ("loss", "accuracy", "mae"):
            assert f"artifact/{split}_{name}" in FINAL
    for split in names.SPLITS:
        for name in ("loss", "accuracy"):
            assert f"control/{split}/{name}" in FINAL


def test_compression_only_metrics_are_the_artifact_controls_and_sparsity_ones():
    expected = {k for k in FINAL_KEYS if k.split("/")[0] in ("artifact", "control", "scratch_e", "scratch_b")}
    expected |= {"model/nonzero_params", "model/sparsity", "model/macs", "model/macs_nonzero"}
    assert set(names.COMPRESSION_KEYS) == expected
    assert not {"val/loss", "model/params", "model/size_bytes", "fit/seconds"} & set(names.COMPRESSION_KEYS)


# --------------------------------------------------------------------------- per-epoch names
def test_one_quantity_four_names():
    """val/loss (monitor and final key) = epoch/val_loss (MLflow) = val_loss (history) = val_data_loss (Keras)."""
    curve = MONITORS["val/loss"]
    assert curve is names.VAL_LOSS is EPOCH["val_loss"]
    assert (curve.monitor, curve.key, curve.short, curve.keras_key) == ("val/loss", "epoch/val_loss", "val_loss", "val_data_loss")
    assert KERAS_KEYS["val_data_loss"] == "val_loss"
    assert "val/loss" in FINAL
    train = names.TRAIN_LOSS
    assert (train.key, train.short, train.keras_key) == ("epoch/train_loss", "train_loss", "data_loss")


@pytest.mark.parametrize("short", list(EPOCH))
def test_every_curve_derives_its_names_from_split_and_name(short):
    curve = EPOCH[short]
    split, name = short.split("_", 1)
    assert (curve.split, curve.name) == (split, name)
    assert curve.key == f"epoch/{split}_{name}" and curve.monitor == f"{split}/{name}"
    keras_name = "data_loss" if name == "loss" else name
    assert curve.keras_key == (keras_name if split == "train" else f"val_{keras_name}")
    assert KERAS_KEYS[curve.keras_key] == short
    assert curve.monitor in FINAL, "every curve ends in a final metric of the same name"
    assert curve.task == FINAL[curve.monitor].task


def test_keras_keys_and_curves_are_one_to_one():
    assert sorted(KERAS_KEYS.values()) == sorted(EPOCH)
    assert set(EPOCH) == {f"{s}_{n}" for s in ("train", "val") for n in ("loss", "accuracy", "mae")}


def test_the_monitors_are_the_validation_curves_and_what_the_schema_accepts():
    from study.schema import EpochMonitor

    assert set(MONITORS) == {"val/loss", "val/accuracy", "val/mae"}
    assert all(m.split == "val" for m in MONITORS.values())
    assert set(typing.get_args(EpochMonitor)) == set(MONITORS)


# ---------------------------------------------------------------------------- measured for
CLASSIFICATION_ONLY = ["val/accuracy", "train/accuracy", "test/accuracy", "gap/accuracy", "artifact/val_accuracy",
                       "artifact/test_accuracy", "control/test/accuracy", "control/train/accuracy",
                       "epoch/val_accuracy", "epoch/train_accuracy", "val_accuracy", "train_accuracy"]
REGRESSION_ONLY = ["val/mae", "train/mae", "test/mae", "artifact/val_mae", "artifact/test_mae",
                   "epoch/val_mae", "epoch/train_mae", "val_mae"]
BOTH = ["val/loss", "test/loss", "gap/loss", "artifact/val_loss", "control/val/loss", "epoch/val_loss", "val_loss",
        "model/params", "model/size_bytes", "fit/best_epoch", "artifact/size_bytes", "artifact/gzip_bytes",
        "artifact/compression_ratio", "data/chance_error", "data/noise_floor", "train/loss_se"]


@pytest.mark.parametrize("key", CLASSIFICATION_ONLY)
def test_accuracy_is_refused_on_regression(key):
    assert not names.measured_for(key, names.REGRESSION)
    assert names.measured_for(key, names.CLASSIFICATION)
    assert names.task_of(key) == names.CLASSIFICATION


@pytest.mark.parametrize("key", REGRESSION_ONLY)
def test_mae_is_refused_on_classification(key):
    assert not names.measured_for(key, names.CLASSIFICATION)
    assert names.measured_for(key, names.REGRESSION)
    assert names.task_of(key) == names.REGRESSION


@pytest.mark.parametrize("key", BOTH)
def test_losses_and_sizes_are_measured_for_both_tasks(key):
    assert names.task_of(key) is None
    assert all(names.measured_for(key, task) for task in names.TASKS)


def test_every_final_metric_names_its_task_by_what_it_measures():
    for key, metric in FINAL.items():
        expected = names.CLASSIFICATION if "accuracy" in key else names.REGRESSION if "mae" in key else None
        assert metric.task == names.task_of(key) == expected, key


@pytest.mark.parametrize("key, task", [("artifact/train_accuracy", names.CLASSIFICATION),
                                       ("epoch/test_mae", names.REGRESSION), ("accuracy", names.CLASSIFICATION),
                                       ("control/val/mae", names.REGRESSION), ("val/acuracy", None)])
def test_unknown_names_are_read_by_their_last_word(key, task):
    assert key not in FINAL
    assert names.task_of(key) == task


# ------------------------------------------------------------------------------ states, tags
@pytest.mark.parametrize("enum", [TrialState, SweepState, Role, Tag])
def test_enums_are_the_strings_they_store(enum):
    values = [member.value for member in enum]
    assert len(set(values)) == len(values), "no two members share a stored string"
    for member in enum:
        assert isinstance(member, str)
        assert member == member.value and str(member) == member.value and f"{member}" == member.value
        assert enum(member.value) is member
        assert json.loads(json.dumps({"state": member})) == {"state": member.value}
        assert {member.value: 1}[member] == 1, "a stored string and its member are the same dict key"


def test_the_stored_strings_themselves():
    assert [s.value for s in TrialState] == ["running", "finished", "pruned", "diverged", "failed", "interrupted"]
    assert SweepState.COMPLETE == "complete" and SweepState.EXHAUSTED == "exhausted"
    assert Role.TRIAL == "trial" and Role.SWEEP == "sweep"
    assert all(t.value.startswith("study.") for t in Tag)
    assert names.STOPPED == ("pruned", "diverged")
    assert names.tag_column(Tag.ROLE) == "tags.study.role"
    assert names.tag_column(Tag.SWEEP_RUN) == "tags.study.sweep_run"
