"""Sentence embedders: FAM for Hugging Face encoders and sentence-transformers models.

"Which words make these two sentences similar?" For a mean-pooled sentence embedding the
cosine decomposes exactly over the tokens of each sentence, and over pairs of tokens, one from
each (docs/method.md): :func:`sentence_fam` wires a model to FAM, :func:`explain_sentences`
tokenizes two lists of texts and explains each pair from both sides, and
:class:`SentencePairExplanation` merges word pieces back into words for display
(:mod:`captum_fam.text_visualization` draws them).

Models come as a ``transformers`` encoder (``AutoModel.from_pretrained(name)``), a
``sentence_transformers.SentenceTransformer``, or a :class:`SentenceEncoder`. Inputs are
``(input_ids, attention_mask)``; the attention mask is the pooling mask (``pooling_mask=1``),
so padding enters neither the embedding nor the maps.

Needs the ``text`` extra (``pip install "captum-fam[text]"``).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from captum_fam.attribution import FeatureActivationMap
from captum_fam.models import ModelLoadError
from captum_fam.similarity import Similarity, SimilarityFn
from captum_fam.tasks import explain_pair

__all__ = [
    "POOLINGS",
    "SentenceEncoder",
    "SentencePairExplanation",
    "SentenceTransformerForward",
    "TokenizedTexts",
    "default_text_layer",
    "explain_sentences",
    "load_sentence_model",
    "random_weights",
    "sentence_fam",
    "tokenize_texts",
]

POOLINGS = ("mean", "cls", "pooler")
"""How :class:`SentenceEncoder` turns token states into a sentence embedding."""

_BLOCK_LISTS = ("layer", "layers", "blocks", "block", "h")

RANDOM_WEIGHTS_FLAG = "captum_fam_random_weights"
"""Set in a ``transformers`` config by :mod:`captum_fam.zoo.text_encoders` (and saved with it),
so that tools can say a model's weights are random."""


class SentenceEncoder(nn.Module):
    r"""A Hugging Face encoder as a sentence embedder: ``(input_ids, attention_mask) -> (N, D)``.

    Args:
        model (nn.Module): A ``transformers`` encoder (``BertModel``, ``DistilBertModel``,
                    ``MPNetModel``, ``RobertaModel``, ``AutoModel.from_pretrained(...)``).
        pooling (str, optional): ``"mean"``: the mean of the last hidden states over the
                    attention mask, as sentence-transformers pools (FAM's maps and token pairs
                    are exact decompositions of the score); ``"cls"``: the first token's state;
                    ``"pooler"``: the model's pooler output. For the last two FAM's maps are the
                    first-order pull-back of the score, and token pairs are not defined.
                    Default: ``"mean"``

    Examples::

        >>> encoder = SentenceEncoder(AutoModel.from_pretrained(name))
        >>> batch = tokenizer(texts, padding=True, return_tensors="pt")
        >>> encoder(batch["input_ids"], batch["attention_mask"]).shape      # (N, D)
    """

    def __init__(self, model: nn.Module, pooling: str = "mean") -> None:
        super().__init__()
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {list(POOLINGS)}; got {pooling!r}")
        self.model = model
        self.pooling = pooling

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> Tensor:
        output = self.model(input_ids=input_ids, attention_mask=attention_mask)
        if self.pooling == "pooler":
            pooled = getattr(output, "pooler_output", None)
            if pooled is None:
                raise ValueError(
                    f"pooling='pooler': {type(self.model).__name__} has no pooler output; use "
                    "pooling='mean' or 'cls'"
                )
            return pooled
        states = output[0]  # last_hidden_state (N, T, C)
        if self.pooling == "cls":
            return states[:, 0]
        weights = attention_mask.unsqueeze(-1).to(states.dtype)
        return (states * weights).sum(dim=1) / weights.sum(dim=1).clamp_min(1)


class SentenceTransformerForward(nn.Module):
    r"""A ``SentenceTransformer`` run through its own modules on ``(input_ids, attention_mask)``.

    The model's forward takes a features dict; this module builds it and returns the model's
    output dict (FAM picks ``"sentence_embedding"`` with ``embedding_key``). With
    ``stop_before_normalize`` a final ``Normalize`` module is skipped: the cosine of normalised
    embeddings is the cosine of the embeddings themselves, and their dot product is that
    cosine too, so the score is unchanged, while explaining through the normalisation would
    give its first-order pull-back (a map that sums to zero) instead of the decomposition.

    Args:
        model (SentenceTransformer): The model.
        stop_before_normalize (bool, optional): Skip a final ``Normalize``. Default: False
    """

    def __init__(self, model: nn.Module, stop_before_normalize: bool = False) -> None:
        super().__init__()
        self.model = model
        self.stop_before_normalize = stop_before_normalize and _ends_with_normalize(model)

    def forward(self, input_ids: Tensor, attention_mask: Tensor) -> dict[str, Tensor]:
        features = {"input_ids": input_ids, "attention_mask": attention_mask}
        if not self.stop_before_normalize:
            return self.model(features)
        for module in list(self.model.children())[:-1]:
            features = module(features)
        return features


def default_text_layer(model: nn.Module) -> nn.Module:
    r"""The last transformer block of an encoder: its output is the state that gets pooled.

    Looks for the longest ``nn.ModuleList`` named ``layer``, ``layers``, ``blocks``, ``block``
    or ``h`` (BERT and RoBERTa: ``encoder.layer``, DistilBERT: ``transformer.layer``, GPT-2:
    ``h``) inside ``model``, a sentence-transformers model included.

    Raises:
        ValueError: when no such list exists; pass the layer yourself.
    """
    found = [
        (len(module), index, module)
        for index, (name, module) in enumerate(model.named_modules())
        if isinstance(module, nn.ModuleList)
        and len(module) > 0
        and name.rsplit(".", 1)[-1] in _BLOCK_LISTS
    ]
    if not found:
        raise ValueError(
            f"found no list of transformer blocks in {type(model).__name__}: pass layer= (the "
            "module whose (N, T, C) output is pooled, e.g. model.encoder.layer[-1])"
        )
    return max(found, key=lambda entry: entry[:2])[2][-1]


def sentence_fam(
    model: nn.Module,
    layer: nn.Module | None = None,
    similarity: str | Similarity | SimilarityFn = "cosine",
    weighting: str = "reference",
    pooling: str = "mean",
) -> FeatureActivationMap:
    r"""FAM for a sentence embedder, reading token states as a sequence.

    Inputs of the returned FAM are ``(input_ids, attention_mask)`` with ``pooling_mask=1``
    (:func:`explain_sentences` passes them); it explains the model's own embedding
    (``embedding="output"``) at ``layer``, whose ``(N, T, C)`` output is read with
    ``token_layout="sequence"``.

    Args:
        model (nn.Module): A ``transformers`` encoder (wrapped in a :class:`SentenceEncoder`
                    with ``pooling``), a :class:`SentenceEncoder`, or a
                    ``sentence_transformers.SentenceTransformer`` (run through its own modules
                    by :class:`SentenceTransformerForward`; ``pooling`` is the model's own).
        layer (nn.Module, optional): The layer explained. Default: the last transformer block
                    (:func:`default_text_layer`), whose mean is the sentence embedding.
        similarity (str, Similarity or Callable, optional): As in
                    :class:`~captum_fam.FeatureActivationMap`. A sentence-transformers model
                    ending with ``Normalize`` is explained before the normalisation for
                    ``"cosine"`` and ``"dot"`` (both are then the cosine of its pooled
                    embeddings, and ``"dot"`` becomes ``"cosine"``). Default: ``"cosine"``
        weighting (str, optional): ``"reference"`` or ``"contribution"``.
                    Default: ``"reference"``
        pooling (str, optional): For a ``transformers`` encoder: ``"mean"``, ``"cls"`` or
                    ``"pooler"`` (:class:`SentenceEncoder`). Default: ``"mean"``

    Returns:
        :class:`~captum_fam.FeatureActivationMap`

    Examples::

        >>> from transformers import AutoModel, AutoTokenizer
        >>> model = AutoModel.from_pretrained("sentence-transformers/all-MiniLM-L6-v2")
        >>> fam = sentence_fam(model)
        >>> batch = tokenizer(texts, padding=True, return_tensors="pt")
        >>> inputs = (batch["input_ids"], batch["attention_mask"])
        >>> maps = fam.attribute(inputs, reference=other_inputs, pooling_mask=1,
        ...                      relu_attributions=False)              # (N, 1, T)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(
            "model must be a transformers encoder, a SentenceEncoder or a SentenceTransformer "
            f"(an nn.Module); got {type(model).__name__}"
        )
    key = None
    if _is_sentence_transformer(model):
        normalized = _ends_with_normalize(model) and similarity in ("cosine", "dot")
        forward: nn.Module = SentenceTransformerForward(model, stop_before_normalize=normalized)
        similarity = "cosine" if normalized else similarity
        key = "sentence_embedding"
    elif isinstance(model, SentenceEncoder):
        forward = model
    else:
        forward = SentenceEncoder(model, pooling)
    layer = default_text_layer(model) if layer is None else layer
    return FeatureActivationMap(
        forward, layer, similarity, weighting, token_layout="sequence", embedding_key=key
    )


def load_sentence_model(spec: str | Path) -> tuple[nn.Module, Any]:
    r"""A sentence embedder and its tokenizer from a factory or a local folder, offline.

    Args:
        spec (str or Path): ``"package.module:factory"``, where ``factory()`` returns a
                    ``SentenceTransformer`` or a ``(model, tokenizer)`` pair (a ``transformers``
                    encoder or :class:`SentenceEncoder`, and its tokenizer); or a local folder
                    saved by sentence-transformers (``model.save(folder)``, with
                    ``modules.json``) or by ``transformers`` (``save_pretrained``, with
                    ``config.json`` and the tokenizer's files). Nothing is downloaded.

    Returns:
        ``(model, tokenizer)`` in eval mode; for a ``SentenceTransformer`` both are the model
        (:func:`tokenize_texts` and :func:`explain_sentences` take it as the tokenizer).

    Raises:
        ModelLoadError: (a ValueError) for a specification that does not resolve. A factory's
                    own errors pass through unchanged.

    Examples::

        >>> model, tokenizer = load_sentence_model("my_package.models:sentence_encoder")
        >>> fam = sentence_fam(model)
    """
    path = Path(spec)
    if path.is_dir():
        return _load_folder(path)
    text = str(spec)
    if not re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", text):
        raise ModelLoadError(
            f"unknown sentence model {text!r}: expected 'package.module:factory' or a local "
            "folder saved by sentence-transformers or transformers"
        )
    module_name, _, attribute = text.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())  # user code by name, as other tools find it
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelLoadError(f"cannot import {module_name!r} for model {text}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelLoadError(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ModelLoadError(f"model {text}: {attribute!r} is not callable")
    built = target()
    if _is_sentence_transformer(built):
        return built.eval(), built
    if isinstance(built, tuple) and len(built) == 2 and isinstance(built[0], nn.Module):
        return built[0].eval(), built[1]
    raise ModelLoadError(
        f"model {text}: {attribute}() returned {type(built).__name__}; expected a "
        "SentenceTransformer or a (model, tokenizer) pair"
    )


def _load_folder(path: Path) -> tuple[nn.Module, Any]:
    if (path / "modules.json").is_file():
        from sentence_transformers import SentenceTransformer

        model = SentenceTransformer(str(path), device="cpu", local_files_only=True)
        return model.eval(), model
    if (path / "config.json").is_file():
        from transformers import AutoModel, AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
        model = AutoModel.from_pretrained(str(path), local_files_only=True)
        return model.eval(), tokenizer
    raise ModelLoadError(
        f"folder {path} holds neither a sentence-transformers model (modules.json) nor a "
        "transformers model (config.json)"
    )


def random_weights(model: nn.Module) -> bool:
    """Whether ``model`` holds an encoder built with random weights by
    :mod:`captum_fam.zoo.text_encoders` (its ``transformers`` config says so)."""
    return any(
        bool(getattr(getattr(module, "config", None), RANDOM_WEIGHTS_FLAG, False))
        for module in model.modules()
    )


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
    if _is_sentence_transformer(tokenizer):
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
        return [label for label, _ in units], _merge(maps[index].detach().cpu(), units, 0)

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
        matrix = _merge(_merge(self.token_pairs[index].detach().cpu(), units_a, 0), units_b, 1)
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
    device = _device_of(fam.forward_func)
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


def _merge(values: Tensor, units: list[tuple[str, list[int]]], dim: int) -> Tensor:
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


def _is_sentence_transformer(model: Any) -> bool:
    return any(
        cls.__name__ == "SentenceTransformer" and cls.__module__.startswith("sentence_transformers")
        for cls in type(model).__mro__
    )


def _ends_with_normalize(model: nn.Module) -> bool:
    children = list(model.children())
    return bool(children) and type(children[-1]).__name__ == "Normalize"


def _device_of(forward_func: Any) -> torch.device:
    if isinstance(forward_func, nn.Module):
        for parameter in forward_func.parameters():
            return parameter.device
    return torch.device("cpu")
