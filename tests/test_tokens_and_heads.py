"""Transformer token layers and projection heads."""

from __future__ import annotations

import warnings

import pytest
import torch
from conftest import TinyEmbedder
from torch import nn

from captum_fam import FeatureActivationMap, TokenLayout


class TokenModel(nn.Module):
    """A patch embedding, prefix tokens, then a token block: (N, T, C) like a ViT."""

    def __init__(self, prefix: int = 1, patch: int = 4, channels: int = 5) -> None:
        super().__init__()
        self.embed = nn.Conv2d(3, channels, patch, stride=patch)
        self.prefix = nn.Parameter(torch.randn(1, prefix, channels))
        self.block = nn.Linear(channels, channels)

    def grid(self, images: torch.Tensor) -> torch.Tensor:
        return self.embed(images)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        patches = self.embed(images).flatten(2).transpose(1, 2)
        tokens = torch.cat([self.prefix.expand(len(images), -1, -1), patches], dim=1)
        return self.block(tokens)[:, 0]


class ChannelsLastModel(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Conv2d(3, 5, 4, stride=4)
        self.stage = nn.Identity()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.stage(self.features(images).permute(0, 2, 3, 1)).mean(dim=(1, 2))


@pytest.mark.parametrize(("prefix", "size"), [(0, (16, 16)), (1, (16, 24)), (5, (32, 12))])
def test_auto_layout_reads_tokens_as_the_patch_grid(prefix, size):
    torch.manual_seed(0)
    model = TokenModel(prefix=prefix).eval()
    images = torch.rand(2, 3, *size)
    fam = FeatureActivationMap(model, model.block, token_layout="auto", weighting="reference")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        maps = fam.attribute(images, reference_embeddings=torch.rand(5))
        fam.attribute(images, reference_embeddings=torch.rand(5))
    h, w = size[0] // 4, size[1] // 4
    assert maps.shape == (2, 1, h, w)
    told = [str(c.message) for c in caught if "prefix token" in str(c.message)]
    assert len(told) == (1 if prefix else 0)  # said once, not at every call
    # Same map as the grid the tokens came from, passed through the block.
    grid = model.block(model.grid(images).permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
    reference = torch.rand(5)
    expected = (
        torch.einsum("c,nchw->nhw", reference / reference.norm(), grid)
        / grid.mean(dim=(2, 3)).norm(dim=1)[:, None, None]
    )
    raw = fam.attribute(
        images, reference_embeddings=reference, relu_attributions=False, normalize_weights=False
    )
    torch.testing.assert_close(raw[:, 0], expected, atol=1e-5, rtol=1e-4)


def test_explicit_layouts_and_their_errors():
    torch.manual_seed(0)
    model = TokenModel(prefix=2).eval()
    images = torch.rand(1, 3, 16, 16)
    kwargs = {"reference_embeddings": torch.rand(5)}
    explicit = FeatureActivationMap(
        model, model.block, token_layout=TokenLayout(prefix_tokens=2, grid=(4, 4))
    )
    auto = FeatureActivationMap(model, model.block, token_layout="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(
            explicit.attribute(images, **kwargs), auto.attribute(images, **kwargs)
        )
    patch = FeatureActivationMap(model, model.block, token_layout=TokenLayout(patch_size=4))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert patch.attribute(images, **kwargs).shape == (1, 1, 4, 4)
    wrong = FeatureActivationMap(
        model, model.block, token_layout=TokenLayout(grid=(3, 3), prefix_tokens=2)
    )
    with pytest.raises(ValueError, match=r"grid \(3, 3\) with 2 prefix tokens does not fit"):
        wrong.attribute(images, **kwargs)
    spatial_only = FeatureActivationMap(model, model.block)
    with pytest.raises(ValueError, match="declare token_layout='auto'"):
        spatial_only.attribute(images, **kwargs)
    with pytest.raises(ValueError, match="token_layout must be None, 'auto' or a TokenLayout"):
        FeatureActivationMap(model, model.block, token_layout="vit")


def test_channels_last_grids_are_detected():
    torch.manual_seed(0)
    model = ChannelsLastModel().eval()
    images = torch.rand(2, 3, 16, 24)
    fam = FeatureActivationMap(model, model.stage, token_layout="auto")
    explicit = FeatureActivationMap(
        model, model.stage, token_layout=TokenLayout(channels_last=True)
    )
    plain = FeatureActivationMap(model, model.features)
    reference = torch.rand(5)
    maps = fam.attribute(images, reference_embeddings=reference)
    assert maps.shape == (2, 1, 4, 6)
    torch.testing.assert_close(maps, plain.attribute(images, reference_embeddings=reference))
    torch.testing.assert_close(maps, explicit.attribute(images, reference_embeddings=reference))


torchvision = pytest.importorskip("torchvision")


@pytest.mark.parametrize(
    ("name", "layer"),
    [
        ("vit_b_16", lambda m: m.encoder.layers[-2]),
        ("swin_t", lambda m: m.features),
    ],
)
def test_torchvision_transformers_end_to_end(name, layer):
    torch.manual_seed(0)
    kwargs = {"image_size": 64} if name == "vit_b_16" else {}
    model = torchvision.models.get_model(name, weights=None, **kwargs).eval()
    images, references = torch.rand(2, 3, 64, 64), torch.rand(1, 3, 64, 64)
    fam = FeatureActivationMap(model, layer(model), token_layout="auto", weighting="reference")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = fam.attribute(
            images, reference=references, relu_attributions=False, normalize_weights=False
        )
        maps = fam.attribute(images, reference=references)
    grid = (4, 4) if name == "vit_b_16" else (2, 2)
    assert raw.shape == maps.shape == (2, 1, *grid)
    assert torch.isfinite(maps).all()
    scores = fam.similarity_scores(images, reference=references)
    torch.testing.assert_close(raw.mean(dim=(1, 2, 3)), scores, atol=1e-5, rtol=1e-4)


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
    fam = FeatureActivationMap(
        model, backbone.block, similarity=similarity, weighting="reference", embedding="output"
    )
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
    fam = FeatureActivationMap(model, backbone.block, weighting="reference", embedding="output")
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
    fam = FeatureActivationMap(model, backbone.block, embedding="output")
    maps = fam.attribute(torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(4))
    assert not reached and not maps.requires_grad
    assert torch.is_grad_enabled() == grad_mode
    assert all(p.grad is None for p in model.parameters())
    assert not backbone.block._forward_hooks and not backbone.block._forward_pre_hooks
    with torch.no_grad():
        fam.attribute(torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(4))
        assert not torch.is_grad_enabled()
    with torch.inference_mode(), pytest.raises(RuntimeError, match="under torch.no_grad instead"):
        fam.attribute(torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(4))
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
    fam = FeatureActivationMap(model, model.side, embedding="output")
    with pytest.raises(ValueError, match="does not depend on the layer's output"):
        fam.attribute(torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(6))
    spatial = FeatureActivationMap(backbone, backbone.block, embedding="output")
    with pytest.raises(ValueError, match="did not run"):
        FeatureActivationMap(backbone, nn.Conv2d(3, 3, 1), embedding="output").attribute(
            torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(6)
        )
    assert spatial.attribute(
        torch.rand(2, 3, 12, 12), reference_embeddings=torch.rand(6)
    ).shape == (2, 1, 6, 6)
    with pytest.raises(ValueError, match="embedding must be one of"):
        FeatureActivationMap(backbone, backbone.block, embedding="head")
