"""One contract over every compression method in `pipeline.METHODS`.

Whatever a method does, a compression replicate must: leave the base untouched; write a file that
exists and whose measured size is that file's bytes; say truthfully whether a runtime runs it (a
.tflite file, run by LiteRT) or only our loader (.qpack); measure the file's own accuracy by
running it; save the stored weights as a loadable Keras model with the base's inputs and outputs;
and log every compression metric the task measures. A method that trains the base's weights
further (schema.finetune_epochs > 0) is logged beside its equal-training control, the base
fine-tuned for exactly as many epochs; structured pruning beside Scratch-E and Scratch-B; a
distilled student beside its hard-label twin. A method added to METHODS without a case here fails
`test_every_method_has_a_case`.
"""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from test_compression import COMPRESSION

from study import names
from study.compression.base import References
from study.compression.pipeline import METHODS, run_compression_replicate
from study.config import load_sweep
from study.datasets import load_dataset
from study.keras_compat import keras
from study.schema import TRAINS_OWN_MODEL, finetune_epochs
from study.sweep import prepare

# (method, its own settings): each method once, and the three kinds of file quantization writes.
CASES = [
    ("none", {}),
    ("prune", {"compress.sparsity": 0.5}),
    ("prune", {"compress.structure": "channels", "compress.sparsity": 0.5}),  # a smaller dense model
    ("prune", {"compress.criterion": "random", "compress.sparsity": 0.5}),  # the baseline: random weights
    ("prune", {"compress.structure": "channels", "compress.criterion": "random", "compress.sparsity": 0.5}),
    ("prune_quantize", {"compress.sparsity": 0.5}),
    ("quantize", {"compress.bits": 16}),  # post-training float16 (TFLite)
    ("quantize", {"compress.bits": 8, "compress.scheme": "qat"}),  # quantization-aware int8 (TFLite)
    ("quantize", {"compress.bits": 4}),  # our packed 4-bit file
    ("quantize", {"compress.bits": 4, "compress.scheme": "ptq_dynamic"}),  # LiteRT's int4 (TFLite)
    ("cluster", {"compress.clusters": 8}),
    ("distill", {}),
    ("architecture", {}),
]
METRICS_EVERY_METHOD_LOGS = [
    k for k, m in names.FINAL.items()
    if m.compression_only and m.group not in names.CONTROL_GROUPS and names.measured_for(k, names.CLASSIFICATION)
]


def test_every_method_has_a_case():
    assert {method for method, _ in CASES} == set(METHODS)
    assert {s.get("compress.structure") for m, s in CASES if m == "prune"} >= {None, "channels"}
    assert {(s.get("compress.structure"), s.get("compress.criterion")) for m, s in CASES if m == "prune"} >= {
        (None, "random"), ("channels", "random")}, "random pruning, unstructured and channels, keeps the contract too"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A compression sweep's base (trained once, in a real store) and its references."""
    from study.store import Store

    folder = tmp_path_factory.mktemp("methods")
    path = folder / "methods.yaml"
    path.write_text(COMPRESSION + "compress: {finetune_epochs: 1}\nbudget: {trials: 1}\n")
    sweep = load_sweep(path)
    store = Store.resolve(folder / "store")
    _, tracker, _ = prepare(sweep, store)
    references = References(sweep, tracker, store)
    data = load_dataset(sweep.config.dataset, sweep.config.seed, folder)
    base = references.base(data)
    return sweep, data, references, base, folder


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("method, settings", CASES, ids=[f"{m}-{'-'.join(map(str, s.values())) or 'default'}" for m, s in CASES])
def test_a_compression_replicate_keeps_the_contract(world, method, settings):
    sweep, data, references, base, folder = world
    setup = sweep.resolve({"compress.method": method, **settings})
    before = _digest(base.model_path)
    workdir = folder / f"{method}-{'-'.join(map(str, settings.values()))}"
    result = run_compression_replicate(setup, data, 0, sweep.config.seed, workdir, None, references)

    assert result.status == names.TrialState.FINISHED, result.reason
    assert _digest(base.model_path) == before, "the base stays as it was"

    artifact = result.files["artifact"]
    metrics, tags = result.metrics, result.tags
    assert artifact.exists() and metrics["artifact/size_bytes"] == artifact.stat().st_size
    deployable = artifact.suffix == ".tflite"
    assert tags[names.Tag.DEPLOYABLE] == ("true" if deployable else "false")
    assert tags[names.Tag.METHOD] == method and tags[names.Tag.BASE_RUN_ID] == base.run_id
    assert metrics["artifact/bits"] == (settings.get("compress.bits", 32) if method == "quantize" else
                                        8 if method == "prune_quantize" else 32)

    missing = [k for k in METRICS_EVERY_METHOD_LOGS if k not in metrics]
    assert not missing, f"{method} did not log {missing}"
    assert not any(k.startswith("artifact/") and "mae" in k for k in metrics), "no regression metric on class labels"
    assert np.isfinite(metrics["artifact/latency_ms"]) == deployable, "latency is measured where a runtime runs the file"
    extra = finetune_epochs(setup.compress)
    if extra:  # the equal-training control: the base fine-tuned for exactly as many epochs as this file
        assert len(result.history) == extra, "the control's epochs are the ones the method trained (every phase)"
        assert metrics["control/fit/epochs"] == extra and "control/test/accuracy" in metrics
        control = references.tracker.get_run(tags[names.Tag.CONTROL_RUN_ID])
        assert control.data.tags[names.Tag.ROLE] == names.Role.FINETUNED
        assert control.data.params["base_run_id"] == base.run_id
    elif method == "distill":  # a student is judged against the same student on hard labels
        assert "control/test/accuracy" in metrics and tags[names.Tag.CONTROL_RUN_ID]
    else:  # post-training files, and a model of its own trained from scratch: no extra training to match
        assert method in TRAINS_OWN_MODEL or not result.history, f"{method} trains, so it needs a control"
        assert not any(k.startswith("control/") for k in metrics)
    channels = settings.get("compress.structure") == "channels"
    for group in ("scratch_e", "scratch_b"):
        assert (f"{group}/test/accuracy" in metrics) == channels, "structured pruning, and only it, has scratch controls"
    if channels:  # Scratch-E: the base's epochs plus the fine-tuning; Scratch-B: at least as many (same compute)
        assert metrics["scratch_e/fit/epochs"] == base.metrics["fit/epochs"] + extra
        assert metrics["scratch_b/fit/epochs"] >= metrics["scratch_e/fit/epochs"]

    # the file's own accuracy comes from running the file: the logged outputs are its predictions
    assert result.test_outputs is not None and result.test_outputs.shape[0] == len(data.y_test)
    file_accuracy = float(np.mean(result.test_outputs.argmax(axis=1) == data.y_test))
    assert file_accuracy == pytest.approx(metrics["artifact/test_accuracy"], abs=1e-9)

    model = keras.models.load_model(result.model_path, compile=False)
    reference = keras.models.load_model(base.model_path, compile=False)
    assert model.input_shape == reference.input_shape and model.output_shape == reference.output_shape
    assert metrics["model/params"] == model.count_params()
    assert (workdir / "r0" / "layers.csv").exists()
