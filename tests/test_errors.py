"""Bad input gets a ValueError or TypeError naming the argument, never a deep AssertionError."""

from __future__ import annotations

import pytest
import torch
from conftest import TinyEmbedder
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
        (IMAGES.long(), GOOD, TypeError, "inputs must be a floating point"),
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
        (IMAGES, {"reference": IMAGES.int()}, TypeError, "reference must be a floating point"),
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
            "reference_embeddings have 5 channels but the layer has 6",
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
    with pytest.raises(ValueError, match=r"needs \(N=4, C, H, W\) activation maps"):
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
    with pytest.raises(ValueError, match="foil_embeddings have 5 channels but the layer has 6"):
        fam.attribute(IMAGES, **GOOD, foil_embeddings=torch.rand(5))
    with pytest.raises(ValueError, match="foil has 3 rows for 4 inputs"):
        fam.attribute(IMAGES, **GOOD, foil=IMAGES[:3])
    with pytest.raises(ValueError, match="at most one of foil or foil_embeddings"):
        fam.attribute(IMAGES, **GOOD, foil=IMAGES, foil_embeddings=torch.rand(6))
