"""Word pieces merge into words; special tokens are shown or hidden."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("transformers")

from captum_fam.text import (  # noqa: E402
    TokenizedTexts,
    explain_sentences,
    sentence_fam,
)
from captum_fam.text.words import _word_ids_from_pieces  # noqa: E402
from captum_fam.zoo.text_encoders import random_text_encoder  # noqa: E402


@torch.no_grad()
def test_words_sum_their_pieces_and_special_tokens_are_optional():
    model, tokenizer = random_text_encoder("bert", hidden_size=32)
    pair = explain_sentences(sentence_fam(model), tokenizer, ["Swimming dogs!"], ["a dog"])
    tokens = pair.a.tokens[0]
    assert tokens[0] == "[CLS]" and "##ing" in tokens and tokens[-1] == "[SEP]"
    labels, values = pair.words(0, "a")
    assert labels == ["Swimming", "dogs", "!"]
    shown, with_special = pair.words(0, "a", special_tokens=True)
    assert shown == ["[CLS]", "Swimming", "dogs", "!", "[SEP]"]
    torch.testing.assert_close(with_special.sum(), pair.scores[0], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(with_special[1:-1], values)
    pieces, piece_values = pair.words(0, "a", words=False)
    assert pieces[:3] == ["s", "##w", "##i"] and len(pieces) == len(tokens) - 2
    torch.testing.assert_close(piece_values.sum(), values.sum())
    labels_a, labels_b, matrix = pair.pairs(0, special_tokens=True)
    assert matrix.shape == (len(labels_a), len(labels_b)) == (5, 4)
    torch.testing.assert_close(matrix.sum(1), with_special, atol=1e-6, rtol=1e-5)
    with pytest.raises(ValueError, match="side must be 'a' or 'b'"):
        pair.words(0, "c")


def test_slow_tokenizers_get_words_from_piece_strings():
    special = {0, 1}
    word_piece = ["[CLS]", "swim", "##ming", "dogs", "[SEP]"]
    assert _word_ids_from_pieces(word_piece, [0, 5, 6, 7, 1], special) == [None, 0, 0, 1, None]
    byte_level = ["<s>", "Two", "Ġdog", "s", "Ġswim", "</s>"]
    words = _word_ids_from_pieces(byte_level, [0, 5, 6, 7, 8, 1], special)
    assert words == [None, 0, 1, 1, 2, None]
    texts = TokenizedTexts(
        ["Two dogs"], torch.tensor([[0, 5, 6, 7, 1]]), torch.ones(1, 5, dtype=torch.long),
        [["<s>", "Two", "Ġdog", "s", "</s>"]], [[None, 0, 1, 1, None]],
    )  # fmt: skip
    assert [label for label, _ in texts.units(0)] == ["Two", "dogs"]
