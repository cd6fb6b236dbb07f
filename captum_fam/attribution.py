"""Feature Activation Map: the Captum attribution class.

The method in three steps, each in one place:

1. capture: the layer's activations for the queries (and the references, if given as images),
   one forward each, through Captum's layer-capture helper (hooks removed in ``finally``,
   DataParallel gathered, no autograd graph);
2. weigh: channel weights from the similarity of the pooled embeddings
   (:meth:`captum_fam.similarity.Similarity.weights`, the only place methods differ);
3. combine: ``M = relu(sum_k w'_k A[k])`` with ``w' = w / sum |w|``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from captum._utils.common import _format_additional_forward_args
from captum._utils.gradient import _forward_layer_eval
from captum.attr import LayerAttribution
from captum.log import log_usage
from torch import Tensor
from torch.nn import Module

from captum_fam._checks import (
    TensorOrTuple,
    check_choice,
    check_pairing,
    format_batch,
    format_embeddings,
    one_of,
)
from captum_fam.similarity import WEIGHTINGS, Similarity, SimilarityFn, resolve_similarity

__all__ = ["FAM", "FeatureActivationMap", "combine_activation_maps"]


class FeatureActivationMap(LayerAttribution):
    r"""Feature Activation Map (FAM, Liao, Gao and Zhang, arXiv 2307.05017).

    FAM explains why an embedding model finds a query similar to a reference, for models that
    decide by comparing embeddings (few-shot prototypes, contrastive and self-supervised views,
    retrieval galleries, face verification) and so have no class row for CAM and no class
    target for Grad-CAM. It derives channel-wise contribution weights from the similarity of
    the two embeddings and combines the layer's activation maps with them, in one forward pass
    and without gradients.

    For the query ``q`` with layer activations ``A`` of shape ``(C, H, W)``, the embedding is
    ``e_q = mean_{H, W} A`` and ``e_r`` the reference's, and the map is
    ``relu(sum_k w'_k A[k])`` where ``w`` are the similarity's channel weights:

    - ``weighting="contribution"`` (the paper's wording): ``w_k`` is the k-th term of the
      score's sum over channels; for cosine ``e_q[k] e_r[k] / (|e_q| |e_r|)``. The weights
      sum to the score.
    - ``weighting="reference"`` (the CAM analogue): ``w_k = d s / d e_q[k]`` with the norms
      held fixed; for cosine ``e_r[k] / (|e_q| |e_r|)``. Without ReLU and normalization, the
      spatial mean of the map equals the score exactly.

    and ``w' = w / sum_k |w_k|`` when ``normalize_weights`` is True. The result has the
    layer's spatial size; use :meth:`LayerAttribution.interpolate` to upsample it.

    Args:
        forward_func (Callable or torch.nn.Module): The embedding network, or any function
                    that runs it. Its return value is not used: FAM reads the layer.
        layer (torch.nn.Module): The layer whose output (or input, with
                    ``attribute_to_layer_input=True``) is the ``(N, C, H, W)`` activation map;
                    usually the last convolutional block.
        similarity (str, Similarity or Callable, optional): How the model compares
                    embeddings: ``"cosine"``, ``"dot"``, ``"euclidean"`` (negative squared
                    distance), a :class:`~captum_fam.similarity.Similarity` with its exact
                    channel decomposition, or a callable ``f(e_q, e_r) -> (N,)`` whose channel
                    coefficients are its gradient on the embeddings
                    (:class:`~captum_fam.similarity.CallableSimilarity`).
                    Default: ``"cosine"``
        weighting (str, optional): ``"contribution"`` or ``"reference"``, as above.
                    Default: ``"contribution"``
        device_ids (list[int], optional): Device ID list, necessary only if forward_func
                    applies a DataParallel model, which allows reconstruction of
                    intermediate outputs from batched results across devices.
                    If forward_func is given as the DataParallel model itself,
                    then it is not necessary to provide this argument.

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
        weighting: str = "contribution",
        device_ids: list[int] | None = None,
    ) -> None:
        if not isinstance(layer, Module):
            raise TypeError(
                f"layer must be a torch.nn.Module of the model; got {type(layer).__name__}"
            )
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable; got {type(forward_func).__name__}")
        LayerAttribution.__init__(self, forward_func, layer, device_ids)
        self.similarity = resolve_similarity(similarity)
        self.weighting = check_choice(weighting, WEIGHTINGS, "weighting")

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
    ) -> Tensor:
        r"""
        Args:
            inputs (Tensor or tuple[Tensor, ...]): The query batch, as the model takes it.
                        The first dimension of each tensor is the number of examples N.
            reference (Tensor or tuple[Tensor, ...], optional): Reference images, structured
                        like ``inputs``, with M examples: M == 1 (shared by all inputs),
                        M == N (one per input), or N a multiple of M (reference j pairs with
                        the N // M consecutive inputs ``j * N // M, ...``: the order in which
                        NoiseTunnel and Captum's metrics expand inputs). They run through the
                        same network and layer, in a forward pass of their own.
            reference_embeddings (Tensor, optional): Instead of ``reference``, embeddings
                        ``(M, C)`` or ``(C,)`` in the layer's pooled space: class prototypes,
                        cached gallery vectors (:meth:`embed`). Same M rule.
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

        Returns:
            *Tensor* of **attributions**:
            - **attributions** (*Tensor*):
                ``(N, 1, H, W)`` maps at the layer's resolution, float32 (float64 for a
                float64 model; half and bfloat16 activations are computed in float32), on the
                inputs' device.

        Examples::

            >>> fam = FeatureActivationMap(model, model.layer4)
            >>> # one reference image shared by 8 queries
            >>> maps = fam.attribute(queries, reference=reference)
            >>> # cached prototypes, one per query
            >>> maps = fam.attribute(queries, reference_embeddings=prototypes[labels])
            >>> # smoothed, as any Captum method
            >>> maps = NoiseTunnel(fam).attribute(
            ...     queries, nt_type="smoothgrad", nt_samples=8, stdevs=0.1,
            ...     reference_embeddings=prototypes[labels])
        """
        with torch.no_grad():
            activations, query, reference_rows = self._pair(
                inputs, reference, reference_embeddings, additional_forward_args,
                attribute_to_layer_input,
            )  # fmt: skip
            weights = self.similarity.weights(query, reference_rows, self.weighting)
            maps = combine_activation_maps(
                activations, weights, relu_attributions, normalize_weights
            )
        return maps.to(_first(inputs).device)

    def similarity_scores(
        self,
        inputs: TensorOrTuple,
        reference: TensorOrTuple | None = None,
        reference_embeddings: Tensor | None = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
    ) -> Tensor:
        r"""The similarity scores that :meth:`attribute` explains, one per input.

        Takes the arguments of :meth:`attribute` that define the pairs. With gradients
        enabled the scores are differentiable in the inputs, so that gradient methods
        (Integrated Gradients, Grad-CAM) can explain the very same score
        (see :func:`captum_fam.metrics.similarity_forward`); under ``torch.no_grad`` no graph
        is built.

        Returns:
            *Tensor* ``(N,)`` of scores on the inputs' device.

        Examples::

            >>> scores = fam.similarity_scores(queries, reference=references)
        """
        _, query, reference_rows = self._pair(
            inputs, reference, reference_embeddings, additional_forward_args,
            attribute_to_layer_input, grad_enabled=torch.is_grad_enabled(),
        )  # fmt: skip
        return self.similarity.score(query, reference_rows).to(_first(inputs).device)

    @torch.no_grad()
    def embed(
        self,
        inputs: TensorOrTuple,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
    ) -> Tensor:
        r"""Pooled layer embeddings ``(N, C)``: what references are compared in.

        Cache them for a gallery or average them into class prototypes, then pass them as
        ``reference_embeddings``.

        Examples::

            >>> prototypes = torch.stack([fam.embed(support[labels == c]).mean(0)
            ...                           for c in classes])
        """
        batch = format_batch(inputs, "inputs")
        activations = self._activations(batch, additional_forward_args, attribute_to_layer_input)
        return activations.mean(dim=(2, 3)).to(batch[0].device)

    def _pair(
        self,
        inputs: TensorOrTuple,
        reference: TensorOrTuple | None,
        reference_embeddings: Tensor | None,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        grad_enabled: bool = False,
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Query activations (N, C, H, W), query embeddings and paired references (N, C)."""
        one_of(reference, reference_embeddings, ("reference", "reference_embeddings"))
        batch = format_batch(inputs, "inputs")
        n = batch[0].shape[0]
        if reference is not None:
            references = format_batch(reference, "reference")
            if len(references) != len(batch):
                raise ValueError(
                    f"reference must be structured like inputs: {len(batch)} tensor(s); "
                    f"got {len(references)}"
                )
            m = references[0].shape[0]
            check_pairing(n, m, "reference")
        else:
            embeddings = format_embeddings(reference_embeddings, "reference_embeddings")
            m = embeddings.shape[0]
            check_pairing(n, m, "reference_embeddings")

        activations = self._activations(
            batch, additional_forward_args, attribute_to_layer_input, grad_enabled
        )
        if reference is not None:
            reference_args = _reference_forward_args(additional_forward_args, n, m)
            embeddings = self._activations(
                references, reference_args, attribute_to_layer_input
            ).mean(dim=(2, 3))
        elif embeddings.shape[1] != activations.shape[1]:
            raise ValueError(
                f"reference_embeddings have {embeddings.shape[1]} channels but the layer has "
                f"{activations.shape[1]}: embeddings must live in the layer's pooled space "
                "(compute them with fam.embed)"
            )
        query = activations.mean(dim=(2, 3))
        embeddings = embeddings.to(device=query.device, dtype=query.dtype)
        reference_rows = _pair_rows(embeddings, n)
        self.similarity.validate(query, reference_rows)
        return activations, query, reference_rows

    def _activations(
        self,
        inputs: tuple[Tensor, ...],
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        grad_enabled: bool = False,
    ) -> Tensor:
        """The layer's (N, C, H, W) activations in float32 or wider (no graph unless asked)."""
        try:
            captured = _forward_layer_eval(
                self.forward_func,
                inputs,
                self.layer,
                additional_forward_args=additional_forward_args,
                device_ids=self.device_ids,
                attribute_to_layer_input=attribute_to_layer_input,
                grad_enabled=grad_enabled,
            )
        except AssertionError as error:
            # Captum's capture helper reports these two conditions as AssertionErrors.
            message = str(error)
            if message.startswith("Forward hook did not obtain"):
                raise ValueError(
                    f"layer {type(self.layer).__name__} did not run during forward_func: pass a "
                    "module that the model calls (e.g. model.layer4, not a detached copy)"
                ) from None
            if message.startswith("Layer tensors are saved on multiple devices"):
                raise ValueError(
                    "the layer ran on several devices: pass device_ids (the DataParallel "
                    "device list) or the DataParallel model itself as forward_func"
                ) from None
            raise
        where = "input" if attribute_to_layer_input else "output"
        if len(captured) != 1:
            raise ValueError(
                f"the layer's {where} is a tuple of {len(captured)} tensors; FAM needs one "
                "(N, C, H, W) activation map: choose a layer with a single tensor " + where
            )
        activations = captured[0]
        n = inputs[0].shape[0]
        if activations.dim() != 4 or activations.shape[0] != n:
            raise ValueError(
                f"the layer's {where} has shape {tuple(activations.shape)}; FAM needs "
                f"(N={n}, C, H, W) activation maps: choose a convolutional layer"
            )
        if not bool(torch.isfinite(activations).all()):
            raise ValueError(
                f"the layer's {where} contains NaN or Inf for these inputs; check the model "
                "and its preprocessing"
            )
        return activations.to(torch.promote_types(activations.dtype, torch.float32))


FAM = FeatureActivationMap


def combine_activation_maps(
    activations: Tensor,
    weights: Tensor,
    relu_attributions: bool = True,
    normalize_weights: bool = True,
) -> Tensor:
    r"""Combine activation maps ``(N, C, H, W)`` with channel weights ``(N, C)``.

    Returns ``(N, 1, H, W)``: ``sum_k w'_k A[k]``, with ``w' = w / sum_k |w_k|`` per example
    when ``normalize_weights`` (all-zero weights stay zero) and a ReLU when
    ``relu_attributions``.
    """
    if normalize_weights:
        total = weights.abs().sum(dim=1, keepdim=True)
        weights = weights / total.clamp_min(torch.finfo(weights.dtype).tiny)
    maps = torch.einsum("nc,nchw->nhw", weights, activations).unsqueeze(1)
    return torch.relu(maps) if relu_attributions else maps


def _reference_forward_args(additional_forward_args: Any, n: int, m: int) -> Any:
    """Per-example arguments for the reference forward: the rows of each group's first input."""
    if additional_forward_args is None or m == n:
        return additional_forward_args
    step = n // m
    return tuple(
        arg[::step] if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == n else arg
        for arg in _format_additional_forward_args(additional_forward_args)
    )


def _pair_rows(embeddings: Tensor, n: int) -> Tensor:
    """Row i of the result is the reference of input i (M == 1, M == N or N % M == 0)."""
    m = embeddings.shape[0]
    if m == n:
        return embeddings
    if m == 1:
        return embeddings.expand(n, -1)
    return embeddings.repeat_interleave(n // m, dim=0)


def _first(inputs: TensorOrTuple) -> Tensor:
    return inputs if isinstance(inputs, Tensor) else inputs[0]
