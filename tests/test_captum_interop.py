"""FAM as a Captum user calls it: NoiseTunnel, captum.metrics, captum.attr.visualization."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from captum.attr import IntegratedGradients, LayerAttribution, NoiseTunnel
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max as captum_sensitivity_max
from matplotlib.figure import Figure

from captum_fam import FeatureActivationMap, metrics
from captum_fam.visualization import attribution_to_numpy, image_to_numpy, visualize_fam


@pytest.fixture
def fam(tiny_model):
    return FeatureActivationMap(tiny_model, tiny_model.block)


@pytest.mark.parametrize("batch_size", [None, 2, 3])
@pytest.mark.parametrize("reference_kind", ["images", "embeddings"])
def test_noise_tunnel_without_noise_reproduces_the_map(
    fam, images, references, batch_size, reference_kind
):
    reference = (
        {"reference": references}
        if reference_kind == "images"
        else {"reference_embeddings": fam.embed(references)}
    )
    plain = fam.attribute(images, **reference)
    tunnel = NoiseTunnel(fam)
    expected = {"smoothgrad": plain, "smoothgrad_sq": plain**2, "vargrad": torch.zeros_like(plain)}
    for nt_type, target in expected.items():
        smoothed = tunnel.attribute(
            images,
            nt_type=nt_type,
            nt_samples=5,
            nt_samples_batch_size=batch_size,
            stdevs=0.0,
            **reference,
        )
        torch.testing.assert_close(smoothed, target, atol=1e-6, rtol=1e-5)


def test_noise_tunnel_pairs_each_noisy_copy_with_its_own_reference(fam, images, references):
    torch.manual_seed(7)
    smoothed = NoiseTunnel(fam).attribute(
        images, nt_type="smoothgrad", nt_samples=3, stdevs=0.2, reference=references
    )
    # The same draw, done by hand: copies in repeat_interleave order, then averaged per input.
    torch.manual_seed(7)
    noisy = images.repeat_interleave(3, dim=0) + torch.normal(
        0, torch.tensor(0.2).repeat(12, 3, 12, 12)
    )
    by_hand = torch.stack(
        [fam.attribute(noisy[3 * i : 3 * i + 3], reference=references[i : i + 1]) for i in range(4)]
    ).mean(1)
    torch.testing.assert_close(smoothed, by_hand)
    assert not torch.allclose(smoothed, fam.attribute(images, reference=references))


def test_infidelity_helper_is_captum_infidelity_with_the_glue(fam, images, references):
    torch.manual_seed(3)
    ours = metrics.infidelity(fam, images, reference=references, n_perturb_samples=4)
    # What a user would otherwise write by hand.
    rows = fam.embed(references)
    maps = fam.attribute(images, reference_embeddings=rows)
    torch.manual_seed(3)
    theirs = captum_infidelity(
        metrics.similarity_forward(fam),
        metrics.gaussian_perturbation(),
        images,
        LayerAttribution.interpolate(maps, (12, 12), "bilinear").expand_as(images),
        additional_forward_args=(rows,),
        n_perturb_samples=4,
        normalize=True,
    )
    assert ours.shape == (4,) and torch.isfinite(ours).all()
    torch.testing.assert_close(ours, theirs)


def test_infidelity_accepts_other_methods_maps_and_a_shared_reference(fam, images, references):
    forward = metrics.similarity_forward(fam)
    reference_rows = fam.embed(references[:1]).expand(4, -1)
    ig = IntegratedGradients(forward).attribute(
        images, additional_forward_args=(reference_rows,), n_steps=8
    )
    values = metrics.infidelity(
        fam, images, reference=references[:1], attributions=ig, n_perturb_samples=3
    )
    assert values.shape == (4,) and torch.isfinite(values).all()
    # The forward scores each input against its own row: the scores FAM explains.
    torch.testing.assert_close(
        forward(images, reference_rows), fam.similarity_scores(images, reference=references[:1])
    )


def test_to_input_shape_rejects_what_it_cannot_upsample(images):
    with pytest.raises(ValueError, match=r"must be \(N, 1, h, w\) maps"):
        metrics.to_input_shape(torch.rand(4, 2, 6, 6), images)


def test_sensitivity_max_pairs_expanded_inputs_with_their_references(fam, images, references):
    # Without perturbation every expanded copy must get its own input's map: sensitivity 0.
    still = metrics.sensitivity_max(
        fam, images, perturb_radius=0.0, n_perturb_samples=3, reference=references
    )
    torch.testing.assert_close(still, torch.zeros(4))
    torch.manual_seed(5)
    ours = metrics.sensitivity_max(fam, images, n_perturb_samples=3, reference=references)
    torch.manual_seed(5)
    theirs = captum_sensitivity_max(
        lambda x, **kw: (fam.attribute(x, **kw),), images, n_perturb_samples=3, reference=references
    )
    torch.testing.assert_close(ours, theirs)
    assert (ours > 0).all()


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


def test_gradient_methods_explain_the_same_forward(fam, tiny_model, images, references):
    """Grad-CAM on the cosine forward is a contrastive map: its spatial mean is zero, not s."""
    from captum.attr import LayerGradCam

    rows = fam.embed(references)
    grad_cam = LayerGradCam(metrics.similarity_forward(fam), tiny_model.block).attribute(
        images, additional_forward_args=(rows,), relu_attributions=False
    )
    assert grad_cam.shape == (4, 1, 6, 6)
    torch.testing.assert_close(grad_cam.mean(dim=(1, 2, 3)), torch.zeros(4), atol=1e-6, rtol=0)
    complete = FeatureActivationMap(tiny_model, tiny_model.block, weighting="reference")
    raw = complete.attribute(
        images, reference_embeddings=rows, relu_attributions=False, normalize_weights=False
    )
    torch.testing.assert_close(
        raw.mean(dim=(1, 2, 3)), complete.similarity_scores(images, reference_embeddings=rows)
    )
