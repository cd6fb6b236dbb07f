"""A word-level tokenizer with a fixed vocabulary, for the text tower of the shapes CLIP."""

from __future__ import annotations

import re
from collections.abc import Sequence

import torch
from torch import Tensor

__all__ = ["PAD_TOKEN", "UNK_TOKEN", "WordTokenizer"]

PAD_TOKEN = "[PAD]"
"""Padding token, id 0: fills the rows of short texts; its attention mask entry is 0."""

UNK_TOKEN = "[UNK]"
"""Unknown-word token, id 1: stands for every word outside the vocabulary."""

_WORD = re.compile(r"[a-z0-9]+")


class WordTokenizer:
    r"""Splits lower-cased text into words and maps them to ids of a fixed vocabulary.

    Words are the runs of letters and digits of the lower-cased text (punctuation separates
    words and is dropped). Id 0 is :data:`PAD_TOKEN` and id 1 :data:`UNK_TOKEN`; the words
    follow. There are no other special tokens (no start or end token): the text tower
    mean-pools its token states over the attention mask.

    Args:
        words (Sequence[str]): The vocabulary's words, lower-case letters and digits only,
                    without duplicates; word ``i`` gets id ``i + 2``.

    Examples::

        >>> from captum_fam.zoo.captions import CAPTION_WORDS
        >>> from captum_fam.zoo.tokenizer import WordTokenizer
        >>> tokenizer = WordTokenizer(CAPTION_WORDS)
        >>> input_ids, attention_mask = tokenizer.encode(["a star", "a star next to an L"])
        >>> input_ids.shape, attention_mask.tolist()
        (torch.Size([2, 6]), [[1, 1, 0, 0, 0, 0], [1, 1, 1, 1, 1, 1]])
        >>> tokenizer.decode(input_ids)
        ['a star', 'a star next to an l']
    """

    pad_id = 0
    unk_id = 1

    def __init__(self, words: Sequence[str]) -> None:
        words = list(words)
        for word in words:
            if not isinstance(word, str) or _WORD.fullmatch(word) is None:
                raise ValueError(f"words must be lower-case letters and digits only; got {word!r}")
        if len(set(words)) != len(words):
            raise ValueError("words must not hold duplicates")
        self.vocabulary: tuple[str, ...] = (PAD_TOKEN, UNK_TOKEN, *words)
        self._ids = {word: i for i, word in enumerate(self.vocabulary) if i >= 2}

    def __len__(self) -> int:
        return len(self.vocabulary)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WordTokenizer) and other.vocabulary == self.vocabulary

    def __hash__(self) -> int:
        return hash(self.vocabulary)

    def __repr__(self) -> str:
        return f"WordTokenizer({len(self)} tokens)"

    def tokenize(self, text: str) -> list[str]:
        """The words of ``text``: lower-cased runs of letters and digits."""
        if not isinstance(text, str):
            raise TypeError(f"text must be a str; got {type(text).__name__}")
        return _WORD.findall(text.lower())

    def encode(
        self, texts: Sequence[str] | str, length: int | None = None
    ) -> tuple[Tensor, Tensor]:
        r"""Token ids and attention mask of a batch of texts, padded on the right.

        Args:
            texts (Sequence[str] or str): The texts (a single str is a batch of one). Each must
                        hold at least one word.
            length (int, optional): Pad every row to this many tokens (a text with more words
                        raises a ValueError). Default: None (the longest text's word count)

        Returns:
            tuple[Tensor, Tensor]: ``(input_ids, attention_mask)``, both ``(N, T)`` int64 on
            CPU; ``attention_mask`` is 1 on words and 0 on padding (id 0).

        Examples::

            >>> input_ids, attention_mask = tokenizer.encode(["a star"], length=4)
            >>> attention_mask
            tensor([[1, 1, 0, 0]])
        """
        if isinstance(texts, str):
            texts = [texts]
        if not isinstance(texts, Sequence) or len(texts) == 0:
            raise ValueError("texts must be a non-empty sequence of str")
        rows = []
        for i, text in enumerate(texts):
            words = self.tokenize(text)
            if not words:
                raise ValueError(f"texts[{i}] holds no word: {text!r}")
            rows.append([self._ids.get(w, self.unk_id) for w in words])
        longest = max(len(r) for r in rows)
        if length is None:
            length = longest
        elif isinstance(length, bool) or not isinstance(length, int) or length < longest:
            raise ValueError(
                f"length must be an int >= the longest text ({longest}); got {length!r}"
            )
        input_ids = torch.full((len(rows), length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, : len(row)] = 1
        return input_ids, attention_mask

    def decode(self, input_ids: Tensor, attention_mask: Tensor | None = None) -> list[str]:
        r"""The texts of ``input_ids``: their words joined by single spaces, padding left out.

        Args:
            input_ids (Tensor): ``(N, T)`` or ``(T,)`` token ids.
            attention_mask (Tensor, optional): ``(N, T)`` mask; positions where it is 0 are
                        left out. Default: None (leave out the ``[PAD]`` ids)

        Returns:
            list[str]: ``N`` texts; unknown words read ``[UNK]``.
        """
        if not isinstance(input_ids, Tensor) or input_ids.dim() not in (1, 2):
            raise ValueError("input_ids must be a (N, T) or (T,) tensor of token ids")
        ids = input_ids.reshape(-1, input_ids.shape[-1]).tolist()
        if attention_mask is None:
            keep = [[i != self.pad_id for i in row] for row in ids]
        else:
            if attention_mask.shape != input_ids.shape:
                raise ValueError(
                    f"attention_mask must have the shape of input_ids {tuple(input_ids.shape)}; "
                    f"got {tuple(attention_mask.shape)}"
                )
            keep = (attention_mask.reshape(len(ids), -1) != 0).tolist()
        texts = []
        for row, row_keep in zip(ids, keep, strict=True):
            if any(not 0 <= i < len(self.vocabulary) for i in row):
                raise ValueError(f"input_ids must lie in [0, {len(self.vocabulary)})")
            texts.append(
                " ".join(self.vocabulary[i] for i, k in zip(row, row_keep, strict=True) if k)
            )
        return texts
