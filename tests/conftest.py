import pytest
import torch

from zodd.data import load


@pytest.fixture(scope="session")
def digits():
    return load("digits")


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)
