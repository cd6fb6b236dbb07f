"""FAM on the shipped shapes model: the map against one object's class points into that object.

Two-object scenes, references = class prototypes from single-object images, fresh seeds (the
training seeds stay below 10**9). The pointing game uses the literature's tolerance, 5% of the
image side. Measured rates are in docs/model_card.md; the floors here leave room for sampling
noise on 160 scenes (about +-3%).
"""

from __future__ import annotations

import pytest
import torch
from zoo_cases import CARD_HEAD_POINTING_OUTPUT, TEST_SEED, TOLERANCE

from captum_fam import FeatureActivationMap
from captum_fam.metrics import pointing_game, reference_specificity
from captum_fam.zoo import SHAPE_CLASSES, load_shapes_model, make_shapes
from captum_fam.zoo.evaluate import class_pool, embed, pointing_rate, prototypes
from captum_fam.zoo.evaluate_maps import layer_activations


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
    return layer_activations(model, layer, images).mean(dim=1, keepdim=True)


def test_head_model_output_maps_point_into_the_named_object(head_model_and_layer):
    """FAM on the head's output, prototypes of the head's output: pointing on 100 scenes."""
    model, layer = head_model_and_layer
    sup_images, sup_labels = class_pool(10, seed=TEST_SEED + 1000)
    protos = prototypes(embed(model, sup_images), sup_labels, len(SHAPE_CLASSES))
    scenes = make_shapes(100, objects=2, seed=TEST_SEED + 2000)
    for k in range(2):
        rate = pointing_rate(
            model,
            layer,
            scenes.images,
            scenes.masks[:, k],
            protos[scenes.labels[:, k]],
            embedding="output",
        )
        assert rate >= CARD_HEAD_POINTING_OUTPUT[k] - 2 * TOLERANCE, (k, rate)
