"""The common-mode wrapper reproduces the failure of layer-space maps, offline."""

from __future__ import annotations

import pytest
import torch

from captum_fam import FeatureActivationMap
from captum_fam.metrics import pointing_game
from captum_fam.tasks import class_prototypes
from captum_fam.zoo import load_common_mode_model, load_shapes_model, make_shapes


def pointing(fam, support, scenes):
    classes, prototypes = class_prototypes(fam.embed(support.images), support.labels[:, 0])
    hits = []
    for obj in (0, 1):
        rows = prototypes[torch.searchsorted(classes, scenes.labels[:, obj].contiguous())]
        maps = fam.attribute(scenes.images, reference_embeddings=rows)
        hits.append(pointing_game(maps, scenes.masks[:, obj], tolerance=3.2).float().mean())
    return float(torch.stack(hits).mean())


def test_layer_maps_fail_and_the_models_own_similarity_does_not():
    support, scenes = make_shapes(120, objects=1, seed=41), make_shapes(60, objects=2, seed=42)
    model, layer = load_common_mode_model()
    assert pointing(FeatureActivationMap(model, layer, embedding="layer"), support, scenes) < 0.65
    assert pointing(FeatureActivationMap(model, layer), support, scenes) > 0.75
    # The head centres the common mode away: the output is a working embedding.
    trunk, _ = load_shapes_model()
    images = scenes.images[:4]
    with torch.no_grad():
        out = model(images)
    torch.testing.assert_close(out.mean(1), torch.zeros(4), atol=1e-5, rtol=0)
    assert not torch.allclose(out, trunk(images))


def test_bad_settings():
    with pytest.raises(ValueError, match="offset must be >= 0 and tilt > 0"):
        load_common_mode_model(offset=-1)
