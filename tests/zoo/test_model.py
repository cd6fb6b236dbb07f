"""The shipped shapes models: architecture, offline loading, SHA-256 checks."""

from __future__ import annotations

import shutil

import pytest
import torch

from captum_fam.zoo import (
    ShapesEmbeddingNet,
    ShapesProjectionNet,
    load_shapes_head_model,
    load_shapes_model,
    make_shapes,
)
from captum_fam.zoo.model import (
    HEAD_WEIGHTS_PATH,
    HEAD_WEIGHTS_SHA256,
    WEIGHTS_PATH,
    WEIGHTS_SHA256,
    sha256_of_file,
)


def test_shipped_model_loads_offline(model_and_layer):
    model, layer = model_and_layer
    assert isinstance(model, ShapesEmbeddingNet)
    assert not model.training
    assert layer is model.block4
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            emb = model(make_shapes(3, seed=0).images)
    finally:
        handle.remove()
    assert emb.shape == (3, 128)
    assert captured[0].shape == (3, 128, 8, 8)
    assert (captured[0] >= 0).all()
    torch.testing.assert_close(captured[0].mean(dim=(2, 3)), emb)


def test_tampered_weights_raise(tmp_path):
    tampered = tmp_path / "shapes_cnn.pt"
    shutil.copy(WEIGHTS_PATH, tampered)
    data = bytearray(tampered.read_bytes())
    data[len(data) // 2] ^= 0xFF
    tampered.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        load_shapes_model(path=tampered, sha256=WEIGHTS_SHA256)
    with pytest.raises(FileNotFoundError):
        load_shapes_model(path=tmp_path / "missing.pt")


def test_shipped_weights_match_their_digests():
    assert sha256_of_file(WEIGHTS_PATH) == WEIGHTS_SHA256
    assert sha256_of_file(HEAD_WEIGHTS_PATH) == HEAD_WEIGHTS_SHA256


def test_head_model_loads_offline(head_model_and_layer):
    model, layer = head_model_and_layer
    assert isinstance(model, ShapesProjectionNet)
    assert not model.training
    assert layer is model.block4
    captured = []
    handle = layer.register_forward_hook(lambda _m, _i, out: captured.append(out))
    try:
        with torch.no_grad():
            emb = model(make_shapes(3, seed=0).images)
    finally:
        handle.remove()
    assert emb.shape == (3, 64)
    assert captured[0].shape == (3, 128, 8, 8)
    assert (captured[0] >= 0).all()
    # The compared embedding is the head's output, not the pooled layer.
    with torch.no_grad():
        torch.testing.assert_close(model.head(captured[0].mean(dim=(2, 3))), emb)


def test_head_loader_checks_the_digest(tmp_path):
    copy = tmp_path / "shapes_head_cnn.pt"
    shutil.copy(HEAD_WEIGHTS_PATH, copy)
    model, _ = load_shapes_head_model(path=copy)  # a faithful copy loads
    assert isinstance(model, ShapesProjectionNet)
    data = bytearray(copy.read_bytes())
    data[len(data) // 2] ^= 0xFF
    copy.write_bytes(bytes(data))
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        load_shapes_head_model(path=copy)
    # Each loader holds its own digest: the other model's file is refused.
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        load_shapes_head_model(path=WEIGHTS_PATH)
    with pytest.raises(RuntimeError, match="SHA-256 mismatch"):
        load_shapes_model(path=HEAD_WEIGHTS_PATH)
    with pytest.raises(FileNotFoundError):
        load_shapes_head_model(path=tmp_path / "missing.pt")
