"""Sentence encoders wired to FAM: Hugging Face encoders, sentence-transformers models, loading."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from captum_fam.attribution import FeatureActivationMap
from captum_fam.models import ModelLoadError, import_factory
from captum_fam.similarity import Similarity, SimilarityFn

__all__ = [
    "POOLINGS",
    "RANDOM_WEIGHTS_FLAG",
    "SentenceEncoder",
    "SentenceTransformerForward",
    "default_text_layer",
    "device_of",
    "is_sentence_transformer",
    "load_sentence_model",
    "random_weights",
    "sentence_fam",
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
    if is_sentence_transformer(model):
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
    attribute = text.partition(":")[2]
    built = import_factory(text)()
    if is_sentence_transformer(built):
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


def is_sentence_transformer(model: Any) -> bool:
    return any(
        cls.__name__ == "SentenceTransformer" and cls.__module__.startswith("sentence_transformers")
        for cls in type(model).__mro__
    )


def _ends_with_normalize(model: nn.Module) -> bool:
    children = list(model.children())
    return bool(children) and type(children[-1]).__name__ == "Normalize"


def device_of(forward_func: Any) -> torch.device:
    if isinstance(forward_func, nn.Module):
        for parameter in forward_func.parameters():
            return parameter.device
    return torch.device("cpu")
