"""The shipped shapes models, loaded once per module."""

from __future__ import annotations

import pytest
import torch

from captum_fam.zoo import load_shapes_clip, load_shapes_head_model, load_shapes_model


@pytest.fixture(scope="module")
def model_and_layer():
    torch.set_num_threads(2)
    return load_shapes_model()


@pytest.fixture(scope="module")
def head_model_and_layer():
    torch.set_num_threads(2)
    return load_shapes_head_model()


@pytest.fixture(scope="module")
def clip():
    torch.set_num_threads(2)
    return load_shapes_clip()
