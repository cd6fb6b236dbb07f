"""FAM on common torchvision backbones (random weights) at their last convolutional block."""

from __future__ import annotations

import pytest
import torch

from captum_fam import FeatureActivationMap

torchvision = pytest.importorskip("torchvision")

ARCHITECTURES = {
    "resnet18": lambda m: m.layer4,
    "resnet50": lambda m: m.layer4,
    "vgg11_bn": lambda m: m.features,
    "densenet121": lambda m: m.features,
    "mobilenet_v3_small": lambda m: m.features,
    "efficientnet_b0": lambda m: m.features,
    "convnext_tiny": lambda m: m.features,
}


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
def test_architecture(name):
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None).eval()
    layer = ARCHITECTURES[name](model)
    queries = torch.rand(2, 3, 64, 64)
    references = torch.rand(1, 3, 64, 64)

    fam = FeatureActivationMap(model, layer)
    maps = fam.attribute(queries, reference=references)
    assert maps.dim() == 4 and maps.shape[:2] == (2, 1)
    assert torch.isfinite(maps).all() and (maps >= 0).all()

    # The pooled layer's own similarity decomposes exactly (P1); a classifier's logits do not.
    complete = FeatureActivationMap(model, layer, embedding="layer")
    raw = complete.attribute(
        queries, reference=references, relu_attributions=False, normalize_weights=False
    )
    scores = complete.similarity_scores(queries, reference=references)
    torch.testing.assert_close(raw.mean(dim=(1, 2, 3)), scores, atol=1e-5, rtol=1e-4)
    assert ((scores >= -1 - 1e-6) & (scores <= 1 + 1e-6)).all()
