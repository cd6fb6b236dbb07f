"""The reference-dependence guard: it flags reference-agnostic maps and stays quiet otherwise."""

from __future__ import annotations

import pytest
import torch

from captum_fam import FeatureActivationMap
from captum_fam.metrics import (
    AGNOSTIC_THRESHOLD,
    position_correlation,
    reference_dependence,
)
from captum_fam.tasks import class_prototypes
from captum_fam.zoo import load_common_mode_model, load_shapes_model, make_shapes


@pytest.fixture(scope="module")
def episode():
    support = make_shapes(120, objects=1, seed=31)
    scenes = make_shapes(40, objects=2, seed=32)
    return support, scenes


def dependence(fam, support, scenes):
    classes, prototypes = class_prototypes(fam.embed(support.images), support.labels[:, 0])
    rows = prototypes[torch.searchsorted(classes, scenes.labels[:, 0].contiguous())]
    return reference_dependence(fam, scenes.images, reference_embeddings=rows)


def test_quiet_on_the_shapes_models_default_maps(episode):
    model, layer = load_shapes_model()
    check = dependence(FeatureActivationMap(model, layer), *episode)
    assert not check.agnostic and check.median < 0.93
    assert check.correlation.shape == (40,)
    assert check.describe().startswith("reference dependence: ok")


def test_flags_layer_maps_of_a_common_mode_and_quiets_with_the_cures(episode):
    """The face-network situation: layer-space maps follow activation size; the cures work."""
    support, scenes = episode
    model, layer = load_common_mode_model()
    layer_maps = dependence(FeatureActivationMap(model, layer, embedding="layer"), *episode)
    assert layer_maps.agnostic and layer_maps.median >= AGNOSTIC_THRESHOLD
    assert "barely depend on the reference" in layer_maps.describe()
    through_head = dependence(FeatureActivationMap(model, layer), *episode)
    assert not through_head.agnostic
    # A background set of ordinary scenes removes the common mode from the layer's weights.
    fam = FeatureActivationMap(model, layer, embedding="layer")
    classes, prototypes = class_prototypes(fam.embed(support.images), support.labels[:, 0])
    rows = prototypes[torch.searchsorted(classes, scenes.labels[:, 0].contiguous())]
    queries = fam.engine.queries((scenes.images,))
    raw = fam.engine.explain(queries, rows, background=fam.embed(make_shapes(16, seed=33).images),
                             relu_attributions=False, normalize_weights=False)  # fmt: skip
    agnostic = queries.activations.mean(dim=1, keepdim=True)
    assert position_correlation(raw, agnostic).median() < AGNOSTIC_THRESHOLD


def test_position_correlation():
    a = torch.arange(6.0).view(1, 1, 2, 3)
    torch.testing.assert_close(position_correlation(a, 2 * a + 1), torch.ones(1))
    torch.testing.assert_close(position_correlation(a, -a), -torch.ones(1))
    assert position_correlation(a, torch.ones_like(a)).isnan().all()
    mask = torch.tensor([[[True, True, False], [False, False, False]]])
    other = torch.tensor([[[[0.0, 1.0, 9.0], [-5.0, 3.0, 2.0]]]])
    torch.testing.assert_close(position_correlation(a, other, mask), torch.ones(1))
    with pytest.raises(ValueError, match="must have the same shape"):
        position_correlation(a, a[..., :2])
    with pytest.raises(ValueError, match=r"threshold must be in \(0, 1\]"):
        model, layer = load_shapes_model()
        reference_dependence(FeatureActivationMap(model, layer), torch.rand(1, 3, 32, 32),
                             reference_embeddings=torch.rand(128), threshold=0)  # fmt: skip
