"""Tokenized texts, and word pieces merged back into words for display."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_fam.text.encoders import is_sentence_transformer

__all__ = ["TokenizedTexts", "merge_units", "tokenize_texts"]


@dataclass
class TokenizedTexts:
    """A batch of texts as a model takes them, with what is needed to show tokens as words.

    Attributes:
        texts (list[str]): The texts.
        input_ids (Tensor): ``(N, T)`` token ids, padded on the right.
        attention_mask (Tensor): ``(N, T)`` 1 for tokens, 0 for padding.
        tokens (list[list[str]]): The token strings of each row (padding included).
        word_ids (list[list[int or None]]): The word of each token; None for special tokens
                    (``[CLS]``, ``[SEP]``, ``<s>``) and padding.
        offsets (list[list[tuple[int, int]]] or None): Character span of each token in its
                    text (fast tokenizers), for showing words as they were written.
    """

    texts: list[str]
    input_ids: Tensor
    attention_mask: Tensor
    tokens: list[list[str]]
    word_ids: list[list[int | None]]
    offsets: list[list[tuple[int, int]]] | None = None

    @property
    def inputs(self) -> tuple[Tensor, Tensor]:
        """``(input_ids, attention_mask)``: FAM's inputs, with ``pooling_mask=1``."""
        return self.input_ids, self.attention_mask

    def units(
        self, index: int, words: bool = True, special_tokens: bool = False
    ) -> list[tuple[str, list[int]]]:
        r"""The display units of text ``index``: ``(label, token positions)``, in order.

        Args:
            index (int): The text.
            words (bool, optional): Merge the word pieces of each word into one unit (labelled
                        with the word as written). Default: True
            special_tokens (bool, optional): Keep special tokens (``[CLS]``, ``[SEP]``) as
                        units of their own; hidden otherwise. Padding is never shown.
                        Default: False
        """
        mask = self.attention_mask[index].tolist()
        units: list[tuple[str, list[int]]] = []
        current: int | None = None
        for position, (token, word) in enumerate(zip(self.tokens[index], self.word_ids[index],
                                                       strict=True)):  # fmt: skip
            if not mask[position]:
                continue
            if word is None:
                current = None
                if special_tokens:
                    units.append((token, [position]))
                continue
            if words and word == current:
                units[-1][1].append(position)
            else:
                units.append(("", [position]))
            current = word
        return [
            (label or self._label(index, positions, words), positions) for label, positions in units
        ]

    def _label(self, index: int, positions: list[int], words: bool) -> str:
        if not words:
            return self.tokens[index][positions[0]]
        if self.offsets is not None:
            spans = [self.offsets[index][p] for p in positions]
            start, end = min(s for s, _ in spans), max(e for _, e in spans)
            if end > start:
                return self.texts[index][start:end]
        return "".join(_strip_piece(self.tokens[index][p], i > 0) for i, p in enumerate(positions))


def tokenize_texts(
    tokenizer: Any, texts: Sequence[str] | str, max_length: int | None = None
) -> TokenizedTexts:
    r"""Tokenize texts for FAM: ids, attention mask, token strings and their words.

    Args:
        tokenizer: A ``transformers`` tokenizer, or a ``SentenceTransformer`` (its tokenizer
                    and ``max_seq_length`` are used).
        texts (str or Sequence[str]): The texts.
        max_length (int, optional): Truncate to this many tokens. Default: the model's
                    maximum.

    Returns:
        :class:`TokenizedTexts`

    Examples::

        >>> batch = tokenize_texts(tokenizer, ["A man plays a guitar.", "A dog runs."])
        >>> fam.attribute(batch.inputs, reference_embeddings=query, pooling_mask=1)
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    if not texts or not all(isinstance(text, str) for text in texts):
        raise TypeError("texts must be a str or a non-empty sequence of str")
    if is_sentence_transformer(tokenizer):
        max_length = max_length or getattr(tokenizer, "max_seq_length", None)
        tokenizer = tokenizer.tokenizer
    if not callable(tokenizer) or not hasattr(tokenizer, "convert_ids_to_tokens"):
        raise TypeError(
            "tokenizer must be a transformers tokenizer or a SentenceTransformer; got "
            f"{type(tokenizer).__name__}"
        )
    options = {"padding": True, "truncation": True, "return_tensors": "pt"}
    if max_length is not None:
        options["max_length"] = max_length
    fast = bool(getattr(tokenizer, "is_fast", False))
    encoding = tokenizer(texts, return_offsets_mapping=fast, **options)
    input_ids, attention_mask = encoding["input_ids"], encoding["attention_mask"]
    tokens = [tokenizer.convert_ids_to_tokens(row) for row in input_ids.tolist()]
    if fast:
        word_ids = [encoding.word_ids(i) for i in range(len(texts))]
        offsets = [
            [(int(s), int(e)) for s, e in row] for row in encoding["offset_mapping"].tolist()
        ]
    else:
        special = set(getattr(tokenizer, "all_special_ids", ()))
        word_ids = [_word_ids_from_pieces(t, ids, special) for t, ids in
                    zip(tokens, input_ids.tolist(), strict=True)]  # fmt: skip
        offsets = None
    return TokenizedTexts(texts, input_ids, attention_mask, tokens, word_ids, offsets)


def merge_units(values: Tensor, units: list[tuple[str, list[int]]], dim: int) -> Tensor:
    """Sum ``values`` over the positions of each unit along ``dim``."""
    groups = torch.zeros(len(units), values.shape[dim], dtype=values.dtype)
    for row, (_, positions) in enumerate(units):
        groups[row, positions] = 1
    return torch.tensordot(values.movedim(dim, -1), groups, dims=([-1], [1])).movedim(-1, dim)


def _strip_piece(token: str, continuation: bool) -> str:
    """A token string as text: WordPiece ``##``, byte-level ``Ġ`` and SentencePiece ``▁``."""
    if token.startswith("##"):
        return token[2:]
    if token[:1] in _WORD_STARTS:
        return token[1:] if not continuation else " " + token[1:]
    return token


_WORD_STARTS = ("Ġ", "▁")  # byte-level BPE and SentencePiece mark a word's first piece


def _word_ids_from_pieces(tokens: list[str], ids: list[int], special: set[int]) -> list[int | None]:
    """Word ids for slow tokenizers, from the token strings.

    WordPiece marks continuations (``##ing``); byte-level BPE and SentencePiece mark a word's
    first piece (``Ġplay``, ``▁play``). A piece after a special token always starts a word.
    """
    marks_start = any(
        token[:1] in _WORD_STARTS
        for token, token_id in zip(tokens, ids, strict=True)
        if token_id not in special
    )
    word_ids: list[int | None] = []
    word, after_special = -1, True
    for token, token_id in zip(tokens, ids, strict=True):
        if token_id in special:
            word_ids.append(None)
            after_special = True
            continue
        if marks_start:
            starts = after_special or token[:1] in _WORD_STARTS
        else:
            starts = after_special or not token.startswith("##")
        word += starts
        word_ids.append(word)
        after_special = False
    return word_ids
