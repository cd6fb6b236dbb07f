"""FAM maps in captum.attr.visualization."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from captum.attr import LayerAttribution
from matplotlib.figure import Figure

from captum_fam import FeatureActivationMap
from captum_fam.visualization import attribution_to_numpy, image_to_numpy, visualize_fam


@pytest.fixture
def fam(tiny_model):
    return FeatureActivationMap(tiny_model, tiny_model.block)


def test_visualization_numpy_conversion(images):
    maps = torch.rand(4, 1, 6, 6)
    heat = attribution_to_numpy(maps[0], size=(12, 12))
    assert heat.shape == (12, 12, 1) and heat.dtype == np.float32
    expected = LayerAttribution.interpolate(maps[:1], (12, 12), "bilinear")[0, 0].numpy()
    np.testing.assert_allclose(heat[..., 0], expected)
    assert attribution_to_numpy(maps[0, 0]).shape == (6, 6, 1)
    with pytest.raises(ValueError, match="one map"):
        attribution_to_numpy(maps)
    picture = image_to_numpy(images[0])
    assert picture.shape == (12, 12, 3) and picture.min() >= 0 and picture.max() <= 1
    normalized = image_to_numpy((images[:1] - 0.5) / 0.2)
    assert normalized.min() == 0 and normalized.max() == 1
    with pytest.raises(ValueError, match="image must be"):
        image_to_numpy(images)


def test_visualize_fam_draws_with_captum(fam, images, references):
    maps = fam.attribute(images, reference=references)
    figure, axis = visualize_fam(maps[0], images[0], title="cos 0.9", use_pyplot=False)
    assert isinstance(figure, Figure) and axis.get_title() == "cos 0.9"
    assert len(axis.images) == 2  # the image and the heat map over it


def test_visualize_fam_all_zero_map_warns_instead_of_failing(images):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        figure, axis = visualize_fam(
            torch.zeros(1, 1, 6, 6), images[0], title="nothing", use_pyplot=False
        )
    assert any("has no positive values" in str(w.message) for w in caught)
    assert len(axis.images) == 1 and axis.get_title() == "nothing"
    with pytest.raises(ValueError, match="sign must be one of"):
        visualize_fam(torch.ones(6, 6), images[0], sign="both", use_pyplot=False)
