"""Networks: ConvNet-D, the field's reference network for distillation (the one zodd distils
with), and the architectures a set is evaluated on (``MODELS``, ``zodd evaluate --models``).

ConvNet-D: D blocks of [3x3 conv (width channels) -> instance norm -> ReLU -> 2x2 average
pooling], then a linear classifier. Instance norm is GroupNorm with one group per channel, as in
the reference code, and as there the first convolution pads one-channel 28 px images (MNIST,
Fashion-MNIST) by 3 pixels, not 1, so they enter the network at 32 px and ConvNet-3 ends on
4 x 4 features (2,048 at width 128) rather than 3 x 3 (the reference pads every one-channel
image so; zodd keeps 1 for other sizes, such as the 8 px digits). Defaults: width 128, depth 3
for 28-32 px images; width 64, depth 2 for the 8 px digits. Variants by name: ``convnet-d4``
(depth), ``convnet-w64`` (width), ``convnet-bn`` / ``convnet-nn`` (batch norm / no norm),
combinable (``convnet-d2-w32-bn``).

The others are sized for 28-32 px images, after the cross-architecture networks of the
Dataset Condensation family (the paper's Table 4a): ``resnet18`` (torchvision's, with a 3x3
stride-1 stem and no max pool, batch norm), ``vgg11`` (instance norm; 28 px images padded to 32
by the first convolution), ``alexnet`` (five convolutions, three max pools), ``mlp`` (two hidden
layers of 128), ``vit`` (torchvision's VisionTransformer: patches of 4 px, 6 layers, 8 heads,
width 256), ``frepo`` (FRePo's ``Conv``, yongchao97/FRePo ``lib/models/networks.py``, as its
distillation and evaluation use it: three blocks of [3x3 conv of 128, 256, 512 channels ->
ReLU -> 2x2 average pooling], no normalisation (``normalization='identity'``), the first
convolution padding one-channel images by 3 (its ``kernel_size // 2 + 2``), a linear
classifier on the flattened features; weights drawn as flax draws them, LeCun normal truncated
at two standard deviations, biases zero). A network that the image is too small for is refused
in one line.
"""
from __future__ import annotations

import re
from typing import Callable

import torch
from torch import Tensor, nn

from zodd.types import Registry, ZoddError

NORMS = {"in": lambda c: nn.GroupNorm(c, c, affine=True), "bn": nn.BatchNorm2d,
         "nn": lambda c: nn.Identity()}


def default_shape(image_size: int) -> tuple[int, int]:
    """(width, depth) for an image side length."""
    return (64, 2) if image_size <= 16 else (128, 3)


def first_padding(channels: int, image_size: int) -> int:
    """The first convolution's padding: 3 for one-channel 28 px images (the reference ConvNet's
    28 -> 32 px), else 1."""
    return 3 if channels == 1 and image_size == 28 else 1


class ConvNet(nn.Module):
    def __init__(self, channels: int, num_classes: int, image_size: int,
                 width: int | None = None, depth: int | None = None, norm: str = "in"):
        super().__init__()
        w0, d0 = default_shape(image_size)
        width, depth = width or w0, depth or d0
        pad = first_padding(channels, image_size)
        side = image_size + 2 * (pad - 1)  # after the first convolution
        if side >> depth < 1:
            raise ZoddError(f"ConvNet depth {depth} pools a {image_size} px image below 1 px")
        blocks: list[nn.Module] = []
        c = channels
        for d in range(depth):
            blocks += [nn.Conv2d(c, width, 3, padding=pad if d == 0 else 1), NORMS[norm](width),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2)]
            c = width
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.feature_dim = width * (side >> depth) ** 2
        self.classifier = nn.Linear(self.feature_dim, num_classes)

    def embed(self, x: Tensor) -> Tensor:
        """Penultimate features, flattened."""
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


def build_model(channels: int, num_classes: int, image_size: int, width: int | None = None,
                depth: int | None = None, seed: int | None = None) -> ConvNet:
    """A freshly initialised ConvNet; with ``seed`` its initialisation is reproducible."""
    return build_network("convnet", channels, num_classes, image_size, width, depth, seed)


# --- evaluation architectures ----------------------------------------------------------------

def _resnet18(channels: int, num_classes: int, image_size: int) -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18(num_classes=num_classes)
    net.conv1 = nn.Conv2d(channels, 64, 3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    return net


VGG11 = (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M")


def _vgg11(channels: int, num_classes: int, image_size: int) -> nn.Module:
    pad = 3 if image_size == 28 else 1  # 28 px -> 32 px, as the reference code does for MNIST
    size = image_size + 2 * (pad - 1)
    if size < 32:
        raise ZoddError(f"model vgg11 needs images of at least 28 px (its five poolings); these "
                        f"are {image_size} px")
    layers: list[nn.Module] = []
    c = channels
    for v in VGG11:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
            continue
        layers += [nn.Conv2d(c, v, 3, padding=pad if c == channels else 1),
                   nn.GroupNorm(v, v, affine=True), nn.ReLU(inplace=True)]
        c = v
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(512 * (size // 32) ** 2, num_classes))


def _alexnet(channels: int, num_classes: int, image_size: int) -> nn.Module:
    if image_size < 28:
        raise ZoddError(f"model alexnet needs images of at least 28 px (its three poolings); "
                        f"these are {image_size} px")
    pad = 4 if image_size == 28 else 2  # 28 px -> 32 px
    side = (image_size + 2 * pad - 4) // 8
    return nn.Sequential(
        nn.Conv2d(channels, 128, 5, padding=pad), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(128, 192, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Conv2d(192, 256, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(256, 192, 3, padding=1), nn.ReLU(inplace=True),
        nn.Conv2d(192, 192, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(192 * side * side, num_classes))


def _mlp(channels: int, num_classes: int, image_size: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.Linear(channels * image_size ** 2, 128),
                         nn.ReLU(inplace=True), nn.Linear(128, 128), nn.ReLU(inplace=True),
                         nn.Linear(128, num_classes))


def _vit(channels: int, num_classes: int, image_size: int) -> nn.Module:
    from torchvision.models import VisionTransformer

    patch = 4 if image_size % 4 == 0 else 2 if image_size % 2 == 0 else 0
    if patch == 0 or image_size // patch < 2:
        raise ZoddError(f"model vit needs an image side divisible by 2 or 4 with at least two "
                        f"patches a side; these are {image_size} px")
    net = VisionTransformer(image_size=image_size, patch_size=patch, num_layers=6, num_heads=8,
                            hidden_dim=256, mlp_dim=512, num_classes=num_classes)
    net.conv_proj = nn.Conv2d(channels, 256, patch, stride=patch)
    return net


LECUN_TRUNCATION = 0.87962566103423978  # the std of a unit normal truncated to [-2, 2]


class FRePoConv(nn.Module):
    """FRePo's Conv (module docstring); ``embed`` gives the flattened features (its
    ``feat_fc``)."""

    def __init__(self, channels: int, num_classes: int, image_size: int, width: int = 128,
                 depth: int = 3):
        super().__init__()
        pad = 3 if channels == 1 else 1
        side = image_size + 2 * (pad - 1)
        if side >> depth < 1:
            raise ZoddError(f"model frepo pools a {image_size} px image below 1 px")
        blocks: list[nn.Module] = []
        c = channels
        for d in range(depth):
            blocks += [nn.Conv2d(c, width * 2 ** d, 3, padding=pad if d == 0 else 1),
                       nn.ReLU(inplace=True), nn.AvgPool2d(2)]
            c = width * 2 ** d
        self.features = nn.Sequential(*blocks, nn.Flatten())
        self.feature_dim = c * (side >> depth) ** 2
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        for layer in self.modules():
            if isinstance(layer, (nn.Conv2d, nn.Linear)):
                fan_in = layer.weight[0].numel()
                std = (1.0 / fan_in) ** 0.5 / LECUN_TRUNCATION
                nn.init.trunc_normal_(layer.weight, std=std, a=-2 * std, b=2 * std)
                nn.init.zeros_(layer.bias)

    def embed(self, x: Tensor) -> Tensor:
        return self.features(x)

    def forward(self, x: Tensor) -> Tensor:
        return self.classifier(self.features(x))


MODELS = Registry("model", [
    ("convnet", None, "ConvNet-D, the distillation network (width and depth of the run; "
     "variants convnet-dN, -wN, -bn, -nn)"),
    ("resnet18", _resnet18, "ResNet-18 (torchvision), 3x3 stem, batch norm"),
    ("vgg11", _vgg11, "VGG-11 with instance norm"),
    ("alexnet", _alexnet, "AlexNet, five convolutions"),
    ("mlp", _mlp, "two hidden layers of 128"),
    ("vit", _vit, "a small vision transformer (torchvision), 4 px patches"),
    ("frepo", FRePoConv, "FRePo's Conv: 128, 256, 512 channels, no norm, LeCun-normal weights"),
])
CONVNET = re.compile(r"convnet((?:-(?:d\d+|w\d+|bn|nn|in))*)")


def check_model(name: str) -> str:
    """``name`` if it is a MODELS entry or a ConvNet variant, else a ZoddError."""
    if CONVNET.fullmatch(name):
        return name
    return MODELS.check(name, "model", extra=("convnet-dN-wN-bn|nn",))


def build_network(name: str, channels: int, num_classes: int, image_size: int,
                  width: int | None = None, depth: int | None = None,
                  seed: int | None = None) -> nn.Module:
    """The evaluation network ``name`` (a MODELS entry or ConvNet variant); ``width`` and
    ``depth`` are the plain ``convnet``'s (a variant's own parts win)."""
    match = CONVNET.fullmatch(check_model(name))
    if match:
        norm = "in"
        for part in filter(None, match.group(1).split("-")):
            if part[0] == "d":
                depth = int(part[1:])
            elif part[0] == "w":
                width = int(part[1:])
            else:
                norm = part
        make: Callable[[], nn.Module] = lambda: ConvNet(  # noqa: E731
            channels, num_classes, image_size, width, depth, norm)
    else:
        make = lambda: MODELS[name](channels, num_classes, image_size)  # noqa: E731
    if seed is None:
        return make()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()
