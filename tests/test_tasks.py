"""Task helpers agree with per-pair FAM calls; contrastive maps follow their closed forms."""

from __future__ import annotations

import pytest
import torch
from helpers import TinyEmbedder
from torch import nn

from captum_fam import FeatureActivationMap
from captum_fam.similarity import WEIGHTINGS
from captum_fam.tasks import (
    class_prototypes,
    explain_pair,
    explain_prototypes,
    explain_retrieval,
)


def make_fam(seed=0, similarity="cosine", weighting="contribution", embedding="layer"):
    torch.manual_seed(seed)
    backbone = TinyEmbedder().eval()
    if embedding == "output":
        model = nn.Sequential(backbone, nn.Linear(6, 4)).eval()
        return FeatureActivationMap(
            model, backbone.block, similarity, weighting, embedding="output"
        )
    return FeatureActivationMap(backbone, backbone.block, similarity, weighting)


def rand(*shape, seed):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("embedding", ["layer", "output"])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_explain_pair_matches_attribute_both_ways(embedding, weighting):
    fam = make_fam(weighting=weighting, embedding=embedding)
    a, b = rand(3, 3, 12, 12, seed=1), rand(3, 3, 10, 14, seed=2)
    result = explain_pair(fam, a, b)
    torch.testing.assert_close(result.maps_a, fam.attribute(a, reference=b))
    torch.testing.assert_close(result.maps_b, fam.attribute(b, reference=a))
    torch.testing.assert_close(result.scores, fam.similarity_scores(a, reference=b))
    foil = rand(1, 3, 12, 12, seed=3)
    contrast = explain_pair(fam, a, b, foil=foil)
    torch.testing.assert_close(contrast.maps_a, fam.attribute(a, reference=b, foil=foil))
    torch.testing.assert_close(contrast.maps_b, fam.attribute(b, reference=a, foil=foil))


@pytest.mark.parametrize("embedding", ["layer", "output"])
@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean"])
def test_explain_prototypes_matches_attribute_per_way(similarity, embedding):
    fam = make_fam(similarity=similarity, embedding=embedding)
    queries = rand(4, 3, 12, 12, seed=4)
    support = rand(9, 3, 12, 12, seed=5)
    labels = torch.tensor([7, 3, 5, 3, 7, 5, 5, 3, 7])
    episode = explain_prototypes(fam, queries, support, labels)
    assert episode.classes.tolist() == [3, 5, 7]
    assert episode.maps.shape == (4, 3, 6, 6) and episode.scores.shape == (4, 3)
    for way, label in enumerate(episode.classes):
        prototype = fam.embed(support[labels == label]).mean(0)
        torch.testing.assert_close(class_prototypes(fam.embed(support), labels)[1][way], prototype)
        torch.testing.assert_close(episode.prototypes[way], prototype)
        torch.testing.assert_close(
            episode.maps[:, way : way + 1], fam.attribute(queries, reference_embeddings=prototype)
        )
        torch.testing.assert_close(
            episode.scores[:, way], fam.similarity_scores(queries, reference_embeddings=prototype)
        )
    assert torch.equal(episode.prediction, episode.classes[episode.scores.argmax(1)])


@pytest.mark.parametrize("weighting", WEIGHTINGS)
def test_contrastive_prototypes_are_the_log_probability_gradient(weighting):
    """Closed form = autograd gradient of log softmax(s / T) w.r.t. e_q with norms held fixed."""
    fam = make_fam(similarity="cosine", weighting=weighting)
    queries, support = rand(3, 3, 12, 12, seed=8), rand(8, 3, 12, 12, seed=9)
    labels = torch.arange(4).repeat(2)
    temperature = 0.05
    raw = {"relu_attributions": False, "normalize_weights": False}
    episode = explain_prototypes(
        fam, queries, support, labels, contrastive=True, temperature=temperature, **raw
    )
    e_q = fam.embed(queries)
    prototypes = episode.prototypes
    # Norms held fixed: s_w = e_q . p_w / (|e_q| |p_w|) with |e_q| a constant.
    q_norm = e_q.norm(dim=1, keepdim=True)
    p_unit = prototypes / prototypes.norm(dim=1, keepdim=True)
    leaf = e_q.clone().requires_grad_(True)
    log_p = torch.log_softmax((leaf @ p_unit.T) / q_norm / temperature, dim=1)
    activations = fam.engine.queries((queries,)).activations
    for way in range(4):
        (gradient,) = torch.autograd.grad(log_p[:, way].sum(), leaf, retain_graph=True)
        coefficients = gradient * temperature  # the map is defined on s, not s / T
        weights = coefficients if weighting == "reference" else e_q * coefficients
        expected = torch.einsum("nc,nchw->nhw", weights, activations)
        torch.testing.assert_close(episode.maps[:, way], expected, atol=1e-5, rtol=1e-4)
    # What all ways share cancels: the probability-weighted sum of the maps is zero.
    probabilities = torch.softmax(episode.scores / temperature, dim=1)
    mixed = (probabilities[:, :, None, None] * episode.maps).sum(1)
    torch.testing.assert_close(mixed, torch.zeros_like(mixed), atol=1e-6, rtol=0)


def test_foil_weights_are_reference_minus_foil():
    fam = make_fam(similarity="dot", weighting="reference")
    queries = rand(2, 3, 12, 12, seed=10)
    reference, foil = rand(1, 6, seed=11)[0], rand(1, 6, seed=12)[0]
    raw = {"relu_attributions": False, "normalize_weights": False}
    contrast = fam.attribute(queries, reference_embeddings=reference, foil_embeddings=foil, **raw)
    torch.testing.assert_close(
        contrast,
        fam.attribute(queries, reference_embeddings=reference, **raw)
        - fam.attribute(queries, reference_embeddings=foil, **raw),
    )
    # A foil equal to the reference leaves nothing to explain.
    same = fam.attribute(queries, reference_embeddings=reference, foil_embeddings=reference)
    assert torch.equal(same, torch.zeros_like(same))


@pytest.mark.parametrize("embedding", ["layer", "output"])
def test_explain_retrieval_matches_attribute_for_each_hit(embedding):
    fam = make_fam(embedding=embedding, similarity="euclidean")
    queries, gallery = rand(3, 3, 12, 12, seed=13), rand(23, 3, 12, 12, seed=14)
    hits = explain_retrieval(fam, queries, gallery=gallery, k=4, batch_size=5)
    gallery_embeddings = fam.embed(gallery)
    cached = explain_retrieval(fam, queries, gallery_embeddings=gallery_embeddings, k=4)
    torch.testing.assert_close(hits.indices, cached.indices)
    torch.testing.assert_close(hits.maps, cached.maps)
    assert cached.gallery_maps is None
    all_scores = torch.stack(
        [fam.similarity_scores(queries, reference_embeddings=g) for g in gallery_embeddings], 1
    )
    expected_scores, expected_indices = all_scores.topk(4, dim=1)
    assert torch.equal(hits.indices, expected_indices)
    torch.testing.assert_close(hits.scores, expected_scores)
    for j in range(4):
        torch.testing.assert_close(
            hits.maps[:, j : j + 1],
            fam.attribute(queries, reference_embeddings=gallery_embeddings[hits.indices[:, j]]),
        )
        torch.testing.assert_close(
            hits.gallery_maps[:, j : j + 1],
            fam.attribute(gallery[hits.indices[:, j]], reference=queries),
        )


def test_task_helper_errors():
    fam = make_fam()
    images = rand(2, 3, 12, 12, seed=15)
    with pytest.raises(ValueError, match="same number of examples"):
        explain_pair(fam, images, images[:1])
    with pytest.raises(ValueError, match="support_labels must be a tensor of 2 labels"):
        explain_prototypes(fam, images, images, torch.tensor([0]))
    with pytest.raises(TypeError, match="integer class labels"):
        explain_prototypes(fam, images, images, torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="k must be an int between 1 and the gallery size 2"):
        explain_retrieval(fam, images, gallery=images, k=3)
    with pytest.raises(ValueError, match="exactly one of gallery or gallery_embeddings"):
        explain_retrieval(fam, images)
    with pytest.raises(ValueError, match="gallery_embeddings have 3 channels"):
        explain_retrieval(fam, images, gallery_embeddings=torch.rand(5, 3), k=2)
    with pytest.raises(TypeError, match="pooling_mask of a task helper must be the index"):
        explain_pair(fam, images, images, pooling_mask=torch.ones(2, 6, 6))
    with pytest.raises(ValueError, match="labels must be a tensor of 2 labels"):
        class_prototypes(torch.rand(2, 3), torch.tensor([0]))
    with pytest.raises(TypeError, match="integer class labels"):
        class_prototypes(torch.rand(2, 3), torch.tensor([True, False]))


def test_class_prototypes_average_each_class():
    embeddings = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0]])
    classes, prototypes = class_prototypes(embeddings, torch.tensor([4, 4, 1]))
    assert classes.tolist() == [1, 4]
    torch.testing.assert_close(prototypes, torch.tensor([[0.0, 2.0], [2.0, 0.0]]))
    _, unit = class_prototypes(embeddings, torch.tensor([4, 4, 1]), normalize=True)
    torch.testing.assert_close(unit, torch.tensor([[0.0, 1.0], [1.0, 0.0]]))


class Scaled(nn.Module):
    """A model whose forward needs a second argument, shared by every forward."""

    def __init__(self) -> None:
        super().__init__()
        self.net = TinyEmbedder()

    def forward(self, images: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return self.net(images * gain)


def test_helpers_pass_additional_forward_args_to_every_forward():
    torch.manual_seed(0)
    model = Scaled().eval()
    fam = FeatureActivationMap(model, model.net.block, weighting="contribution")
    gain = torch.tensor(0.3)
    a, b = rand(3, 3, 12, 12, seed=20), rand(3, 3, 12, 12, seed=21)
    args = {"additional_forward_args": (gain,)}
    pair = explain_pair(fam, a, b, **args)
    torch.testing.assert_close(pair.maps_a, fam.attribute(a, reference=b, **args))
    torch.testing.assert_close(pair.scores, fam.similarity_scores(a, reference=b, **args))
    labels = torch.tensor([0, 1, 1])
    episode = explain_prototypes(fam, a, b, labels, **args)
    prototype = fam.embed(b[labels == 1], **args).mean(0)
    torch.testing.assert_close(
        episode.maps[:, 1:2], fam.attribute(a, reference_embeddings=prototype, **args)
    )
    hits = explain_retrieval(fam, a, gallery=b, k=2, **args)
    torch.testing.assert_close(
        hits.gallery_maps[:, :1], fam.attribute(b[hits.indices[:, 0]], reference=a, **args)
    )
    # Without the argument the model itself fails, and the error is the model's.
    with pytest.raises(TypeError, match="missing 1 required positional argument"):
        explain_pair(fam, a, b)
