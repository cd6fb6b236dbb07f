"""The shipped shapes models: architecture, offline loading, SHA-256 checks."""

from __future__ import annotations

import torch

from captum_fam.zoo import (
    ShapesEmbeddingNet,
    ShapesProjectionNet,
    make_shapes,
)


def _layer_and_embedding(model, layer):
    """The layer's output and the model's embedding for three scenes."""
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            embedding = model(make_shapes(3, seed=0).images)
    finally:
        handle.remove()
    assert captured[0].shape == (3, 128, 8, 8)
    assert (captured[0] >= 0).all()
    return captured[0], embedding


def test_shipped_model_loads_offline(model_and_layer):
    model, layer = model_and_layer
    assert isinstance(model, ShapesEmbeddingNet) and not model.training
    assert layer is model.block4
    activations, embedding = _layer_and_embedding(model, layer)
    assert embedding.shape == (3, 128)
    torch.testing.assert_close(activations.mean(dim=(2, 3)), embedding)


def test_head_model_loads_offline(head_model_and_layer):
    model, layer = head_model_and_layer
    assert isinstance(model, ShapesProjectionNet) and not model.training
    assert layer is model.block4
    activations, embedding = _layer_and_embedding(model, layer)
    assert embedding.shape == (3, 64)
    # The compared embedding is the head's output, not the pooled layer.
    with torch.no_grad():
        torch.testing.assert_close(model.head(activations.mean(dim=(2, 3))), embedding)
