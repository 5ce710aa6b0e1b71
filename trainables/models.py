"""Models: the paper's shallow CNN and torchvision's ResNet18 (random init, never downloaded)."""

from __future__ import annotations

from collections.abc import Callable

import torch.nn.functional as F
from torch import Tensor, nn

from .records import NUM_CLASSES

__all__ = ["MODELS", "ShallowCNN", "build_model"]


class ShallowCNN(nn.Module):
    """Two conv + max-pool blocks, two fully connected hidden layers (ReLU after every hidden
    layer), a linear prediction layer. 45,278 parameters for 1x28x28 inputs (paper: ~44K)."""

    def __init__(self, num_classes: int = NUM_CLASSES) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, 8, 5)  # 28 -> 24, pool -> 12
        self.conv2 = nn.Conv2d(8, 16, 5)  # 12 -> 8, pool -> 4
        self.fc1 = nn.Linear(16 * 4 * 4, 120)
        self.fc2 = nn.Linear(120, 84)
        self.out = nn.Linear(84, num_classes)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        x = F.relu(self.fc2(x))
        return self.out(x)  # (B, C) logits


class ResizedResNet18(nn.Module):
    """torchvision's ResNet18 fed like the paper: grayscale replicated to 3 channels and
    resized to ``input_size`` on the device, per batch (the stored data stay 1x28x28)."""

    def __init__(self, num_classes: int = NUM_CLASSES, input_size: int = 224) -> None:
        super().__init__()
        from torchvision.models import resnet18

        self.input_size = input_size
        self.net = resnet18(weights=None, num_classes=num_classes)

    def forward(self, x: Tensor) -> Tensor:
        if x.shape[-1] != self.input_size:
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode="bilinear",
                              align_corners=False)
        return self.net(x.expand(-1, 3, -1, -1))


MODELS: dict[str, Callable[..., nn.Module]] = {
    "shallow": lambda num_classes, input_size: ShallowCNN(num_classes),
    "resnet18": lambda num_classes, input_size: ResizedResNet18(num_classes, input_size),
}


def build_model(name: str, num_classes: int = NUM_CLASSES, input_size: int = 224) -> nn.Module:
    if name not in MODELS:
        raise ValueError(f"model={name!r} is unknown; allowed: {sorted(MODELS)}")
    return MODELS[name](num_classes, input_size)
