"""Tests of the shapes CLIP's map figures and baselines (captum_fam.zoo.evaluate_clip_maps)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from zoo_cases import CLIP_CARD, CLIP_TEST_SEED, CLIP_TOLERANCE

from captum_fam.zoo import make_shapes
from captum_fam.zoo.evaluate_clip_maps import (
    IMAGE_METHODS,
    TOKEN_METHODS,
    clip_fams,
    image_pointing_rates,
    image_side,
    randomisation,
    token_pointing_rate,
    token_side,
)


def test_token_maps_decompose_the_cosine(clip):
    # Mean pooling and a linear projection: the raw token terms, averaged over the caption's
    # tokens, plus the projection bias's term, are the cosine.
    image_fam, text_fam = clip_fams(clip)
    images = make_shapes(3, objects=1, seed=1).images
    texts = clip.tokenizer.encode(["a star and a ring", "a red L shape", "there is a T"])
    image_embeddings = image_fam.embed(images)
    with torch.no_grad():
        maps = text_fam.attribute(
            texts, reference_embeddings=image_embeddings, pooling_mask=1,
            relu_attributions=False, normalize_weights=False,
        )  # fmt: skip
        text_embeddings = clip.text_tower(*texts)
    norms = text_embeddings.norm(dim=1) * image_embeddings.norm(dim=1)
    bias_term = image_embeddings @ clip.text_tower.projection.bias / norms
    shares = maps[:, 0].sum(dim=1) / texts[1].sum(dim=1)
    cosine = F.cosine_similarity(image_embeddings, text_embeddings)
    torch.testing.assert_close(shares + bias_term, cosine)
    assert (maps[:, 0][texts[1] == 0] == 0).all()


def test_present_shape_word_carries_the_largest_share(clip):
    rate = token_pointing_rate(clip, seed=CLIP_TEST_SEED, n=150)
    assert rate >= max(0.9, CLIP_CARD["token_pointing"] - CLIP_TOLERANCE)


def test_image_maps_point_at_the_named_object(clip):
    rates = image_pointing_rates(clip, seed=CLIP_TEST_SEED + 100, scenes=100)
    for k in (1, 2):
        plain = CLIP_CARD["image_pointing"][k - 1]
        assert rates[f"plain_object{k}"] >= max(0.85, plain - CLIP_TOLERANCE), rates
        contrastive = CLIP_CARD["contrastive_pointing"][k - 1]
        assert rates[f"contrastive_object{k}"] >= max(0.85, contrastive - CLIP_TOLERANCE), rates


def test_baselines_on_the_same_cosine(clip):
    image = image_side(clip, seed=CLIP_TEST_SEED + 200, scenes=40, ig_steps=8)
    assert set(image) == set(IMAGE_METHODS)
    fam = min(image["FAM"]["object1"], image["FAM"]["object2"])
    agnostic = max(image["reference-agnostic"]["object1"], image["reference-agnostic"]["object2"])
    assert fam >= 0.85 and agnostic <= 0.7 and image["FAM"]["time"] > 0
    token = token_side(clip, seed=CLIP_TEST_SEED + 300, n=60, ig_steps=8)
    assert set(token) == set(TOKEN_METHODS)
    assert token["FAM"]["pointing"] >= 0.9 > token["reference-agnostic"]["pointing"]


def test_randomising_either_tower_changes_its_maps(clip):
    result = randomisation(clip, seed=CLIP_TEST_SEED + 400, n=12)
    assert result["image_layers"][0] == "projection" and len(result["image_spearman"]) == 5
    assert max(result["image_spearman"]) < 0.6 and max(result["text_spearman"]) < 0.6
