"""FAM on the shipped shapes model: the map against one object's class points into that object.

Two-object scenes, references = class prototypes from single-object images, fresh seeds (the
training seeds stay below 10**9). The pointing game uses the literature's tolerance, 5% of the
image side. Measured rates are in docs/model_card.md; the floors here leave room for sampling
noise on 160 scenes (about +-3%).
"""

from __future__ import annotations

import pytest
import torch

from captum_fam import FeatureActivationMap
from captum_fam.metrics import pointing_game, reference_specificity
from captum_fam.zoo import SHAPE_CLASSES, load_shapes_model, make_shapes


@pytest.fixture(scope="module")
def world():
    model, layer = load_shapes_model()
    support = make_shapes(240, seed=3_000_000_001)
    scenes = make_shapes(160, objects=2, seed=3_000_000_002)
    fam = FeatureActivationMap(model, layer)
    embeddings = fam.embed(support.images)
    labels = support.labels[:, 0]
    prototypes = torch.stack([embeddings[labels == c].mean(0) for c in range(len(SHAPE_CLASSES))])
    return model, layer, prototypes, scenes


def pointing_rates(fam, prototypes, scenes, contrastive):
    rates = []
    for k in (0, 1):
        foil = {"foil_embeddings": prototypes[scenes.labels[:, 1 - k]]} if contrastive else {}
        maps = fam.attribute(
            scenes.images, reference_embeddings=prototypes[scenes.labels[:, k]], **foil
        )
        rates.append(pointing_game(maps, scenes.masks[:, k]).float().mean().item())
    return rates


def test_contrastive_maps_point_into_the_named_object_each_way(world):
    """Why A rather than B: at least 80% of maps point into A, for either object as A."""
    model, layer, prototypes, scenes = world
    fam = FeatureActivationMap(model, layer, weighting="reference")
    rates = pointing_rates(fam, prototypes, scenes, contrastive=True)
    assert min(rates) >= 0.8, rates


@pytest.mark.parametrize("weighting", ["contribution", "reference"])
def test_plain_maps_point_into_the_named_object(world, weighting):
    model, layer, prototypes, scenes = world
    fam = FeatureActivationMap(model, layer, weighting=weighting)
    rates = pointing_rates(fam, prototypes, scenes, contrastive=False)
    assert min(rates) >= 0.65 and max(rates) >= 0.8, rates


def test_maps_follow_the_reference_where_a_saliency_cannot(world):
    """Both objects' maps hit: FAM follows the reference; a reference-agnostic map cannot."""
    model, layer, prototypes, scenes = world
    fam = FeatureActivationMap(model, layer, weighting="reference")
    maps = tuple(
        fam.attribute(
            scenes.images,
            reference_embeddings=prototypes[scenes.labels[:, k]],
            foil_embeddings=prototypes[scenes.labels[:, 1 - k]],
        )
        for k in (0, 1)
    )
    specificity = reference_specificity(scenes.masks, maps=maps).float().mean().item()
    activation = layer_mean_activation(model, layer, scenes.images)
    agnostic = reference_specificity(scenes.masks, maps=(activation, activation))
    assert specificity >= 0.65, specificity
    assert agnostic.float().mean().item() <= 0.1


def layer_mean_activation(model, layer, images):
    captured = []
    handle = layer.register_forward_hook(lambda m, i, o: captured.append(o))
    with torch.no_grad():
        model(images)
    handle.remove()
    return captured[0].mean(dim=1, keepdim=True)
