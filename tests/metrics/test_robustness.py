"""captum.metrics' infidelity and sensitivity_max on similarity explanations."""

from __future__ import annotations

import pytest
import torch
from captum.attr import IntegratedGradients, LayerAttribution
from captum.metrics import infidelity as captum_infidelity
from captum.metrics import sensitivity_max as captum_sensitivity_max

from captum_fam import FeatureActivationMap, metrics


@pytest.fixture
def fam(tiny_model):
    return FeatureActivationMap(tiny_model, tiny_model.block)


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
