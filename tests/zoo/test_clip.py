"""Tests of the shipped shapes CLIP (captum_fam.zoo.clip): loader, towers, retrieval, pointing."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from captum_fam.zoo import ShapesClip, make_shapes
from captum_fam.zoo.clip import (
    ImageTower,
    TextTower,
    TokenConv,
    TokenTransformer,
    masked_mean,
)


def test_shipped_weights_load_offline(clip):
    assert isinstance(clip, ShapesClip)
    assert isinstance(clip.image_tower, ImageTower) and isinstance(clip.text_tower, TextTower)
    assert clip.image_layer is clip.image_tower.trunk.block4
    assert clip.text_layer is clip.text_tower.encoder
    assert not clip.image_tower.training and not clip.text_tower.training
    assert clip.device == torch.device("cpu")


def test_towers_shapes_and_the_layers_to_explain(clip):
    images = make_shapes(3, objects=2, seed=0).images
    input_ids, attention_mask = clip.tokenizer.encode(["a star", "a ring next to an L", "a T"])
    seen = {}
    hooks = [
        clip.image_layer.register_forward_hook(lambda _m, _i, out: seen.update(image=out)),
        clip.text_layer.register_forward_hook(lambda _m, _i, out: seen.update(text=out)),
    ]
    try:
        with torch.no_grad():
            v = clip.image_tower(images)
            t = clip.text_tower(input_ids, attention_mask)
    finally:
        for hook in hooks:
            hook.remove()
    assert v.shape == t.shape == (3, 64)
    assert seen["image"].shape == (3, 128, 8, 8) and (seen["image"] >= 0).all()
    n, length = input_ids.shape
    assert seen["text"].shape[:2] == (n, length) and seen["text"].dim() == 3
    # Both embeddings are linear projections of the layers' (masked) means.
    head = clip.image_tower.projection
    torch.testing.assert_close(head(seen["image"].mean(dim=(2, 3))), v)
    pooled = masked_mean(seen["text"], attention_mask)
    torch.testing.assert_close(clip.text_tower.projection(pooled), t)
    sims = clip.similarity(images, ["a star", "a ring"])
    torch.testing.assert_close(sims[:, 0], F.cosine_similarity(v, t[:1].expand_as(v)))


def test_masked_mean_is_the_sentence_transformers_pooling():
    states = torch.randn(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    expected = torch.stack([states[0, :2].mean(0), states[1].mean(0)])
    torch.testing.assert_close(masked_mean(states, mask), expected)


@pytest.mark.parametrize("encoder", ["transformer", "conv"])
def test_padding_never_changes_a_text_embedding(encoder):
    torch.manual_seed(0)
    tower = TextTower(vocab_size=12, encoder=encoder).eval()
    assert isinstance(tower.encoder, TokenTransformer if encoder == "transformer" else TokenConv)
    ids = torch.tensor([[2, 3, 4]])
    mask = torch.ones_like(ids)
    padded_ids = torch.tensor([[2, 3, 4, 0, 0], [5, 6, 7, 8, 9]])
    padded_mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]])
    with torch.no_grad():
        alone = tower(ids, mask)
        batched = tower(padded_ids, padded_mask)
    torch.testing.assert_close(batched[:1], alone)


def test_text_tower_rejects_bad_shapes_and_encoders(clip):
    with pytest.raises(ValueError, match="attention_mask"):
        clip.text_tower(torch.tensor([[2, 3]]), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="encoder"):
        TextTower(vocab_size=5, encoder="lstm")
    with pytest.raises(ValueError, match="at most"):
        clip.text_tower(torch.full((1, 40), 2), torch.ones(1, 40, dtype=torch.long))
