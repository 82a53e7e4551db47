from pathlib import Path

import pytest
import torch

from zodd import data as datasets
from zodd.types import ZoddError

FMNIST = Path("/usr/share/datasets/fashion-mnist")


def test_digits_is_embedded_split_and_standardised(digits):
    assert digits.train_x.shape == (1257, 1, 8, 8) and digits.test_x.shape == (540, 1, 8, 8)
    assert digits.num_classes == 10
    assert abs(float(digits.train_x.mean())) < 1e-4
    assert abs(float(digits.train_x.std()) - 1) < 1e-3
    again = datasets.load("digits")
    assert torch.equal(again.test_y, digits.test_y)  # the split is fixed
    pixels = digits.denormalise(digits.train_x)
    assert float(pixels.min()) >= -1e-6 and float(pixels.max()) <= 1 + 1e-6
    assert torch.allclose(digits.standardise(pixels), digits.train_x, atol=1e-5)


@pytest.mark.skipif(not FMNIST.is_dir(), reason="Debian package dataset-fashion-mnist absent")
def test_fashion_mnist_found_without_being_told(tmp_path):
    fm = datasets.load("fashion-mnist", tmp_path)
    assert fm.train_x.shape == (60000, 1, 28, 28) and fm.test_x.shape == (10000, 1, 28, 28)
    assert torch.bincount(fm.train_y).tolist() == [6000] * 10


def test_missing_data_names_the_files(tmp_path):
    with pytest.raises(ZoddError, match="train-images-idx3-ubyte"):
        datasets.load("mnist", tmp_path)


def test_truncated_idx_file_is_reported(tmp_path):
    (tmp_path / "bad").write_bytes(bytes([0, 0, 8, 1, 0, 0, 0, 9, 1, 2]))
    with pytest.raises(ZoddError, match="truncated"):
        datasets._read_idx(tmp_path / "bad")
