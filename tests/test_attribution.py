"""The public contract of FeatureActivationMap: shapes, pairing, Captum arguments, heads,
structured outputs, contrast sets and hygiene."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from captum.attr import LayerAttribution
from captum.testing.helpers.basic_models import BasicModel_ConvNet_One_Conv
from helpers import TinyEmbedder, requires_cuda
from torch import nn

from captum_fam import (
    FAM,
    CallableSimilarity,
    CosineSimilarity,
    FeatureActivationMap,
    Similarity,
)


def test_alias_and_captum_base_class():
    assert FAM is FeatureActivationMap
    fam = FeatureActivationMap(nn.Identity(), nn.Identity())
    # The measured defaults (docs/benchmarks.md): "reference" localises and inserts better, and
    # the model's own similarity ("output") is what a head model decides with.
    assert fam.weighting == "reference" and fam.embedding == "output"
    assert issubclass(FeatureActivationMap, LayerAttribution)
    # NoiseTunnel calls attribute.__wrapped__ to skip Captum's usage logging.
    assert hasattr(FeatureActivationMap.attribute, "__wrapped__")


def test_maps_have_the_layer_resolution_and_explain_the_scores(tiny_model, images, references):
    fam = FeatureActivationMap(tiny_model, tiny_model.block)
    maps = fam.attribute(images, reference=references)
    assert maps.shape == (4, 1, 6, 6)
    assert maps.dtype == torch.float32
    assert (maps >= 0).all()
    scores = fam.similarity_scores(images, reference=references)
    expected = torch.cosine_similarity(tiny_model(images), tiny_model(references))
    torch.testing.assert_close(scores, expected)
    upsampled = LayerAttribution.interpolate(maps, (12, 12), "bilinear")
    assert upsampled.shape == (4, 1, 12, 12)


def test_reference_images_and_embeddings_give_the_same_maps(tiny_model, images, references):
    fam = FeatureActivationMap(tiny_model, tiny_model.block)
    embeddings = fam.embed(references)
    torch.testing.assert_close(embeddings, tiny_model(references))
    torch.testing.assert_close(
        fam.attribute(images, reference=references),
        fam.attribute(images, reference_embeddings=embeddings),
    )


@pytest.mark.parametrize("m", [1, 2, 4])
def test_references_pair_in_repeat_interleave_order(tiny_model, images, references, m):
    fam = FeatureActivationMap(tiny_model, tiny_model.block, weighting="reference")
    maps = fam.attribute(images, reference=references[:m])
    for i in range(4):
        alone = fam.attribute(images[i : i + 1], reference=references[i // (4 // m)][None])
        torch.testing.assert_close(maps[i], alone[0])
    # A single embedding of shape (C,) is one reference shared by all inputs.
    shared = fam.attribute(images, reference_embeddings=fam.embed(references[:1])[0])
    torch.testing.assert_close(shared, fam.attribute(images, reference=references[:1]))


def test_additional_forward_args_and_layer_input():
    torch.manual_seed(0)
    model = BasicModel_ConvNet_One_Conv()
    x = torch.rand(4, 1, 4, 4) * 20
    x2 = torch.rand(4, 1, 4, 4) * 20
    reference = torch.rand(2, 1, 4, 4) * 20 + 10
    fam = FeatureActivationMap(
        model, model.relu1, similarity="dot", weighting="contribution", embedding="layer"
    )
    maps = fam.attribute(x, reference=reference, additional_forward_args=(x2,))
    activations = model.relu1(model.conv1(x + x2))
    # The reference forward takes the per-example arguments of each group's first input.
    reference_activations = model.relu1(model.conv1(reference + x2[::2]))
    e_r = reference_activations.mean(dim=(2, 3)).repeat_interleave(2, dim=0)
    weights = activations.mean(dim=(2, 3)) * e_r
    weights = weights / weights.abs().sum(1, keepdim=True)
    expected = torch.einsum("nc,nchw->nhw", weights, activations).unsqueeze(1).relu()
    torch.testing.assert_close(maps, expected)
    # The layer's input (pre-ReLU conv output) instead of its output.
    pre = FeatureActivationMap(model, model.relu1, similarity="dot", embedding="layer")
    raw = pre.attribute(
        x,
        reference_embeddings=torch.ones(2),
        additional_forward_args=(x2,),
        attribute_to_layer_input=True,
        relu_attributions=False,
        normalize_weights=False,
    )
    torch.testing.assert_close(raw, model.conv1(x + x2).sum(1, keepdim=True))


class TwoInputEmbedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyEmbedder()

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.net(image * mask)


def test_tuple_inputs(images, references):
    torch.manual_seed(0)
    model = TwoInputEmbedder().eval()
    fam = FeatureActivationMap(model, model.net.block)
    masks = torch.ones(4, 1, 12, 12)
    maps = fam.attribute((images, masks), reference=(references, masks))
    plain = FeatureActivationMap(model.net, model.net.block).attribute(images, reference=references)
    torch.testing.assert_close(maps, plain)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_is_computed_in_float32(tiny_model, images, references, dtype):
    fam32 = FeatureActivationMap(tiny_model, tiny_model.block)
    expected = fam32.attribute(images, reference=references)
    low = TinyEmbedder().eval()
    low.load_state_dict(tiny_model.state_dict())
    low.to(dtype)
    fam = FeatureActivationMap(low, low.block)
    maps = fam.attribute(images.to(dtype), reference=references.to(dtype))
    assert maps.dtype == torch.float32
    torch.testing.assert_close(maps, expected, atol=2e-2, rtol=5e-2)


def test_float64_models_keep_float64(tiny_model, images, references):
    tiny_model.double()
    fam = FeatureActivationMap(tiny_model, tiny_model.block)
    assert fam.attribute(images.double(), reference=references.double()).dtype == torch.float64


@pytest.mark.parametrize("embedding", ["output", "layer"])
def test_no_backbone_gradients_under_no_grad_and_inference_mode(
    tiny_model, images, references, embedding
):
    fam = FeatureActivationMap(tiny_model, tiny_model.block, embedding=embedding)
    expected = fam.attribute(images, reference=references)
    leaf = images.clone().requires_grad_(True)
    maps = fam.attribute(leaf, reference=references)
    assert not maps.requires_grad and leaf.grad is None
    assert all(p.grad is None for p in tiny_model.parameters())
    with torch.no_grad():
        torch.testing.assert_close(fam.attribute(images, reference=references), expected)
    # The backward through the head steps out of inference mode for itself alone.
    with torch.inference_mode():
        frozen_images, frozen_references = images.clone(), references.clone()
        torch.testing.assert_close(
            fam.attribute(frozen_images, reference=frozen_references), expected
        )
        assert torch.is_inference_mode_enabled()
        callable_fam = FeatureActivationMap(
            tiny_model, tiny_model.block, similarity=lambda q, r: (q * r).sum(1)
        )
        assert callable_fam.attribute(images, reference=references).shape == (4, 1, 6, 6)


def test_deterministic(tiny_model, images, references):
    fam = FeatureActivationMap(tiny_model, tiny_model.block, similarity="euclidean")
    first = fam.attribute(images, reference=references)
    assert torch.equal(first, fam.attribute(images, reference=references))


def test_model_is_left_as_found(tiny_model, images, references):
    tiny_model.train()
    tiny_model.stem[0].weight.requires_grad_(False)
    state = {k: v.clone() for k, v in tiny_model.state_dict().items()}
    fam = FeatureActivationMap(tiny_model, tiny_model.block)
    fam.attribute(images, reference=references)
    fam.similarity_scores(images, reference=references)
    assert tiny_model.training
    assert [p.requires_grad for p in tiny_model.parameters()] == [False, True, True, True]
    for key, value in tiny_model.state_dict().items():
        assert torch.equal(value, state[key])
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in tiny_model.modules())


class FailingModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyEmbedder()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        self.net(images)
        raise RuntimeError("the model's own failure")


def test_model_errors_propagate_unchanged_and_hooks_are_removed(images, references):
    model = FailingModel().eval()
    fam = FeatureActivationMap(model, model.net.block)
    with pytest.raises(RuntimeError, match="the model's own failure"):
        fam.attribute(images, reference=references)
    with pytest.raises(RuntimeError, match="the model's own failure"):
        fam.attribute(images, reference_embeddings=torch.ones(6), attribute_to_layer_input=True)
    assert all(not m._forward_hooks and not m._forward_pre_hooks for m in model.modules())


def test_custom_similarity_is_one_small_class(tiny_model, images, references):
    class WeightedCosine(Similarity):
        name = "weighted-cosine"

        def __init__(self, scale: torch.Tensor) -> None:
            self.scale = scale

        def score(self, query, reference):
            return CosineSimilarity().score(query * self.scale, reference * self.scale)

        def coefficients(self, query, reference):
            return self.scale * CosineSimilarity().coefficients(
                query * self.scale, reference * self.scale
            )

    scale = torch.linspace(0.5, 2.0, 6)
    fam = FeatureActivationMap(
        tiny_model, tiny_model.block, similarity=WeightedCosine(scale), weighting="reference"
    )
    maps = fam.attribute(
        images, reference=references, relu_attributions=False, normalize_weights=False
    )
    scores = fam.similarity_scores(images, reference=references)
    torch.testing.assert_close(
        scores, torch.cosine_similarity(tiny_model(images) * scale, tiny_model(references) * scale)
    )
    torch.testing.assert_close(maps.mean(dim=(1, 2, 3)), scores)


def test_callable_similarity_uses_the_embedding_gradient(tiny_model, images, references):
    metric = torch.randn(6, 6, generator=torch.Generator().manual_seed(0))

    def bilinear(query, reference):
        return ((query @ metric) * reference).sum(1)

    fam = FeatureActivationMap(tiny_model, tiny_model.block, similarity=bilinear)
    assert isinstance(fam.similarity, CallableSimilarity)
    e_q, e_r = tiny_model(images), tiny_model(references)
    # Bilinear scores: gradient x input is the exact decomposition.
    weights = fam.similarity.weights(e_q, e_r, "contribution")
    torch.testing.assert_close(weights, e_q * (e_r @ metric.T))
    torch.testing.assert_close(weights.sum(1), bilinear(e_q, e_r))
    torch.testing.assert_close(
        fam.similarity_scores(images, reference=references), bilinear(e_q, e_r)
    )


def test_data_parallel_model_on_cpu(tiny_model, images, references):
    parallel = nn.DataParallel(tiny_model)
    fam = FeatureActivationMap(parallel, tiny_model.block)
    expected = FeatureActivationMap(tiny_model, tiny_model.block).attribute(
        images, reference=references
    )
    torch.testing.assert_close(fam.attribute(images, reference=references), expected)


@requires_cuda
def test_cuda_inputs_give_cuda_maps(tiny_model, images, references):
    model = tiny_model.cuda()
    fam = FeatureActivationMap(model, model.block)
    maps = fam.attribute(images.cuda(), reference_embeddings=fam.embed(references.cuda()).cpu())
    assert maps.device.type == "cuda"
    expected = FeatureActivationMap(model.cpu(), model.block).attribute(
        images, reference=references
    )
    torch.testing.assert_close(maps.cpu(), expected, atol=1e-4, rtol=1e-3)


# Projection heads: embedding="output" pulls the output-space coefficients back.


def head_model(bias: bool, hidden: int | None = None, seed: int = 0):
    torch.manual_seed(seed)
    backbone = TinyEmbedder().eval()
    head = (
        nn.Linear(6, 4, bias=bias)
        if hidden is None
        else nn.Sequential(nn.Linear(6, hidden), nn.Tanh(), nn.Linear(hidden, 4))
    )
    return nn.Sequential(backbone, head).eval(), backbone, head


@pytest.mark.parametrize("similarity", ["cosine", "dot", "euclidean"])
@pytest.mark.parametrize("bias", [False, True])
def test_linear_head_is_exact(similarity, bias):
    model, backbone, head = head_model(bias)
    images, references = torch.rand(3, 3, 12, 12), torch.rand(3, 3, 12, 12)
    fam = FeatureActivationMap(model, backbone.block, similarity=similarity)
    raw = fam.attribute(
        images, reference=references, relu_attributions=False, normalize_weights=False
    )
    o_q, o_r = model(images), model(references)
    g = fam.similarity.coefficients(o_q, o_r)
    # Closed form: the layer coefficients are W^T g; the map's mean is o_q . g minus the bias.
    activations = backbone.block(backbone.stem(images))
    expected = torch.einsum("nc,nchw->nhw", g @ head.weight, activations).unsqueeze(1)
    torch.testing.assert_close(raw, expected, atol=1e-5, rtol=1e-4)
    offset = (g * head.bias).sum(1) if bias else 0.0
    target = fam.similarity.score(o_q, o_r) - offset
    if similarity == "euclidean":
        target = target + o_r.pow(2).sum(1)
    torch.testing.assert_close(raw.mean(dim=(1, 2, 3)), target, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(
        fam.similarity_scores(images, reference=references), fam.similarity.score(o_q, o_r)
    )
    torch.testing.assert_close(fam.embed(references), o_r)


def test_nonlinear_head_is_first_order():
    model, backbone, head = head_model(bias=True, hidden=7)
    images, reference = torch.rand(2, 3, 12, 12), torch.rand(4)
    fam = FeatureActivationMap(model, backbone.block)
    raw = fam.attribute(
        images, reference_embeddings=reference, relu_attributions=False, normalize_weights=False
    )
    e_q = backbone(images)
    o_q = head(e_q)
    g = fam.similarity.coefficients(o_q, reference.expand(2, -1)).detach()
    jacobians = torch.stack([torch.autograd.functional.jacobian(head, e) for e in e_q])
    coefficients = torch.einsum("nd,ndc->nc", g, jacobians)
    activations = backbone.block(backbone.stem(images))
    expected = torch.einsum("nc,nchw->nhw", coefficients, activations).unsqueeze(1)
    torch.testing.assert_close(raw, expected, atol=1e-5, rtol=1e-4)


def test_head_backward_never_reaches_the_backbone():
    model, backbone, head = head_model(bias=True)
    reached = []
    backbone.stem.register_full_backward_hook(lambda *args: reached.append(args))
    grad_mode = torch.is_grad_enabled()
    fam = FeatureActivationMap(model, backbone.block)
    maps = fam.attribute(torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(4))
    assert not reached and not maps.requires_grad
    assert torch.is_grad_enabled() == grad_mode
    assert all(p.grad is None for p in model.parameters())
    assert not backbone.block._forward_hooks and not backbone.block._forward_pre_hooks
    with torch.no_grad():
        fam.attribute(torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(4))
        assert not torch.is_grad_enabled()
    with pytest.raises(
        ValueError, match="reference_embeddings have 6 channels but the model output has 4"
    ):
        fam.attribute(torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(6))


def test_head_errors():
    torch.manual_seed(0)
    backbone = TinyEmbedder().eval()
    unrelated = nn.Conv2d(3, 6, 1)

    class Detached(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone, self.side = backbone, unrelated

        def forward(self, images):
            self.side(images)
            return self.backbone(images)

    model = Detached().eval()
    fam = FeatureActivationMap(model, model.side)
    with pytest.raises(ValueError, match="does not depend on the layer's output"):
        fam.attribute(torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(6))
    spatial = FeatureActivationMap(backbone, backbone.block)
    with pytest.raises(ValueError, match="did not run"):
        FeatureActivationMap(backbone, nn.Conv2d(3, 3, 1)).attribute(
            torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(6)
        )
    assert spatial.attribute(
        torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(6)
    ).shape == (2, 1, 6, 6)
    with pytest.raises(ValueError, match="embedding must be one of"):
        FeatureActivationMap(backbone, backbone.block, embedding="head")


def test_the_default_explains_the_models_own_similarity():
    """With a head, "output" (the default) and "layer" explain different scores, each exactly."""
    model, backbone, head = head_model(bias=False)
    images, references = torch.rand(3, 3, 12, 12), torch.rand(3, 3, 12, 12)
    default = FeatureActivationMap(model, backbone.block)
    layer = FeatureActivationMap(model, backbone.block, embedding="layer")
    torch.testing.assert_close(
        default.similarity_scores(images, reference=references),
        torch.cosine_similarity(model(images), model(references)),
    )
    torch.testing.assert_close(
        layer.similarity_scores(images, reference=references),
        torch.cosine_similarity(backbone(images), backbone(references)),
    )
    torch.testing.assert_close(layer.embed(references), backbone(references))
    assert not torch.allclose(
        default.attribute(images, reference=references),
        layer.attribute(images, reference=references),
    )


class Outputs(nn.Module):
    """Returns what Hugging Face and sentence-transformers models return: structures."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.net = TinyEmbedder()

    def forward(self, images: torch.Tensor):
        embedding = self.net(images)
        if self.kind == "dict":
            return {"sentence_embedding": embedding, "token_embeddings": embedding[:, None]}
        if self.kind == "tuple":
            return embedding[:, None], embedding
        return SimpleNamespace(pooler_output=embedding)


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("dict", "sentence_embedding"),
        ("tuple", 1),
        ("object", "pooler_output"),
        ("tuple", lambda output: output[1]),
    ],
)
def test_embedding_key_picks_the_embedding_from_structured_outputs(kind, key, images, references):
    torch.manual_seed(0)
    model = Outputs(kind).eval()
    fam = FeatureActivationMap(model, model.net.block, embedding_key=key)
    plain = FeatureActivationMap(model.net, model.net.block)
    torch.testing.assert_close(fam.embed(references), model.net(references))
    torch.testing.assert_close(
        fam.attribute(images, reference=references), plain.attribute(images, reference=references)
    )
    torch.testing.assert_close(
        fam.similarity_scores(images, reference=references),
        plain.similarity_scores(images, reference=references),
    )


def test_background_contrast_is_the_mean_of_per_item_foils(tiny_model, images, references):
    """Against a background set, the weights lose the mean of the items' weights (any score)."""
    background = torch.rand(3, 3, 12, 12, generator=torch.Generator().manual_seed(5))
    raw = {"relu_attributions": False, "normalize_weights": False}
    for similarity in ("cosine", "dot", "euclidean"):
        fam = FeatureActivationMap(tiny_model, tiny_model.block, similarity=similarity)
        contrast = fam.attribute(images, reference=references, background=background, **raw)
        per_foil = torch.stack(
            [fam.attribute(images, reference=references, foil=b[None], **raw) for b in background]
        )
        torch.testing.assert_close(contrast, per_foil.mean(0), atol=1e-5, rtol=1e-4)
        torch.testing.assert_close(
            contrast, fam.attribute(images, reference=references,
                                    background_embeddings=fam.embed(background), **raw)
        )  # fmt: skip


@requires_cuda
def test_cuda_head_model_under_inference_mode_matches_cpu():
    # embedding="output" pulls the coefficients back through the head with autograd on the GPU.
    torch.manual_seed(0)
    model = nn.Sequential(TinyEmbedder(), nn.Linear(6, 4)).eval()
    images, references = torch.rand(3, 3, 12, 12), torch.rand(3, 3, 12, 12)
    expected = FeatureActivationMap(model, model[0].block).attribute(images, reference=references)
    model.cuda()
    fam = FeatureActivationMap(model, model[0].block)
    with torch.inference_mode():
        maps = fam.attribute(images.cuda(), reference=references.cuda())
    assert maps.device.type == "cuda"
    torch.testing.assert_close(maps.cpu(), expected, atol=1e-4, rtol=1e-3)
