"""Datasets by name, generated or shipped so that nothing is downloaded.

`load_dataset(spec, seed)` returns a `Data`: fixed train/val/test splits for that seed, plus a
description. `training_set(data, spec, seed)` then draws what one replicate trains on: a
`train_size` subsample of the training split, with `label_noise` applied, so the validation and
test sets stay the same across a data-size or label-noise sweep.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from study import names
from study.errors import BadInput, did_you_mean
from study.schema import CsvSpec, DigitsSpec, Mnist1dSpec, PolynomialSpec

# Settings that change which examples a replicate trains on, not the dataset itself.
PER_REPLICATE = ("train_size", "label_noise", "resplit")


@dataclass(frozen=True)
class Data:
    """Arrays of one dataset split three ways, and what they are.

    `layout` is 'sequence' (n, length), 'image' (n, h, w) or 'tabular' (n, features).
    For generated regression data the noiseless truth of the test set (`f_test`) and the noise
    level (`noise_std`) are known, which makes an exact bias–variance decomposition possible;
    `resample(seed)` then draws a fresh training set from the same distribution.
    """

    name: str
    task: str
    layout: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    classes: tuple[str, ...] = ()
    f_test: np.ndarray | None = None
    noise_std: float | None = None
    resample: Callable[[int], tuple[np.ndarray, np.ndarray]] | None = None
    description: str = ""
    source: str = "{}"  # JSON: how the data was made or where it was read
    features: tuple[tuple[str, str], ...] = ()  # a csv's feature columns, each (name, its type in the file)
    target: tuple[str, str] | None = None  # a csv's target column (name, its type in the file)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def digest(self) -> str:
        """Short content hash of the three splits (MLflow's dataset digest)."""
        h = hashlib.sha256()
        for array in (self.x_train, self.y_train, self.x_val, self.y_val, self.x_test, self.y_test):
            h.update(np.ascontiguousarray(array).tobytes())
        return h.hexdigest()[:16]

    def sizes(self) -> str:
        return f"{len(self.x_train)} train / {len(self.x_val)} val / {len(self.x_test)} test"

    def labels(self) -> dict[str, np.ndarray]:
        return {"train": self.y_train, "val": self.y_val, "test": self.y_test}

    def xs(self) -> dict[str, np.ndarray]:
        return {"train": self.x_train, "val": self.x_val, "test": self.x_test}


def cache_dir() -> Path:
    """Where generated datasets are kept: $STUDY_CACHE_DIR, else the user's cache folder."""
    root = os.environ.get("STUDY_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "study"
    )
    return Path(root)


def _split(x, y, fraction: float, seed: int, stratify: bool):
    """(x_a, y_a, x_b, y_b) with `fraction` of the rows in b, stratified by class if asked."""
    from sklearn.model_selection import train_test_split

    try:
        xa, xb, ya, yb = train_test_split(
            x, y, test_size=fraction, random_state=seed, stratify=y if stratify else None
        )
    except ValueError as exc:
        raise BadInput(f"the data cannot be split {1 - fraction:.0%}/{fraction:.0%}: {exc}") from None
    return xa, ya, xb, yb


def _with_validation(spec, seed, x_pool, y_pool, x_test, y_test, stratify, **fields) -> Data:
    x_train, y_train, x_val, y_val = _split(x_pool, y_pool, spec.val_fraction, seed, stratify)
    return Data(
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test, **fields
    )


# ---------------------------------------------------------------------------------- mnist1d
def _mnist1d_arrays(spec: Mnist1dSpec) -> dict[str, np.ndarray]:
    """Generate MNIST-1D (or read it from the on-disk cache keyed by every generator argument)."""
    from mnist1d.data import get_dataset_args, make_dataset

    args = get_dataset_args()
    settings = {
        "num_samples": spec.num_samples,
        "final_seq_length": spec.length,
        "corr_noise_scale": spec.corr_noise_scale,
        "iid_noise_scale": spec.iid_noise_scale,
        "shear_scale": spec.shear_scale,
        "scale_coeff": spec.scale_coeff,
        "max_translation": spec.max_translation,
        "seed": spec.data_seed,
    }
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    path = cache_dir() / "mnist1d" / f"{key}.npz"
    if path.exists():
        with np.load(path) as cached:
            return dict(cached)
    for name, value in settings.items():
        setattr(args, name, value)
    made = make_dataset(args)
    arrays = {
        "x": made["x"].astype(np.float32),
        "y": made["y"].astype(np.int64),
        "x_test": made["x_test"].astype(np.float32),
        "y_test": made["y_test"].astype(np.int64),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")  # another worker may write too
    np.savez(partial, **arrays)
    os.replace(partial, path)
    return arrays


def _load_mnist1d(spec: Mnist1dSpec, seed: int, base_dir: Path) -> Data:
    arrays = _mnist1d_arrays(spec)
    data = _with_validation(
        spec, seed, arrays["x"], arrays["y"], arrays["x_test"], arrays["y_test"], stratify=True,
        name="mnist1d", task="classification", layout="sequence", classes=tuple(str(i) for i in range(10)),
        source=json.dumps({"generator": "mnist1d", **spec.model_dump(exclude=set(PER_REPLICATE))}),
    )
    return replace(
        data,
        description=(
            f"MNIST-1D (Greydanus 2024): {spec.num_samples} generated sequences of length {spec.length}, "
            f"10 classes, generator seed {spec.data_seed}; {data.sizes()}"
        ),
    )


# ----------------------------------------------------------------------------------- digits
def _load_digits(spec: DigitsSpec, seed: int, base_dir: Path) -> Data:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype(np.float32)  # pixel intensities 0..16 -> 0..1
    y = bunch.target.astype(np.int64)
    x_pool, y_pool, x_test, y_test = _split(x, y, spec.test_fraction, seed, stratify=True)
    data = _with_validation(
        spec, seed, x_pool, y_pool, x_test, y_test, stratify=True,
        name="digits", task="classification", layout="image", classes=tuple(str(i) for i in range(10)),
        source=json.dumps({"loader": "sklearn.datasets.load_digits"}),
    )
    return replace(data, description=f"scikit-learn digits: 1797 8×8 images, 10 classes; {data.sizes()}")


# ------------------------------------------------------------------------------- polynomial
def polynomial_coefficients(spec: PolynomialSpec) -> np.ndarray:
    """The true coefficients, lowest power first: given, or drawn from N(0, 1) by data_seed."""
    if spec.coefficients is not None:
        return np.asarray(spec.coefficients, dtype=np.float64)
    return np.random.default_rng(spec.data_seed).normal(size=spec.degree + 1)


def _draw_polynomial(coefficients: np.ndarray, noise: float, n: int, rng: np.random.Generator):
    x = rng.uniform(-1.0, 1.0, size=(n, 1))
    truth = np.polynomial.polynomial.polyval(x[:, 0], coefficients)
    y = truth + rng.normal(scale=noise, size=n) if noise > 0 else truth
    return x.astype(np.float32), y.astype(np.float32), truth.astype(np.float32)


def _load_polynomial(spec: PolynomialSpec, seed: int, base_dir: Path) -> Data:
    coefficients = polynomial_coefficients(spec)
    x_test, y_test, f_test = _draw_polynomial(
        coefficients, spec.noise, spec.test_samples, np.random.default_rng([spec.data_seed, 1])
    )
    n_val = max(1, round(spec.num_samples * spec.val_fraction))
    x_val, y_val, _ = _draw_polynomial(coefficients, spec.noise, n_val, np.random.default_rng([spec.data_seed, 2]))
    n_train = spec.num_samples - n_val

    def resample(replicate_seed: int):
        """A fresh training set from the same distribution: new inputs and new noise."""
        x, y, _ = _draw_polynomial(coefficients, spec.noise, n_train, np.random.default_rng([spec.data_seed, 3, replicate_seed]))
        return x, y

    x_train, y_train = resample(seed)
    terms = " + ".join(f"{c:.3g}·x^{i}" for i, c in enumerate(coefficients))
    return Data(
        name="polynomial", task="regression", layout="tabular",
        x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val, x_test=x_test, y_test=y_test,
        f_test=f_test, noise_std=spec.noise, resample=resample,
        description=(
            f"polynomial regression y = {terms} + N(0, {spec.noise:g}²), x ~ U(-1, 1); "
            f"{n_train} train / {n_val} val / {spec.test_samples} test; each replicate draws a fresh training set"
        ),
        source=json.dumps({"generator": "polynomial", "coefficients": coefficients.tolist(), "noise": spec.noise}),
    )


# -------------------------------------------------------------------------------------- csv
MIN_ROWS_PER_CLASS = 3  # one each for train, validation and test


def resolve_csv_path(path: str, base_dir: Path) -> Path:
    """An absolute path as is; a relative one from the working directory, else the sweep's folder."""
    candidates = [Path(path)] if Path(path).is_absolute() else [Path.cwd() / path, base_dir / path]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    tried = " or ".join(str(c) for c in dict.fromkeys(candidates))
    raise BadInput(f"dataset.path: no such file {path!r} (looked for {tried}); fix the path")


def _numeric_column(frame, column: str, file: str, key: str) -> np.ndarray:
    import pandas as pd

    values = pd.to_numeric(frame[column], errors="coerce")
    bad = values.isna() & frame[column].notna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise BadInput(
            f"{key}: column {column!r} of {file} is not numeric (row {row + 1}: {frame[column].iloc[row]!r}); "
            "encode it as numbers or leave it out of dataset.features"
        )
    array = values.to_numpy(dtype=np.float64)
    outside = ~(np.abs(array) <= np.finfo(np.float32).max)  # infinite, or beyond float32 (which models compute in)
    if outside.any():
        row = int(np.flatnonzero(outside)[0])
        raise BadInput(
            f"{key}: column {column!r} of {file} holds {frame[column].iloc[row]} (row {row + 1}), beyond the "
            f"±{np.finfo(np.float32).max:.1e} that float32 holds; rescale the column or drop that row"
        )
    return array


def _infer_task(target) -> str:
    import pandas as pd

    numeric = pd.to_numeric(target, errors="coerce")
    if numeric.isna().any():
        return "classification"  # text labels
    integral = np.all(np.mod(numeric.to_numpy(dtype=float), 1) == 0)
    return "classification" if integral and numeric.nunique() <= 20 else "regression"


@dataclass(frozen=True)
class CsvTable:
    """A user's CSV as a sweep reads it: features (n, d) as float32, the target column, the task,
    and each column used with its type in the file (`column_type`)."""

    x: np.ndarray
    target: Any  # a pandas Series
    task: str
    features: list[str]
    path: Path
    types: dict[str, str]


def column_type(values) -> str:
    """A column's type as the file holds it: bool, int, float or text."""
    import pandas as pd

    if pd.api.types.is_bool_dtype(values):
        return "bool"
    if pd.api.types.is_integer_dtype(values):
        return "int"
    return "float" if pd.api.types.is_float_dtype(values) else "text"


PANDAS_INDEX = "Unnamed: 0"  # what pandas calls the header-less first column that `df.to_csv(path)` writes


def _check_no_saved_index(frame, features: list[str], file: str) -> None:
    """Refuse a leading header-less column of 0..n-1 among the features: the row numbers
    `df.to_csv(path)` writes (index=True), not data. A feature list that leaves it out is fine."""
    import pandas as pd

    if not len(frame.columns) or str(frame.columns[0]) != PANDAS_INDEX or PANDAS_INDEX not in features:
        return
    values = pd.to_numeric(frame[PANDAS_INDEX], errors="coerce").to_numpy(dtype=np.float64)
    if np.array_equal(values, np.arange(len(frame))):
        raise BadInput(
            f"dataset.features: column {PANDAS_INDEX!r} of {file} holds the row numbers 0..{len(frame) - 1}, "
            "a pandas index that df.to_csv wrote, not data; write the file with index=False, "
            "or list the columns to use in dataset.features"
        )


def read_csv_table(spec: CsvSpec, base_dir: Path) -> CsvTable:
    """The user's file, checked: every column named exists, every cell is filled, features are numbers."""
    import pandas as pd

    path = resolve_csv_path(spec.path, base_dir)
    try:
        frame = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise BadInput(f"dataset.path: {path.name} could not be read as CSV ({str(exc).splitlines()[0]})") from None
    columns = [str(c) for c in frame.columns]
    if spec.target not in columns:
        raise BadInput(
            f"dataset.target: no column {spec.target!r} in {path.name}{did_you_mean(spec.target, columns)}"
            f" (columns: {', '.join(columns)})"
        )
    features = spec.features if spec.features is not None else [c for c in columns if c != spec.target]
    for name in features:
        if name not in columns:
            raise BadInput(f"dataset.features: no column {name!r} in {path.name}{did_you_mean(name, columns)}")
        if name == spec.target:
            raise BadInput(f"dataset.features: {name!r} is the target; remove it from features")
    if not features:
        raise BadInput(f"dataset.features: {path.name} has no feature columns besides the target")
    if spec.features is None:  # columns the user listed are the ones they meant
        _check_no_saved_index(frame, features, path.name)
    for name in [*features, spec.target]:
        empty = frame[name].isna().to_numpy()
        if empty.any():
            rows = ", ".join(str(i + 1) for i in np.flatnonzero(empty)[:3])
            raise BadInput(
                f"dataset.path: column {name!r} of {path.name} has {int(empty.sum())} empty cells "
                f"(rows {rows}{', ...' if empty.sum() > 3 else ''}); fill them or drop those rows"
            )
    if len(frame) < 10:
        raise BadInput(f"dataset.path: {path.name} has {len(frame)} rows; a sweep needs at least 10")
    x = np.column_stack([_numeric_column(frame, name, path.name, "dataset.features") for name in features])
    task = _infer_task(frame[spec.target]) if spec.task == "auto" else spec.task
    types = {name: column_type(frame[name]) for name in [*features, spec.target]}
    return CsvTable(x.astype(np.float32), frame[spec.target], task, features, path, types)


def _load_csv(spec: CsvSpec, seed: int, base_dir: Path) -> Data:
    table = read_csv_table(spec, base_dir)
    x, target, task, features, path = table.x, table.target, table.task, table.features, table.path
    classes: tuple[str, ...] = ()
    if task == "classification":
        labels = target.astype(str).to_numpy()
        classes = tuple(sorted(set(labels)))
        if len(classes) < 2:
            raise BadInput(f"dataset.target: {spec.target!r} has a single class; classification needs two or more")
        counts = {c: int((labels == c).sum()) for c in classes}
        rare = [c for c, n in counts.items() if n < MIN_ROWS_PER_CLASS]
        if rare:
            raise BadInput(
                f"dataset.target: class {rare[0]!r} has only {counts[rare[0]]} rows in {path.name}; every class needs "
                f"at least {MIN_ROWS_PER_CLASS} (one per split): drop or merge rare classes"
            )
        y = np.searchsorted(np.array(classes), labels).astype(np.int64)
    else:
        y = _numeric_column(target.to_frame(), spec.target, path.name, "dataset.target").astype(np.float32)
    stratify = task == "classification"
    x_pool, y_pool, x_test, y_test = _split(x, y, spec.test_fraction, seed, stratify)
    mean, std = x_pool.mean(axis=0, dtype=np.float64), x_pool.std(axis=0, dtype=np.float64)  # float32 sums can overflow
    std[std == 0] = 1.0  # constant columns stay constant rather than dividing by zero
    scale = lambda a: ((a - mean) / std).astype(np.float32)  # noqa: E731 - train statistics only
    data = _with_validation(
        spec, seed, scale(x_pool), y_pool, scale(x_test), y_test, stratify,
        name="csv", task=task, layout="tabular", classes=classes,
        source=json.dumps({"path": str(path), "target": spec.target, "features": features}),
        features=tuple((name, table.types[name]) for name in features), target=(spec.target, table.types[spec.target]),
    )
    kind = f"{len(classes)} classes" if classes else "regression"
    return replace(
        data, description=f"{path.name}: {len(x)} rows, {len(features)} features, target {spec.target!r} ({kind}); {data.sizes()}"
    )


def _listing(items, limit: int) -> str:
    items = list(items)
    more = f", ... and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def describe_columns(data: Data, limit: int = 12) -> list[str]:
    """A csv's columns as a sweep uses them (`study validate`): the features, then the target, each
    with its type in the file; nothing for the other datasets."""
    if data.target is None:
        return []
    name, kind = data.target
    task = f"classification, {data.n_classes} classes ({_listing(data.classes, limit)})" if data.classes else "regression"
    return [
        f"  features ({len(data.features)}): {_listing((f'{f} ({t})' for f, t in data.features), limit)}",
        f"  target: {name} ({kind}): {task}",
    ]


LOADERS: dict[str, Callable[..., Data]] = {"mnist1d": _load_mnist1d, "digits": _load_digits, "polynomial": _load_polynomial, "csv": _load_csv}


def load_dataset(spec, seed: int, base_dir: Path | str = ".") -> Data:
    """The dataset `spec` names, split for `seed`. Cached per process: sweeps load it once.

    `base_dir` is the sweep file's folder, where relative CSV paths are also looked for.
    """
    core = spec.model_copy(update={"train_size": None, "label_noise": 0.0, "resplit": False})
    key = (core.model_dump_json(), seed, str(Path(base_dir).resolve()), *_stamp(spec, Path(base_dir)))
    if key not in _loaded:
        if len(_loaded) >= 4:  # a sweep over dataset settings keeps only the recent few
            _loaded.pop(next(iter(_loaded)))
        _loaded[key] = LOADERS[spec.name](core, seed, Path(base_dir).resolve())
    return _loaded[key]


_loaded: dict[tuple, Data] = {}


def _stamp(spec, base_dir: Path) -> tuple:
    """A user file's modification time and size: a file edited since it was read is read again."""
    path = getattr(spec, "path", None)
    if not path:
        return ()
    for candidate in (Path(path), base_dir / path):
        try:
            stat = candidate.stat()
        except OSError:
            continue
        return (str(candidate.resolve()), stat.st_mtime_ns, stat.st_size)
    return ()


def flip_labels(y: np.ndarray, fraction: float, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """A copy of `y` with round(fraction·n) labels, chosen at random, moved to another class."""
    y = y.copy()
    count = round(fraction * len(y))
    if count == 0 or n_classes < 2:
        return y
    rows = rng.choice(len(y), size=count, replace=False)
    y[rows] = (y[rows] + rng.integers(1, n_classes, size=count)) % n_classes
    return y


def train_rows(data: Data, spec) -> int:
    """How many examples each replicate's training set holds (`training_set`'s length)."""
    if spec.train_size is None:
        return len(data.x_train)
    return spec.train_size if isinstance(spec.train_size, int) else max(1, round(spec.train_size * len(data.x_train)))


def resplit(data: Data, spec, seed: int) -> Data:
    """`data` with its training and validation splits drawn again from their pool for `seed`
    (stratified for classes), the test split untouched: what one replicate sees with
    `dataset.resplit`. Generated data that draws a fresh training set per replicate keeps its own."""
    if not getattr(spec, "resplit", False) or data.resample is not None:
        return data
    x_pool, y_pool = np.concatenate([data.x_train, data.x_val]), np.concatenate([data.y_train, data.y_val])
    x_train, y_train, x_val, y_val = _split(x_pool, y_pool, len(data.x_val) / len(x_pool), seed,
                                            data.task == names.CLASSIFICATION)
    return replace(data, x_train=x_train, y_train=y_train, x_val=x_val, y_val=y_val)


def training_set(data: Data, spec, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """The (x, y) one replicate trains on: a fresh draw where the data can make one, then the
    first `train_size` rows of a `seed` permutation (so smaller sizes nest in larger ones), then
    `label_noise` flips."""
    x, y = data.resample(seed) if data.resample else (data.x_train, data.y_train)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(x))
    if spec.train_size is not None:
        count = train_rows(replace(data, x_train=x), spec)
        if count > len(x):
            raise BadInput(_too_few(count, len(x)))
        order = order[:count]
    x, y = x[order], y[order]
    if spec.label_noise > 0:
        y = flip_labels(y, spec.label_noise, data.n_classes, rng)
    return x, y


def count_poly_features(n_inputs: int, degree: int) -> int:
    """Monomials of degree 1..degree in n_inputs variables (scikit-learn's PolynomialFeatures)."""
    return math.comb(n_inputs + degree, degree) - 1


MAX_POLY_FEATURES = 20_000


def expand_features(degree: int, x_train: np.ndarray, *others: np.ndarray) -> list[np.ndarray]:
    """Polynomial features up to `degree` (interactions included), standardized on `x_train`.

    This is the article's `PolynomialFeatures(degree=2)` remedy, applied before the model.
    """
    from sklearn.preprocessing import PolynomialFeatures, StandardScaler

    flat = [a.reshape(len(a), -1) for a in (x_train, *others)]
    count = count_poly_features(flat[0].shape[1], degree)
    if count > MAX_POLY_FEATURES:
        raise BadInput(
            f"model.poly_degree: {degree} on {flat[0].shape[1]} inputs makes {count} features "
            f"(at most {MAX_POLY_FEATURES}); lower the degree"
        )
    poly = PolynomialFeatures(degree, include_bias=False).fit(flat[0])
    scaler = StandardScaler().fit(poly.transform(flat[0]))
    return [scaler.transform(poly.transform(a)).astype(np.float32) for a in flat]


def load_for_objective(spec, seed: int, folder: Path, metrics: list[str], train_count: int | None = None) -> Data:
    """`load_dataset`, then a check that every objective metric is measured for the data's task
    (a csv's task is known only once it is read), and that the training split holds the
    `train_count` every trial asks (`Sweep.train_count`; each trial checks its own again,
    `training_set`)."""
    data = load_dataset(spec, seed, folder)
    for metric in metrics:
        if not names.measured_for(metric, data.task):
            raise BadInput(f"objective: {metric} is not measured for {data.task} data ({data.name}); use val/loss")
    if train_count is not None and train_count > len(data.x_train):
        raise BadInput(_too_few(train_count, len(data.x_train)))
    return data


def _too_few(count: int, available: int) -> str:
    return f"dataset.train_size: {count} exceeds the {available} training examples available; lower it or make the dataset larger"
