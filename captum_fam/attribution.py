"""Feature Activation Map: the Captum attribution class.

The class checks a call's arguments and hands them to its :class:`~captum_fam._engine.Engine`
(``fam.engine``), which the task helpers, the metrics, the command line and the dataset jobs
use too: capture, query side, references, coefficients, weights and combination live there,
each in one place.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum.attr import LayerAttribution
from torch import Tensor
from torch.nn import Module

from captum_fam._checks import TensorOrTuple, format_batch
from captum_fam._compat import log_usage
from captum_fam._engine import EMBEDDINGS, EmbeddingKey, Engine, combine_activation_maps
from captum_fam._engine.pooling import PoolingMask
from captum_fam._engine.references import plan_references
from captum_fam.similarity import Similarity, SimilarityFn
from captum_fam.tokens import TokenLayout

__all__ = ["EMBEDDINGS", "FAM", "FeatureActivationMap", "combine_activation_maps"]


class FeatureActivationMap(LayerAttribution):
    r"""Feature Activation Map (FAM, Liao, Gao and Zhang, arXiv 2307.05017).

    FAM explains why an embedding model finds a query similar to a reference, for models that
    decide by comparing embeddings (few-shot prototypes, contrastive and self-supervised views,
    retrieval galleries, face verification, sentence embedders, image-text models) and so have
    no class row for CAM and no class target for Grad-CAM. It derives channel weights from the
    similarity of the two embeddings and combines the layer's activations with them: one
    forward per input set, and no backward through the backbone.

    The score explained is the similarity of what ``forward_func`` returns (``embedding=
    "output"``, the default): ``s(o_q, o_r)`` with ``o = forward_func(x)``. Its coefficients
    ``g_out = ds/do_q`` (norms held fixed) are pulled back to the layer's channels through the
    layers after ``layer`` alone (the head): ``g = J^T g_out`` with ``J`` the head's Jacobian,
    exact for a linear head over the pooled layer, first-order for a non-linear one. With
    ``embedding="layer"`` the score is the similarity of the layer's own pooled channels
    ``e = mean_S A`` (the paper's setting), and the forward stops right after the layer.

    For activations ``A`` of shape ``(C, *S)`` the map is ``relu(sum_k w'_k A[k])``:

    - ``weighting="reference"`` (the default; the CAM analogue): ``w_k = g_k``. Without ReLU
      and normalization, the mean of the map over positions equals the score (up to a term
      that does not depend on the query: a linear head's bias, Euclidean's ``-|e_r|^2``).
    - ``weighting="contribution"`` (the paper's wording): ``w_k = e_q[k] g_k``, the k-th term
      of the score's sum over channels.

    and ``w' = w / sum_k |w_k|`` when ``normalize_weights`` is True. The result has the
    layer's resolution; use :meth:`LayerAttribution.interpolate` to upsample it.

    Args:
        forward_func (Callable or torch.nn.Module): The embedding model, or any function that
                    runs it: ``forward_func(*inputs, *additional_forward_args)`` returns the
                    ``(N, D)`` embeddings that the model compares (or a structure holding them:
                    see ``embedding_key``). For a classifier used as a feature extractor,
                    remove its classifier first (:func:`captum_fam.backbones.strip_classifier`)
                    or use ``embedding="layer"``.
        layer (torch.nn.Module): The layer whose output (or input, with
                    ``attribute_to_layer_input=True``) is the ``(N, C, *S)`` activation map:
                    ``(N, C, H, W)`` for images, ``(N, C, T)`` for sequences, or tokens read
                    through ``token_layout``. Usually the last block before the pooling.
        similarity (str, Similarity or Callable, optional): How the model compares
                    embeddings: ``"cosine"``, ``"dot"``, ``"euclidean"`` (negative squared
                    distance), a :class:`~captum_fam.similarity.Similarity` with its exact
                    channel decomposition, or a callable ``f(e_q, e_r) -> (N,)`` whose channel
                    coefficients are its gradient on the embeddings
                    (:class:`~captum_fam.similarity.CallableSimilarity`).
                    Default: ``"cosine"``
        weighting (str, optional): ``"reference"`` or ``"contribution"``, as above.
                    Default: ``"reference"``
        device_ids (list[int], optional): Device ID list, necessary only if forward_func
                    applies a DataParallel model, which allows reconstruction of
                    intermediate outputs from batched results across devices.
                    If forward_func is given as the DataParallel model itself,
                    then it is not necessary to provide this argument.
        token_layout (str or TokenLayout, optional): For transformer layers: ``"auto"`` reads
                    ``(N, T, C)`` image tokens as a patch grid (prefix tokens dropped, grid
                    inferred from the token count, the input size or the model's
                    ``patch_size``) and channels-last ``(N, h, w, C)`` grids as maps;
                    ``"sequence"`` reads ``(N, T, C)`` token states as a sequence ``(N, C, T)``,
                    every token in its position; a :class:`~captum_fam.tokens.TokenLayout`
                    states the layout explicitly. Default: None (the layer gives channels-first
                    ``(N, C, *S)``)
        embedding (str, optional): Which similarity is explained: ``"output"``, that of what
                    ``forward_func`` returns; ``"layer"``, that of the layer's pooled channels.
                    Default: ``"output"``
        embedding_key (str, int or Callable, optional): Where the embedding is in a structured
                    output: a key or attribute name (``"sentence_embedding"`` for
                    sentence-transformers, ``"pooler_output"`` or ``"image_embeds"`` for
                    Hugging Face outputs), a tuple index, or a callable ``output -> (N, D)``.
                    Default: None (the output is the embedding)

    Examples::

        >>> model, layer = captum_fam.zoo.load_shapes_model()
        >>> fam = FeatureActivationMap(model, layer)
        >>> maps = fam.attribute(queries, reference=references)    # (N, 1, h, w)
        >>> upsampled = LayerAttribution.interpolate(maps, queries.shape[-2:], "bilinear")
        >>> scores = fam.similarity_scores(queries, reference=references)   # (N,)
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: Module,
        similarity: str | Similarity | SimilarityFn = "cosine",
        weighting: str = "reference",
        device_ids: list[int] | None = None,
        token_layout: str | TokenLayout | None = None,
        embedding: str = "output",
        embedding_key: EmbeddingKey = None,
    ) -> None:
        engine = Engine(
            forward_func,
            layer,
            similarity,
            weighting,
            embedding,
            embedding_key,
            token_layout,
            device_ids,
        )
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        self.engine = engine
        """The :class:`~captum_fam._engine.Engine` that computes for this FAM (shared with the
        task helpers, metrics and jobs)."""

    @property
    def similarity(self) -> Similarity:
        """The similarity explained."""
        return self.engine.similarity

    @property
    def weighting(self) -> str:
        """``"reference"`` or ``"contribution"``."""
        return self.engine.weighting

    @property
    def embedding(self) -> str:
        """``"output"`` or ``"layer"``."""
        return self.engine.embedding

    @property
    def embedding_key(self) -> EmbeddingKey:
        """Where the embedding is in the output (None: the output itself)."""
        return self.engine.embedding_key

    @property
    def token_layout(self) -> TokenLayout | None:
        """The layer's token layout, resolved (None for channels-first layers)."""
        return self.engine.token_layout

    @log_usage(part_of_slo=True)
    def attribute(
        self,
        inputs: TensorOrTuple,
        reference: TensorOrTuple | None = None,
        reference_embeddings: Tensor | None = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        relu_attributions: bool = True,
        normalize_weights: bool = True,
        foil: TensorOrTuple | None = None,
        foil_embeddings: Tensor | None = None,
        background: TensorOrTuple | None = None,
        background_embeddings: Tensor | None = None,
        pooling_mask: PoolingMask = None,
    ) -> Tensor:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): The query batch, as the model takes it
                        (images, or token ids with their attention mask). The first dimension
                        of each tensor is the number of examples N.
            reference (Tensor or tuple[Tensor, ...], optional): Reference inputs, structured
                        like ``inputs``, with M examples: M == 1 (shared by all inputs),
                        M == N (one per input), or N a multiple of M (reference j pairs with
                        the N // M consecutive inputs ``j * N // M, ...``: the order in which
                        NoiseTunnel and Captum's metrics expand inputs). They run through the
                        same model, in a forward of their own.
            reference_embeddings (Tensor, optional): Instead of ``reference``, embeddings
                        ``(M, D)`` or ``(D,)`` in the space of :meth:`embed` (the model's
                        output; the layer's pooled channels with ``embedding="layer"``): class
                        prototypes, cached gallery vectors, another tower's embeddings (a
                        caption's for an image). Same M rule.
                        Give exactly one of ``reference`` and ``reference_embeddings``.
            additional_forward_args (Any, optional): Further arguments of ``forward_func``
                        after the inputs, as in Captum. Tensors whose first dimension is N
                        are per-example; the reference forward uses the rows of the first input
                        of each group (all of them when M == N). Default: None
            attribute_to_layer_input (bool, optional): Read the layer's input instead of its
                        output. Default: False
            relu_attributions (bool, optional): Keep only positive evidence, as CAM does.
                        Default: True
            normalize_weights (bool, optional): Divide the channel weights of each example
                        by their absolute sum, making maps comparable across pairs.
                        Default: True
            foil (Tensor or tuple[Tensor, ...], optional): A contrastive map, "why the
                        reference rather than the foil": foil inputs (same M rule). The map
                        explains ``s(q, r) - s(q, f)``, so what the two share cancels.
                        Default: None
            foil_embeddings (Tensor, optional): The foil as embeddings. At most one of
                        ``foil`` and ``foil_embeddings``. Default: None
            background (Tensor or tuple[Tensor, ...], optional): "Why this reference rather
                        than a typical item": K ordinary inputs, all standing against every
                        query. The map explains ``s(q, r) - mean_k s(q, b_k)``, removing what
                        the reference shares with typical items (the common mode that makes
                        maps follow activation size). Not combined with a foil. Default: None
            background_embeddings (Tensor, optional): The background set as ``(K, D)``
                        embeddings. Default: None
            pooling_mask (Tensor or int, optional): Positions that the embedding pools, for
                        padded sequences: a ``(N, *S)`` tensor of 0/1 (or bool), or the index
                        of the mask among the inputs (``1`` for ``(input_ids,
                        attention_mask)``), in which case references, foils and background
                        sets given as inputs bring their own. Masked positions enter neither
                        the pooled embedding (``embedding="layer"``) nor the map: they are
                        exactly 0. Default: None (every position)

        Returns:
            Tensor: ``(N, 1, *S)`` maps at the layer's resolution (``(N, 1, H, W)`` for images,
            ``(N, 1, T)`` for sequences), float32 (float64 for a float64 model; half and
            bfloat16 activations are computed in float32), on the inputs' device.

        Examples::

            >>> fam = FeatureActivationMap(model, model.layer4)
            >>> # one reference image shared by 8 queries
            >>> maps = fam.attribute(queries, reference=reference)
            >>> # cached prototypes, one per query
            >>> maps = fam.attribute(queries, reference_embeddings=prototypes[labels])
            >>> # why a cat rather than a dog
            >>> maps = fam.attribute(queries, reference_embeddings=prototypes[cat],
            ...                      foil_embeddings=prototypes[dog])
            >>> # why this match rather than a typical photo
            >>> maps = fam.attribute(queries, reference=match, background=ordinary_photos)
            >>> # smoothed, as any Captum method
            >>> maps = NoiseTunnel(fam).attribute(
            ...     queries, nt_type="smoothgrad", nt_samples=8, stdevs=0.1,
            ...     reference_embeddings=prototypes[labels])
        """
        engine = self.engine
        with torch.no_grad():
            batch = format_batch(inputs, "inputs")
            n = batch[0].shape[0]
            plan = plan_references(n, batch, reference, reference_embeddings, "reference")
            foil_plan = plan_references(n, batch, foil, foil_embeddings, "foil", required=False)
            background_plan = plan_references(
                n, batch, background, background_embeddings, "background", required=False
            )
            if foil_plan is not None and background_plan is not None:
                raise ValueError(
                    "give a foil or a background set, not both: each defines what the "
                    "reference is contrasted with"
                )
            args, to_input = additional_forward_args, attribute_to_layer_input
            queries = engine.queries(batch, args, to_input, pooling_mask)
            embeddings = queries.embeddings
            rows = engine.rows(plan, embeddings, args, to_input, pooling_mask)
            foil_rows = (
                None
                if foil_plan is None
                else engine.rows(foil_plan, embeddings, args, to_input, pooling_mask)
            )
            background_rows = (
                None
                if background_plan is None
                else engine.rows(background_plan, embeddings, args, to_input, pooling_mask)
            )
            maps = engine.explain(
                queries, rows, foil_rows, background_rows, relu_attributions, normalize_weights
            )
        return maps.to(batch[0].device)

    @torch.no_grad()
    def similarity_scores(
        self,
        inputs: TensorOrTuple,
        reference: TensorOrTuple | None = None,
        reference_embeddings: Tensor | None = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        pooling_mask: PoolingMask = None,
    ) -> Tensor:
        r"""The similarity scores that :meth:`attribute` explains, one per input.

        The model's own scores with the default ``embedding="output"``. Takes the arguments of
        :meth:`attribute` that define the pairs. No graph is built;
        :func:`captum_fam.interop.similarity_forward` gives the same scores as a
        differentiable forward for gradient methods (Integrated Gradients, Grad-CAM).

        Returns:
            Tensor: ``(N,)`` scores on the inputs' device.

        Examples::

            >>> scores = fam.similarity_scores(queries, reference=references)
        """
        batch = format_batch(inputs, "inputs")
        n = batch[0].shape[0]
        plan = plan_references(n, batch, reference, reference_embeddings, "reference")
        args, to_input = additional_forward_args, attribute_to_layer_input
        query = self.engine.embed(batch, args, to_input, pooling_mask)
        rows = self.engine.rows(plan, query, args, to_input, pooling_mask)
        return self.engine.scores(query, rows).to(batch[0].device)

    @torch.no_grad()
    def embed(
        self,
        inputs: TensorOrTuple,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        pooling_mask: PoolingMask = None,
    ) -> Tensor:
        r"""Embeddings ``(N, D)`` in the space references are compared in.

        The model's output (``embedding="output"``) or the layer's (masked) pooled channels
        (``embedding="layer"``, D = C). Cache them for a gallery or average them into class
        prototypes (:func:`captum_fam.tasks.class_prototypes`), then pass them as
        ``reference_embeddings``.

        Returns:
            Tensor: ``(N, D)`` embeddings on the inputs' device.

        Examples::

            >>> gallery_embeddings = torch.cat([fam.embed(chunk) for chunk in gallery.split(64)])
        """
        batch = format_batch(inputs, "inputs")
        embeddings = self.engine.embed(
            batch, additional_forward_args, attribute_to_layer_input, pooling_mask
        )
        return embeddings.to(batch[0].device)


FAM = FeatureActivationMap
