"""Tests of the word-level tokenizer of the shapes CLIP (captum_fam.zoo.tokenizer)."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from captum_fam.zoo.captions import CAPTION_WORDS
from captum_fam.zoo.tokenizer import PAD_TOKEN, UNK_TOKEN, WordTokenizer

TOKENIZER = WordTokenizer(CAPTION_WORDS)


@given(st.lists(st.lists(st.sampled_from(CAPTION_WORDS), min_size=1, max_size=12), min_size=1))
def test_encode_decode_round_trip_and_padding(rows):
    texts = [" ".join(words) for words in rows]
    input_ids, attention_mask = TOKENIZER.encode(texts)
    longest = max(len(words) for words in rows)
    assert input_ids.shape == attention_mask.shape == (len(rows), longest)
    assert input_ids.dtype == attention_mask.dtype == torch.long
    assert attention_mask.sum(1).tolist() == [len(words) for words in rows]
    # Right padding: ones then zeros, and padding carries the [PAD] id.
    assert torch.equal(attention_mask, attention_mask.sort(dim=1, descending=True).values)
    assert (input_ids[attention_mask == 0] == TOKENIZER.pad_id).all()
    assert TOKENIZER.decode(input_ids) == texts
    assert TOKENIZER.decode(input_ids, attention_mask) == texts


def test_special_tokens_case_punctuation_and_unknown_words():
    assert TOKENIZER.vocabulary[:2] == (PAD_TOKEN, UNK_TOKEN)
    assert (TOKENIZER.pad_id, TOKENIZER.unk_id) == (0, 1)
    assert len(TOKENIZER) == len(CAPTION_WORDS) + 2
    input_ids, _ = TOKENIZER.encode(["A Star, next to an L!", "a purple star"])
    assert TOKENIZER.decode(input_ids) == ["a star next to an l", f"a {UNK_TOKEN} star"]
    assert TOKENIZER.tokenize("Two-objects: star") == ["two", "objects", "star"]


def test_encode_is_deterministic_and_pads_to_a_length():
    a = TOKENIZER.encode(["a star", "a ring next to a cross"], length=9)
    b = TOKENIZER.encode(["a star", "a ring next to a cross"], length=9)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    assert a[0].shape == (2, 9)
    assert a[1].tolist()[0] == [1, 1, 0, 0, 0, 0, 0, 0, 0]
    assert TOKENIZER.encode("a star")[0].shape == (1, 2)
    assert WordTokenizer(CAPTION_WORDS) == TOKENIZER


@pytest.mark.parametrize(
    "texts, length", [([], None), (["a star", "  ,"], None), (["a star next"], 2)]
)
def test_encode_rejects_bad_input(texts, length):
    with pytest.raises(ValueError):
        TOKENIZER.encode(texts, length=length)


def test_bad_vocabularies_and_ids_are_rejected():
    with pytest.raises(ValueError, match="duplicates"):
        WordTokenizer(["star", "star"])
    with pytest.raises(ValueError, match="lower-case"):
        WordTokenizer(["Star"])
    with pytest.raises(ValueError, match="input_ids"):
        TOKENIZER.decode(torch.tensor([[2, 1000]]))
    with pytest.raises(ValueError, match="attention_mask"):
        TOKENIZER.decode(torch.tensor([[2, 3]]), torch.tensor([1, 1]))
