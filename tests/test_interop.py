"""FAM among Captum's methods: NoiseTunnel, gradient methods on the same score, shapes."""

from __future__ import annotations

import pytest
import torch
from captum.attr import LayerAttribution, LayerGradCam, NoiseTunnel

from captum_fam import FeatureActivationMap
from captum_fam.interop import interpolation_mode, similarity_forward, to_input_shape


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


def test_to_input_shape_rejects_what_it_cannot_upsample(images):
    with pytest.raises(ValueError, match=r"must be \(N, 1, \*s\) maps"):
        to_input_shape(torch.rand(4, 2, 6, 6), images)
    with pytest.raises(ValueError, match="1, 2 or 3 positional dimensions"):
        interpolation_mode(4)


@pytest.mark.parametrize(
    ("maps", "inputs"),
    [
        (torch.rand(2, 1, 5), torch.rand(2, 3, 20)),
        (torch.rand(2, 1, 4, 6), torch.rand(2, 3, 8, 12)),
        (torch.rand(2, 1, 2, 3, 3), torch.rand(2, 1, 4, 6, 6)),
    ],
)
def test_to_input_shape_in_every_rank(maps, inputs):
    upsampled = to_input_shape(maps, inputs)
    assert upsampled.shape == inputs.shape
    mode = interpolation_mode(inputs.dim() - 2)
    expected = LayerAttribution.interpolate(maps, tuple(inputs.shape[2:]), mode)
    torch.testing.assert_close(upsampled[:, :1], expected)


def test_gradient_methods_explain_the_same_forward(fam, tiny_model, images, references):
    """Grad-CAM on the cosine forward is a contrastive map: its spatial mean is zero, not s."""
    rows = fam.embed(references)
    grad_cam = LayerGradCam(similarity_forward(fam), tiny_model.block).attribute(
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


def test_similarity_forward_is_the_models_own_score_and_differentiable(tiny_model, images):
    head = torch.nn.Sequential(tiny_model, torch.nn.Linear(6, 3)).eval()
    fam = FeatureActivationMap(head, tiny_model.block)
    rows = torch.randn(1, 3)
    leaf = images.clone().requires_grad_(True)
    scores = similarity_forward(fam)(leaf, rows)
    torch.testing.assert_close(scores, torch.cosine_similarity(head(images), rows).detach())
    scores.sum().backward()
    assert leaf.grad is not None and leaf.grad.abs().sum() > 0
    layer = FeatureActivationMap(head, tiny_model.block, embedding="layer")
    torch.testing.assert_close(
        similarity_forward(layer)(images, torch.ones(1, 6)),
        torch.cosine_similarity(tiny_model(images), torch.ones(1, 6)).detach(),
    )
    with pytest.raises(ValueError, match="reference_embeddings has 3 rows for 4 inputs"):
        similarity_forward(fam)(images, torch.randn(3, 3))
