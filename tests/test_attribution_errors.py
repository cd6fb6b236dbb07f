"""FeatureActivationMap's bad input: a ValueError or TypeError naming the argument, never a deep
AssertionError, a silent NaN map or a half-done call."""

from __future__ import annotations

import pytest
import torch
from helpers import TinyEmbedder
from torch import nn

from captum_fam import FeatureActivationMap


@pytest.fixture
def fam(tiny_model):
    return FeatureActivationMap(tiny_model, tiny_model.block)


IMAGES = torch.rand(4, 3, 12, 12)
NAN_IMAGES = IMAGES.clone().index_fill_(0, torch.tensor([1]), float("nan"))
GOOD = {"reference_embeddings": torch.rand(6)}


@pytest.mark.parametrize(
    ("inputs", "kwargs", "error", "match"),
    [
        ((IMAGES * 255).byte(), GOOD, TypeError, "inputs must be a floating point"),
        ([1, 2], GOOD, TypeError, "inputs must be a Tensor"),
        (NAN_IMAGES, GOOD, ValueError, "inputs contains NaN"),
        ((IMAGES, torch.rand(3, 1)), GOOD, ValueError, "inputs must share the batch size"),
        (IMAGES, {}, ValueError, "exactly one of reference or reference_embeddings; got neither"),
        (
            IMAGES,
            {"reference": IMAGES, "reference_embeddings": torch.rand(6)},
            ValueError,
            "exactly one of reference or reference_embeddings; got both",
        ),
        (IMAGES, {"reference": IMAGES[:3]}, ValueError, "reference has 3 rows for 4 inputs"),
        (IMAGES, {"reference": IMAGES.byte()}, TypeError, "reference must be a floating point"),
        (IMAGES, {"reference": NAN_IMAGES}, ValueError, "reference contains NaN"),
        (IMAGES, {"reference": (IMAGES, IMAGES)}, ValueError, "structured like inputs"),
        (
            IMAGES,
            {"reference_embeddings": torch.rand(3, 6)},
            ValueError,
            "reference_embeddings has 3 rows for 4 inputs",
        ),
        (
            IMAGES,
            {"reference_embeddings": torch.rand(1, 5)},
            ValueError,
            "reference_embeddings have 5 channels but the model output has 6",
        ),
        (
            IMAGES,
            {"reference_embeddings": torch.rand(1, 6, 1)},
            ValueError,
            r"reference_embeddings must have shape \(M, C\)",
        ),
        (
            IMAGES,
            {"reference_embeddings": torch.ones(6, dtype=torch.long)},
            TypeError,
            "reference_embeddings must be a floating point",
        ),
        (
            IMAGES,
            {"reference_embeddings": torch.full((6,), float("inf"))},
            ValueError,
            "reference_embeddings contains NaN or Inf",
        ),
        (IMAGES, {"reference_embeddings": [0.0] * 6}, TypeError, "reference_embeddings must be a"),
        (
            IMAGES,
            {"reference_embeddings": torch.zeros(6)},
            ValueError,
            "zero reference embedding",
        ),
    ],
)
def test_bad_arguments(fam, inputs, kwargs, error, match):
    with pytest.raises(error, match=match):
        fam.attribute(inputs, **kwargs)
    with pytest.raises(error, match=match):
        fam.similarity_scores(inputs, **kwargs)


def test_a_query_that_switches_the_layer_off(tiny_model):
    with torch.no_grad():
        tiny_model.block[0].bias.fill_(-1e3)  # every unit of the layer is below the ReLU
    fam = FeatureActivationMap(tiny_model, tiny_model.block)
    with pytest.raises(ValueError, match=r"zero query embedding \(rows \[0, 1, 2, 3\]"):
        fam.attribute(IMAGES, **GOOD)
    # The dot product has no such restriction: the map is all zero, not NaN.
    dot = FeatureActivationMap(tiny_model, tiny_model.block, similarity="dot")
    assert torch.equal(dot.attribute(IMAGES, **GOOD), torch.zeros(4, 1, 6, 6))


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"similarity": "manhattan"}, ValueError, "similarity must be one of"),
        ({"similarity": 3}, TypeError, "similarity must be a name"),
        ({"weighting": "gradient"}, ValueError, "weighting must be one of"),
    ],
)
def test_bad_constructor_arguments(tiny_model, kwargs, error, match):
    with pytest.raises(error, match=match):
        FeatureActivationMap(tiny_model, tiny_model.block, **kwargs)


def test_layer_must_be_a_module(tiny_model):
    with pytest.raises(TypeError, match="layer must be a torch.nn.Module"):
        FeatureActivationMap(tiny_model, "block")


def test_a_layer_that_does_not_run(tiny_model):
    fam = FeatureActivationMap(tiny_model, nn.Conv2d(4, 6, 3))
    with pytest.raises(ValueError, match="did not run during forward_func"):
        fam.attribute(IMAGES, **GOOD)


class FlatEmbedder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = TinyEmbedder()
        self.head = nn.Linear(6, 6)
        self.split = SplitLayer()

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.split(self.features(images))[0])


class SplitLayer(nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


def test_layer_output_must_be_one_spatial_map():
    model = FlatEmbedder().eval()
    with pytest.raises(ValueError, match=r"needs \(N=4, C, \*S\) activations with positions"):
        FeatureActivationMap(model, model.head).attribute(IMAGES, **GOOD)
    with pytest.raises(ValueError, match="a tuple of 2 values"):
        FeatureActivationMap(model, model.split).attribute(IMAGES, **GOOD)


class NaNEmbedder(TinyEmbedder):
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.block(self.stem(images) * float("nan")).mean(dim=(2, 3))


def test_nan_activations_are_reported():
    model = NaNEmbedder().eval()
    with pytest.raises(ValueError, match="contains NaN or Inf for these inputs"):
        FeatureActivationMap(model, model.block).attribute(IMAGES, **GOOD)


def test_callable_similarity_errors(tiny_model):
    wrong_shape = FeatureActivationMap(
        tiny_model, tiny_model.block, similarity=lambda q, r: (q * r).sum()
    )
    with pytest.raises(ValueError, match=r"must return one score per pair.*\(4,\)"):
        wrong_shape.attribute(IMAGES, **GOOD)

    def rank_match(query, reference):
        return (query.argmax(1) == reference.argmax(1)).float()

    flat = FeatureActivationMap(tiny_model, tiny_model.block, similarity=rank_match)
    with pytest.raises(ValueError, match="not differentiable in its first argument"):
        flat.attribute(IMAGES, **GOOD)


def test_malformed_batches_are_reported_by_fam_itself():
    """Inputs the model accepts but that give no (N, C, H, W) map: FAM's own clear errors."""
    conv = nn.Conv2d(3, 6, 3)  # accepts unbatched (C, H, W) input
    fam = FeatureActivationMap(conv, conv)
    for inputs, error in (
        (IMAGES[0], ValueError),
        (torch.tensor(1.0), ValueError),
        (IMAGES.to(torch.complex64), TypeError),
    ):
        for kwargs in ({"reference": IMAGES}, GOOD, {"reference_embeddings": torch.rand(2, 6)}):
            with pytest.raises(error):
                fam.attribute(inputs, **kwargs)


def test_finite_check_tells_overflow_from_nan():
    from captum_fam._checks import all_finite

    large = torch.full((4, 8), 6e4, dtype=torch.float16)  # finite, but its sum overflows
    assert all_finite(large)
    assert not all_finite(large.index_fill(1, torch.tensor([3]), float("nan")))
    assert not all_finite(torch.tensor([float("inf"), -float("inf")]))


def test_foil_errors_name_the_foil(fam):
    with pytest.raises(
        ValueError, match="foil_embeddings have 5 channels but the model output has 6"
    ):
        fam.attribute(IMAGES, **GOOD, foil_embeddings=torch.rand(5))
    with pytest.raises(ValueError, match="foil has 3 rows for 4 inputs"):
        fam.attribute(IMAGES, **GOOD, foil=IMAGES[:3])
    with pytest.raises(ValueError, match="exactly one of foil or foil_embeddings; got both"):
        fam.attribute(IMAGES, **GOOD, foil=IMAGES, foil_embeddings=torch.rand(6))


def test_background_errors_name_the_background(fam):
    with pytest.raises(ValueError, match="a foil or a background set, not both"):
        fam.attribute(IMAGES, **GOOD, foil=IMAGES[:1], background=IMAGES[:2])
    with pytest.raises(
        ValueError, match="background_embeddings have 5 channels but the model output has 6"
    ):
        fam.attribute(IMAGES, **GOOD, background_embeddings=torch.rand(3, 5))
    with pytest.raises(ValueError, match="background must be structured like inputs"):
        fam.attribute(IMAGES, **GOOD, background=(IMAGES, IMAGES))


class MaskedSum(nn.Module):
    """(input_ids, mask) -> masked mean of embedded tokens, through a token layer (N, T, C)."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = nn.Embedding(10, 4)
        self.layer = nn.Identity()

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        states = self.layer(self.embed(ids))
        weights = mask.unsqueeze(-1).float()
        return (states * weights).sum(1) / weights.sum(1)


IDS = torch.tensor([[1, 2, 3], [4, 5, 0]])
MASK = torch.tensor([[1, 1, 1], [1, 1, 0]])


@pytest.mark.parametrize(
    ("pooling_mask", "error", "match"),
    [
        (torch.ones(2, 4), ValueError, r"pooling_mask has shape \(2, 4\); .* \(2, 3\)"),
        (torch.full((2, 3), 2), ValueError, "pooling_mask must hold only 0 and 1"),
        (torch.tensor([[1, 1, 1], [0, 0, 0]]), ValueError, r"no valid position in row\(s\) \[1\]"),
        (5, ValueError, "pooling_mask=5 is not the index of one of the 2 tensor"),
        ("mask", TypeError, "pooling_mask must be a"),
        (torch.ones(2, 3, dtype=torch.complex64), TypeError, "pooling_mask must hold 0 and 1"),
    ],
)
def test_pooling_mask_errors(pooling_mask, error, match):
    torch.manual_seed(0)
    model = MaskedSum()
    fam = FeatureActivationMap(model, model.layer, token_layout="sequence")
    with pytest.raises(error, match=match):
        fam.attribute((IDS, MASK), reference_embeddings=torch.rand(4), pooling_mask=pooling_mask)


def test_a_tensor_mask_cannot_mask_reference_inputs():
    model = MaskedSum()
    fam = FeatureActivationMap(model, model.layer, token_layout="sequence", embedding="layer")
    with pytest.raises(ValueError, match="reference given as model inputs needs its own mask"):
        fam.attribute((IDS, MASK), reference=(IDS, MASK), pooling_mask=MASK)
    with pytest.raises(ValueError, match="pooling_mask of reference has no valid position"):
        fam.attribute(
            (IDS, MASK), reference=(IDS, torch.zeros(2, 3, dtype=torch.long)), pooling_mask=1
        )


def test_token_states_without_a_layout_are_refused():
    model = MaskedSum()
    with pytest.raises(ValueError, match="declare token_layout='sequence'"):
        FeatureActivationMap(model, model.layer).attribute(
            (IDS, MASK), reference_embeddings=torch.rand(4)
        )


class Structured(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.net = TinyEmbedder()

    def forward(self, images: torch.Tensor) -> dict[str, torch.Tensor]:
        embedding = self.net(images)
        return {"embedding": embedding, "logits": embedding[:, :2]}


@pytest.mark.parametrize(
    ("key", "error", "match"),
    [
        (None, ValueError, "pass embedding_key.*its keys: embedding, logits"),
        ("missing", ValueError, "embedding_key='missing' is neither a key nor an attribute"),
        (0, ValueError, "embedding_key=0 is not an index of the model's output"),
        (lambda out: out["embedding"][:, :, None], ValueError, r"output has shape \(4, 6, 1\)"),
        (1.5, TypeError, "embedding_key must be a key or attribute name"),
    ],
)
def test_embedding_key_errors(key, error, match):
    torch.manual_seed(0)
    model = Structured().eval()
    with pytest.raises(error, match=match):
        FeatureActivationMap(model, model.net.block, embedding_key=key).attribute(IMAGES, **GOOD)


def test_a_classifier_output_is_refused_with_advice():
    model = nn.Sequential(TinyEmbedder(), nn.Unflatten(1, (2, 3)))
    with pytest.raises(ValueError, match="embedding='layer' to compare the layer's pooled"):
        FeatureActivationMap(model, model[0].block).attribute(IMAGES, **GOOD)
