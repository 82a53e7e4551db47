"""DM measured on networks and real batches a run never sees (tests' yardstick)."""
import torch

from objectives import OBJECTIVES
from zodd.models import build_model
from zodd.types import StepContext


def held_out_dm(data, images, nets=4, per_class=64):
    gen = torch.Generator().manual_seed(99)
    total = 0.0
    for k in range(nets):
        net = build_model(data.channels, data.num_classes, data.image_size,
                          seed=500 + k).requires_grad_(False)
        real = data.train_x[torch.stack([i[torch.randperm(len(i), generator=gen)[:per_class]]
                                         for i in data.class_indices()])]
        ctx = StepContext(net, real, None, data.num_classes, k)
        total += float(OBJECTIVES["dm"]().bind(ctx)(images.detach()[None]))
    return total / nets
