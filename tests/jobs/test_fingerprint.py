"""Fingerprints: what a resumed job must share with the run it resumes."""

from __future__ import annotations

import pytest
import torch
from helpers import TinyEmbedder

from captum_fam.jobs.distributed import DistributedContext
from captum_fam.jobs.fingerprint import (
    check_ranks_agree,
    differences,
    layer_name,
    model_digest,
    similarity_digest,
    tensor_digest,
)
from captum_fam.similarity import CosineSimilarity


def test_model_digest_follows_the_weights():
    torch.manual_seed(0)
    model = TinyEmbedder()
    same = TinyEmbedder()
    same.load_state_dict(model.state_dict())
    assert model_digest(model) == model_digest(same) != ""
    with torch.no_grad():
        same.block[0].weight[0, 0, 0, 0] += 1e-6
    assert model_digest(model) != model_digest(same)
    assert model_digest(lambda x: x) == ""


def test_names_and_digests():
    model = TinyEmbedder()
    assert layer_name(model, model.block) == "block"
    assert layer_name(lambda x: x, model.block) == "Sequential"
    a = torch.arange(6.0)
    assert tensor_digest([a]) == tensor_digest([a.clone()])
    assert tensor_digest([a]) != tensor_digest([a.double()])  # the dtype counts
    assert tensor_digest([a]) != tensor_digest([a.reshape(2, 3)])  # and the shape
    assert similarity_digest(CosineSimilarity()) == "CosineSimilarity()"


def test_differences_name_each_setting():
    assert differences({"a": 1, "b": 2}, {"a": 1, "b": 3, "c": 4}) == [
        "b (store: 2, now: 3)",
        "c (store: None, now: 4)",
    ]


class TwoRanks(DistributedContext):
    """Rank 0 of two, whose peer loaded other weights."""

    def all_gather_object(self, value):
        return [value, {**value, "model": "0123456789abcdef"}]


def test_ranks_must_run_the_same_job():
    fingerprint = {"model": "fedcba9876543210", "layer": "block"}
    check_ranks_agree(fingerprint, DistributedContext())
    with pytest.raises(ValueError, match="rank 1 runs another job than rank 0: model"):
        check_ranks_agree(fingerprint, TwoRanks())
