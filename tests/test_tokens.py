"""Token layouts: ViT patch grids, Swin channels-last grids and text sequences."""

from __future__ import annotations

import warnings

import pytest
import torch
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
    fam = FeatureActivationMap(model, model.block, token_layout="auto", embedding="layer")
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
        model,
        model.block,
        token_layout=TokenLayout(prefix_tokens=2, grid=(4, 4)),
        embedding="layer",
    )
    auto = FeatureActivationMap(model, model.block, token_layout="auto", embedding="layer")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.testing.assert_close(
            explicit.attribute(images, **kwargs), auto.attribute(images, **kwargs)
        )
    patch = FeatureActivationMap(
        model, model.block, token_layout=TokenLayout(patch_size=4), embedding="layer"
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert patch.attribute(images, **kwargs).shape == (1, 1, 4, 4)
    wrong = FeatureActivationMap(
        model,
        model.block,
        token_layout=TokenLayout(grid=(3, 3), prefix_tokens=2),
        embedding="layer",
    )
    with pytest.raises(ValueError, match=r"grid \(3, 3\) with 2 prefix tokens does not fit"):
        wrong.attribute(images, **kwargs)
    spatial_only = FeatureActivationMap(model, model.block, embedding="layer")
    with pytest.raises(ValueError, match="declare token_layout='auto'"):
        spatial_only.attribute(images, **kwargs)
    with pytest.raises(ValueError, match="token_layout must be None, 'auto', 'sequence' or a"):
        FeatureActivationMap(model, model.block, token_layout="vit")
    with pytest.raises(ValueError, match="keeps every token in its position"):
        TokenLayout(sequence=True, prefix_tokens=1)


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
    # The pooled token grid's own similarity: complete (P1).
    fam = FeatureActivationMap(model, layer(model), token_layout="auto", embedding="layer")
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


def test_class_token_heads_pull_back_through_the_prefix_token():
    """ViT's embedding is its class token: the head's gradient sits on the dropped prefix token.

    The pull-back sums it over every token, prefix included, so the last block's maps are not
    empty; they equal the closed form (class-token gradient) x (patch activations).
    """
    torch.manual_seed(0)
    model = torchvision.models.vit_b_16(weights=None, image_size=64).eval()
    model.heads = nn.Identity()  # a feature extractor: the class token after the last norm
    images, reference = torch.rand(2, 3, 64, 64), torch.randn(768)
    last = model.encoder.layers[-1]
    fam = FeatureActivationMap(model, last, token_layout="auto")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = fam.attribute(images, reference_embeddings=reference, relu_attributions=False,
                            normalize_weights=False)  # fmt: skip
    tokens = {}
    handle = last.register_forward_hook(lambda m, a, out: tokens.setdefault("t", out))
    leaf_model_output = model(images)
    handle.remove()
    states = tokens["t"].detach().requires_grad_(True)
    output = model.encoder.ln(states)[:, 0]
    g = fam.similarity.coefficients(leaf_model_output.detach(), reference.expand(2, -1))
    (gradient,) = torch.autograd.grad(output, states, g)
    weights = gradient.sum(dim=1)
    patches = states.detach()[:, 1:].transpose(1, 2).reshape(2, 768, 4, 4)
    expected = torch.einsum("nc,nchw->nhw", weights, patches).unsqueeze(1)
    torch.testing.assert_close(raw, expected, atol=1e-4, rtol=1e-3)
    assert raw.abs().amax() > 0


class TextModel(nn.Module):
    """Token ids -> embeddings -> a token block (N, T, C) -> masked mean -> projection."""

    def __init__(self, vocabulary: int = 20, channels: int = 6, dim: int = 4) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocabulary, channels)
        self.block = nn.Sequential(nn.Linear(channels, channels), nn.GELU())
        self.projection = nn.Linear(channels, dim)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.block(self.embed(ids))
        weights = mask.unsqueeze(-1).to(states.dtype)
        return self.projection((states * weights).sum(1) / weights.sum(1))


@pytest.mark.parametrize("embedding", ["output", "layer"])
def test_sequence_layout_keeps_every_token_in_place(embedding):
    torch.manual_seed(0)
    model = TextModel().eval()
    ids = torch.tensor([[2, 5, 7, 3, 0], [2, 9, 3, 0, 0]])
    mask = (ids != 0).long()
    fam = FeatureActivationMap(model, model.block, token_layout="sequence", embedding=embedding)
    reference = torch.randn(4 if embedding == "output" else 6)
    raw = fam.attribute((ids, mask), reference_embeddings=reference, pooling_mask=1,
                        relu_attributions=False, normalize_weights=False)  # fmt: skip
    assert raw.shape == (2, 1, 5)
    states = model.block(model.embed(ids))
    if embedding == "layer":
        pooled = (states * mask[..., None]).sum(1) / mask.sum(1, keepdim=True)
        g = fam.similarity.coefficients(pooled, reference.expand(2, -1))
    else:
        g = fam.similarity.coefficients(model(ids, mask), reference.expand(2, -1))
        g = g @ model.projection.weight
    expected = torch.einsum("nc,ntc->nt", g, states) * mask
    torch.testing.assert_close(raw[:, 0], expected.detach(), atol=1e-5, rtol=1e-4)
    assert bool((raw[:, 0][mask == 0] == 0).all())


def test_one_dimensional_convolutions_need_no_layout():
    """(N, C, T) activations of a 1-D convolution read as they are: maps (N, 1, T)."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv1d(3, 5, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool1d(1),
                          nn.Flatten()).eval()  # fmt: skip
    signals, reference = torch.rand(2, 3, 16), torch.rand(1, 3, 16)
    fam = FeatureActivationMap(model, model[1])
    raw = fam.attribute(signals, reference=reference, relu_attributions=False,
                        normalize_weights=False)  # fmt: skip
    assert raw.shape == (2, 1, 16)
    torch.testing.assert_close(raw.mean(dim=(1, 2)), fam.similarity_scores(signals,
                               reference=reference))  # fmt: skip


def test_three_dimensional_volumes():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv3d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool3d(1),
                          nn.Flatten()).eval()  # fmt: skip
    clips = torch.rand(2, 1, 4, 6, 6)
    fam = FeatureActivationMap(model, model[1])
    raw = fam.attribute(clips, reference=clips.flip(0), relu_attributions=False,
                        normalize_weights=False)  # fmt: skip
    assert raw.shape == (2, 1, 4, 6, 6)
    torch.testing.assert_close(raw.mean(dim=(1, 2, 3, 4)), fam.similarity_scores(clips,
                               reference=clips.flip(0)))  # fmt: skip
