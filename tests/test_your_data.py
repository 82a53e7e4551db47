"""Your data in, anyone's set evaluated: folder trees and .npz files made here (with Pillow and
numpy, not with zodd) distil and evaluate end to end; sets in the Dataset Condensation and MTT
formats, written here, evaluate; protocols, architectures and bad input."""
import json
import pickle

import numpy as np
import pytest
import torch

from cli_run import run_cli
from test_hostile import assert_refused
from zodd.data import load
from zodd.evaluation import PROTOCOLS, protocol_config, protocol_record
from zodd.report import differences
from zodd.models import build_network
from zodd.types import ZoddError

CLASSES = ("cat", "dog", "fox")


def zodd(monkeypatch, capsys, *args):
    code, out, err = run_cli(monkeypatch, capsys, *[str(a) for a in args])
    return code, out, err


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("ZODD_DATA", str(tmp_path / "zodd-data"))


def _image(c: int, k: int, size: int = 8, mode: str = "L"):
    """A class-dependent pattern: class c brightens column band c, with per-image noise."""
    from PIL import Image

    rng = np.random.default_rng(100 * c + k)
    x = rng.integers(0, 60, (size, size), dtype=np.uint8)
    x[:, c * size // 3:(c + 1) * size // 3] += 180
    img = Image.fromarray(x, "L")
    return img.convert(mode)


def make_tree(root, split=True, per_class=9, test_per_class=3, size=8, mode="L"):
    for c, name in enumerate(CLASSES):
        parts = [("train", per_class), ("test", test_per_class)] if split else [("", per_class)]
        for part, n in parts:
            d = root / part / name if part else root / name
            d.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                _image(c, k + (1000 if part == "test" else 0), size, mode).save(d / f"{k}.png")
    return root


def make_npz(path, layout="nhwc", dtype=np.uint8):
    def split(n, offset):
        x = np.stack([np.asarray(_image(c, k + offset, 8, "RGB")) for c in range(3)
                      for k in range(n)])
        y = np.repeat(np.arange(3), n)
        if layout == "nchw":
            x = x.transpose(0, 3, 1, 2)
        return (x if dtype == np.uint8 else (x / 255).astype(dtype)), y

    x_train, y_train = split(9, 0)
    x_test, y_test = split(3, 1000)
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
             classes=np.array(CLASSES))
    return path


SHORT = ["--ipc", 2, "--iterations", 2, "--batch-size", 4, "--width", 8, "--quiet"]


def test_folder_tree_distils_and_evaluates_end_to_end(tmp_path, monkeypatch, capsys):
    tree = make_tree(tmp_path / "pets")
    data = load(str(tree))
    assert data.classes == CLASSES and data.channels == 1 and data.image_size == 8
    assert len(data.train_y) == 27 and len(data.test_y) == 9
    out = tmp_path / "run"
    code, _, err = zodd(monkeypatch, capsys, "distill", "--dataset", tree, *SHORT, "--out", out)
    assert code == 0, err
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == str(tree.resolve())  # absolute: the run reads from anywhere
    assert (out / "grid.png").is_file()
    monkeypatch.chdir(tmp_path)  # a relative --dataset would now point elsewhere
    code, out_text, err = zodd(monkeypatch, capsys, "evaluate", out, "--seeds", 1, "--epochs", 3)
    assert code == 0, err
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["per_class"]) == set(CLASSES)
    assert "random" in report and set(report["vs_random"]) >= {"acc", "cluster_min"}
    assert report["vs_random"]["acc"] == pytest.approx(report["acc"]["mean"]
                                                       - report["random"]["acc"]["mean"])
    assert "difference" in out_text and "random real" in out_text


def test_npz_in_every_layout_reads_the_same(tmp_path):
    a = load(str(make_npz(tmp_path / "a.npz")))
    b = load(str(make_npz(tmp_path / "b.npz", layout="nchw")))
    c = load(str(make_npz(tmp_path / "c.npz", dtype=np.float32)))
    assert a.channels == 3 and a.classes == CLASSES
    assert torch.equal(a.train_x, b.train_x)
    assert torch.allclose(a.train_x, c.train_x, atol=1e-5)


def test_npz_distils_and_evaluates(tmp_path, monkeypatch, capsys):
    npz = make_npz(tmp_path / "mine.npz")
    out = tmp_path / "run"
    code, _, err = zodd(monkeypatch, capsys, "distill", "--dataset", npz, *SHORT, "--out", out)
    assert code == 0, err
    code, _, err = zodd(monkeypatch, capsys, "evaluate", out, "--seeds", 1, "--epochs", 2,
                        "--no-vs-random", "--quiet")
    assert code == 0, err
    assert json.loads((out / "metrics.json").read_text())["protocol"]["name"] == "zodd+custom"


def test_one_tree_is_split_by_the_stated_fraction_and_resized_on_request(tmp_path):
    tree = make_tree(tmp_path / "flat", split=False, per_class=10)
    data = load(str(tree), test_fraction=0.3)
    assert len(data.test_y) == 9 and len(data.train_y) == 21
    assert torch.equal(torch.bincount(data.test_y), torch.tensor([3, 3, 3]))
    again = load(str(tree), test_fraction=0.3)  # seed 0: the same split
    assert torch.equal(data.test_x, again.test_x)
    assert load(str(tree), image_size=16).image_size == 16


def test_a_changed_tree_is_read_again(tmp_path):
    tree = make_tree(tmp_path / "pets")
    calls = []
    load(str(tree), progress=lambda d, t: calls.append(d))
    assert calls  # read
    calls.clear()
    load(str(tree), progress=lambda d, t: calls.append(d))
    assert not calls  # cached
    _image(0, 77).save(tree / "train" / "cat" / "new.png")
    data = load(str(tree), progress=lambda d, t: calls.append(d))
    assert calls and len(data.train_y) == 28


@pytest.mark.parametrize("breakage, word", [
    ("one class", "two classes"), ("mixed sizes", "--image-size"),
    ("unreadable", "not a readable image"), ("empty class", "no training images"),
    ("not square", "square"),
])
def test_bad_trees_are_one_line(tmp_path, monkeypatch, capsys, breakage, word):
    from PIL import Image

    tree = make_tree(tmp_path / "bad")
    if breakage == "one class":
        tree = make_tree(tmp_path / "one")
        for name in CLASSES[1:]:
            for part in ("train", "test"):
                for f in (tree / part / name).iterdir():
                    f.unlink()
                (tree / part / name).rmdir()
    elif breakage == "mixed sizes":
        _image(1, 5, size=12).save(tree / "train" / "dog" / "big.png")
    elif breakage == "unreadable":
        (tree / "train" / "fox" / "broken.png").write_bytes(b"not a png")
    elif breakage == "empty class":
        (tree / "train" / "owl").mkdir()
    else:
        for part in ("train", "test"):
            for name in CLASSES:
                for f in (tree / part / name).iterdir():
                    Image.new("L", (8, 6)).save(f)
    code, _, err = zodd(monkeypatch, capsys, "distill", "--dataset", tree, *SHORT,
                        "--out", tmp_path / "run")
    assert_refused(code, err, word)
    assert not (tmp_path / "run").exists()


def test_bad_npz_and_missing_paths_are_one_line(tmp_path, monkeypatch, capsys):
    np.savez(tmp_path / "partial.npz", x_train=np.zeros((4, 8, 8), np.uint8))
    bad = tmp_path / "range.npz"
    np.savez(bad, x_train=np.full((6, 8, 8), 3.0), y_train=np.arange(6) % 2,
             x_test=np.zeros((2, 8, 8)), y_test=np.arange(2))
    for path, word in ((tmp_path / "partial.npz", "lacks"), (bad, "[0, 1]"),
                       (tmp_path / "nowhere.npz", "does not exist"),
                       (tmp_path / "nowhere" / "x", "does not exist")):
        code, _, err = zodd(monkeypatch, capsys, "distill", "--dataset", path, *SHORT,
                            "--out", tmp_path / "run")
        assert_refused(code, err, word)


# --- sets made by other tools -------------------------------------------------------------------

@pytest.fixture()
def digits_set(digits):
    """Ten real digits per class, standardised as the reference codes save them."""
    idx = torch.cat([torch.nonzero(digits.train_y == c).flatten()[:2] for c in range(10)])
    return digits.train_x[idx].clone(), digits.train_y[idx].clone()


def test_a_dataset_condensation_file_evaluates(tmp_path, monkeypatch, capsys, digits_set):
    images, labels = digits_set
    path = tmp_path / "res_DC_digits.pt"
    torch.save({"data": [[images, labels], [images * 0, labels]],
                "accs_all_exps": {"ConvNet": [0.5]}}, path)
    torch.save({"images": images, "labels": labels}, tmp_path / "same.pt")  # zodd's format
    for f in (path, tmp_path / "same.pt"):
        code, out, err = zodd(monkeypatch, capsys, "evaluate", f, "--dataset", "digits",
                              "--seeds", 1, "--epochs", 40, "--protocol", "plain")
        assert code == 0, err
    report = json.loads((tmp_path / "res_DC_digits-metrics.plain.json").read_text())
    zodds = json.loads((tmp_path / "same-metrics.plain.json").read_text())
    assert report["format"] == "dc" and report["labels"] == "hard" and zodds["format"] == "zodd"
    assert "experiment 0 of 2" in report["note"]
    assert report["per_seed"] == zodds["per_seed"]  # the same images, read the same way
    assert report["acc"]["mean"] > 50  # real digits train a network
    code, _, err = zodd(monkeypatch, capsys, "evaluate", path, "--dataset", "digits",
                        "--experiment", 2)
    assert_refused(code, err, "experiment")


def test_an_mtt_pair_with_soft_labels_evaluates_as_soft(tmp_path, monkeypatch, capsys,
                                                         digits_set):
    images, labels = digits_set
    logits = torch.nn.functional.one_hot(labels, 10).float() * 4
    folder = tmp_path / "mtt"
    folder.mkdir()
    torch.save(images, folder / "images_best.pt")
    torch.save(logits, folder / "labels_best.pt")
    code, out, err = zodd(monkeypatch, capsys, "evaluate", folder, "--dataset", "digits",
                          "--seeds", 1, "--epochs", 40, "--protocol", "plain", "--no-vs-random")
    assert code == 0, err
    report = json.loads((folder / "images_best-metrics.plain.json").read_text())
    assert report["labels"] == "soft (logits, softmaxed)" and report["format"] == "mtt"
    assert "soft" in out
    assert report["acc"]["mean"] > 50


def test_pixels_option_reads_unit_range_sets(tmp_path, monkeypatch, capsys, digits, digits_set):
    images, labels = digits_set
    torch.save({"data": [[digits.denormalise(images), labels]]}, tmp_path / "unit.pt")
    from zodd import sets

    located = sets.locate(tmp_path / "unit.pt")
    read = sets.read(located, digits, pixels="unit")
    assert torch.allclose(read.set.images, images, atol=1e-5)


def test_foreign_sets_that_do_not_fit_are_one_line(tmp_path, monkeypatch, capsys, digits_set):
    images, labels = digits_set

    class Evil:
        def __reduce__(self):
            return (print, ("ran code",))

    (tmp_path / "evil.pt").write_bytes(pickle.dumps({"data": [[Evil(), labels]]}))
    torch.save({"data": [[images[:, :, :4], labels]]}, tmp_path / "shape.pt")
    torch.save({"data": [[images, labels + 5]]}, tmp_path / "classes.pt")
    torch.save({"data": [[images, torch.rand(len(labels), 7)]]}, tmp_path / "soft.pt")
    (tmp_path / "garbage.pt").write_bytes(b"\x00garbage" * 10)
    torch.save({"weights": images}, tmp_path / "other.pt")
    for name, word in (("evil.pt", "not a readable set file"), ("shape.pt", "images are"),
                       ("classes.pt", "classes"), ("soft.pt", "soft labels"),
                       ("garbage.pt", "not a readable set file"), ("other.pt", "expected")):
        code, out, err = zodd(monkeypatch, capsys, "evaluate", tmp_path / name, "--dataset",
                              "digits", "--seeds", 1, "--epochs", 1)
        assert_refused(code, err, word)
        assert "ran code" not in out
    code, _, err = zodd(monkeypatch, capsys, "evaluate", tmp_path / "shape.pt")
    assert_refused(code, err, "--dataset")


# --- protocols and architectures ----------------------------------------------------------------

def test_protocols_state_what_they_reproduce():
    assert protocol_config("dsa", "fashion-mnist").epochs == 1000
    assert protocol_config("dsa", "fashion-mnist").augment == "dsa"
    assert protocol_config("dc", "fashion-mnist").augment == "none"
    assert protocol_config("dc", "mnist").epochs == 1000  # DC augments MNIST, for longer
    same = protocol_config("plain", "digits", epochs=300)  # unchanged
    assert (same.protocol, same.custom, same.label) == ("plain", (), "plain")
    changed = protocol_config("plain", "digits", epochs=30, lr=0.01)
    assert (changed.protocol, changed.custom, changed.label) == ("plain", ("epochs",),
                                                                  "plain+custom")
    assert set(PROTOCOLS) >= {"zodd", "dc", "dsa", "plain"}
    a, b = protocol_record(protocol_config("zodd", "digits")), protocol_record(
        protocol_config("plain", "digits"))
    assert differences(a, b) == ["augment"] and differences(a, a) == []


def test_compare_refuses_different_protocols(tmp_path, monkeypatch, capsys):
    from zodd.evaluation import METRICS

    def write(name, cfg):
        rep = {m: {"mean": 50.0, "std": 1.0} for m in METRICS}
        (tmp_path / name).write_text(json.dumps({**rep, "protocol": protocol_record(cfg)}))

    write("a.json", protocol_config("zodd", "digits"))
    write("b.json", protocol_config("zodd", "digits"))
    write("c.json", protocol_config("dsa", "digits"))
    code, out, err = zodd(monkeypatch, capsys, "compare", tmp_path / "a.json", tmp_path / "b.json")
    assert code == 0 and "+0.00" in out
    code, _, err = zodd(monkeypatch, capsys, "compare", tmp_path / "a.json", tmp_path / "c.json")
    assert_refused(code, err, "another protocol")
    code, out, _ = zodd(monkeypatch, capsys, "compare", tmp_path / "a.json", tmp_path / "c.json",
                        "--any-protocol")
    assert code == 0 and "protocol differs: epochs, augment" in out


@pytest.mark.parametrize("name", ["convnet", "convnet-d2-w16-bn", "convnet-nn", "resnet18",
                                  "vgg11", "alexnet", "mlp", "vit"])
@pytest.mark.parametrize("channels, size", [(1, 28), (3, 32)])
def test_every_architecture_classifies_28_and_32_px_images(name, channels, size):
    net = build_network(name, channels, 10, size, seed=0)
    assert net(torch.randn(2, channels, size, size)).shape == (2, 10)
    again = build_network(name, channels, 10, size, seed=0)
    assert all(torch.equal(p, q) for p, q in zip(net.parameters(), again.parameters()))


def test_models_the_image_is_too_small_for_are_one_line(tmp_path, monkeypatch, capsys):
    for name in ("vgg11", "alexnet"):
        with pytest.raises(ZoddError, match="28 px"):
            build_network(name, 1, 10, 8)
    run = tmp_path / "run"
    assert zodd(monkeypatch, capsys, "distill", "--out", run, *SHORT)[0] == 0
    code, _, err = zodd(monkeypatch, capsys, "evaluate", run, "--models", "convnet,vgg11",
                        "--seeds", 1, "--epochs", 1)
    assert_refused(code, err, "vgg11")
    code, _, err = zodd(monkeypatch, capsys, "evaluate", run, "--models", "resnet99")
    assert_refused(code, err, "model")


def test_several_models_and_the_augmentation_ablation_in_one_file(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert zodd(monkeypatch, capsys, "distill", "--out", run, *SHORT)[0] == 0
    code, out, err = zodd(monkeypatch, capsys, "evaluate", run, "--models", "convnet,mlp",
                          "--seeds", 1, "--epochs", 2, "--ablate-augment")
    assert code == 0, err
    report = json.loads((run / "metrics.json").read_text())
    assert set(report["runs"]) == {"convnet", "convnet, no augment", "mlp", "mlp, no augment"}
    assert report["runs"]["mlp"]["set"]["protocol"]["model"] == "mlp"
    assert report["runs"]["mlp, no augment"]["set"]["protocol"]["augment"] == "none"
    assert (run / "metrics_random-none.json").is_file()  # the run's baseline, kept for reuse


@pytest.mark.parametrize("name, mean, std", [  # written from DC's utils.get_dataset
    ("cifar10", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    ("svhn", (0.4377, 0.4438, 0.4728), (0.1980, 0.2010, 0.1970)),
    ("mnist", (0.1307,), (0.3081,)),
    ("fashion-mnist", (0.2861,), (0.3530,)),
])
def test_a_dc_family_file_is_read_with_the_constants_its_code_hard_codes(tmp_path, name, mean,
                                                                          std):
    """The DC family saves images normalised by per-data-set constants, not by the data's own
    statistics: a file written that way from known pixels must give those pixels back, here
    standardised by the data set's own mean and std (which differ, as CIFAR-10's do)."""
    from zodd import sets
    from zodd.data import ImageData

    channels = len(mean)
    gen = torch.Generator().manual_seed(0)
    own_mean, own_std = tuple(m + 0.01 for m in mean), tuple(s * 1.2 for s in std)
    blank = torch.zeros(10, channels, 8, 8)
    data = ImageData(name, blank, torch.arange(10), blank, torch.arange(10), 10, own_mean,
                     own_std)
    pixels = torch.rand(20, channels, 8, 8, generator=gen)
    labels = torch.arange(10).repeat_interleave(2)
    as_saved = (pixels - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1)
    torch.save({"data": [[as_saved, labels]]}, tmp_path / "res.pt")
    read = sets.read(sets.locate(tmp_path / "res.pt"), data, pixels="standardised")
    back = read.set.images * torch.tensor(own_std).view(-1, 1, 1) + torch.tensor(
        own_mean).view(-1, 1, 1)
    assert torch.allclose(back, pixels, atol=1e-5)
    assert name in read.note


@pytest.mark.parametrize("name, mean, std", [  # written from MTT's utils.get_dataset
    ("cifar10", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    ("cifar100", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),  # CIFAR-10's, not DC's
])
def test_an_mtt_pair_is_read_with_the_constants_mtt_hard_codes(tmp_path, name, mean, std):
    """MTT's CIFAR-100 branch normalises with CIFAR-10's constants (the DC family's CIFAR-100
    has its own): pixels written that way come back."""
    from zodd import sets
    from zodd.data import ImageData

    classes = 100 if name == "cifar100" else 10
    blank = torch.zeros(classes, 3, 8, 8)
    own_mean, own_std = (0.5, 0.5, 0.5), (0.25, 0.25, 0.25)
    data = ImageData(name, blank, torch.arange(classes), blank, torch.arange(classes), classes,
                     own_mean, own_std)
    pixels = torch.rand(classes, 3, 8, 8, generator=torch.Generator().manual_seed(0))
    folder = tmp_path / "mtt"
    folder.mkdir()
    torch.save((pixels - torch.tensor(mean).view(-1, 1, 1)) / torch.tensor(std).view(-1, 1, 1),
               folder / "images_best.pt")
    torch.save(torch.arange(classes), folder / "labels_best.pt")
    read = sets.read(sets.locate(folder), data, pixels="standardised")
    assert torch.allclose(read.set.images * 0.25 + 0.5, pixels, atol=1e-5)
    assert "MTT" in read.note


def _zca_by_hand(train_pixels: torch.Tensor, eps: float = 0.1):
    """MTT's --zca, written here from kornia's ZCAWhitening: the unbiased covariance of the
    flattened [0, 1] training pixels, U S U^T by SVD, W = U (S + eps)^-1/2 U^T."""
    x = train_pixels.flatten(1).double().numpy()
    mu = x.mean(0)
    u, s, _ = np.linalg.svd((x - mu).T @ (x - mu) / (len(x) - 1))
    w = u @ np.diag(1 / np.sqrt(s + eps)) @ u.T
    return lambda p: torch.from_numpy((p.flatten(1).double().numpy() - mu) @ w).float().view(
        p.shape)


def test_a_zca_whitened_mtt_set_is_refused_as_pixels_and_evaluated_whitened(
        tmp_path, monkeypatch, capsys, digits, digits_set):
    from zodd import sets
    from zodd.zca import whitened

    images, labels = digits_set
    pixels = digits.denormalise(images)
    whiten = _zca_by_hand(digits.denormalise(digits.train_x))
    folder = tmp_path / "mtt"
    folder.mkdir()
    torch.save(whiten(pixels), folder / "images_best.pt")
    torch.save(labels, folder / "labels_best.pt")
    located = sets.locate(folder)
    with pytest.raises(ZoddError, match="looks ZCA-whitened.*--pixels zca"):
        sets.read(located, digits)
    # the same images saved as pixels (standardised) are not taken for whitened ones
    plain = tmp_path / "plain"
    plain.mkdir()
    torch.save(images, plain / "images_best.pt")
    torch.save(labels, plain / "labels_best.pt")
    assert torch.allclose(sets.read(sets.locate(plain), digits).set.images, images, atol=1e-5)
    # evaluation: the test set whitened as MTT whitens it, the set taken as it is
    white = whitened(digits)
    assert torch.allclose(white.test_x, whiten(digits.denormalise(digits.test_x)), atol=1e-4)
    assert torch.allclose(white.train_x, whiten(digits.denormalise(digits.train_x)), atol=1e-4)
    read = sets.read(located, white, pixels="zca")
    assert torch.equal(read.set.images, whiten(pixels)) and "ZCA" in read.note
    assert torch.allclose(white.denormalise(read.set.images), pixels, atol=1e-4)
    # zodd.load un-whitens it to the data set's standardisation
    from zodd.api import load as api_load
    loaded = api_load(folder, "digits", pixels="zca")
    assert torch.allclose(loaded.images, images, atol=1e-3)
    code, _, err = zodd(monkeypatch, capsys, "evaluate", folder, "--dataset", "digits")
    assert_refused(code, err, "--pixels zca")
    code, out, err = zodd(monkeypatch, capsys, "evaluate", folder, "--dataset", "digits",
                          "--pixels", "zca", "--seeds", 1, "--epochs", 30)
    assert code == 0, err
    report = json.loads((folder / "images_best-metrics.json").read_text())
    assert "ZCA" in report["note"] and report["acc"]["mean"] > 30  # 10 classes: chance is 10
    assert {"noise", "blur", "invert", "random", "vs_random"} <= set(report)



@pytest.mark.parametrize("fmt, name, mean, std", [  # each tool's utils.get_dataset
    ("dc", "cifar100", (0.5071, 0.4866, 0.4409), (0.2673, 0.2564, 0.2762)),
    ("mtt", "cifar100", (0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    ("dc", "fashion-mnist", (0.2861,), (0.3530,)),
])
def test_a_set_written_for_another_tool_carries_that_tool_s_constants(tmp_path, fmt, name, mean,
                                                                     std):
    from zodd import sets
    from zodd.data import ImageData
    from zodd.export import write
    from zodd.synthetic import SyntheticSet

    channels, classes = len(mean), 100 if name == "cifar100" else 10
    own_mean, own_std = (0.4,) * channels, (0.3,) * channels
    blank = torch.zeros(classes, channels, 8, 8)
    data = ImageData(name, blank, torch.arange(classes), blank, torch.arange(classes), classes,
                     own_mean, own_std)
    pixels = torch.rand(classes, channels, 8, 8, generator=torch.Generator().manual_seed(1))
    mine = SyntheticSet((pixels - 0.4) / 0.3, torch.arange(classes), classes)
    out = tmp_path / ("set.pt" if fmt == "dc" else "mtt")
    write(mine, data, fmt, out)
    if fmt == "dc":
        images, labels = torch.load(out, weights_only=True)["data"][0]
    else:
        images = torch.load(out / "images_best.pt", weights_only=True)
        labels = torch.load(out / "labels_best.pt", weights_only=True)
    back = images * torch.tensor(std).view(-1, 1, 1) + torch.tensor(mean).view(-1, 1, 1)
    assert torch.allclose(back, pixels, atol=1e-5) and torch.equal(labels, torch.arange(classes))
    again = sets.read(sets.locate(out), data, pixels="standardised")
    assert torch.allclose(again.set.images, mine.images, atol=1e-4)


def test_zodd_export_writes_a_run_for_other_tools(tmp_path, monkeypatch, capsys):
    run = tmp_path / "run"
    assert zodd(monkeypatch, capsys, "distill", "--out", run, *SHORT)[0] == 0
    mine = torch.load(run / "synthetic.pt", weights_only=True)
    code, out, err = zodd(monkeypatch, capsys, "export", run, "--format", "dc", "--out",
                          tmp_path / "res.pt")
    assert code == 0, err
    images, labels = torch.load(tmp_path / "res.pt", weights_only=True)["data"][0]
    assert torch.allclose(images, mine["images"]) and torch.equal(labels, mine["labels"])
    code, _, err = zodd(monkeypatch, capsys, "export", run, "--format", "mtt", "--out",
                        tmp_path / "res.pt")
    assert_refused(code, err, "exists")
    code, _, err = zodd(monkeypatch, capsys, "export", tmp_path / "res.pt", "--format", "mtt",
                        "--out", tmp_path / "m")
    assert_refused(code, err, "run directory")
    code, _, err = zodd(monkeypatch, capsys, "export", run, "--format", "mtt", "--out",
                        tmp_path / "m")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["images_best.pt",
                                                                   "labels_best.pt"]
