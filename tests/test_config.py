"""Sweep files: what loads, and the one-line error each mistake gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import TINY

from study.config import load_sweep, parse_override, parse_yaml
from study.errors import StudyError
from study.schema import CategoricalParam, FixedParam, FloatParam, IntParam

BASE = "dataset: {name: mnist1d}\nbudget: {trials: 2}\n"


def error_of(write_sweep, text: str, name: str = "bad") -> str:
    path = write_sweep(name, text)
    with pytest.raises(StudyError) as info:
        load_sweep(path)
    message = str(info.value)
    assert "\n" not in message, "errors are one line"
    assert message.startswith(str(path)), "errors name the file"
    return message


def test_numbers_in_e_notation_are_numbers():
    assert parse_yaml("lr: 1e-3")["lr"] == pytest.approx(0.001)
    assert parse_yaml("x: 5E+2")["x"] == pytest.approx(500.0)
    assert parse_yaml("x: -.5e-1")["x"] == pytest.approx(-0.05)
    assert parse_yaml("x: 10")["x"] == 10 and isinstance(parse_yaml("x: 10")["x"], int)
    assert parse_yaml("x: '1e-3'")["x"] == "1e-3", "quoted text stays text"


def test_learning_rate_written_as_1e_minus_3_loads_as_a_float(write_sweep):
    sweep = load_sweep(write_sweep("lr", BASE + "train: {learning_rate: 1e-3}\n"))
    assert sweep.config.train.learning_rate == pytest.approx(1e-3)


def test_duplicate_keys_are_errors_with_both_lines(write_sweep):
    message = error_of(write_sweep, "dataset: {name: mnist1d}\nmodel: {width: 3}\nmodel: {depth: 2}\nbudget: {trials: 1}\n")
    assert ":3: duplicate key 'model' (first on line 2)" in message


def test_duplicate_nested_keys_are_errors(write_sweep):
    message = error_of(write_sweep, BASE + "model:\n  width: 3\n  width: 4\n")
    assert "duplicate key 'width'" in message


def test_unknown_key_names_the_path_and_suggests_a_fix(write_sweep):
    message = error_of(write_sweep, BASE + "model: {widht: 3}\n")
    assert "model.widht: unknown key; did you mean 'width'?" in message


def test_unknown_top_level_key_lists_allowed_keys_when_nothing_is_close(write_sweep):
    message = error_of(write_sweep, BASE + "zzz: 1\n")
    assert "zzz: unknown key (allowed:" in message and "search" in message


def test_unknown_dataset_key_is_found_inside_the_chosen_dataset(write_sweep):
    message = error_of(write_sweep, "dataset: {name: mnist1d, num_sample: 10}\nbudget: {trials: 1}\n")
    assert "dataset.num_sample: unknown key; did you mean 'num_samples'?" in message


def test_unknown_dataset_name_lists_the_choices(write_sweep):
    message = error_of(write_sweep, "dataset: {name: mnist}\nbudget: {trials: 1}\n")
    assert "dataset.name: 'mnist' is not one of mnist1d, digits, polynomial, csv; did you mean 'mnist1d'?" in message


def test_missing_dataset_is_an_error(write_sweep):
    assert "dataset: required key is missing" in error_of(write_sweep, "budget: {trials: 1}\n")


def test_wrong_type_names_expected_and_given(write_sweep):
    message = error_of(write_sweep, BASE + "model: {width: wide}\n")
    assert "model.width: expected an integer, got 'wide' (str)" in message


def test_a_boolean_is_not_accepted_as_a_number(write_sweep):
    assert "model.depth: expected an integer" in error_of(write_sweep, BASE + "model: {depth: true}\n")


def test_out_of_range_value_says_the_bound(write_sweep):
    message = error_of(write_sweep, BASE + "model: {dropout: 1.5}\n")
    assert "model.dropout: should be less than 1, got 1.5" in message


def test_bad_choice_suggests_the_closest(write_sweep):
    message = error_of(write_sweep, BASE + "model: {activation: rellu}\n")
    assert "'rellu' is not one of relu," in message and "did you mean 'relu'?" in message


def test_early_stopping_monitor_uses_our_metric_names(write_sweep):
    message = error_of(write_sweep, BASE + "train: {early_stopping: {monitor: val_loss}}\n")
    assert "did you mean 'val/loss'?" in message


def test_name_must_match_the_file_name(write_sweep):
    message = error_of(write_sweep, "name: other\n" + BASE, name="mine")
    assert "name 'other' differs from the file name 'mine'" in message


def test_name_defaults_to_the_file_stem(write_sweep):
    assert load_sweep(write_sweep("capacity_small", BASE)).name == "capacity_small"


def test_missing_file_is_an_error(tmp_path):
    with pytest.raises(StudyError, match="no such sweep file"):
        load_sweep(tmp_path / "nope.yaml")


def test_invalid_yaml_gives_the_line(write_sweep):
    assert ":2: not valid YAML" in error_of(write_sweep, "dataset: {name: mnist1d\nbudget: 3\n")


def test_a_list_at_top_level_is_an_error(write_sweep):
    assert "a sweep file is a mapping" in error_of(write_sweep, "- a\n- b\n")


# ---------------------------------------------------------------------------- search space
def test_search_shorthands_and_full_forms(write_sweep):
    sweep = load_sweep(write_sweep("space", BASE + """search:
  model.width: {type: int, low: 8, high: 64, log: true}
  train.learning_rate: {type: float, low: 1e-4, high: 1e-1, log: true}
  model.kind: [mlp, cnn]
  model.depth: 1
"""))
    space = sweep.config.search
    assert isinstance(space["model.width"], IntParam) and space["model.width"].log
    assert isinstance(space["train.learning_rate"], FloatParam) and space["train.learning_rate"].low == pytest.approx(1e-4)
    assert isinstance(space["model.kind"], CategoricalParam) and space["model.kind"].choices == ["mlp", "cnn"]
    assert isinstance(space["model.depth"], FixedParam)
    assert list(sweep.searched) == ["model.width", "train.learning_rate", "model.kind"]
    assert sweep.defaults()["model"]["depth"] == 1, "fixed values apply to every trial"


@pytest.mark.parametrize("text, expected", [
    pytest.param("search: {model.widht: [1, 2]}\n",
                 "search.model.widht: not a setting of this sweep; did you mean 'model.width'?", id="unknown key"),
    pytest.param("search: {model.depth: {type: int, low: -2, high: 3}}\n",
                 "search.model.depth.low: model.depth: should be greater than or equal to 0", id="invalid trials"),
    pytest.param("search: {model.depth: {type: float, low: 0.5, high: 3.0}}\n",
                 "search.model.depth.low: model.depth: expected an integer", id="float range on an int"),
    pytest.param("search: {model.activation: [relu, bogus]}\n", "search.model.activation.choices[1]", id="each choice"),
    pytest.param("search: {model.depth: {type: int, low: 5, high: 3}}\n",
                 "search.model.depth: low (5) must not exceed high (3)", id="impossible range"),
    pytest.param("search: {model.l2: {type: float, low: 0.0, high: 1.0, log: true}}\n", "a log range needs low > 0",
                 id="log range from 0"),
    pytest.param("search: {model.width: {low: 1, high: 4}}\n", "add type: int, float or categorical", id="no type"),
    pytest.param("search: {model.dropout: 1.5}\n", "search.model.dropout.value", id="fixed value"),
    pytest.param("model: {kind: mlp, conv: separable}\n", "conv: separable applies to kind: cnn", id="separable mlp"),
])
def test_each_invalid_setting_gets_its_own_message(write_sweep, text, expected):
    assert expected in error_of(write_sweep, BASE + text)


def test_the_dataset_cannot_be_searched(write_sweep):
    assert "one sweep studies one dataset" in error_of(write_sweep, BASE + "search: {dataset.name: [mnist1d, digits]}\n")


def test_grid_sampler_needs_finite_values(write_sweep):
    message = error_of(write_sweep, "dataset: {name: mnist1d}\nsampler: grid\nsearch: {model.dropout: {type: float, low: 0.0, high: 0.5}}\n")
    assert "needs a step" in message


def test_grid_of_a_float_range_with_step(write_sweep):
    sweep = load_sweep(write_sweep("g", "dataset: {name: mnist1d}\nsampler: grid\nsearch: {model.dropout: {type: float, low: 0.0, high: 0.5, step: 0.25}}\n"))
    assert sweep.grid() == {"model.dropout": [0.0, 0.25, 0.5]}


# ----------------------------------------------------------------------- objective, budget
def test_unknown_objective_metric_suggests_one(write_sweep):
    message = error_of(write_sweep, BASE + "objective: {val/acc: maximize}\n")
    assert "'val/acc' is not a metric; did you mean 'val/accuracy'?" in message


def test_accuracy_objective_on_regression_data_is_an_error(write_sweep):
    message = error_of(write_sweep, "dataset: {name: polynomial}\nobjective: {val/accuracy: maximize}\nbudget: {trials: 1}\n")
    assert "val/accuracy is not measured for regression" in message


@pytest.mark.parametrize("metric", ["artifact/val_accuracy", "control/test/accuracy", "gap/accuracy"])
def test_any_accuracy_objective_on_regression_data_is_an_error(write_sweep, metric):
    text = f"dataset: {{name: polynomial}}\nobjective: {{{metric}: maximize}}\nbudget: {{trials: 1}}\n"
    assert f"{metric} is not measured for regression" in error_of(write_sweep, text)


def test_every_metric_knows_its_task():
    from study.names import task_of as task_of_metric

    assert task_of_metric("artifact/test_mae") == "regression" and task_of_metric("val/accuracy") == "classification"
    assert task_of_metric("test/loss") is None and task_of_metric("train/loss_se") is None


def test_pruner_needs_a_single_objective(write_sweep):
    text = BASE + "objective: {val/loss: minimize, model/params: minimize}\npruner: median\n"
    assert "pruner: median needs a single objective" in error_of(write_sweep, text)


def test_pruner_needs_a_validation_objective(write_sweep):
    assert "must be a val/ metric" in error_of(write_sweep, BASE + "objective: {test/loss: minimize}\npruner: median\n")


def test_budget_is_required_except_for_grids(write_sweep):
    assert "budget: give trials, timeout or both" in error_of(write_sweep, "dataset: {name: mnist1d}\n")


def test_budget_timeout_accepts_units(write_sweep):
    sweep = load_sweep(write_sweep("t", "dataset: {name: mnist1d}\nbudget: {timeout: 1.5h}\n"))
    assert sweep.config.budget.timeout == 5400
    assert "is not a duration" in error_of(write_sweep, "dataset: {name: mnist1d}\nbudget: {timeout: soon}\n")


def test_sampler_and_pruner_take_a_name_or_a_mapping(write_sweep):
    sweep = load_sweep(write_sweep("s", BASE + "sampler: random\npruner: {name: median, n_warmup_steps: 2}\n"))
    assert sweep.config.sampler.name == "random" and sweep.config.pruner.n_warmup_steps == 2
    assert "did you mean 'n_startup_trials'?" in error_of(write_sweep, BASE + "sampler: {name: tpe, n_startup: 3}\n")


# --------------------------------------------------------------------------- cross checks
def test_cnn_on_tabular_data_is_an_error(write_sweep):
    message = error_of(write_sweep, "dataset: {name: polynomial}\nmodel: {kind: cnn}\nbudget: {trials: 1}\n")
    assert "model.kind: cnn needs sequence or image data" in message


def test_label_noise_on_regression_is_an_error(write_sweep):
    assert "label_noise flips class labels" in error_of(write_sweep, "dataset: {name: polynomial, label_noise: 0.1}\nbudget: {trials: 1}\n")


def test_train_size_must_be_a_count_or_a_fraction(write_sweep):
    assert "must be in (0, 1]" in error_of(write_sweep, "dataset: {name: mnist1d, train_size: 1.5}\nbudget: {trials: 1}\n")
    assert "must be ≥ 1" in error_of(write_sweep, "dataset: {name: mnist1d, train_size: 0}\nbudget: {trials: 1}\n")


def test_polynomial_degree_must_agree_with_coefficients(write_sweep):
    text = "dataset: {name: polynomial, degree: 2, coefficients: [1, 2]}\nbudget: {trials: 1}\n"
    assert "degree 2 disagrees with 2 coefficients" in error_of(write_sweep, text)


# ----------------------------------------------------------------------- overrides, resolve
def test_overrides_win_and_stop_a_key_being_searched(write_sweep):
    path = write_sweep("o", BASE + "search: {train.epochs: [1, 5], model.width: [4, 8]}\n")
    sweep = load_sweep(path, {"train.epochs": 3, "budget.trials": 7})
    assert "train.epochs" not in sweep.config.search
    assert sweep.defaults()["train"]["epochs"] == 3
    assert sweep.config.budget.trials == 7


def test_overrides_are_validated_like_the_file(write_sweep):
    with pytest.raises(StudyError, match="model.depth: should be greater than or equal to 0"):
        load_sweep(write_sweep("o", BASE), {"model.depth": -1})


def test_override_syntax():
    assert parse_override("train.learning_rate=1e-2") == ("train.learning_rate", pytest.approx(0.01))
    assert parse_override("model.kind=cnn") == ("model.kind", "cnn")
    with pytest.raises(StudyError, match="write KEY=VALUE"):
        parse_override("train.epochs")
    with pytest.raises(StudyError) as bad:
        parse_override("train.epochs=[1")
    assert str(bad.value) == ("--set 'train.epochs=[1': the value is not valid YAML (expected ',' or ']', but got "
                              "'<stream end>'); write it as in a sweep file"), "one line, not the parser's picture"


def test_resolve_applies_sampled_values(write_sweep):
    sweep = load_sweep(write_sweep("r", BASE + "search: {model.width: [4, 8]}\n"))
    setup = sweep.resolve({"model.width": 8, "model.kind": "cnn"})
    assert setup.model.width == 8 and setup.model.kind == "cnn"


def test_config_hash_ignores_budget_but_not_meaning(write_sweep):
    a = load_sweep(write_sweep("h", BASE))
    assert a.config_hash == load_sweep(a.path, {"budget.trials": 50}).config_hash
    assert a.config_hash != load_sweep(a.path, {"model.width": 3}).config_hash


def test_compression_metrics_need_a_base(write_sweep):
    message = error_of(write_sweep, BASE + "objective: {artifact/val_accuracy: maximize}\n")
    assert "artifact/val_accuracy is measured by compression sweeps; add a base section" in message


@pytest.mark.slow
def test_hundreds_of_mutated_sweep_files_give_one_line_errors_quickly_and_never_a_traceback(tmp_path):
    """Fuzz: mutated shipped sweeps (extreme numbers, odd strings, deep nesting, alias bombs, huge
    grids, bytes that are not UTF-8) in a memory-capped process. STUDY_FUZZ_COUNT runs more."""
    import os
    import subprocess
    import sys

    count = int(os.environ.get("STUDY_FUZZ_COUNT", 300))
    script = Path(__file__).with_name("fuzz_sweeps.py")
    env = {**os.environ, "PYTHONPATH": str(script.parents[1])}
    done = subprocess.run([sys.executable, str(script), "0", str(count), str(tmp_path)], capture_output=True, text=True,
                          timeout=600, env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [line.split(" ", 2) for line in done.stdout.splitlines()]
    assert len(rows) == count
    crashes = [(n, outcome) for outcome, _, n in rows if outcome not in ("ok", "bad")]
    assert not crashes, crashes[:5]
    slow = [(n, float(seconds)) for _, seconds, n in rows if float(seconds) > 3.0]
    assert not slow, slow
    assert {"ok", "bad"} <= {outcome for outcome, _, _ in rows}, "the mutants reach both outcomes"


@pytest.mark.parametrize("line, message", [
    ("seed: 12:30:00", "seed: expected an integer, got '12:30:00'"),
    ("seed: -1", "seed: should be greater than or equal to 0"),
    ("budget: {timeout: .inf}", "budget.timeout: inf is not a finite number"),
    ("replicates: 1e300", "replicates: 1e+300 is far too large"),
])
def test_values_that_would_fail_or_hang_at_run_time_are_refused_at_load(write_sweep, line, message):
    with pytest.raises(StudyError, match=re.escape(message)):
        load_sweep(write_sweep("edge", TINY + line + "\n"))


@pytest.mark.parametrize("setting, value", [
    ("dataset.data_seed", -1), ("dataset.num_samples", 10**9), ("dataset.val_fraction", 1e-9),
    ("train.batch_size", 10**8), ("train.epochs", 10**7), ("model.stride", 10**6), ("model.width", 10**7),
])
def test_unbounded_settings_are_bounded_by_what_runs_on_a_machine(write_sweep, setting, value):
    with pytest.raises(StudyError, match=re.escape(setting.split(".", 1)[1])):
        load_sweep(write_sweep("edge", TINY), {setting: value})


def test_a_grid_over_a_huge_range_is_refused_before_it_is_built(write_sweep):
    text = TINY.replace("model.width: [4, 8, 16]", "dataset.data_seed: {type: int, low: 1, high: 1000000000}")
    with pytest.raises(StudyError, match="1000000000 values; the grid sampler takes at most 10000"):
        load_sweep(write_sweep("huge", text))


def test_files_that_are_not_utf8_or_nest_too_deeply_get_one_line(write_sweep, tmp_path):
    path = tmp_path / "bytes.yaml"
    path.write_bytes(TINY.encode().replace(b"tiny", b"\xff\xfe"))
    with pytest.raises(StudyError, match="not UTF-8 text"):
        load_sweep(path)
    with pytest.raises(StudyError, match="nested more than 20 levels"):
        load_sweep(write_sweep("deep", TINY + "deep: " + "[" * 5000 + "]" * 5000 + "\n"))


def test_a_sparsity_that_2_4_pruning_would_not_read_is_an_error(write_sweep):
    compression = ("dataset: {name: mnist1d}\nbase: {model: {kind: cnn, width: 8, depth: 1}}\nbudget: {trials: 1}\n"
                   "objective: {artifact/val_accuracy: maximize}\n")
    said = error_of(write_sweep, compression + "compress: {method: prune, structure: '2:4', sparsity: 0.7}\n")
    assert "compress.sparsity: 2:4 pruning keeps the two largest of every four weights" in said
    # searched beside the structure, each trial reads what its structure reads: fine
    load_sweep(write_sweep("both", compression + "compress: {method: prune}\n"
                           "search: {compress.structure: [unstructured, '2:4'], compress.sparsity: [0.5, 0.9]}\n"))


def test_an_empty_file_and_a_folder_are_named_as_such(write_sweep, tmp_path):
    assert error_of(write_sweep, "").endswith(": the file is empty; a sweep file needs at least a dataset (see sweeps/demo.yaml)")
    with pytest.raises(StudyError, match="a folder, not a sweep file"):
        load_sweep(tmp_path)


COMPRESSION = ("dataset: {name: mnist1d}\nbase: {model: {kind: cnn, width: 8, depth: 1}}\nbudget: {trials: 1}\n"
               "objective: {artifact/val_accuracy: maximize}\n")


@pytest.mark.parametrize("text, unread", [
    (BASE + "compress: {method: none, finetune_epochs: 3}\n", ["finetune_epochs"]),
    # float32 is converted, not fine-tuned; clusters are clustering's
    (COMPRESSION + "compress: {method: quantize, bits: 32, finetune_epochs: 3, clusters: 8}\n", ["clusters", "finetune_epochs"]),
    (COMPRESSION + "compress: {method: quantize, bits: 16, scheme: ptq_dynamic}\n", ["scheme"]),
    (COMPRESSION + "compress: {method: prune, bits: 4, sparsity: 0.5}\n", ["bits"]),
    # each knob read by some trial the search can give: cluster reads clusters, 8 bits the scheme
    (COMPRESSION + "compress: {method: quantize, finetune_epochs: 3, clusters: 8}\nsearch: {compress.method: [quantize, cluster]}\n", []),
    (COMPRESSION + "compress: {method: quantize, scheme: ptq_dynamic}\nsearch: {compress.bits: [8, 16]}\n", []),
    (COMPRESSION + "compress: {method: quantize, scheme: ptq_dynamic}\nsearch: {compress.bits: {type: int, low: 5, high: 7}}\n", ["scheme"]),
    (COMPRESSION + "compress: {method: prune, structure: channels, scope: global}\n", []),
    (COMPRESSION + "compress: {method: prune, scope: global}\n", ["scope"]),
    # searched, a knob the method never reads is never sampled
    (COMPRESSION + "compress: {method: quantize}\nsearch: {compress.sparsity: [0.5, 0.9], compress.bits: [8, 16]}\n", ["sparsity"]),
    (COMPRESSION + "compress: {method: quantize}\nsearch: {compress.method: [quantize, prune], compress.sparsity: [0.5, 0.9]}\n", []),
])
def test_compress_knobs_that_no_trial_reads_are_found(write_sweep, text, unread):
    assert load_sweep(write_sweep("knobs", text)).unread_compress_knobs() == unread
