"""Two lists of sentences explained from both sides: maps and token pairs add up."""

from __future__ import annotations

import copy

import pytest
import torch
from helpers import requires_cuda

pytest.importorskip("transformers")

from text_cases import FIRST, RAW, SECOND  # noqa: E402

from captum_fam.tasks import explain_pair  # noqa: E402
from captum_fam.text import (  # noqa: E402
    explain_sentences,
    sentence_fam,
)


@torch.no_grad()
def test_both_sides_and_the_pairs_add_up(encoder):
    model, tokenizer = encoder
    fam = sentence_fam(model)
    pair = explain_sentences(fam, tokenizer, FIRST, SECOND)
    n_a, n_b = pair.a.input_ids.shape[1], pair.b.input_ids.shape[1]
    assert pair.maps_a.shape == (3, n_a) and pair.token_pairs.shape == (3, n_a, n_b)
    tolerance = {"atol": 1e-5, "rtol": 1e-4}
    torch.testing.assert_close(pair.maps_a.sum(1), pair.scores, **tolerance)
    torch.testing.assert_close(pair.maps_b.sum(1), pair.scores, **tolerance)
    torch.testing.assert_close(pair.token_pairs.sum(dim=(1, 2)), pair.scores, **tolerance)
    torch.testing.assert_close(pair.token_pairs.sum(2), pair.maps_a, **tolerance)
    torch.testing.assert_close(pair.token_pairs.sum(1), pair.maps_b, **tolerance)
    # The same numbers as explain_pair on the token inputs.
    raw = explain_pair(fam, pair.a.inputs, pair.b.inputs, pooling_mask=1, token_pairs=True, **RAW)
    torch.testing.assert_close(raw.token_pairs, pair.token_pairs)
    torch.testing.assert_close(raw.maps_b[:, 0] / pair.b.attention_mask.sum(1, keepdim=True),
                               pair.maps_b)  # fmt: skip


@requires_cuda
def test_cuda_sentences_match_cpu(encoder):
    model, tokenizer = encoder
    expected = explain_sentences(sentence_fam(model), tokenizer, FIRST, SECOND)
    pair = explain_sentences(sentence_fam(copy.deepcopy(model).cuda()), tokenizer, FIRST, SECOND)
    assert pair.scores.device.type == "cuda"
    torch.testing.assert_close(pair.scores.cpu(), expected.scores, atol=1e-4, rtol=1e-3)
    torch.testing.assert_close(pair.maps_a.cpu(), expected.maps_a, atol=1e-4, rtol=1e-3)
