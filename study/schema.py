"""The schema of a sweep file, as immutable pydantic models.

Defaults carry an end-of-line comment saying why they are what they are. `config.load_sweep`
reads the YAML and validates it against `SweepConfig`; the cross-key checks live here, next to
the keys they check.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from study import names
from study.errors import did_you_mean

Scalar = bool | int | float | str | None

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


def _check_train_size(value):
    if value is None:
        return value
    if isinstance(value, bool):
        raise ValueError("must be a count (integer ≥ 1) or a fraction in (0, 1]")
    if isinstance(value, int) and value < 1:
        raise ValueError(f"a count of training examples must be ≥ 1, got {value}")
    if isinstance(value, float) and not 0 < value <= 1:
        raise ValueError(f"a fraction of the training split must be in (0, 1], got {value}")
    return value


class _DatasetBase(_Strict):
    train_size: int | float | None = None  # count or fraction of the training split; None: all
    label_noise: float = Field(0.0, ge=0, lt=1)  # fraction of training labels flipped
    val_fraction: float = Field(0.2, ge=0.01, le=0.9)  # of the training pool, held out per epoch: some on each side
    # Each replicate re-draws its training/validation split from the pool (with its seed), besides
    # its initialisation: effects then average over splits too (Bouthillier et al. 2021).
    resplit: bool = False

    _train_size = field_validator("train_size")(_check_train_size)


class Mnist1dSpec(_DatasetBase):
    name: Literal["mnist1d"]
    # Defaults reproduce Greydanus (2024): 5000 samples split 4000/1000, length 40, seed 42.
    num_samples: int = Field(5000, ge=100, le=200_000)  # 200k generate in about a minute; more is no laptop study
    length: int = Field(40, ge=8, le=4096)
    corr_noise_scale: float = Field(0.25, ge=0, le=100)
    iid_noise_scale: float = Field(0.02, ge=0, le=100)
    shear_scale: float = Field(0.75, ge=0, le=100)
    scale_coeff: float = Field(0.4, ge=0, le=100)
    max_translation: int = Field(48, ge=0, le=4096)
    data_seed: int = Field(42, ge=0, lt=2**32)  # NumPy seeds are unsigned 32-bit


class DigitsSpec(_DatasetBase):
    name: Literal["digits"]
    test_fraction: float = Field(0.2, gt=0, lt=1)


class PolynomialSpec(_DatasetBase):
    name: Literal["polynomial"]
    degree: int = Field(3, ge=0, le=20)  # of the true function; its coefficients come from data_seed
    coefficients: list[float] | None = None  # lowest power first: [b, a] is the article's y = a·x + b
    noise: float = Field(0.3, ge=0, le=1e6)  # standard deviation of the Gaussian noise on targets (known)
    num_samples: int = Field(200, ge=10, le=1_000_000)  # training pool, validation included
    test_samples: int = Field(1000, ge=10, le=1_000_000)  # a dense test set makes bias and variance precise
    data_seed: int = Field(0, ge=0, lt=2**32)

    @model_validator(mode="after")
    def _degree_matches_coefficients(self):
        if self.coefficients is not None:
            if not self.coefficients:
                raise ValueError("coefficients: give at least one number, or remove the key")
            if "degree" in self.model_fields_set and self.degree != len(self.coefficients) - 1:
                raise ValueError(
                    f"degree {self.degree} disagrees with {len(self.coefficients)} coefficients; "
                    "remove degree (it follows from the coefficients)"
                )
        return self


class CsvSpec(_DatasetBase):
    name: Literal["csv"]
    path: str  # relative paths are tried from the working directory, then the sweep file's folder
    target: str
    features: list[str] | None = None  # None: every column but the target
    task: Literal["auto", "classification", "regression"] = "auto"
    test_fraction: float = Field(0.2, gt=0, lt=1)


DatasetSpec = Annotated[
    Mnist1dSpec | DigitsSpec | PolynomialSpec | CsvSpec, Field(discriminator="name")
]

# What each dataset is, where that is known before loading it.
DATASET_TASK = {"mnist1d": "classification", "digits": "classification", "polynomial": "regression"}
DATASET_LAYOUT = {"mnist1d": "sequence", "digits": "image", "polynomial": "tabular", "csv": "tabular"}


def task_of(dataset) -> str | None:
    """'classification' or 'regression'; None for a csv whose task is inferred when it is read."""
    if dataset.name == "csv":
        return None if dataset.task == "auto" else dataset.task
    return DATASET_TASK[dataset.name]


class ModelSpec(_Strict):
    kind: Literal["mlp", "cnn"] = "mlp"
    width: int = Field(64, ge=1, le=65_536)  # units of each hidden Dense layer (mlp) or channels of each conv layer (cnn)
    depth: int = Field(2, ge=0, le=64)  # hidden layers: Dense (mlp) or conv (cnn); 0 is a linear model
    kernel_size: int = Field(5, ge=1, le=1024)
    stride: int = Field(2, ge=1, le=1024)  # 2 halves the length at each conv layer, as in the MNIST-1D CNN
    activation: Literal["relu", "tanh", "sigmoid", "gelu", "elu", "selu", "swish", "linear"] = "relu"
    poly_degree: int = Field(1, ge=1, le=10)  # polynomial feature expansion (the article's remedy 6)
    l1: float = Field(0.0, ge=0, le=1e3)  # weight penalties on every kernel (remedy 2)
    l2: float = Field(0.0, ge=0, le=1e3)
    dropout: float = Field(0.0, ge=0, lt=1)  # after each hidden layer (remedy 3)
    conv: Literal["standard", "separable"] = "standard"  # separable: depthwise + pointwise after the first conv (MobileNet)
    width_multiplier: float = Field(1.0, gt=0, le=16)  # scales every layer's width (MobileNet's α)

    @model_validator(mode="after")
    def _consistent(self):
        if self.kind == "cnn" and self.poly_degree > 1:
            raise ValueError("poly_degree applies to mlp models; set it to 1 for kind: cnn")
        if self.kind == "mlp" and self.conv == "separable":
            raise ValueError("conv: separable applies to kind: cnn")
        return self

    @property
    def units(self) -> int:
        """Units or channels per hidden layer, after the width multiplier."""
        return max(1, round(self.width * self.width_multiplier))


EpochMonitor = Literal["val/loss", "val/accuracy", "val/mae"]


class EarlyStoppingSpec(_Strict):
    # The article's remedy 4: monitor='val_loss', patience=5, restore_best_weights=True.
    enabled: bool = False
    monitor: EpochMonitor = "val/loss"
    patience: int = Field(5, ge=0, le=100_000)
    min_delta: float = Field(0.0, ge=0, le=1e6)
    restore_best_weights: bool = True


class TrainSpec(_Strict):
    optimizer: Literal["adam", "sgd", "rmsprop"] = "adam"
    learning_rate: float = Field(1e-3, gt=0, le=1e9)  # huge rates diverge, and divergence is measured
    momentum: float = Field(0.0, ge=0, lt=1)  # sgd and rmsprop only
    batch_size: int = Field(64, ge=1, le=1_000_000)
    epochs: int = Field(20, ge=1, le=100_000)
    early_stopping: EarlyStoppingSpec = EarlyStoppingSpec()


CompressionMethod = Literal["none", "prune", "quantize", "prune_quantize", "cluster", "distill", "architecture"]
COMPRESSION_METHODS = get_args(CompressionMethod)

# The compress.* knobs each method reads: a sampler skips the others (a conditional search space).
METHOD_KNOBS = {
    "none": (),
    "prune": ("sparsity", "schedule", "structure", "criterion", "scope", "finetune_epochs"),
    "quantize": ("bits", "scheme", "finetune_epochs"),
    "prune_quantize": ("sparsity", "schedule", "structure", "criterion", "scope", "finetune_epochs"),
    "cluster": ("clusters", "finetune_epochs"),
    "distill": ("temperature", "alpha"),
    "architecture": (),
}

def knobs_read(method: str, bits: int = 8, scheme: str = "qat", structure: str = "unstructured") -> tuple[str, ...]:
    """The compress.* knobs a trial with these settings reads: quantization reads `scheme` only at
    8 bits and fine-tunes only under quantization-aware training; 2:4 pruning has its own sparsity
    and its own rule (the two largest of four); unstructured pruning ranks weights by magnitude or
    at random (`criterion`), channels rank units (`criterion`, `scope`) and have no schedule."""
    if method in ("prune", "prune_quantize"):
        unread = {"2:4": ("sparsity", "criterion", "scope"), "channels": ("schedule",)}.get(structure, ("scope",))
        return tuple(k for k in METHOD_KNOBS[method] if k not in unread)
    if method != "quantize":
        return METHOD_KNOBS[method]
    return ("bits",) + (("scheme",) if bits in SCHEMED_BITS else ()) + (("finetune_epochs",) if trains(bits, scheme) else ())


SCHEMED_BITS = (8, 4)  # the bit-widths that read compress.scheme (4: ptq_dynamic is LiteRT's int4)


def trains(bits: int, scheme: str) -> bool:
    """Whether quantizing to `bits` by `scheme` fine-tunes (quantization-aware training): 2-7 bits
    do, except int4 by the LiteRT quantizer (post-training); 8 bits under qat."""
    if bits == 4 and scheme == "ptq_dynamic":
        return False
    return bits < 8 or (bits == 8 and scheme == "qat")


# Methods that train a model of their own from the sweep's model and train sections.
TRAINS_OWN_MODEL = ("distill", "architecture")


def finetune_epochs(spec: CompressSpec) -> int:
    """The epochs a trial trains the base's weights for after the base's own training: 0 for
    post-training methods and for those that train a model of their own; prune_quantize fine-tunes
    twice (pruning, then quantization-aware training). Its equal-training control, the base
    fine-tuned for these epochs, is what the file's accuracy is compared with."""
    if spec.method in ("prune", "cluster"):
        return spec.finetune_epochs
    if spec.method == "prune_quantize":
        return 2 * spec.finetune_epochs
    if spec.method == "quantize" and trains(spec.bits, spec.scheme):
        return spec.finetune_epochs
    return 0


class CompressSpec(_Strict):
    """How a trial compresses the base model (only in sweeps with a `base`)."""

    method: CompressionMethod = "none"  # none: the base as it is, the uncompressed reference
    sparsity: float = Field(0.5, ge=0, le=0.98)  # prune: fraction of weights zeroed (channels: of each hidden layer's units removed)
    schedule: Literal["polynomial", "constant"] = "polynomial"  # Zhu & Gupta's cubic ramp, or all at once
    # unstructured: any weights; 2:4: 2 of every 4 (sparsity 0.5); channels: whole neurons and filters
    # removed, a smaller dense model (shrink.py)
    structure: Literal["unstructured", "2:4", "channels"] = "unstructured"
    # which weights or units go: channels rank units by the L1 or L2 norm of their weights (Li et al.
    # 2017); unstructured pruning ranks single weights by magnitude (l1); random: a random choice of
    # the same size, the baseline a criterion must beat (Blalock et al. 2020)
    criterion: Literal["l1", "l2", "random"] = "l1"
    scope: Literal["layer", "global"] = "layer"  # channels: sparsity of each hidden layer's units, or of all ranked together
    bits: int = 8  # quantize: 32 float, 16 float16, 8 int8, 2-7 packed by us
    # how 8-bit (and 4-bit) weights are made: quantization-aware training; post-training dynamic range
    # (at 4 bits: int4 weights by the LiteRT quantizer, which LiteRT runs); post-training full integer
    scheme: Literal["qat", "ptq_dynamic", "ptq_int8"] = "qat"
    clusters: int = Field(16, ge=2, le=4096)  # cluster: distinct values per layer
    finetune_epochs: int = Field(2, ge=1, le=100_000)  # prune, cluster, quantization-aware training
    temperature: float = Field(4.0, gt=0, le=1e3)  # distill: softens the teacher's logits (Hinton et al. 2015)
    alpha: float = Field(0.9, ge=0, le=1)  # distill: weight of the soft targets; 1 - alpha on hard labels

    @field_validator("bits")
    @classmethod
    def _bits(cls, value):
        if value not in (2, 3, 4, 5, 6, 7, 8, 16, 32):
            raise ValueError(f"must be 2 to 8, 16 or 32, got {value}")
        return value

    @model_validator(mode="after")
    def _criterion_fits(self):
        if self.method in ("prune", "prune_quantize") and self.structure == "unstructured" and self.criterion == "l2":
            raise ValueError("compress.criterion: l2 ranks whole units (structure: channels); single weights rank by "
                             "magnitude (l1) or at random (random)")
        return self

    @model_validator(mode="after")
    def _int4_scheme(self):
        if self.method == "quantize" and self.bits == 4 and self.scheme == "ptq_int8":
            raise ValueError("compress.scheme: 4-bit weights come by qat (our .qpack file) or ptq_dynamic "
                             "(LiteRT's int4); ptq_int8 makes 8-bit activations, use bits: 8")
        return self


class Setup(_Strict):
    """Everything that determines one trained model: what a trial resolves to."""

    dataset: DatasetSpec
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    compress: CompressSpec = CompressSpec()

    @property
    def task(self) -> str | None:
        """'classification' or 'regression'; None for a csv whose task is inferred on load."""
        return task_of(self.dataset)

    @model_validator(mode="after")
    def _fits_the_data(self):
        layout = DATASET_LAYOUT[self.dataset.name]
        if self.model.kind == "cnn" and layout == "tabular":
            raise ValueError(
                f"model.kind: cnn needs sequence or image data, and {self.dataset.name} is tabular; use mlp"
            )
        task = self.task
        monitor = self.train.early_stopping.monitor
        if task and not names.measured_for(monitor, task):
            raise ValueError(f"train.early_stopping.monitor: {monitor} is not measured for {task}; use val/loss")
        if task == "regression" and self.dataset.label_noise > 0:
            raise ValueError("dataset.label_noise flips class labels; for regression use the dataset's noise")
        if task == "regression" and self.compress.method == "distill":
            raise ValueError("compress.method: distill learns from a classifier's logits; it needs classification data")
        return self


GRID_LIMIT = 10_000  # points a grid may have


class IntParam(_Strict):
    type: Literal["int"]
    low: int
    high: int
    step: int = Field(1, ge=1)
    log: bool = False

    @model_validator(mode="after")
    def _range(self):
        _check_range(self.low, self.high, self.log, self.step if self.step != 1 else None)
        return self

    def grid(self) -> list[int]:
        count = (self.high - self.low) // self.step + 1
        if count > GRID_LIMIT:  # counted before any list is built: a huge range must not fill memory
            raise ValueError(f"the range holds {count} values; the grid sampler takes at most {GRID_LIMIT} points")
        return list(range(self.low, self.high + 1, self.step))


class FloatParam(_Strict):
    type: Literal["float"]
    low: float
    high: float
    step: float | None = Field(None, gt=0)
    log: bool = False

    @model_validator(mode="after")
    def _range(self):
        _check_range(self.low, self.high, self.log, self.step)
        return self

    def grid(self) -> list[float]:
        if self.step is None:
            raise ValueError("a float range needs a step to be searched by the grid sampler, or use a list of values")
        count = int(math.floor((self.high - self.low) / self.step + 1e-9)) + 1
        if count > GRID_LIMIT:
            raise ValueError(f"the range holds {count} values; the grid sampler takes at most {GRID_LIMIT} points")
        return [round(self.low + i * self.step, 12) for i in range(count)]


class CategoricalParam(_Strict):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1)

    def grid(self) -> list[Scalar]:
        return list(self.choices)


class FixedParam(_Strict):
    type: Literal["fixed"]
    value: Scalar


def _check_range(low, high, log, step):
    if low > high:
        raise ValueError(f"low ({low}) must not exceed high ({high})")
    if log and low <= 0:
        raise ValueError(f"a log range needs low > 0, got {low}")
    if log and step is not None:
        raise ValueError("a range cannot have both log: true and a step; drop one")


SearchParam = Annotated[IntParam | FloatParam | CategoricalParam | FixedParam, Field(discriminator="type")]


class TpeSpec(_Strict):
    name: Literal["tpe"]
    n_startup_trials: int = Field(10, ge=0, le=1_000_000)  # random trials before TPE models the space
    multivariate: bool = True


class RandomSpec(_Strict):
    name: Literal["random"]


class GridSpec(_Strict):
    name: Literal["grid"]


class NsgaiiSpec(_Strict):
    name: Literal["nsgaii"]
    population_size: int = Field(20, ge=2, le=100_000)


SamplerSpec = Annotated[TpeSpec | RandomSpec | GridSpec | NsgaiiSpec, Field(discriminator="name")]


class MedianPrunerSpec(_Strict):
    name: Literal["median"]
    n_startup_trials: int = Field(5, ge=0, le=1_000_000)  # trials that always run to the end
    n_warmup_steps: int = Field(3, ge=0, le=100_000)  # epochs before a trial may be pruned


class HyperbandPrunerSpec(_Strict):
    name: Literal["hyperband"]
    min_resource: int = Field(1, ge=1, le=100_000)
    reduction_factor: int = Field(3, ge=2, le=100)


class NoPrunerSpec(_Strict):
    name: Literal["none"]


PrunerSpec = Annotated[
    MedianPrunerSpec | HyperbandPrunerSpec | NoPrunerSpec, Field(discriminator="name")
]


class BaseSpec(_Strict):
    """The model a compression sweep compresses: trained here from `model` and `train` (once, then
    reused by every trial and worker), or an earlier run's model (`run: <id>`), or the best trial
    of another sweep (`sweep: <name>`)."""

    model: ModelSpec | None = None
    train: TrainSpec | None = None
    run: str | None = None
    sweep: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        sources = [name for name, given in (("model", self.model is not None), ("run", self.run), ("sweep", self.sweep)) if given]
        if len(sources) != 1:
            raise ValueError("give the base one source: model (with train), run, or sweep")
        if self.train is not None and self.model is None:
            raise ValueError("base.train goes with base.model")
        return self


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*([smh]?)\s*$")


class Budget(_Strict):
    trials: int | None = Field(None, ge=1, le=1_000_000)  # finished trials the sweep completes to
    timeout: float | None = Field(None, gt=0, le=366 * 86400)  # seconds one `study run` may start trials for

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value):
        if isinstance(value, str):
            match = _DURATION.match(value)
            if not match:
                raise ValueError(f"{value!r} is not a duration; write seconds (600) or 90s, 10m, 1.5h")
            number, unit = float(match.group(1)), match.group(2) or "s"
            return number * {"s": 1, "m": 60, "h": 3600}[unit]
        return value


def _expand_shorthand(value):
    """`sampler: tpe` means `sampler: {name: tpe}`."""
    return {"name": value} if isinstance(value, str) else value


class SweepConfig(_Strict):
    name: str | None = None  # defaults to the file's stem; if given, must equal it
    description: str = ""
    seed: int = Field(0, ge=0, lt=2**31 - 200)  # fixes data splits; replicate r trains with seed + r
    replicates: int = Field(1, ge=1, le=100)  # seeds per configuration (for bias and variance)
    # Models trained together in one TensorFlow graph (replicates first, then several trials
    # asked at once); 1 trains them one at a time. Compression sweeps train one at a time.
    pack: int = Field(8, ge=1, le=256)
    # The error a model should reach on this data (a published, human-level or Bayes error, as an
    # error rate or a mean squared error): the report judges underfitting against it. None: the
    # data's own noise floor where it is known (generated and shipped data), else chance.
    reference_error: float | None = Field(None, ge=0, le=1e12)
    # The smallest effect worth acting on, in the error's units (an error rate or a mean squared
    # error): a claim whose effect is shown to lie within ± this is 'negligible'. None: 1 point of
    # error rate, or 10% of the noise variance σ² for squared error (1% of chance where σ² is unknown).
    smallest_effect: float | None = Field(None, gt=0, le=1e12)
    dataset: DatasetSpec
    model: ModelSpec = ModelSpec()
    train: TrainSpec = TrainSpec()
    base: BaseSpec | None = None  # makes this a compression sweep
    compress: CompressSpec = CompressSpec()
    search: dict[str, SearchParam] = {}
    objective: dict[str, Literal["minimize", "maximize"]] = {"val/loss": "minimize"}
    sampler: SamplerSpec = TpeSpec(name="tpe")
    pruner: PrunerSpec = NoPrunerSpec(name="none")
    budget: Budget = Budget()

    _sampler = field_validator("sampler", mode="before")(_expand_shorthand)
    _pruner = field_validator("pruner", mode="before")(_expand_shorthand)

    @field_validator("search", mode="before")
    @classmethod
    def _search_shorthands(cls, value):
        """A list is a categorical choice; a plain value is fixed for every trial."""
        if not isinstance(value, dict):
            return value
        expanded = {}
        for key, spec in value.items():
            if isinstance(spec, list):
                spec = {"type": "categorical", "choices": spec}
            elif not isinstance(spec, dict):
                spec = {"type": "fixed", "value": spec}
            elif "type" not in spec:
                raise ValueError(f"{key}: add type: int, float or categorical (or give a list of values)")
            expanded[key] = spec
        return expanded

    @field_validator("objective")
    @classmethod
    def _known_metrics(cls, value):
        if not value:
            raise ValueError("name at least one metric, e.g. {val/accuracy: maximize}")
        for metric in value:
            if metric not in names.FINAL:
                raise ValueError(f"{metric!r} is not a metric{did_you_mean(metric, names.FINAL_KEYS)}")
        return value

    @model_validator(mode="after")
    def _consistent(self):
        multi = len(self.objective) > 1
        if multi and self.pruner.name != "none":
            raise ValueError(
                f"pruner: {self.pruner.name} needs a single objective; set pruner: none "
                "(diverging trials are still stopped)"
            )
        if self.pruner.name != "none":
            metric = next(iter(self.objective))
            if not metric.startswith("val/"):
                raise ValueError(
                    f"pruner: {self.pruner.name} compares per-epoch validation values, so the objective "
                    f"must be a val/ metric, not {metric}; set pruner: none or use val/loss"
                )
        task = task_of(self.dataset)
        for metric in self.objective:
            if task and not names.measured_for(metric, task):
                raise ValueError(f"objective: {metric} is not measured for {task} data; use loss-based metrics")
        compressing = self.compress.method != "none" or any(k.startswith("compress.") for k in self.search)
        needs_base = [m for m in self.objective if m in names.COMPRESSION_KEYS]
        if needs_base and self.base is None:
            raise ValueError(f"objective: {needs_base[0]} is measured by compression sweeps; add a base section or use val/ metrics")
        if compressing and self.base is None:
            raise ValueError("compress: compression needs a base model; add a base section (model, run or sweep)")
        if self.base is not None and self.base.model is not None and self.base.model.poly_degree > 1:
            raise ValueError("base.model.poly_degree: compression works on models of the raw inputs; set it to 1")
        if self.budget.trials is None and self.budget.timeout is None and self.sampler.name != "grid":
            raise ValueError("budget: give trials, timeout or both (only the grid sampler knows its own size)")
        return self


