"""Tests of the shapes CLIP's training (captum_fam.zoo.train_clip)."""

from __future__ import annotations

import hashlib

import torch
import torch.nn.functional as F

from captum_fam.zoo.captions import CAPTION_WORDS, COLOUR_NAMES
from captum_fam.zoo.shapes import SHAPE_CLASSES
from captum_fam.zoo.tokenizer import WordTokenizer
from captum_fam.zoo.train_clip import (
    clip_training_seed,
    drop_filler_words,
    relevance,
    soft_info_nce,
    train_clip,
)
from captum_fam.zoo.weights import write_weights


def test_soft_info_nce_with_one_positive_is_clip_loss():
    logits = torch.randn(5, 5)
    expected = 0.5 * (
        F.cross_entropy(logits, torch.arange(5)) + F.cross_entropy(logits.t(), torch.arange(5))
    )
    torch.testing.assert_close(soft_info_nce(logits, torch.eye(5, dtype=torch.bool)), expected)


def test_soft_info_nce_spreads_targets_over_positives():
    logits = torch.zeros(2, 3)
    targets = torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    # Uniform logits: each row's cross-entropy is log 3, each column's log 2.
    expected = 0.5 * (torch.log(torch.tensor(3.0)) + torch.log(torch.tensor(2.0)))
    torch.testing.assert_close(soft_info_nce(logits, targets), expected)
    # A caption that matches two images is best served by equal logits for both.
    better = torch.tensor([[5.0, 5.0, 0.0], [0.0, 0.0, 5.0]])
    assert soft_info_nce(better, targets) < soft_info_nce(logits, targets)


def test_relevance_weights_exact_and_partial_matches():
    captions = ["a star", "a star and a ring", "a ring shape", "a red ring", "a circle"]
    scenes = [{3: "red"}, {3: "red", 5: "blue"}]
    expected = torch.tensor([[1.0, 0.0, 0.0, 0.0, 0.0], [0.25, 1.0, 0.25, 0.0, 0.0]])
    torch.testing.assert_close(relevance(captions, scenes, partial_weight=0.25), expected)


def test_drop_filler_words_keeps_class_and_colour_words():
    tokenizer = WordTokenizer(CAPTION_WORDS)
    texts = ["there is a red star next to a blue ring on a cluttered background"] * 50
    input_ids, _ = tokenizer.encode(texts)
    dropped = drop_filler_words(input_ids, tokenizer, 0.5, torch.Generator().manual_seed(0))
    kept = {w.lower() for w in SHAPE_CLASSES} | set(COLOUR_NAMES)
    words = tokenizer.decode(dropped)
    assert any("[UNK]" in w for w in words)
    for text in words:
        assert [w for w in text.split() if w in kept] == ["red", "star", "blue", "ring"]
    assert torch.equal(drop_filler_words(input_ids, tokenizer, 0.0, torch.Generator()), input_ids)


def test_training_seeds_stay_below_evaluation_seeds():
    assert clip_training_seed(998, 124_999, 7) < 10**9
    seeds = {clip_training_seed(0, step, part) for step in range(50) for part in range(8)}
    assert len(seeds) == 400


def test_training_is_reproducible_bit_for_bit(tmp_path):
    kwargs = dict(seed=3, steps=2, singles=2, pairs=2, log_every=0)
    digests = []
    for run in range(2):
        path = tmp_path / f"run{run}.pt"
        write_weights(train_clip(**kwargs), path)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    assert digests[0] == digests[1]
    other = tmp_path / "other.pt"
    write_weights(train_clip(**{**kwargs, "seed": 4}), other)
    assert hashlib.sha256(other.read_bytes()).hexdigest() != digests[0]
