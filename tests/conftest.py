"""Shared fixtures: tiny models (tests/helpers.py) so that the suite stays fast on two cores."""

from __future__ import annotations

import os

os.environ.setdefault("MPLBACKEND", "Agg")

import matplotlib  # noqa: E402

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402
from helpers import TinyEmbedder  # noqa: E402
from hypothesis import settings  # noqa: E402

settings.register_profile("default", max_examples=40, deadline=None)
settings.register_profile("ci", max_examples=40, deadline=None, derandomize=True)
settings.load_profile("ci" if os.environ.get("CI") else "default")


@pytest.fixture
def tiny_model() -> TinyEmbedder:
    torch.manual_seed(0)
    return TinyEmbedder().eval()


@pytest.fixture
def images() -> torch.Tensor:
    return torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))


@pytest.fixture
def references() -> torch.Tensor:
    return torch.rand(4, 3, 12, 12, generator=torch.Generator().manual_seed(2))
