"""Compression methods on tiny models, and compression sweeps end to end."""

from __future__ import annotations

import json
import struct
import textwrap
import zlib

import numpy as np
import pytest
from conftest import TINY

from study import measure
from study.compression import cluster, packing, prune, qpack, quantize
from study.compression.distill import Distiller, teacher_targets
from study.compression.export import TfliteRunner, open_artifact, to_tflite
from study.compression.pipeline import layer_table
from study.config import load_sweep
from study.errors import StudyError
from study.keras_compat import keras
from study.models import build_model
from study.schema import ModelSpec, TrainSpec
from study.search import grid_points
from study.sweep import run_sweep
from study.training import compile_model, fit, predict


@pytest.fixture(scope="module")
def toy():
    """A learnable 10-class problem on length-16 sequences, and a small trained CNN."""
    rng = np.random.default_rng(0)
    x = rng.normal(size=(600, 16)).astype(np.float32)
    y = (np.argmax(x[:, :10], axis=1)).astype(np.int64)
    keras.utils.set_random_seed(0)
    model = build_model(ModelSpec(kind="cnn", width=8, depth=2), (16,), "sequence", 10)
    compile_model(model, TrainSpec(learning_rate=1e-2), "classification")
    fit(model, (x[:500], y[:500]), (x[500:], y[500:]), TrainSpec(epochs=4))
    return x, y, model


def finetune(model, x, y, epochs=1, callbacks=()):
    compile_model(model, TrainSpec(learning_rate=1e-3), "classification")
    return fit(model, (x[:500], y[:500]), (x[500:], y[500:]), TrainSpec(epochs=epochs), None, callbacks)


# ------------------------------------------------------------------------------- packing
@pytest.mark.parametrize("bits", [2, 3, 4, 5, 6, 7, 8])
def test_codes_pack_into_exactly_bits_per_weight_and_round_trip(bits):
    codes, _ = packing.quantize_kernel(np.random.default_rng(bits).normal(size=(7, 5, 3)), bits)
    data = packing.pack_codes(codes, bits)
    assert len(data) == (codes.size * bits + 7) // 8
    assert np.array_equal(packing.unpack_codes(data, bits, codes.size).reshape(codes.shape), codes)
    levels = 2 ** (bits - 1) - 1
    assert codes.min() >= -levels and codes.max() <= levels


def test_scales_are_per_output_channel_and_zero_channels_survive():
    kernel = np.zeros((4, 3), dtype=np.float32)
    kernel[:, 0] = [0.9, -2.0, 0.6, 0.0]
    codes, scales = packing.quantize_kernel(kernel, 4)
    assert scales[0] == pytest.approx(2.0 / 7) and scales[1] == 1.0
    assert codes[:, 0].tolist() == [3, -7, 2, 0]  # 0.9 / (2/7) = 3.15, 0.6 / (2/7) = 2.1
    assert np.allclose(packing.dequantize_kernel(codes, scales)[:, 0], [6 / 7, -2.0, 4 / 7, 0.0])
    assert not codes[:, 1:].any()


def test_tensorflow_fake_quantization_matches_the_packed_values():
    kernel = np.random.default_rng(1).normal(size=(5, 1, 3, 6)).astype(np.float32)
    for bits in (2, 4, 7):
        codes, scales = packing.quantize_kernel(kernel, bits)
        assert np.array_equal(quantize.fake_quantize(kernel, bits).numpy(), packing.dequantize_kernel(codes, scales))


def test_packed_file_has_the_expected_bytes_and_reloads_to_the_simulated_predictions(toy, tmp_path):
    x, y, base = toy
    bits = 4
    qat = quantize.nbit_qat_model(base, bits)
    finetune(qat, x, y)
    simulated = predict(qat, x[500:])
    trained = quantize.float_weights_of(qat, base)
    artifact = qpack.write_packed(trained, bits, tmp_path / "m.qpack")
    assert not artifact.deployable and artifact.bits == 4

    blob = artifact.path.read_bytes()
    header_length = struct.unpack("<I", blob[5:9])[0]
    header = json.loads(blob[9 : 9 + header_length])
    kernels = [w for layer in trained.layers for w in layer.weights if "kernel" in w.name]
    others = [w for layer in trained.layers for w in layer.weights if "kernel" not in w.name]
    expected = (
        9 + header_length
        + sum((k.shape.num_elements() * bits + 7) // 8 for k in kernels)  # codes at 4 bits
        + sum(4 * k.shape[-1] for k in kernels)  # one float32 scale per output channel
        + sum(4 * w.shape.num_elements() for w in others)  # float32 biases
    )
    assert len(blob) == expected and header["bits"] == 4

    reloaded = open_artifact(artifact)(x[500:])
    assert np.allclose(reloaded, simulated, atol=1e-5)
    assert np.array_equal(reloaded.argmax(1), simulated.argmax(1))


def test_a_file_that_is_not_a_qpack_is_refused(tmp_path):
    path = tmp_path / "x.qpack"
    path.write_bytes(b"nope" + b"\0" * 20)
    with pytest.raises(ValueError, match="not a .qpack file"):
        packing.read_qpack(path)


# ------------------------------------------------------------------------------- tflite
def test_tflite_accuracy_is_computed_by_running_the_file(toy, tmp_path):
    x, y, base = toy
    artifact = to_tflite(base, "float32", tmp_path / "m.tflite")
    outputs = TfliteRunner(artifact.path)(x[500:])
    assert np.allclose(outputs, predict(base, x[500:]), atol=1e-4), "float32 TFLite computes what Keras does"
    int8 = to_tflite(base, "int8", tmp_path / "i.tflite", representative=x[:100])
    int8_outputs = open_artifact(int8)(x[500:])
    assert not np.allclose(int8_outputs, outputs, atol=1e-6), "int8 arithmetic really ran"
    assert measure.accuracy(y[500:], int8_outputs) == pytest.approx(measure.accuracy(y[500:], outputs), abs=0.1)
    assert int8.path.stat().st_size < artifact.path.stat().st_size
    median, spread = TfliteRunner(artifact.path).latency_ms(x[0])
    assert median > 0 and spread >= 0


def test_float16_file_is_smaller_than_float32(toy, tmp_path):
    _, _, base = toy
    full = to_tflite(base, "float32", tmp_path / "a.tflite").path.stat().st_size
    half = to_tflite(base, "float16", tmp_path / "b.tflite").path.stat().st_size
    assert half < full


def test_8_bit_quantization_aware_training_exports_int8(toy, tmp_path):
    x, y, base = toy
    qat = quantize.qat8_model(base)
    finetune(qat, x, y)
    artifact = to_tflite(qat, "qat", tmp_path / "q.tflite")
    assert artifact.bits == 8 and artifact.deployable
    assert measure.accuracy(y[500:], open_artifact(artifact)(x[500:])) > 0.2


# ------------------------------------------------------------------------------ pruning
def test_pruning_reaches_the_target_sparsity_and_leaves_the_base_alone(toy):
    x, y, base = toy
    before = [w.copy() for w in base.get_weights()]
    model = prune.prunable_copy(base, 0.8, "polynomial", "unstructured", total_steps=8)
    finetune(model, x, y, epochs=1, callbacks=prune.prune_callbacks())
    stripped = prune.strip(model)
    measured = {row["layer"]: row["kernel_sparsity"] for row in layer_table(stripped)}
    assert measured.pop("conv_1") == 0.0, "the first layer stays dense"
    for layer, sparsity in measured.items():
        assert sparsity == pytest.approx(0.8, abs=0.02), layer
    assert all(np.array_equal(a, b) for a, b in zip(before, base.get_weights())), "the base is not touched"


@pytest.mark.parametrize("schedule", ["polynomial", "constant"])
def test_random_pruning_reaches_the_target_sparsity_on_the_same_layers_with_other_weights(toy, schedule):
    x, y, base = toy
    before = [w.copy() for w in base.get_weights()]
    model, callbacks = prune.random_prunable(base, 0.8, schedule, total_steps=8, seed=3)
    finetune(model, x, y, epochs=1, callbacks=callbacks)
    measured = {row["layer"]: row["kernel_sparsity"] for row in layer_table(model)}
    assert measured.pop("conv_1") == 0.0, "the first layer stays dense, as under magnitude pruning"
    for layer, sparsity in measured.items():
        assert sparsity == pytest.approx(0.8, abs=0.01), layer
    assert all(np.array_equal(a, b) for a, b in zip(before, base.get_weights())), "the base is not touched"
    kept = model.get_layer("conv_2").get_weights()[0] != 0
    largest = np.abs(before[2]) >= np.quantile(np.abs(before[2]), 0.8)  # conv_2's kernel: magnitude's choice
    assert (kept & largest).sum() < 0.5 * largest.sum(), "random pruning does not keep the largest weights"
    again, callbacks = prune.random_prunable(base, 0.8, schedule, total_steps=8, seed=4)
    finetune(again, x, y, epochs=1, callbacks=callbacks)
    assert not np.array_equal(again.get_layer("conv_2").get_weights()[0] != 0, kept), "another seed, other weights"


def test_two_of_four_sparsity_keeps_two_of_every_four_weights(toy):
    x, y, base = toy
    model = prune.prunable_copy(base, 0.5, "constant", "2:4", total_steps=8)
    finetune(model, x, y, epochs=1, callbacks=prune.prune_callbacks())
    stripped = prune.strip(model)
    pruned = [layer for layer in stripped.layers if layer.name in ("conv_2", "logits")]
    assert pruned
    for layer in pruned:
        kernel = layer.get_weights()[0]
        groups = np.moveaxis(kernel, -2, -1).reshape(-1, 4)  # four consecutive inputs of one output
        assert (np.count_nonzero(groups, axis=1) <= 2).all(), layer.name


def test_clustering_leaves_at_most_that_many_values_per_kernel(toy):
    x, y, base = toy
    model = cluster.clusterable_copy(base, 4)
    finetune(model, x, y)
    counts = {row["layer"]: row["distinct_kernel_values"] for row in layer_table(cluster.strip(model))}
    assert counts["conv_2"] <= 4 and counts["logits"] <= 4


# -------------------------------------------------------------------------- distillation
def test_distillation_changes_only_the_students_weights(toy):
    x, y, teacher = toy
    teacher_before = [w.copy() for w in teacher.get_weights()]
    student = build_model(ModelSpec(kind="cnn", width=2, depth=1), (16,), "sequence", 10)
    student_before = [w.copy() for w in student.get_weights()]
    distiller = Distiller(student, temperature=4.0, alpha=0.9)
    compile_model(distiller, TrainSpec(learning_rate=1e-2), "classification")
    targets = teacher_targets(teacher, x[:500], y[:500])
    result = fit(distiller, (x[:500], targets), (x[500:], y[500:]), TrainSpec(epochs=2))
    assert set(result.history[0]) >= {"train_loss", "val_loss", "train_accuracy", "val_accuracy"}
    assert all(np.array_equal(a, b) for a, b in zip(teacher_before, teacher.get_weights())), "the teacher is frozen"
    assert any(not np.array_equal(a, b) for a, b in zip(student_before, student.get_weights()))


def test_soft_targets_at_alpha_zero_are_plain_cross_entropy():
    distiller = Distiller(keras.Sequential([keras.layers.Dense(3)]), temperature=3.0, alpha=0.0)
    labels = np.array([0, 2])
    student = np.array([[2.0, 0.0, -1.0], [0.0, 1.0, 3.0]], dtype=np.float32)
    teacher = np.array([[9.0, 0.0, 0.0], [0.0, 9.0, 0.0]], dtype=np.float32)
    loss = float(distiller.distillation_loss(labels, teacher, student))
    assert loss == pytest.approx(measure.cross_entropy(labels, student), rel=1e-5)


# ------------------------------------------------------------------------------ measures
def test_multiply_accumulates_per_layer():
    assert measure.layer_macs("Dense", [(40, 10)], (10,)) == 400
    assert measure.layer_macs("Conv2D", [(5, 1, 1, 8)], (20, 1, 8)) == 20 * 5 * 8
    separable = measure.layer_macs("SeparableConv2D", [(5, 1, 8, 1), (1, 1, 8, 16)], (10, 1, 16))
    assert separable == 10 * (5 * 8 + 8 * 16)


def test_gzip_size_is_the_gzip_files_size_and_shows_pruning_and_clustering():
    """Weights as a trial stores them: dense, 80% pruned and clustered to 16 values, all 16 KiB raw."""
    rng = np.random.default_rng(0)
    dense = rng.normal(size=4096).astype(np.float32)
    pruned = np.where(np.abs(dense) < np.quantile(np.abs(dense), 0.8), 0, dense).astype(np.float32)
    clustered = rng.normal(size=16).astype(np.float32)[rng.integers(0, 16, size=4096)]
    sizes = {}
    for name, weights in (("dense", dense), ("pruned", pruned), ("clustered", clustered)):
        data = weights.tobytes()
        # zlib writing the gzip container itself, at the highest level
        assert measure.gzip_size(data) == len(zlib.compress(data, 9, wbits=31)), name
        sizes[name] = measure.gzip_size(data)
    assert sizes["dense"] > 0.9 * dense.nbytes, "random float32 weights barely compress"
    assert sizes["pruned"] < 0.3 * sizes["dense"] and sizes["clustered"] < 0.3 * sizes["dense"]


# -------------------------------------------------------------------------------- config
COMPRESSION = textwrap.dedent("""
    dataset: {name: mnist1d, num_samples: 400}
    base:
      model: {kind: cnn, width: 8, depth: 2}
      train: {epochs: 2, learning_rate: 5e-3}
    model: {kind: cnn, width: 4, depth: 1}
    train: {epochs: 1}
""")


def test_compression_needs_a_base(write_sweep):
    with pytest.raises(StudyError, match="compression needs a base model"):
        load_sweep(write_sweep("nobase", "dataset: {name: mnist1d}\ncompress: {method: prune}\nbudget: {trials: 1}\n"))


def test_a_base_has_exactly_one_source(write_sweep):
    text = "dataset: {name: mnist1d}\nbase: {run: abc, sweep: capacity}\nbudget: {trials: 1}\n"
    with pytest.raises(StudyError, match="give the base one source"):
        load_sweep(write_sweep("twobases", text))


def test_bit_widths_are_checked(write_sweep):
    with pytest.raises(StudyError, match="compress.bits: must be 2 to 8, 16 or 32, got 12"):
        load_sweep(write_sweep("bits", COMPRESSION + "compress: {method: quantize, bits: 12}\nbudget: {trials: 1}\n"))


def test_a_grid_keeps_only_distinct_settings_a_trial_reads(write_sweep):
    text = COMPRESSION + textwrap.dedent("""
        compress: {method: quantize}
        search:
          compress.bits: [4, 8, 32]
          compress.scheme: [qat, ptq_dynamic, ptq_int8]
        sampler: grid
    """)
    points = grid_points(load_sweep(write_sweep("grid", text)))
    assert len(points) == 6, "the scheme matters at 8 bits (3 schemes) and 4 (qat or LiteRT's ptq_dynamic) only"
    assert {"compress.bits": 4, "compress.scheme": "ptq_dynamic"} in points and {"compress.bits": 8, "compress.scheme": "ptq_int8"} in points
    assert {"compress.bits": 4, "compress.scheme": "ptq_int8"} not in points, "a combination no method makes is left out"


# --------------------------------------------------------------------------- end to end
def runs_by_role(store, name):
    client = store.mlflow()
    runs = client.search_runs([client.get_experiment_by_name(name).experiment_id])
    roles: dict = {}
    for run in runs:
        roles.setdefault(run.data.tags.get("study.role"), []).append(run)
    return roles


@pytest.mark.slow
def test_a_compression_sweep_trains_its_base_once_and_measures_every_file(write_sweep, store):
    text = COMPRESSION + textwrap.dedent("""
        compress: {finetune_epochs: 1}
        search:
          compress.method: [none, prune, quantize, cluster, distill, architecture]
          compress.bits: [4, 8]
        objective: {artifact/val_accuracy: maximize, artifact/gzip_bytes: minimize}
        sampler: grid
    """)
    summary = run_sweep(load_sweep(write_sweep("squeeze", text)), store)
    assert summary.counts.finished == 7  # quantize at 4 and 8 bits, five other methods
    roles = runs_by_role(store, "squeeze")
    assert len(roles["base"]) == 1, "the base is trained once for every trial"
    assert len(roles["control"]) == 1, "the distilled student's hard-label control"
    base_id = roles["base"][0].info.run_id
    for reference in roles["base"] + roles["control"]:
        took = (reference.info.end_time - reference.info.start_time) / 1000
        assert took >= reference.data.metrics["fit/seconds"], "a reference run lasts as long as its training did"
    client = store.mlflow()
    by_method = {}
    for run in roles["trial"]:
        tags, metrics = run.data.tags, run.data.metrics
        by_method[(tags["study.method"], run.data.params.get("compress.bits"))] = run
        assert tags["study.base_run_id"] == base_id
        for name in ("artifact/size_bytes", "artifact/gzip_bytes", "artifact/compression_ratio", "artifact/test_accuracy",
                     "test/accuracy", "model/params", "model/nonzero_params", "model/macs"):
            assert name in metrics, (tags["study.method"], name)
        files = {a.path for a in client.list_artifacts(run.info.run_id, "artifact")}
        assert len(files) == 1 and files.pop().split(".")[-1] in ("tflite", "qpack")
    assert by_method[("none", None)].data.metrics["artifact/compression_ratio"] == pytest.approx(1.0)
    packed = by_method[("quantize", "4")]
    assert packed.data.tags["study.deployable"] == "false" and packed.data.metrics["artifact/bits"] == 4
    assert packed.data.metrics["artifact/size_bytes"] < by_method[("quantize", "8")].data.metrics["artifact/size_bytes"]
    assert "compress.sparsity" not in packed.data.params, "trials log only the knobs their method reads"
    distilled = by_method[("distill", None)].data
    assert distilled.tags["study.control_run_id"] == roles["control"][0].info.run_id
    assert "control/test/accuracy" in distilled.metrics
    pruned = by_method[("prune", None)].data.metrics
    assert pruned["model/sparsity"] == pytest.approx(0.5, abs=0.05) and "sparsity/conv_2" in pruned

    import optuna

    study = optuna.load_study(study_name="squeeze", storage=store.optuna())
    front = {t.user_attrs["mlflow_run_id"] for t in study.best_trials}
    marked = {r.info.run_id for r in roles["trial"] if r.data.tags.get("study.best") == "true"}
    assert marked == front


@pytest.mark.slow
def test_sweeps_with_the_same_base_share_it(write_sweep, store):
    text = COMPRESSION + "compress: {method: quantize, bits: 32}\nbudget: {trials: 1}\n"
    run_sweep(load_sweep(write_sweep("first", text)), store)
    run_sweep(load_sweep(write_sweep("second", text)), store)
    assert len(runs_by_role(store, "first").get("base", [])) == 1
    assert "base" not in runs_by_role(store, "second"), "the second sweep found the first one's base"
    from study.report.load import load_sweep_runs

    references = load_sweep_runs(store, "second").references
    assert references["run_id"].tolist() == [runs_by_role(store, "first")["base"][0].info.run_id], (
        "the report of the second sweep reads the base's own run from the first"
    )


def test_a_base_can_be_the_best_trial_of_another_sweep(write_sweep, store):
    run_sweep(load_sweep(write_sweep("source", TINY)), store, trials=2)
    text = "dataset: {name: mnist1d, num_samples: 400}\nbase: {sweep: source}\ncompress: {method: quantize, bits: 16}\nbudget: {trials: 1}\n"
    summary = run_sweep(load_sweep(write_sweep("reuse", text)), store)
    assert summary.counts.finished == 1
    run = runs_by_role(store, "reuse")["trial"][0]
    client = store.mlflow()
    best = [r for r in client.search_runs([client.get_experiment_by_name("source").experiment_id])
            if r.data.tags.get("study.best") == "true"]
    assert run.data.tags["study.base_run_id"] == best[0].info.run_id


def test_a_base_from_another_dataset_is_refused(write_sweep, store):
    run_sweep(load_sweep(write_sweep("other", TINY)), store, trials=1)
    text = "dataset: {name: mnist1d, num_samples: 500}\nbase: {sweep: other}\ncompress: {method: quantize, bits: 16}\nbudget: {trials: 1}\n"
    with pytest.raises(StudyError, match="was trained on other data"):
        run_sweep(load_sweep(write_sweep("mismatch", text)), store)


def test_an_objective_the_trial_does_not_measure_fails_that_trial_clearly(write_sweep, store):
    text = COMPRESSION + "compress: {method: quantize, bits: 32}\nobjective: {control/test/accuracy: maximize}\nbudget: {trials: 1}\n"
    summary = run_sweep(load_sweep(write_sweep("nocontrol", text)), store)
    assert summary.counts.failed == 1
    import optuna

    trial = optuna.load_study(study_name="nocontrol", storage=store.optuna()).trials[0]
    assert trial.user_attrs["study_reason"].startswith("objective: this trial measured no control/test/accuracy")
    assert store.mlflow().get_run(trial.user_attrs["mlflow_run_id"]).info.status == "FAILED"


def _markers(fig) -> int:
    """Points a chart draws as markers: scatter offsets, and lines drawn without a line (errorbar markers)."""
    from matplotlib.collections import PathCollection

    count = 0
    for ax in fig.axes:
        count += sum(len(c.get_offsets()) for c in ax.collections if isinstance(c, PathCollection))
        count += sum(len(line.get_xdata()) for line in ax.lines if line.get_linestyle() in ("None", "none", "")
                     and line.get_marker() not in (None, "None", "none", "", "|"))
    return count


@pytest.mark.slow
def test_a_base_per_replicate_controls_for_every_file_and_no_chart_averages_files(write_sweep, store, tmp_path):
    from study.report import figures, sections, tables
    from study.report.build import build_report
    from study.report.load import load_sweep_runs

    text = COMPRESSION + textwrap.dedent("""
        replicates: 2
        compress: {finetune_epochs: 1}
        search:
          compress.method: [none, prune]
          compress.structure: [unstructured, channels]
          compress.criterion: [l1, random]
          compress.sparsity: [0.5, 0.75]
        objective: {artifact/val_accuracy: maximize, artifact/gzip_bytes: minimize}
        sampler: grid
    """)
    summary = run_sweep(load_sweep(write_sweep("fair", text)), store)
    assert summary.counts.finished == 9  # the base, and 2 structures x 2 criteria x 2 fractions
    roles = runs_by_role(store, "fair")
    bases = {run.data.params["seed"]: run.info.run_id for run in roles["base"]}
    assert sorted(bases) == ["0", "1"], "a base per replicate, trained with the replicate's seed"
    assert len(roles["finetuned"]) == 2, "one equal-training control per base, shared by every fine-tuned trial"
    assert {r.data.params["base_run_id"] for r in roles["finetuned"]} == set(bases.values())
    # Scratch-E and Scratch-B per (fraction, seed); magnitude and random channel pruning share them
    assert len(roles["scratch"]) == 2 * 2 * 2

    data = load_sweep_runs(store, "fair")
    files = data.files
    assert len(files) == 9 * 2, "a file per replicate"
    for _, file in files.iterrows():
        assert file["tags.study.base_run_id"] == bases[str(int(file["seed"]))], "each seed compressed its own base"
    body = sections.compression(data)
    assert body.bases == 2
    assert _markers(figures.pareto(body.files, body.file_fronts, tables.SIZE, tables.ACCURACY, body.base)) >= len(files)
    assert _markers(figures.latency(body.timed, tables.ACCURACY, tables.LATENCY, tables.LATENCY_IQR)) >= len(body.timed) == len(files)
    pruned = files[files["tags.study.method"] == "prune"]
    assert body.pruned is not None and len(body.pruned) == len(pruned)
    assert _markers(figures.accuracy_against(body.pruned, sections.SPARSITY, "sparsity", tables.ACCURACY, body.pruned_hue)) \
        >= len(pruned), "every pruned file its own point"
    channels = body.pruned[body.pruned["params.compress.structure"] == "channels"]
    assert sorted(set(channels[sections.SPARSITY].round(2))) == [0.5, 0.75], "a shrunk file's sparsity: the fraction removed"

    controls = body.controls
    fine_tuned = {int(t) for t in files.loc[files["tags.study.method"] == "prune", "trial"]}
    equal = controls[controls["control"] == "equal-training control"]
    assert set(equal["trial"]) == fine_tuned and (equal["seeds"] == 2).all() and (equal["control epochs"] == 1).all()
    scratch = controls[controls["control"].isin(["Scratch-E", "Scratch-B"])]
    assert len(scratch) == 2 * 4, "Scratch-E and Scratch-B beside every channel-pruned setting"
    assert np.isfinite(scratch["low"]).all(), "two seeds give an interval"
    assert _markers(figures.controls(controls)) == sum(len(d) for d in controls["differences"])

    build_report(store, "fair", tmp_path / "reports", log_to_mlflow=False)
    import html

    page = html.unescape((tmp_path / "reports" / "fair" / "index.html").read_text())
    assert "Each method beside its controls" in page and "holds the base's variance" in page


@pytest.mark.slow
def test_a_compression_report_tests_its_claims_draws_bands_over_bases_and_counts_forgotten_examples(write_sweep, store, tmp_path):
    """Three bases, each compressed at every setting: the page carries the compression claims with
    verdicts, the attainment bands, the dominance tests with their reference points, and what each
    file forgot against its own base (example by example, from the logged predictions)."""
    import html

    from conftest import assert_legible_at_phone_and_desktop_widths, chromium_driver

    from study.report.build import build_report

    text = COMPRESSION + textwrap.dedent("""
        replicates: 3
        compress: {finetune_epochs: 1, sparsity: 0.5}
        search:
          compress.method: [none, prune, quantize]
          compress.structure: [unstructured, channels]
          compress.criterion: [l1, random]
          compress.bits: [4, 8]
          compress.scheme: [ptq_dynamic]
        objective: {artifact/val_accuracy: maximize, artifact/gzip_bytes: minimize}
        sampler: grid
    """)
    summary = run_sweep(load_sweep(write_sweep("claims", text)), store)
    assert summary.counts.finished == 7  # the base, 2 structures x 2 criteria, int4 and int8
    built = build_report(store, "claims", tmp_path / "reports", log_to_mlflow=False)
    page = html.unescape(built.path.read_text())
    verdict = "(confirmed|contradicted|negligible|inconclusive)"
    import re

    for claim in ("Magnitude beats random: prune \\(unstructured\\) at sparsity 0.5", "Magnitude beats random: prune \\(channels\\) at "
                  "sparsity 0.5", "Pruning beats training the small model from scratch, Scratch-E", "Pruning beats training the "
                  "small model from scratch, Scratch-B", "Int4 halves int8's bytes within a point \\(ptq_dynamic\\)",
                  "Compressed files are faster than the base: quantize, 4-bit", "Compressed files are faster than the base: "
                  "prune \\(channels\\)", "dominates .* on accuracy and gzip bytes", "dominates .* on accuracy and latency"):
        assert re.search(f"{claim}[^<]*: {verdict}\\.", page), claim
    saved = json.loads((built.path.parent / "verdicts.json").read_text())
    judged = [c for c in saved["claims"] if "dominates" in c["claim"]]
    assert judged and all(c["replicates"] == 3 for c in judged), "a dominance test per pair of methods, over the 3 bases"
    assert "Fronts over bases, and which method dominates" in page and "Reference points: gzip bytes: accuracy 0.1 (chance)" in page
    assert "tested with Student's t over the bases" in page
    fronts = (built.path.parent / "figures").glob("*fronts.svg")
    svg = next(fronts).read_text()
    assert "Fronts over bases" in svg and "(3 bases)" in svg, "each method's band is drawn over its three bases"
    assert "What compression forgets" in page and "lost by files" in page
    start = page.index("A file's accuracy can hold while it trades examples")
    forgets = page[start:page.index("The frontier", start)]
    assert forgets.count("prune") >= 4, "every compressed setting is counted against its base"
    summary_lines = page[page.index("What this sweep found"):page.index("Contents")]
    first = summary_lines.index("Magnitude beats random") if "Magnitude beats random" in summary_lines else -1
    assert 0 <= first < summary_lines.index("On the frontier"), "the compression verdicts come first in the summary"
    driver = chromium_driver(tmp_path)
    try:
        assert_legible_at_phone_and_desktop_widths(driver, built.path)
    finally:
        driver.quit()
