"""Two lists of sentences explained pair by pair, from both sides and over token pairs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from captum_fam.attribution import FeatureActivationMap
from captum_fam.tasks import explain_pair
from captum_fam.text.encoders import device_of
from captum_fam.text.words import TokenizedTexts, merge_units, tokenize_texts

__all__ = ["SentencePairExplanation", "explain_sentences"]


@dataclass
class SentencePairExplanation:
    r"""N sentence pairs explained from both sides, token by token and pair by pair.

    Attributes:
        a (TokenizedTexts): The first sentences.
        b (TokenizedTexts): The second sentences.
        scores (Tensor): ``(N,)`` the model's similarity of each pair.
        maps_a (Tensor): ``(N, T_a)`` signed: each token's share of the score, FAM's raw
                    reference-weighted map of ``a`` against ``b`` divided by the number of
                    valid tokens, so that a sentence's shares sum to the score (mean pooling);
                    padding 0.
        maps_b (Tensor): ``(N, T_b)`` the same for ``b`` against ``a``.
        token_pairs (Tensor or None): ``(N, T_a, T_b)``: what token ``i`` of ``a`` and token
                    ``j`` of ``b`` contribute together; rows sum to ``maps_a``, columns to
                    ``maps_b``, all to ``scores``.
        similarity (str): The similarity's name (``"cosine"``, ``"dot"``), for titles.
    """

    a: TokenizedTexts
    b: TokenizedTexts
    scores: Tensor
    maps_a: Tensor
    maps_b: Tensor
    token_pairs: Tensor | None = None
    similarity: str = "cosine"

    def words(
        self, index: int, side: str = "a", words: bool = True, special_tokens: bool = False
    ) -> tuple[list[str], Tensor]:
        r"""Labels and values of one sentence: word pieces summed per word.

        Args:
            index (int): The pair.
            side (str, optional): ``"a"`` or ``"b"``. Default: ``"a"``
            words (bool, optional): Sum the pieces of each word. Default: True
            special_tokens (bool, optional): Show special tokens (their shares are part of the
                        score; hidden, the shown values sum to the score minus theirs).
                        Default: False

        Returns:
            ``(labels, values)``: U labels and a ``(U,)`` tensor on the CPU.
        """
        if side not in ("a", "b"):
            raise ValueError(f"side must be 'a' or 'b'; got {side!r}")
        texts, maps = (self.a, self.maps_a) if side == "a" else (self.b, self.maps_b)
        units = texts.units(index, words, special_tokens)
        return [label for label, _ in units], merge_units(maps[index].detach().cpu(), units, 0)

    def pairs(
        self, index: int, words: bool = True, special_tokens: bool = False
    ) -> tuple[list[str], list[str], Tensor]:
        r"""Labels of both sentences and the ``(U_a, U_b)`` pair matrix, summed per word.

        Raises:
            ValueError: when the explanation has no pair matrix (``token_pairs=False``).
        """
        if self.token_pairs is None:
            raise ValueError("this explanation has no token pairs: explain with token_pairs=True")
        units_a = self.a.units(index, words, special_tokens)
        units_b = self.b.units(index, words, special_tokens)
        matrix = merge_units(
            merge_units(self.token_pairs[index].detach().cpu(), units_a, 0), units_b, 1
        )
        return [label for label, _ in units_a], [label for label, _ in units_b], matrix


@torch.no_grad()
def explain_sentences(
    fam: FeatureActivationMap,
    tokenizer: Any,
    a: Sequence[str] | str,
    b: Sequence[str] | str,
    token_pairs: bool = True,
    max_length: int | None = None,
) -> SentencePairExplanation:
    r"""Which words make two sentences similar: both sides, signed, and token pairs.

    Tokenizes ``a`` and ``b`` (each padded to its own longest text), runs one forward per
    side and explains pair ``i`` = ``(a[i], b[i])`` with the signed raw maps
    (``relu_attributions=False``, ``normalize_weights=False``): positive shares pull the score
    up, negative ones pull it down.

    Args:
        fam (FeatureActivationMap): From :func:`sentence_fam` (inputs ``(input_ids,
                    attention_mask)``).
        tokenizer: A ``transformers`` tokenizer or the ``SentenceTransformer``.
        a (str or Sequence[str]): First sentences.
        b (str or Sequence[str]): Second sentences, as many.
        token_pairs (bool, optional): Also decompose each score over token pairs ("dot" and
                    "cosine" on mean pooling). Default: True
        max_length (int, optional): Truncate to this many tokens. Default: the model's
                    maximum.

    Returns:
        :class:`SentencePairExplanation`

    Examples::

        >>> fam = sentence_fam(model)
        >>> pair = explain_sentences(fam, tokenizer, ["A man plays a guitar."],
        ...                          ["Someone is playing an instrument."])
        >>> pair.scores, pair.words(0, "a")
    """
    side_a = tokenize_texts(tokenizer, a, max_length)
    side_b = tokenize_texts(tokenizer, b, max_length)
    if len(side_a.texts) != len(side_b.texts):
        raise ValueError(
            f"a and b must hold as many texts; got {len(side_a.texts)} and {len(side_b.texts)}"
        )
    device = device_of(fam.forward_func)
    inputs_a = tuple(t.to(device) for t in side_a.inputs)
    inputs_b = tuple(t.to(device) for t in side_b.inputs)
    pair = explain_pair(
        fam, inputs_a, inputs_b, pooling_mask=1, relu_attributions=False,
        normalize_weights=False, token_pairs=token_pairs,
    )  # fmt: skip
    counts_a = inputs_a[1].sum(dim=1, keepdim=True).to(pair.maps_a.dtype)
    counts_b = inputs_b[1].sum(dim=1, keepdim=True).to(pair.maps_b.dtype)
    return SentencePairExplanation(
        side_a,
        side_b,
        pair.scores,
        pair.maps_a[:, 0] / counts_a,
        pair.maps_b[:, 0] / counts_b,
        pair.token_pairs,
        fam.similarity.name,
    )
