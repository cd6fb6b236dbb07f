"""A classifier-shaped view of a similarity model, for libraries that expect class outputs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from captum_fam._checks import format_embeddings, one_of
from captum_fam.similarity import Similarity, SimilarityFn, resolve_similarity

__all__ = ["SimilarityHead"]


class SimilarityHead(nn.Module):
    r"""Similarities to K fixed references as ``(N, K)`` "logits".

    Evaluation libraries written for classifiers (Quantus, Captum's ``target=``) ask for a
    model with one output per class and a class index per example. This module makes an
    embedding model look like one: output ``k`` is the similarity of the input's embedding to
    reference ``k``, so ``y = k`` (``target=k``) explains the similarity to that reference.
    Use it with softmax off (Quantus: ``softmax=False``, its default for most metrics): a
    softmax over references would explain a different, contrastive quantity.

    Args:
        model (torch.nn.Module or Callable): Maps images ``(N, ...)`` to embeddings
                    ``(N, D)``. For FAM with ``embedding="layer"`` this is the layer's pooled
                    activations (for networks that end with global average pooling, the
                    model itself; otherwise ``fam.embed``).
        references (Tensor, optional): Reference images, embedded once with ``model``.
        reference_embeddings (Tensor, optional): Or their ``(K, D)`` embeddings (prototypes).
                    Give exactly one of the two.
        similarity (str, Similarity or Callable, optional): As in
                    :class:`~captum_fam.FeatureActivationMap`. Default: ``"cosine"``

    Examples::

        >>> head = SimilarityHead(model, reference_embeddings=prototypes).eval()
        >>> head(images).shape                   # (N, K)
        >>> quantus.PointingGame()(model=head, x_batch=x, y_batch=y, a_batch=a, s_batch=s)
    """

    reference_embeddings: Tensor

    def __init__(
        self,
        model: nn.Module | Callable[[Tensor], Tensor],
        references: Tensor | None = None,
        reference_embeddings: Tensor | None = None,
        similarity: str | Similarity | SimilarityFn = "cosine",
    ) -> None:
        super().__init__()
        if not callable(model):
            raise TypeError(f"model must be callable; got {type(model).__name__}")
        one_of(references, reference_embeddings, ("references", "reference_embeddings"))
        self.model = model
        self.similarity = resolve_similarity(similarity)
        if references is not None:
            with torch.no_grad():
                reference_embeddings = self._embed(references, "references")
        rows = format_embeddings(reference_embeddings, "reference_embeddings").detach()
        self.register_buffer("reference_embeddings", rows.clone())

    def _embed(self, images: Tensor, name: str) -> Tensor:
        out: Any = self.model(images)
        if not isinstance(out, Tensor) or out.dim() != 2 or out.shape[0] != images.shape[0]:
            shape = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
            raise ValueError(
                f"model must map {name} to (N={images.shape[0]}, D) embeddings; got {shape}"
            )
        return out

    def forward(self, inputs: Tensor) -> Tensor:
        """Returns ``(N, K)`` similarities of the inputs to the K references."""
        embeddings = self._embed(inputs, "inputs")
        rows = self.reference_embeddings.to(embeddings)
        if embeddings.shape[1] != rows.shape[1]:
            raise ValueError(
                f"the model gives {embeddings.shape[1]}-dim embeddings; reference_embeddings "
                f"have {rows.shape[1]}"
            )
        n, k = embeddings.shape[0], rows.shape[0]
        scores = self.similarity.score(embeddings.repeat_interleave(k, dim=0), rows.repeat(n, 1))
        return scores.view(n, k)
