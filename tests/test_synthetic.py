import pytest
import torch

from zodd import synthetic
from zodd.types import ZoddError


def test_initialise_from_real_samples_of_each_class(digits):
    s = synthetic.initialise(digits, 3, "real", torch.Generator().manual_seed(0))
    assert s.images.shape == (30, 1, 8, 8) and s.ipc == 3
    assert s.labels.tolist() == [c for c in range(10) for _ in range(3)]
    # each image is a training image of its own class
    for img, label in zip(s.images, s.labels):
        match = (digits.train_x == img).flatten(1).all(1)
        assert match.any() and (digits.train_y[match] == label).all()
    noise = synthetic.initialise(digits, 3, "noise", torch.Generator().manual_seed(0))
    assert noise.images.shape == s.images.shape


def test_ipc_above_the_smallest_class_is_refused(digits):
    with pytest.raises(ZoddError, match="ipc"):
        synthetic.initialise(digits, 500, "real", torch.Generator())


def test_save_load_round_trip(digits, tmp_path):
    s = synthetic.initialise(digits, 2, "real", torch.Generator().manual_seed(0))
    synthetic.save(s, tmp_path, digits)
    raw = torch.load(tmp_path / "synthetic.pt", weights_only=True)
    assert set(raw) == {"images", "labels"}
    back = synthetic.load(tmp_path)
    assert torch.equal(back.images, s.images) and torch.equal(back.labels, s.labels)
    assert (tmp_path / "grid.png").read_bytes()[:4] == b"\x89PNG"
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files left


@pytest.mark.parametrize("payload, why", [
    (b"not a torch file", "readable"),
    ({"images": torch.zeros(4, 1, 8, 8)}, "zodd set"),
    ({"images": torch.zeros(4, 8, 8), "labels": torch.zeros(4)}, "shape"),
    ({"images": torch.full((2, 1, 8, 8), float("nan")), "labels": torch.tensor([0, 1])}, "finite"),
    ({"images": torch.zeros(3, 1, 8, 8), "labels": torch.tensor([0, 1, 1])}, "class-major"),
])
def test_bad_set_files_are_refused(tmp_path, payload, why):
    path = tmp_path / "synthetic.pt"
    if isinstance(payload, bytes):
        path.write_bytes(payload)
    else:
        torch.save(payload, path)
    with pytest.raises(ZoddError, match=why):
        synthetic.load(tmp_path)


def test_a_pickled_object_is_not_executed(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("executed",))

    torch.save({"images": Evil(), "labels": torch.zeros(1)}, tmp_path / "synthetic.pt")
    with pytest.raises(ZoddError, match="readable"):
        synthetic.load(tmp_path)
