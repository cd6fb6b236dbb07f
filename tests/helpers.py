"""Tiny models and markers shared by the tests: ``from helpers import TinyEmbedder``.

(Not in conftest.py: the command line's tests have a conftest of their own, and a module named
``conftest`` is whichever pytest imported last.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

import pytest
import torch
from torch import nn

Test = TypeVar("Test", bound=Callable[..., object])


def requires_cuda(test: Test) -> Test:
    """A test that needs a CUDA device: skipped without one, selected by ``pytest -m cuda``."""
    skip = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
    return pytest.mark.cuda(skip(test))


class TinyEmbedder(nn.Module):
    """Conv features at stride 2, global average pooling, no classifier: an embedding net."""

    def __init__(self, channels: int = 6, in_channels: int = 3) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU())
        self.block = nn.Sequential(nn.Conv2d(4, channels, 3, padding=1, stride=2), nn.ReLU())

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.block(self.stem(images)).mean(dim=(2, 3))


class ActivationModel(nn.Module):
    """The inputs are the activations (N, C, *S): lets property tests choose A freely.

    Its output is the mean over positions, so ``embedding="output"`` and ``"layer"`` explain the
    same score; ``mask`` (N, *S), when given, pools the masked mean instead.
    """

    def __init__(self) -> None:
        super().__init__()
        self.layer = nn.Identity()

    def forward(self, activations: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        activations = self.layer(activations)
        dims = tuple(range(2, activations.dim()))
        if mask is None:
            return activations.mean(dim=dims)
        weights = mask.unsqueeze(1).to(activations.dtype)
        return (activations * weights).sum(dim=dims) / weights.sum(dim=dims)
