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

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any, NamedTuple, cast

import torch
from captum._utils.common import _format_additional_forward_args, _run_forward
from captum._utils.gradient import _forward_layer_eval
from captum.attr import LayerAttribution
from captum.log import log_usage
from torch import Tensor
from torch.nn import Module

from captum_fam._checks import (
    TensorOrTuple,
    all_finite,
    check_choice,
    check_pairing,
    format_batch,
    format_embeddings,
    one_of,
)
from captum_fam.similarity import WEIGHTINGS, Similarity, SimilarityFn, resolve_similarity
from captum_fam.tokens import TokenLayout, resolve_token_layout

__all__ = ["EMBEDDINGS", "FAM", "FeatureActivationMap", "combine_activation_maps"]

EMBEDDINGS = ("layer", "output")


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

    - ``weighting="reference"`` (the default; the CAM analogue): ``w_k = d s / d e_q[k]`` with
      the norms held fixed; for cosine ``e_r[k] / (|e_q| |e_r|)``. Without ReLU and
      normalization, the spatial mean of the map equals the score exactly. On the shapes
      benchmark it points at the right object more often than the paper's reading
      (docs/benchmarks.md).
    - ``weighting="contribution"`` (the paper's wording): ``w_k`` is the k-th term of the
      score's sum over channels; for cosine ``e_q[k] e_r[k] / (|e_q| |e_r|)``. The weights
      sum to the score.

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
        weighting (str, optional): ``"reference"`` or ``"contribution"``, as above.
                    Default: ``"reference"``
        device_ids (list[int], optional): Device ID list, necessary only if forward_func
                    applies a DataParallel model, which allows reconstruction of
                    intermediate outputs from batched results across devices.
                    If forward_func is given as the DataParallel model itself,
                    then it is not necessary to provide this argument.
        token_layout (str or TokenLayout, optional): For transformer layers: ``"auto"`` reads
                    ``(N, T, C)`` tokens (prefix tokens dropped, grid inferred from the token
                    count, the input size or the model's ``patch_size``) and channels-last
                    ``(N, h, w, C)`` grids as maps; a :class:`~captum_fam.tokens.TokenLayout`
                    states the layout explicitly. Default: None (the layer must give
                    ``(N, C, H, W)``)
        embedding (str, optional): Where the similarity is taken. ``"layer"``: on the layer's
                    pooled activations (exact decompositions). ``"output"``: on the model's
                    output, after a projection head; the output-space coefficients are mapped
                    back to the layer's channels through the head alone (one backward through
                    the layers after ``layer``, never through the backbone). Exact for linear
                    heads, first-order for non-linear ones. Default: ``"layer"``

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
        embedding: str = "layer",
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
        self.embedding = check_choice(embedding, EMBEDDINGS, "embedding")
        self.token_layout = resolve_token_layout(token_layout)
        patch_size = getattr(forward_func, "patch_size", None)
        if (
            self.token_layout is not None
            and self.token_layout.patch_size is None
            and self.token_layout.grid is None
            and isinstance(patch_size, int)
        ):
            self.token_layout = replace(self.token_layout, patch_size=patch_size)
        self._told_prefix = False

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
                        ``(M, D)`` or ``(D,)`` in the space of :meth:`embed` (the layer's
                        pooled channels; the model's output with ``embedding="output"``):
                        class prototypes, cached gallery vectors. Same M rule.
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
                        reference rather than the foil": foil images (same M rule), whose
                        channel weights are subtracted from the reference's, so that what the
                        two share cancels. Default: None
            foil_embeddings (Tensor, optional): The foil as embeddings. At most one of
                        ``foil`` and ``foil_embeddings``. Default: None

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
            >>> # why a cat rather than a dog
            >>> maps = fam.attribute(queries, reference_embeddings=prototypes[cat],
            ...                      foil_embeddings=prototypes[dog])
            >>> # smoothed, as any Captum method
            >>> maps = NoiseTunnel(fam).attribute(
            ...     queries, nt_type="smoothgrad", nt_samples=8, stdevs=0.1,
            ...     reference_embeddings=prototypes[labels])
        """
        if foil is not None and foil_embeddings is not None:
            raise ValueError("give at most one of foil or foil_embeddings; got both")
        with torch.no_grad():
            batch = format_batch(inputs, "inputs")
            n = batch[0].shape[0]
            plan = self._plan_references(n, batch, reference, reference_embeddings, "reference")
            foil_plan = (
                None
                if foil is None and foil_embeddings is None
                else self._plan_references(n, batch, foil, foil_embeddings, "foil")
            )
            queries = self._queries(batch, additional_forward_args, attribute_to_layer_input)
            rows = self._reference_rows(
                plan, queries, additional_forward_args, attribute_to_layer_input
            )
            foil_rows = (
                None
                if foil_plan is None
                else self._reference_rows(
                    foil_plan, queries, additional_forward_args, attribute_to_layer_input
                )
            )
            maps = self._maps(queries, rows, foil_rows, relu_attributions, normalize_weights)
        return maps.to(batch[0].device)

    def _maps(
        self,
        queries: _Queries,
        rows: Tensor,
        foil_rows: Tensor | None = None,
        relu_attributions: bool = True,
        normalize_weights: bool = True,
    ) -> Tensor:
        """(N, 1, H, W) maps of prepared queries against reference rows (minus foil rows)."""
        coefficients = queries.coefficients(self.similarity, rows)
        if foil_rows is not None:
            coefficients = coefficients - queries.coefficients(self.similarity, foil_rows)
        return self._maps_from_coefficients(
            queries, coefficients, relu_attributions, normalize_weights
        )

    def _maps_from_coefficients(
        self,
        queries: _Queries,
        coefficients: Tensor,
        relu_attributions: bool = True,
        normalize_weights: bool = True,
    ) -> Tensor:
        weights = queries.weights(coefficients, self.weighting)
        return combine_activation_maps(
            queries.activations, weights, relu_attributions, normalize_weights
        )

    @torch.no_grad()
    def similarity_scores(
        self,
        inputs: TensorOrTuple,
        reference: TensorOrTuple | None = None,
        reference_embeddings: Tensor | None = None,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
    ) -> Tensor:
        r"""The similarity scores that :meth:`attribute` explains, one per input.

        Takes the arguments of :meth:`attribute` that define the pairs. No graph is built;
        :func:`captum_fam.metrics.similarity_forward` gives the same scores as a
        differentiable forward for gradient methods (Integrated Gradients, Grad-CAM).

        Returns:
            *Tensor* ``(N,)`` of scores on the inputs' device.

        Examples::

            >>> scores = fam.similarity_scores(queries, reference=references)
        """
        return self._scores(
            inputs, reference, reference_embeddings, additional_forward_args,
            attribute_to_layer_input,
        )  # fmt: skip

    def _scores(
        self,
        inputs: TensorOrTuple,
        reference: TensorOrTuple | None,
        reference_embeddings: Tensor | None,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
    ) -> Tensor:
        """Scores with a graph to the inputs when gradients are enabled."""
        batch = format_batch(inputs, "inputs")
        n = batch[0].shape[0]
        plan = self._plan_references(n, batch, reference, reference_embeddings, "reference")
        query = self._embed(
            batch, additional_forward_args, attribute_to_layer_input, torch.is_grad_enabled()
        )
        rows = self._reference_rows(plan, query, additional_forward_args, attribute_to_layer_input)
        return self.similarity.score(query, rows).to(batch[0].device)

    @torch.no_grad()
    def embed(
        self,
        inputs: TensorOrTuple,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
    ) -> Tensor:
        r"""Embeddings ``(N, D)`` in the space references are compared in.

        The layer's pooled channels (``embedding="layer"``, D = C) or the model's output
        (``embedding="output"``). Cache them for a gallery or average them into class
        prototypes, then pass them as ``reference_embeddings``.

        Examples::

            >>> prototypes = torch.stack([fam.embed(support[labels == c]).mean(0)
            ...                           for c in classes])
        """
        batch = format_batch(inputs, "inputs")
        embeddings = self._embed(batch, additional_forward_args, attribute_to_layer_input)
        return embeddings.to(batch[0].device)

    def _plan_references(
        self,
        n: int,
        batch: tuple[Tensor, ...],
        images: TensorOrTuple | None,
        embeddings: Tensor | None,
        role: str,
    ) -> _References:
        """Check a reference (or foil) argument pair before any forward runs."""
        one_of(images, embeddings, (role, f"{role}_embeddings"))
        if images is not None:
            references = format_batch(images, role)
            if len(references) != len(batch):
                raise ValueError(
                    f"{role} must be structured like inputs: {len(batch)} tensor(s); "
                    f"got {len(references)}"
                )
            check_pairing(n, references[0].shape[0], role)
            return _References(role, references, None)
        rows = format_embeddings(embeddings, f"{role}_embeddings")
        check_pairing(n, rows.shape[0], f"{role}_embeddings")
        return _References(role, None, rows)

    def _reference_rows(
        self,
        plan: _References,
        queries: _Queries | Tensor,
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
    ) -> Tensor:
        """The reference of each query, (N, D), validated against the query embeddings."""
        query = queries.embeddings if isinstance(queries, _Queries) else queries
        n = query.shape[0]
        if plan.images is not None:
            m = plan.images[0].shape[0]
            reference_args = _reference_forward_args(additional_forward_args, n, m)
            embeddings = self._embed(plan.images, reference_args, attribute_to_layer_input)
        else:
            embeddings = cast(Tensor, plan.embeddings)
            if embeddings.shape[1] != query.shape[1]:
                space = "model output" if self.embedding == "output" else "layer"
                raise ValueError(
                    f"{plan.role}_embeddings have {embeddings.shape[1]} channels but the {space} "
                    f"has {query.shape[1]}: embeddings must live in the space of fam.embed"
                )
        rows = _pair_rows(embeddings.to(device=query.device, dtype=query.dtype), n)
        self.similarity.validate(query, rows)
        return rows

    def _embed(
        self,
        inputs: tuple[Tensor, ...],
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        grad_enabled: bool = False,
    ) -> Tensor:
        if self.embedding == "output":
            with torch.set_grad_enabled(grad_enabled):
                output = _run_forward(self.forward_func, inputs, None, additional_forward_args)
            return _check_output(output, inputs[0].shape[0])
        activations = self._activations(
            inputs, additional_forward_args, attribute_to_layer_input, grad_enabled
        )
        return activations.mean(dim=(2, 3))

    def _queries(
        self,
        inputs: tuple[Tensor, ...],
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
    ) -> _Queries:
        """The query side of FAM: activations, embeddings and the way back to the channels."""
        if self.embedding == "layer":
            activations = self._activations(
                inputs, additional_forward_args, attribute_to_layer_input
            )
            pooled = activations.mean(dim=(2, 3))
            return _Queries(activations, pooled, pooled, None)
        return self._queries_through_head(inputs, additional_forward_args, attribute_to_layer_input)

    def _queries_through_head(
        self,
        inputs: tuple[Tensor, ...],
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
    ) -> _Queries:
        """One forward that records the head (the model after the layer) for a backward."""
        if torch.is_inference_mode_enabled():
            raise RuntimeError(
                "embedding='output' maps weights back through the head with a backward pass, "
                "which torch.inference_mode forbids: call it under torch.no_grad instead"
            )
        captured: dict[str, Tensor] = {}

        def restart_graph(value: Any) -> Tensor:
            tensors = value if isinstance(value, (tuple, list)) else (value,)
            leaf = self._single(tensors, attribute_to_layer_input).detach().requires_grad_(True)
            captured["leaf"] = leaf
            # From here on the forward is the head: record it (the backbone ran without a graph).
            torch.set_grad_enabled(True)
            return leaf.clone()  # a non-leaf, so that in-place ops downstream stay legal

        if attribute_to_layer_input:
            handle = self.layer.register_forward_pre_hook(
                lambda module, args: (restart_graph(args), *args[1:])
            )
        else:
            handle = self.layer.register_forward_hook(
                lambda module, args, output: restart_graph(output)
            )
        try:
            with torch.no_grad():  # restores the caller's grad mode on exit
                output = _run_forward(self.forward_func, inputs, None, additional_forward_args)
        finally:
            handle.remove()
        if "leaf" not in captured:
            raise ValueError(self._did_not_run())
        n = inputs[0].shape[0]
        output = _check_output(output, n)
        leaf = captured["leaf"]
        activations, _ = self._as_grid(leaf.detach(), inputs, attribute_to_layer_input)
        unrelated = ValueError(
            "embedding='output': the model's output does not depend on the layer's "
            f"{_where(attribute_to_layer_input)}; choose a layer on the path to the output"
        )
        if not output.requires_grad:
            raise unrelated

        def pull_back(output_coefficients: Tensor) -> Tensor:
            (gradient,) = torch.autograd.grad(
                output,
                leaf,
                output_coefficients.to(output.dtype),
                retain_graph=True,
                allow_unused=True,
            )
            if gradient is None:
                raise unrelated
            grid, _ = self._as_grid(gradient, inputs, attribute_to_layer_input, quiet=True)
            # For o = head(mean A): the spatial sum of do/dA is do/de, the head's Jacobian.
            return grid.sum(dim=(2, 3))

        return _Queries(activations, activations.mean(dim=(2, 3)), output.detach(), pull_back)

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
                raise ValueError(self._did_not_run()) from None
            if message.startswith("Layer tensors are saved on multiple devices"):
                raise ValueError(
                    "the layer ran on several devices: pass device_ids (the DataParallel "
                    "device list) or the DataParallel model itself as forward_func"
                ) from None
            raise
        activations = self._single(captured, attribute_to_layer_input)
        activations, _ = self._as_grid(activations, inputs, attribute_to_layer_input)
        if not all_finite(activations):
            raise ValueError(
                f"the layer's {_where(attribute_to_layer_input)} contains NaN or Inf for these "
                "inputs; check the model and its preprocessing"
            )
        return activations

    def _single(self, tensors: Any, attribute_to_layer_input: bool) -> Tensor:
        if len(tensors) != 1 or not isinstance(tensors[0], Tensor):
            where = _where(attribute_to_layer_input)
            raise ValueError(
                f"the layer's {where} is a tuple of {len(tensors)} values; FAM needs one "
                "(N, C, H, W) activation map: choose a layer with a single tensor " + where
            )
        return tensors[0]

    def _as_grid(
        self,
        activations: Tensor,
        inputs: tuple[Tensor, ...],
        attribute_to_layer_input: bool,
        quiet: bool = False,
    ) -> tuple[Tensor, int]:
        """(N, C, H, W) in float32 or wider, reading tokens through the token layout."""
        n = inputs[0].shape[0]
        prefix = 0
        if self.token_layout is not None and activations.shape[:1] == (n,):
            height, width = inputs[0].shape[-2:]
            activations, prefix = self.token_layout.to_grid(activations, (height, width))
            if prefix and not quiet and not self._told_prefix:
                self._told_prefix = True
                warnings.warn(
                    f"token layout: dropped {prefix} prefix token(s) (class/register tokens) "
                    f"and read the rest as a {tuple(activations.shape[-2:])} grid",
                    stacklevel=4,
                )
        if activations.dim() != 4 or activations.shape[0] != n:
            hint = (
                "declare token_layout='auto' for transformer tokens (N, T, C)"
                if activations.dim() == 3
                else "choose a convolutional layer"
            )
            raise ValueError(
                f"the layer's {_where(attribute_to_layer_input)} has shape "
                f"{tuple(activations.shape)}; FAM needs (N={n}, C, H, W) activation maps: {hint}"
            )
        return activations.to(torch.promote_types(activations.dtype, torch.float32)), prefix

    def _did_not_run(self) -> str:
        return (
            f"layer {type(self.layer).__name__} did not run during forward_func: pass a "
            "module that the model calls (e.g. model.layer4, not a detached copy)"
        )


class _References(NamedTuple):
    """A checked reference (or foil) argument: images to embed, or embeddings."""

    role: str  # "reference" or "foil", for error messages
    images: tuple[Tensor, ...] | None
    embeddings: Tensor | None


@dataclass
class _Queries:
    """The query side of FAM, computed once and shared by any number of references."""

    activations: Tensor  # (N, C, H, W)
    pooled: Tensor  # (N, C): the layer's embedding
    embeddings: Tensor  # (N, D): what references are compared with
    pull_back: Callable[[Tensor], Tensor] | None  # output-space coefficients -> channels

    def coefficients(self, similarity: Similarity, rows: Tensor) -> Tensor:
        """Channel coefficients (N, C) of the similarity to reference rows (N, D)."""
        coefficients = similarity.coefficients(self.embeddings, rows)
        return coefficients if self.pull_back is None else self.pull_back(coefficients)

    def weights(self, coefficients: Tensor, weighting: str) -> Tensor:
        return coefficients if weighting == "reference" else self.pooled * coefficients


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


def _check_output(output: Any, n: int) -> Tensor:
    if not isinstance(output, Tensor) or output.dim() != 2 or output.shape[0] != n:
        shape = tuple(output.shape) if isinstance(output, Tensor) else type(output).__name__
        raise ValueError(
            f"embedding='output' needs the model to return (N={n}, D) embeddings; got {shape}"
        )
    if not all_finite(output):
        raise ValueError("the model's output contains NaN or Inf for these inputs")
    return output.to(torch.promote_types(output.dtype, torch.float32))


def _where(attribute_to_layer_input: bool) -> str:
    return "input" if attribute_to_layer_input else "output"
