"""SimilarityHead: a similarity model as a classifier, for Quantus."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from captum_fam import FeatureActivationMap, metrics


def test_similarity_head_matches_fam_scores(tiny_model, images, references):
    fam = FeatureActivationMap(tiny_model, tiny_model.block)
    head = metrics.SimilarityHead(tiny_model, references=references[:3]).eval()
    scores = head(images)
    assert scores.shape == (4, 3)
    for k in range(3):
        expected = fam.similarity_scores(images, reference=references[k : k + 1])
        torch.testing.assert_close(scores[:, k], expected)
    with pytest.raises(ValueError, match="exactly one of references or reference_embeddings"):
        metrics.SimilarityHead(tiny_model)
    with pytest.raises(ValueError, match="reference_embeddings have 2"):
        metrics.SimilarityHead(tiny_model, reference_embeddings=torch.rand(3, 2))(images)


def test_quantus_pointing_game_gives_the_same_hits(tiny_model):
    quantus = pytest.importorskip("quantus")
    g = torch.Generator().manual_seed(0)
    n, size = 12, 12
    x = torch.rand(n, 3, size, size, generator=g)
    head = metrics.SimilarityHead(tiny_model, references=torch.rand(3, 3, size, size, generator=g))
    # layer-resolution maps (ties included after upsampling), upsampled as pointing_game does
    maps = torch.rand(n, 1, 6, 6, generator=g).round(decimals=1)
    maps[0] = 0.2  # a map with ties everywhere but not constant after the next line
    maps[0, 0, 0, 0] = 0.9
    upsampled = torch.nn.functional.interpolate(maps, (size, size), mode="bilinear")
    masks = torch.rand(n, 1, size, size, generator=g) > 0.7
    masks[:, 0, 0, 0] = True
    ours = metrics.pointing_game(maps, masks, tolerance=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = quantus.PointingGame(disable_warnings=True)(
            model=head,
            x_batch=x.numpy(),
            y_batch=np.arange(n) % 3,
            a_batch=upsampled.numpy(),
            s_batch=masks.float().numpy(),
            softmax=False,
        )
    assert [bool(v) for v in theirs] == ours.tolist()
    assert 0 < sum(ours.tolist()) < n  # both outcomes occur


# --- benchmark ---------------------------------------------------------------------------------
