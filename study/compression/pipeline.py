"""A compression trial: take the base, apply the method, write the artifact, measure the file.

Each method is one function `(base model, Context) -> Compressed`: the model whose Keras metrics
are reported (the simulated one, for quantization-aware training), the plain model with the
weights as stored (counted and saved), and the artifact file every size and deployable accuracy
comes from.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from study import measure
from study.compression import cluster, prune, qpack, quantize, shrink
from study.compression.artifact import Artifact
from study.compression.distill import Distiller, teacher_targets
from study.compression.export import open_artifact, to_tflite
from study.datasets import Data
from study.keras_compat import keras
from study.names import SPLITS, STOPPED, Tag, TrialState
from study.replicate import (
    ReplicateResult,
    TrialObserver,
    TrialResult,
    build_for,
    epoch_hook,
    fit_metrics,
    measure_model,
    model_metrics,
    prepare_inputs,
    save_model,
)
from study.schema import Setup, TrainSpec, finetune_epochs, trains
from study.training import FitResult, compile_model, fit

REPRESENTATIVE_EXAMPLES = 200  # inputs that calibrate full-integer quantization
# Scratch-B trains the shrunk architecture for the compute of the base's training and fine-tuning
# (epochs scaled by the ratio of multiply-accumulates, Liu et al. 2019), at most this many times
# Scratch-E's epochs: at 90% of units removed the ratio passes 50, and a laptop study stops there
# (the report prints the epochs each control trained, so a capped Scratch-B is seen as one).
SCRATCH_B_MAX_FACTOR = 2


@dataclass
class Context:
    setup: Setup
    data: Data
    inputs: Data  # the replicate's view: its own training set
    folder: Path
    index: int
    seed: int
    observer: TrialObserver | None = None
    references: Any = None  # compression.base.References: the base and the controls
    epochs_done: int = 0  # fine-tuning phases continue the epoch count, so curves do not overlap
    history: list = field(default_factory=list)

    def fine_tune(self, model: keras.Model, epochs: int, callbacks=(), targets=None) -> FitResult:
        """Compile and train `model` with the sweep's train settings for `epochs` epochs."""
        spec = self.setup.train.model_copy(update={"epochs": epochs})
        compile_model(model, spec, self.data.task)
        hook = epoch_hook(self.observer, self.index)
        offset = self.epochs_done
        shifted = (lambda epoch, metrics: hook(epoch + offset, metrics)) if hook else None
        y = self.inputs.y_train if targets is None else targets
        fitted = fit(model, (self.inputs.x_train, y), (self.inputs.x_val, self.inputs.y_val), spec, shifted, callbacks)
        self.epochs_done += fitted.epochs
        self.history.extend(fitted.history)
        return fitted

    def base_reference(self):
        """The base this replicate compresses (compression.base.Reference): its own, per seed."""
        return self.references.base(self.data, self.seed)

    def steps(self, epochs: int) -> int:
        return epochs * -(-len(self.inputs.x_train) // self.setup.train.batch_size)

    def path(self, name: str) -> Path:
        return self.folder / name


@dataclass
class Compressed:
    evaluated: keras.Model  # its Keras metrics are reported (simulated, under quantization-aware training)
    plain: keras.Model  # the weights as stored, no training wrappers: counted and saved as model.keras
    artifact: Artifact
    fitted: FitResult | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    tags: dict[str, str] = field(default_factory=dict)


def keep_base(base, ctx: Context) -> Compressed:
    return Compressed(base, base, to_tflite(base, "float32", ctx.path("model.tflite")))


def apply_pruning(base, ctx: Context) -> Compressed:
    spec = ctx.setup.compress
    if spec.structure == "channels":
        return apply_structured_pruning(base, ctx)
    if spec.criterion == "random" and spec.structure == "unstructured":  # the baseline: same schedule, random weights
        plain, callbacks = prune.random_prunable(base, spec.sparsity, spec.schedule, ctx.steps(spec.finetune_epochs), ctx.seed)
        fitted = ctx.fine_tune(plain, spec.finetune_epochs, callbacks)
        return Compressed(plain, plain, to_tflite(plain, "float32", ctx.path("model.tflite")), fitted)
    model = prune.prunable_copy(base, spec.sparsity, spec.schedule, spec.structure, ctx.steps(spec.finetune_epochs))
    fitted = ctx.fine_tune(model, spec.finetune_epochs, prune.prune_callbacks())
    plain = prune.strip(model)
    return Compressed(plain, plain, to_tflite(plain, "float32", ctx.path("model.tflite")), fitted)


def apply_structured_pruning(base, ctx: Context) -> Compressed:
    """Remove whole neurons and filters (the lowest-norm `sparsity` of each hidden layer's units,
    or a random choice of as many), then fine-tune the smaller dense model. Its controls (Liu et
    al. 2019): the same smaller architecture from a fresh initialisation, trained for the base's
    epochs plus the fine-tuning's (Scratch-E) and for the same compute (Scratch-B)."""
    spec = ctx.setup.compress
    model, widths = shrink.shrink(base, spec.sparsity, spec.criterion, spec.scope, seed=ctx.seed)
    architecture = keras.models.clone_model(model)  # before fine-tuning: the scratch controls' start
    fitted = ctx.fine_tune(model, spec.finetune_epochs)
    artifact = to_tflite(model, "float32", ctx.path("model.tflite"))
    metrics, tags = scratch_controls(base, architecture, ctx)
    return Compressed(model, model, artifact, fitted, metrics, {Tag.WIDTHS: json.dumps(widths), **tags})


def scratch_epochs(base_epochs: int, finetune: int, base_macs: float, small_macs: float) -> tuple[int, int]:
    """(Scratch-E, Scratch-B) epochs: the pruned file's own training (base, then fine-tuning), and
    the same compute for the smaller model (base epochs scaled by the ratio of multiply-accumulates,
    plus the fine-tuning), at most SCRATCH_B_MAX_FACTOR times Scratch-E."""
    same_epochs = base_epochs + finetune
    ratio = base_macs / small_macs if small_macs > 0 else 1.0
    return same_epochs, min(SCRATCH_B_MAX_FACTOR * same_epochs, max(same_epochs, round(base_epochs * ratio) + finetune))


def scratch_controls(base, architecture: keras.Model, ctx: Context) -> tuple[dict[str, float], dict[str, str]]:
    """Train (once, shared) the shrunk architecture from scratch as Scratch-E and Scratch-B."""
    base_ref = ctx.base_reference()
    train = ctx.references.base_train()
    base_epochs = int(base_ref.metrics.get("fit/epochs", train.epochs))
    base_macs = sum(row["macs"] for row in layer_table(base))
    small_macs = sum(row["macs"] for row in layer_table(architecture))
    metrics: dict[str, float] = {}
    tags: dict[str, str] = {}
    epochs = scratch_epochs(base_epochs, ctx.setup.compress.finetune_epochs, base_macs, small_macs)
    for group, tag, count in zip(("scratch_e", "scratch_b"), (Tag.SCRATCH_E_RUN_ID, Tag.SCRATCH_B_RUN_ID), epochs):
        reference = ctx.references.scratch(architecture, train.model_copy(update={"epochs": count}), ctx.setup, ctx.data, ctx.seed)
        metrics.update(control_metrics(group, reference.metrics))
        tags[tag] = reference.run_id or ""
    return metrics, tags


def control_metrics(group: str, metrics: dict[str, float]) -> dict[str, float]:
    """A control's split metrics and epochs, under its group: control/test/accuracy, scratch_e/fit/epochs."""
    found = {f"{group}/{k}": v for k, v in metrics.items() if k.split("/")[0] in SPLITS}
    if "fit/epochs" in metrics:
        found[f"{group}/fit/epochs"] = metrics["fit/epochs"]
    return found


def train_reference(model: keras.Model, train: TrainSpec, setup: Setup, data: Data, seed: int) -> tuple[dict[str, float], keras.Model]:
    """Train `model` (compiled here) with `train` on replicate `seed`'s inputs, as a trial's
    fine-tuning does; its final metrics (every split, and the fit's)."""
    inputs = prepare_inputs(setup, data, seed)
    compile_model(model, train, data.task)
    fitted = fit(model, (inputs.x_train, inputs.y_train), (inputs.x_val, inputs.y_val), train)
    metrics, _ = measure_model(model, data.task, inputs)
    return {**metrics, **fit_metrics(fitted)}, model


def finetuned_base(base_path: Path, setup: Setup, data: Data, seed: int, epochs: int) -> tuple[dict[str, float], keras.Model]:
    """The equal-training control of a fine-tuned file: the base itself, fine-tuned with the
    sweep's train settings for the same `epochs`, on the same replicate's inputs and seed."""
    keras.utils.set_random_seed(seed)
    model = keras.models.load_model(base_path, compile=False)
    return train_reference(model, setup.train.model_copy(update={"epochs": epochs}), setup, data, seed)


def from_scratch(architecture: keras.Model, train: TrainSpec, setup: Setup, data: Data, seed: int) -> tuple[dict[str, float], keras.Model]:
    """`architecture` from a fresh initialisation (seeded), trained with `train`: Scratch-E or -B."""
    keras.utils.set_random_seed(seed)
    model = keras.models.clone_model(architecture)  # new weights, drawn by each layer's initializer
    return train_reference(model, train, setup, data, seed)


def apply_prune_then_quantize(base, ctx: Context) -> Compressed:
    """Deep compression: prune, then 8-bit quantization-aware training that keeps the zeros."""
    pruned = apply_pruning(base, ctx)
    if pruned.fitted is not None and pruned.fitted.stopped == TrialState.DIVERGED:
        return pruned
    qat = quantize.qat8_model(pruned.plain, preserve_sparsity=True)
    fitted = ctx.fine_tune(qat, ctx.setup.compress.finetune_epochs)
    plain = quantize.float_weights_of(qat, pruned.plain)
    return Compressed(qat, plain, to_tflite(qat, "qat", ctx.path("model.tflite")), fitted)


def apply_quantization(base, ctx: Context) -> Compressed:
    spec = ctx.setup.compress
    if not trains(spec.bits, spec.scheme):  # post-training: nothing to fine-tune
        representative = ctx.inputs.x_train[:REPRESENTATIVE_EXAMPLES]
        artifact = quantize.export_post_training(base, spec.bits, spec.scheme, ctx.path("model.tflite"), representative)
        return Compressed(base, base, artifact)
    if spec.bits == 8:
        qat = quantize.qat8_model(base)
        fitted = ctx.fine_tune(qat, spec.finetune_epochs)
        plain = quantize.float_weights_of(qat, base)
        return Compressed(qat, plain, to_tflite(qat, "qat", ctx.path("model.tflite")), fitted)
    qat = quantize.nbit_qat_model(base, spec.bits)
    fitted = ctx.fine_tune(qat, spec.finetune_epochs)
    trained = quantize.float_weights_of(qat, base)
    artifact = qpack.write_packed(trained, spec.bits, ctx.path("model.qpack"))
    return Compressed(qat, quantize.simulate_nbit(trained, spec.bits), artifact, fitted)


def apply_clustering(base, ctx: Context) -> Compressed:
    spec = ctx.setup.compress
    model = cluster.clusterable_copy(base, spec.clusters)
    fitted = ctx.fine_tune(model, spec.finetune_epochs)
    plain = cluster.strip(model)
    return Compressed(plain, plain, to_tflite(plain, "float32", ctx.path("model.tflite")), fitted)


def train_architecture(base, ctx: Context) -> Compressed:
    """A model of the trial's own architecture (say, separable convs at half width), from scratch."""
    model = build_for(ctx.setup, ctx.data, ctx.inputs)
    fitted = ctx.fine_tune(model, ctx.setup.train.epochs)
    return Compressed(model, model, to_tflite(model, "float32", ctx.path("model.tflite")), fitted)


def apply_distillation(teacher, ctx: Context) -> Compressed:
    """The trial's model as a student of the base; its control is the same student on hard labels."""
    spec = ctx.setup.compress
    student = build_for(ctx.setup, ctx.data, ctx.inputs)
    distiller = Distiller(student, spec.temperature, spec.alpha)
    targets = teacher_targets(teacher, ctx.inputs.x_train, ctx.inputs.y_train)
    fitted = ctx.fine_tune(distiller, ctx.setup.train.epochs, targets=targets)
    control = ctx.references.control(ctx.setup, ctx.data, ctx.seed)
    metrics = control_metrics("control", control.metrics)
    return Compressed(
        student, student, to_tflite(student, "float32", ctx.path("model.tflite")), fitted, metrics,
        {Tag.CONTROL_RUN_ID: control.run_id or ""},
    )


METHODS = {
    "none": keep_base,
    "prune": apply_pruning,
    "prune_quantize": apply_prune_then_quantize,
    "quantize": apply_quantization,
    "cluster": apply_clustering,
    "architecture": train_architecture,
    "distill": apply_distillation,
}


def layer_table(model: keras.Model) -> list[dict]:
    """Per layer: kind, parameters, non-zero parameters, measured sparsity, MACs per example."""
    rows = []
    for layer in model.layers:
        kernels = [w.numpy() for w in layer.weights if "kernel" in w.name]
        if not kernels:
            continue
        weights = [w.numpy() for w in layer.weights]
        shape = tuple(int(d) for d in layer.output_shape[1:])
        rows.append({
            "layer": layer.name,
            "kind": type(layer).__name__,
            "params": measure.count_params(weights),
            "nonzero_params": measure.count_nonzero(weights),
            "kernel_sparsity": round(measure.sparsity(kernels), 6),
            "distinct_kernel_values": int(sum(len(np.unique(k)) for k in kernels)),
            "macs": measure.layer_macs(type(layer).__name__, [k.shape for k in kernels], shape),
        })
    return rows


def artifact_metrics(artifact: Artifact, task: str, inputs: Data, base) -> tuple[dict[str, float], np.ndarray]:
    """Size, compressed size, ratios against the base, and accuracy and loss of the file itself."""
    blob = artifact.path.read_bytes()
    metrics: dict[str, float] = {
        "artifact/size_bytes": len(blob),
        "artifact/gzip_bytes": measure.gzip_size(blob),
        "artifact/bits": artifact.bits,
    }
    metrics["artifact/compression_ratio"] = base.float_bytes / metrics["artifact/size_bytes"]
    metrics["artifact/gzip_compression_ratio"] = base.float_gzip_bytes / metrics["artifact/gzip_bytes"]
    run = open_artifact(artifact)
    outputs = {}
    for split, x, y in (("val", inputs.x_val, inputs.y_val), ("test", inputs.x_test, inputs.y_test)):
        outputs[split] = run(x)
        metrics.update({f"artifact/{split}_{k}": v for k, v in measure.split_metrics(task, y, outputs[split]).items()})
    metrics["artifact/latency_ms"], metrics["artifact/latency_iqr_ms"] = run.latency_ms(inputs.x_test[0])
    return metrics, outputs["test"]


def run_compression_replicate(setup, data, index: int, seed: int, workdir: Path, observer=None, references=None) -> ReplicateResult:
    """Compress the base with `setup.compress` and measure the result and its file."""
    base_ref = references.base(data, seed)  # each seed its own base: the base's variance is sampled
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    base = keras.models.load_model(base_ref.model_path, compile=False)
    folder = workdir / f"r{index}"
    folder.mkdir(parents=True, exist_ok=True)
    ctx = Context(setup, data, prepare_inputs(setup, data, seed), folder, index, seed, observer, references)
    compressed = METHODS[setup.compress.method](base, ctx)
    extra = finetune_epochs(setup.compress)
    if extra:  # the base trained as long: what the method did beyond the extra training
        control = references.finetuned(base_ref, setup, data, seed, extra)
        compressed.metrics.update(control_metrics("control", control.metrics))
        compressed.tags[Tag.CONTROL_RUN_ID] = control.run_id or ""
    fitted = compressed.fitted
    result = ReplicateResult(index, seed, TrialState.FINISHED, "", ctx.history, {}, None, None)
    if fitted is not None and fitted.stopped in STOPPED:
        result.status, result.reason = TrialState(fitted.stopped), fitted.reason
        if fitted.stopped == TrialState.DIVERGED:
            return result
    metrics, _ = measure_model(compressed.evaluated, data.task, ctx.inputs)
    file_metrics, test_outputs = artifact_metrics(compressed.artifact, data.task, ctx.inputs, base_ref)
    if not measure.all_finite({**metrics, **{k: v for k, v in file_metrics.items() if not k.startswith("artifact/latency")}}):
        result.status, result.reason = TrialState.DIVERGED, "the compressed model's outputs are not finite"
        return result
    table = layer_table(compressed.plain)
    metrics.update(file_metrics)
    metrics.update(compressed.metrics)
    metrics.update({
        "model/nonzero_params": measure.count_nonzero(compressed.plain.get_weights()),
        "model/sparsity": measure.sparsity([w.numpy() for w in compressed.plain.weights if "kernel" in w.name]),
        "model/macs": sum(row["macs"] for row in table),
        "model/macs_nonzero": sum(row["macs"] * (1 - row["kernel_sparsity"]) for row in table),
        **{f"sparsity/{row['layer']}": row["kernel_sparsity"] for row in table},
    })
    if fitted is not None:
        metrics.update(fit_metrics(fitted))
    model_path = workdir / "models" / f"r{index}.keras"
    save_model(compressed.plain, model_path)
    metrics.update(model_metrics(compressed.plain, model_path))
    layers_csv = folder / "layers.csv"
    with layers_csv.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(table[0]))
        writer.writeheader()
        writer.writerows(table)
    result.metrics, result.test_outputs, result.model_path = metrics, test_outputs.astype(np.float32), model_path
    result.files = {"artifact": compressed.artifact.path, "layers": layers_csv}
    result.tags = {
        Tag.METHOD: setup.compress.method,
        Tag.ARTIFACT: compressed.artifact.kind,
        Tag.DEPLOYABLE: "true" if compressed.artifact.deployable else "false",
        Tag.BASE_RUN_ID: base_ref.run_id or "",
        **compressed.tags,
    }
    return result


def run_compression_trial(
    setup, data, seed: int, replicates: int, workdir: Path, observer: TrialObserver | None, references,
) -> TrialResult:
    """Compress `replicates` bases (seeds seed, seed+1, ..., each its own base trained with that
    seed), one after another; the trial ends at a replicate that is pruned or diverges."""
    result = TrialResult(task=data.task)
    for index in range(replicates):
        replicate = run_compression_replicate(setup, data, index, seed + index, Path(workdir), observer, references)
        result.replicates.append(replicate)
        if observer is not None:
            observer.replicate_end(replicate)
        if replicate.status != TrialState.FINISHED:
            break
    return result
