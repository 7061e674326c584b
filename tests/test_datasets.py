"""Datasets: fixed splits, subsampling, label noise, the on-disk cache, and CSV errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from study import datasets
from study.datasets import expand_features, flip_labels, load_dataset, training_set
from study.errors import StudyError
from study.schema import CsvSpec, DigitsSpec, Mnist1dSpec, PolynomialSpec

pytestmark = pytest.mark.unit  # pure logic: no TensorFlow, no store


def mnist(**kw):
    return Mnist1dSpec(name="mnist1d", num_samples=kw.pop("num_samples", 300), **kw)


def test_mnist1d_is_generated_offline_and_cached_by_its_arguments(data_cache):
    spec = mnist(num_samples=250, data_seed=7)
    data = load_dataset(spec, seed=0)
    assert data.x_train.shape[1:] == (40,) and data.layout == "sequence" and data.n_classes == 10
    assert len(data.x_train) + len(data.x_val) == 200 and len(data.x_test) == 50
    cached = list((data_cache / "mnist1d").glob("*.npz"))
    assert cached, "the generated arrays are kept on disk"
    before = {p.name for p in cached}
    load_dataset(mnist(num_samples=250, data_seed=8), seed=0)
    after = {p.name for p in (data_cache / "mnist1d").glob("*.npz")}
    assert len(after - before) == 1, "another generator seed is another cache entry"


def test_splits_are_fixed_per_seed_and_differ_between_seeds():
    a, b = load_dataset(mnist(), seed=3), load_dataset(mnist(num_samples=300), seed=3)
    assert np.array_equal(a.x_val, b.x_val)
    c = load_dataset(mnist(), seed=4)
    assert not np.array_equal(a.x_val, c.x_val)
    assert np.array_equal(a.x_test, c.x_test), "MNIST-1D's test split is its own, whatever the seed"


def test_train_size_subsamples_only_training_and_nests():
    data = load_dataset(mnist(), seed=0)
    small_x, _ = training_set(data, mnist(train_size=20), seed=0)
    large_x, _ = training_set(data, mnist(train_size=60), seed=0)
    assert len(small_x) == 20 and len(large_x) == 60
    assert np.array_equal(small_x, large_x[:20]), "smaller training sets are subsets of larger ones"
    half_x, _ = training_set(data, mnist(train_size=0.5), seed=0)
    assert len(half_x) == round(0.5 * len(data.x_train))


def test_train_size_larger_than_the_pool_is_an_error():
    data = load_dataset(mnist(), seed=0)
    with pytest.raises(StudyError, match="exceeds the 192 training examples"):
        training_set(data, mnist(train_size=10_000), seed=0)


def test_label_noise_flips_exactly_that_fraction_to_other_classes():
    y = np.arange(1000) % 10
    noisy = flip_labels(y, 0.2, 10, np.random.default_rng(0))
    assert (noisy != y).sum() == 200
    assert noisy.min() >= 0 and noisy.max() <= 9


def test_label_noise_touches_training_labels_only():
    data = load_dataset(mnist(), seed=0)
    _, clean = training_set(data, mnist(), seed=0)
    _, noisy = training_set(data, mnist(label_noise=0.5), seed=0)
    assert (clean != noisy).mean() == pytest.approx(0.5, abs=0.01)
    assert np.array_equal(load_dataset(mnist(label_noise=0.5), seed=0).y_val, data.y_val)


def test_digits_are_images_in_unit_range():
    data = load_dataset(DigitsSpec(name="digits"), seed=0)
    assert data.x_train.shape[1:] == (8, 8) and data.layout == "image"
    assert data.x_train.max() <= 1.0 and data.x_train.min() >= 0.0
    assert len(data.x_train) + len(data.x_val) + len(data.x_test) == 1797


def test_polynomial_knows_its_truth_and_noise():
    spec = PolynomialSpec(name="polynomial", coefficients=[1.0, 2.0], noise=0.0, num_samples=50)
    data = load_dataset(spec, seed=0)
    assert np.allclose(data.f_test, 1.0 + 2.0 * data.x_test[:, 0], atol=1e-6), "y = a·x + b with a=2, b=1"
    assert np.allclose(data.y_test, data.f_test), "no noise asked, none added"
    noisy = load_dataset(PolynomialSpec(name="polynomial", coefficients=[1.0, 2.0], noise=0.5, num_samples=2000), seed=0)
    assert np.std(noisy.y_test - noisy.f_test) == pytest.approx(0.5, rel=0.1)
    assert noisy.noise_std == 0.5


def test_polynomial_replicates_draw_fresh_training_sets_with_the_same_test_set():
    spec = PolynomialSpec(name="polynomial", num_samples=30)
    data = load_dataset(spec, seed=0)
    x0, _ = training_set(data, spec, seed=0)
    x1, _ = training_set(data, spec, seed=1)
    assert not np.array_equal(np.sort(x0, axis=0), np.sort(x1, axis=0))
    assert len(x0) == len(x1) == 24


def test_polynomial_features_are_standardized_and_counted():
    x = np.random.default_rng(0).uniform(-1, 1, size=(50, 2)).astype(np.float32)
    train, other = expand_features(2, x, x[:5])
    assert train.shape == (50, datasets.count_poly_features(2, 2)) == (50, 5)
    assert np.allclose(train.mean(axis=0), 0, atol=1e-5) and other.shape == (5, 5)


def test_too_many_polynomial_features_is_an_error():
    with pytest.raises(StudyError, match="lower the degree"):
        expand_features(5, np.zeros((3, 40), dtype=np.float32))


# ----------------------------------------------------------------------------------- csv
def csv_spec(path: Path, **kw) -> CsvSpec:
    return CsvSpec(name="csv", path=str(path), target=kw.pop("target", "label"), **kw)


def write_csv(tmp_path: Path, text: str, name: str = "data.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def classes_csv(rows: int = 60) -> str:
    rng = np.random.default_rng(0)
    lines = ["a,b,label"]
    for i in range(rows):
        label = ["cat", "dog", "eel"][i % 3]
        lines.append(f"{rng.normal():.3f},{rng.normal() + i % 3:.3f},{label}")
    return "\n".join(lines) + "\n"


def test_csv_classification_with_text_labels(tmp_path):
    data = load_dataset(csv_spec(write_csv(tmp_path, classes_csv())), seed=0, base_dir=tmp_path)
    assert data.task == "classification" and data.classes == ("cat", "dog", "eel")
    assert data.x_train.shape[1] == 2
    assert abs(float(np.concatenate([data.x_train, data.x_val]).mean())) < 0.2, "features are standardized"


def test_csv_regression_is_inferred_from_a_continuous_target(tmp_path):
    rng = np.random.default_rng(0)
    lines = ["x,y"] + [f"{v:.4f},{2 * v + 0.1 * rng.normal():.4f}" for v in rng.uniform(size=40)]
    data = load_dataset(csv_spec(write_csv(tmp_path, "\n".join(lines)), target="y"), seed=0, base_dir=tmp_path)
    assert data.task == "regression" and data.y_train.dtype == np.float32


def test_csv_path_is_also_looked_for_beside_the_sweep_file(tmp_path, monkeypatch):
    write_csv(tmp_path, classes_csv(), "beside.csv")
    monkeypatch.chdir(tmp_path.parent)
    data = load_dataset(csv_spec(Path("beside.csv")), seed=0, base_dir=tmp_path)
    assert data.n_classes == 3


def test_csv_missing_file_names_where_it_looked(tmp_path):
    with pytest.raises(StudyError, match=r"dataset.path: no such file 'gone.csv' \(looked for"):
        load_dataset(csv_spec(Path("gone.csv")), seed=0, base_dir=tmp_path)


def test_csv_missing_target_column_suggests_one(tmp_path):
    path = write_csv(tmp_path, classes_csv())
    with pytest.raises(StudyError, match="no column 'lable' in data.csv; did you mean 'label'"):
        load_dataset(csv_spec(path, target="lable"), seed=0, base_dir=tmp_path)


def test_csv_missing_feature_column_is_an_error(tmp_path):
    path = write_csv(tmp_path, classes_csv())
    with pytest.raises(StudyError, match="dataset.features: no column 'c'"):
        load_dataset(csv_spec(path, features=["a", "c"]), seed=0, base_dir=tmp_path)


def test_csv_non_numeric_feature_names_column_and_row(tmp_path):
    lines = classes_csv().splitlines()
    lines[3] = "Paris,1.0,cat"  # data row 3
    path = write_csv(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(StudyError, match=r"column 'a' of data.csv is not numeric \(row 3: 'Paris'\)"):
        load_dataset(csv_spec(path), seed=0, base_dir=tmp_path)


@pytest.mark.parametrize(("cell", "shown"), [("inf", "inf"), ("-inf", "-inf"), ("1e300", "1e\\+300")])
def test_csv_values_float32_cannot_hold_are_an_error(tmp_path, cell, shown):
    lines = classes_csv().splitlines()
    lines[4] = f"0.5,{cell},dog"  # data row 4
    path = write_csv(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(StudyError, match=rf"column 'b' of data.csv holds {shown} \(row 4\), beyond the ±3.4e\+38 that float32"):
        load_dataset(csv_spec(path), seed=0, base_dir=tmp_path)


def test_csv_large_values_within_float32_are_standardized_without_overflow(tmp_path):
    lines = ["a,b,label"] + [f"{(i % 7) * 1e37:.6g},{i % 5},{['cat', 'dog'][i % 2]}" for i in range(40)]
    data = load_dataset(csv_spec(write_csv(tmp_path, "\n".join(lines) + "\n")), seed=0, base_dir=tmp_path)
    assert np.isfinite(data.x_train).all() and np.abs(data.x_train).max() < 10, "z-scores, summed in float64"


def test_csv_empty_cells_are_an_error(tmp_path):
    lines = classes_csv().splitlines()
    lines[5] = ",1.0,dog"
    path = write_csv(tmp_path, "\n".join(lines) + "\n")
    with pytest.raises(StudyError, match=r"column 'a' of data.csv has 1 empty cells \(rows 5\)"):
        load_dataset(csv_spec(path), seed=0, base_dir=tmp_path)


def test_csv_too_few_rows_per_class_is_an_error(tmp_path):
    path = write_csv(tmp_path, classes_csv() + "0.1,0.2,fox\n0.3,0.4,fox\n")
    with pytest.raises(StudyError, match="class 'fox' has only 2 rows in data.csv; every class needs at least 3"):
        load_dataset(csv_spec(path), seed=0, base_dir=tmp_path)


def test_csv_with_too_few_rows_is_an_error(tmp_path):
    path = write_csv(tmp_path, "a,label\n1,x\n2,y\n")
    with pytest.raises(StudyError, match="has 2 rows; a sweep needs at least 10"):
        load_dataset(csv_spec(path), seed=0, base_dir=tmp_path)


def test_csv_that_is_not_csv_is_an_error(tmp_path):
    path = tmp_path / "data.csv"
    path.write_bytes(b"")
    with pytest.raises(StudyError, match="could not be read as CSV"):
        load_dataset(csv_spec(path), seed=0, base_dir=tmp_path)


def saved_with_index(tmp_path: Path) -> Path:
    """What `df.to_csv(path)` writes: the row numbers 0..n-1 first, under an empty header."""
    import pandas as pd

    frame = pd.read_csv(write_csv(tmp_path, classes_csv(), "plain.csv"))
    path = tmp_path / "data.csv"
    frame.to_csv(path)
    return path


def test_csv_with_a_saved_pandas_index_is_refused_with_the_fix(tmp_path):
    path = saved_with_index(tmp_path)
    assert path.read_text().startswith(",a,b,label\n0,")
    with pytest.raises(StudyError) as refused:
        load_dataset(csv_spec(path), seed=0, base_dir=tmp_path)
    message = str(refused.value)
    assert message == (
        "dataset.features: column 'Unnamed: 0' of data.csv holds the row numbers 0..59, a pandas index that "
        "df.to_csv wrote, not data; write the file with index=False, or list the columns to use in dataset.features"
    )


def test_csv_index_left_out_of_the_features_is_not_an_error(tmp_path):
    path = saved_with_index(tmp_path)
    data = load_dataset(csv_spec(path, features=["a", "b"]), seed=0, base_dir=tmp_path)
    assert data.x_train.shape[1] == 2 and [name for name, _ in data.features] == ["a", "b"]


def test_csv_an_unnamed_first_column_that_is_not_the_row_numbers_is_data(tmp_path):
    lines = classes_csv().splitlines()
    rows = [f",{lines[0]}"] + [f"{2 * i + 1},{line}" for i, line in enumerate(lines[1:])]  # odd numbers: not an index
    data = load_dataset(csv_spec(write_csv(tmp_path, "\n".join(rows) + "\n")), seed=0, base_dir=tmp_path)
    assert [name for name, _ in data.features] == ["Unnamed: 0", "a", "b"]


def test_csv_columns_are_described_with_their_types(tmp_path):
    lines = classes_csv().splitlines()
    rows = [f"{lines[0]},n"] + [f"{line},{i % 4}" for i, line in enumerate(lines[1:])]
    data = load_dataset(csv_spec(write_csv(tmp_path, "\n".join(rows) + "\n")), seed=0, base_dir=tmp_path)
    assert datasets.describe_columns(data) == [
        "  features (3): a (float), b (float), n (int)",
        "  target: label (text): classification, 3 classes (cat, dog, eel)",
    ]
    many = datasets.describe_columns(data, limit=2)
    assert many[0] == "  features (3): a (float), b (float), ... and 1 more"
    rng = np.random.default_rng(0)
    lines = ["x,y"] + [f"{v:.4f},{2 * v + 0.1 * rng.normal():.4f}" for v in rng.uniform(size=40)]
    data = load_dataset(csv_spec(write_csv(tmp_path, "\n".join(lines), "reg.csv"), target="y"), seed=0, base_dir=tmp_path)
    assert datasets.describe_columns(data) == ["  features (1): x (float)", "  target: y (float): regression"]


def test_generated_datasets_have_no_columns_to_describe():
    assert datasets.describe_columns(load_dataset(DigitsSpec(name="digits"), seed=0)) == []
