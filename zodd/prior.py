"""A learned image prior for ``--representation latent``: a small convolutional autoencoder
trained on a data set's training images, so that S can be stored as a few dozen numbers an image
and decoded, differentiably, into images (the role a pretrained generator plays for GLaD, with a
prior anyone trains offline in minutes).

Architecture (side s divisible by 4, ch channels, ``latent`` numbers a code):
encoder [conv 3x3 stride 2 -> 32, ReLU, conv 3x3 stride 2 -> 64, ReLU, linear -> latent];
decoder [linear -> 64 x s/4 x s/4, ReLU, transposed conv stride 2 -> 32, ReLU, transposed conv
stride 2 -> ch]. Trained with Adam (lr 1e-3), mini-batches of 256 drawn with the prior's seed,
mean squared error on the standardised images, ``steps`` steps.

Cache: ``DATA_DIR/priors/NAME-SIZEpx-zLATENT-sSEED-KEY.pt``, KEY a hash of the training images
and the settings. Training writes ``….part`` every ``SAVE_EVERY`` steps (weights, Adam's state,
the generator), so an interrupted training resumes where it stopped and ends bitwise where an
uninterrupted one would. A cache file that cannot be read is trained again, with a warning.
"""
from __future__ import annotations

import hashlib
import warnings
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from zodd.data import ImageData, default_data_dir, short_name
from zodd.files import atomic_write, quiet_load
from zodd.types import ZoddError

LATENT = 32  # numbers a code
STEPS = 2000  # Adam steps of the autoencoder (about 8.5 epochs of Fashion-MNIST)
BATCH = 256
LR = 1e-3
SAVE_EVERY = 200


class Autoencoder(nn.Module):
    def __init__(self, channels: int, image_size: int, latent: int = LATENT):
        super().__init__()
        if image_size % 4:
            raise ZoddError(f"--representation latent needs an image side divisible by 4; "
                            f"these are {image_size} px (use --image-size)")
        self.shape = (64, image_size // 4, image_size // 4)
        flat = 64 * (image_size // 4) ** 2
        self.encoder = nn.Sequential(
            nn.Conv2d(channels, 32, 3, stride=2, padding=1), nn.ReLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(flat, latent))
        self.decoder_in = nn.Linear(latent, flat)
        self.decoder = nn.Sequential(
            nn.ReLU(), nn.ConvTranspose2d(64, 32, 4, stride=2, padding=1), nn.ReLU(),
            nn.ConvTranspose2d(32, channels, 4, stride=2, padding=1))
        self.latent = latent

    def encode(self, images: Tensor) -> Tensor:
        """``[N, ch, s, s]`` -> codes ``[N, latent]``."""
        return self.encoder(images)

    def decode(self, codes: Tensor) -> Tensor:
        """``[N, latent]`` -> images ``[N, ch, s, s]`` (differentiable in the codes)."""
        return self.decoder(self.decoder_in(codes).view(-1, *self.shape))

    def forward(self, images: Tensor) -> Tensor:
        return self.decode(self.encode(images))


def cache_path(data: ImageData, latent: int = LATENT, seed: int = 0, steps: int | None = None,
               root: Path | None = None) -> Path:
    steps = steps or STEPS
    h = hashlib.sha256(f"{latent} {seed} {steps} {BATCH} {LR}".encode())
    h.update(data.train_x.numpy().tobytes())
    h.update(data.train_y.numpy().tobytes())
    name = f"{short_name(data.name)}-{data.image_size}px-z{latent}-s{seed}-{h.hexdigest()[:12]}"
    return (root or default_data_dir()) / "priors" / f"{name}.pt"


def load_or_train(data: ImageData, latent: int = LATENT, seed: int = 0, steps: int | None = None,
                  root: Path | None = None,
                  progress: Callable[[int, int, float], None] | None = None) -> Autoencoder:
    """The data set's prior: read from the cache, or trained (resuming a ``.part``) and kept
    there. ``progress(step, steps, loss)`` is called while training. The result is frozen
    (``requires_grad`` off, eval mode)."""
    steps = steps or STEPS
    path = cache_path(data, latent, seed, steps, root)
    if path.is_file():
        try:
            net = Autoencoder(data.channels, data.image_size, latent)
            net.load_state_dict(quiet_load(path)["weights"])
            return _frozen(net)
        except Exception as exc:
            warnings.warn(f"the cached prior {path} is unreadable ({type(exc).__name__}); "
                          "training it again", stacklevel=2)
    return _frozen(_train(data, latent, seed, steps, path, progress))


def _frozen(net: Autoencoder) -> Autoencoder:
    return net.eval().requires_grad_(False)


def _start(data: ImageData, latent: int, seed: int):
    """A fresh training: the seeded network, its Adam, the batch generator."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = Autoencoder(data.channels, data.image_size, latent)
    return net, torch.optim.Adam(net.parameters(), lr=LR), torch.Generator().manual_seed(seed)


def _train(data: ImageData, latent: int, seed: int, steps: int, path: Path,
           progress) -> Autoencoder:
    part = path.with_suffix(".part")
    net, opt, gen = _start(data, latent, seed)
    start = 0
    if part.is_file():
        try:
            state = quiet_load(part)
            net.load_state_dict(state["weights"])
            opt.load_state_dict(state["adam"])
            gen.set_state(state["generator"])
            start = int(state["step"])
        except Exception:
            warnings.warn(f"the partial prior {part} is unreadable; training from the start",
                          stacklevel=3)
            net, opt, gen = _start(data, latent, seed)  # nothing half-loaded survives
    x = data.train_x
    path.parent.mkdir(parents=True, exist_ok=True)
    net.train()
    for step in range(start, steps):
        batch = x[torch.randint(len(x), (BATCH,), generator=gen)]
        loss = F.mse_loss(net(batch), batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        done = step + 1
        if done % SAVE_EVERY == 0 and done < steps:
            state = {"weights": net.state_dict(), "adam": opt.state_dict(),
                     "generator": gen.get_state(), "step": done}
            atomic_write(part, lambda f: torch.save(state, f))
        if progress is not None:
            progress(done, steps, float(loss.detach()))
    atomic_write(path, lambda f: torch.save({"weights": net.state_dict()}, f))
    part.unlink(missing_ok=True)
    return net


def reconstruction_error(net: Autoencoder, data: ImageData) -> float:
    """Mean squared error on the test images (standardised units)."""
    with torch.no_grad():
        return float(torch.cat([F.mse_loss(net(b), b, reduction="none").flatten(1).mean(1)
                                for b in data.test_x.split(1024)]).mean())
