"""The FAM engine: one implementation of the method that every entry point calls.

:class:`~captum_fam.FeatureActivationMap`, the task helpers, the metrics, the command line and
the dataset jobs all compute through an :class:`Engine` (``fam.engine``):

1. capture (:mod:`.capture`): the layer's value for one forward of this thread, stopping the
   forward right after the layer when nothing after it is needed;
2. the query side (:meth:`Engine.queries`): activations ``(N, C, *S)``, the (masked) pooled
   layer, the compared embeddings and the pull-back of output-space coefficients through the
   head (the layers after ``layer``);
3. references, foils and background sets (:mod:`.references`): checked before any forward,
   embedded, paired with the queries;
4. coefficients and weights: the similarity's channel coefficients, contrasted and pulled back
   (:meth:`Engine.channel_coefficients`), weighted by the one rule of
   :func:`captum_fam.similarity.channel_weights`;
5. combination (:mod:`.combine`): the weighted sum of activation maps, masked.

The engine holds no per-call state, so one engine serves concurrent calls from threads.

This module is mostly the :class:`Engine` class (about 500 lines with its docstrings): its
methods are the steps of one computation over one configuration, and the pieces that stand on
their own (capture, reading, pooling, references, pairs, combination) are modules beside it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor, nn

from captum_fam._checks import all_finite, check_choice
from captum_fam._compat import layer_eval_data_parallel, original_module
from captum_fam._engine.capture import LayerDidNotRun, capture_layer, run_forward
from captum_fam._engine.combine import combine_activation_maps
from captum_fam._engine.pooling import (
    PoolingMask,
    check_mask,
    check_mask_before_forward,
    mask_from_inputs,
    masked_mean,
)
from captum_fam._engine.reading import (
    EmbeddingKey,
    activations_of,
    caller_stacklevel,
    embedding_of,
    image_size,
    outside_inference_mode,
    single_tensor,
    where,
)
from captum_fam._engine.references import (
    References,
    pair_rows,
    plan_references,
    reference_forward_args,
    shared_forward_args,
)
from captum_fam.similarity import (
    WEIGHTINGS,
    Similarity,
    SimilarityFn,
    channel_weights,
    resolve_similarity,
)
from captum_fam.tokens import TokenLayout, resolve_token_layout

__all__ = [
    "EMBEDDINGS",
    "EmbeddingKey",
    "Engine",
    "Queries",
    "References",
    "combine_activation_maps",
    "pair_rows",
    "plan_references",
]

EMBEDDINGS = ("output", "layer")
"""Where the similarity is taken: the model's output (the default) or the pooled layer."""


@dataclass
class Queries:
    """The query side of FAM, computed once and shared by any number of references.

    Attributes:
        activations (Tensor): ``(N, C, *S)`` the layer's activations, float32 or wider.
        mask (Tensor or None): ``(N, *S)`` bool, the positions that pool (None: all).
        pooled (Tensor): ``(N, C)`` the (masked) mean of ``activations``.
        embeddings (Tensor): ``(N, D)`` what references are compared with: ``pooled`` or the
                    model's output.
        pull_back (Callable or None): Output-space coefficients ``(N, D)`` -> the layer's
                    channels ``(N, C)``, through the head; None when ``embeddings`` is
                    ``pooled``.
    """

    activations: Tensor
    mask: Tensor | None
    pooled: Tensor
    embeddings: Tensor
    pull_back: Callable[[Tensor], Tensor] | None

    @property
    def count(self) -> int:
        return int(self.activations.shape[0])


class Engine:
    r"""FAM's computation for one model, layer, similarity and weighting.

    Args:
        forward_func (Callable): The model, or a function running it: ``forward_func(*inputs,
                    *additional_forward_args)``.
        layer (nn.Module): The layer read.
        similarity (str, Similarity or Callable): As in ``FeatureActivationMap``.
        weighting (str): ``"reference"`` or ``"contribution"``.
        embedding (str): ``"output"`` or ``"layer"``.
        embedding_key (str, int or Callable, optional): Picks the embedding from a structured
                    output.
        token_layout (str or TokenLayout, optional): How the layer's tokens are laid out.
        device_ids (list[int], optional): DataParallel devices, as in Captum.
    """

    def __init__(
        self,
        forward_func: Callable[..., Any],
        layer: nn.Module,
        similarity: str | Similarity | SimilarityFn = "cosine",
        weighting: str = "reference",
        embedding: str = "output",
        embedding_key: EmbeddingKey = None,
        token_layout: str | TokenLayout | None = None,
        device_ids: list[int] | None = None,
    ) -> None:
        if not isinstance(layer, nn.Module):
            raise TypeError(
                f"layer must be a torch.nn.Module of the model; got {type(layer).__name__}"
            )
        if not callable(forward_func):
            raise TypeError(f"forward_func must be callable; got {type(forward_func).__name__}")
        if isinstance(embedding_key, bool) or not (
            embedding_key is None
            or isinstance(embedding_key, (str, int))
            or callable(embedding_key)
        ):
            raise TypeError(
                "embedding_key must be a key or attribute name (str), a tuple index (int) "
                f"or a callable output -> (N, D) tensor; got {type(embedding_key).__name__}"
            )
        self.forward_func = forward_func
        self.layer = layer
        self.similarity = resolve_similarity(similarity)
        self.weighting = check_choice(weighting, WEIGHTINGS, "weighting")
        self.embedding = check_choice(embedding, EMBEDDINGS, "embedding")
        self.embedding_key = embedding_key
        self.device_ids = device_ids
        layout = resolve_token_layout(token_layout)
        patch_size = getattr(forward_func, "patch_size", None)
        if (
            layout is not None
            and not layout.sequence
            and layout.patch_size is None
            and layout.grid is None
            and isinstance(patch_size, int)
        ):
            layout = replace(layout, patch_size=patch_size)
        self.token_layout = layout
        self._data_parallel = device_ids is not None or isinstance(forward_func, nn.DataParallel)
        self._early_exit = True
        self._said: set[str] = set()

    # ----------------------------------------------------------------------------------------
    # Forwards

    def embed(
        self,
        inputs: tuple[Tensor, ...],
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        pooling_mask: PoolingMask = None,
        role: str = "inputs",
        grad_enabled: bool = False,
    ) -> Tensor:
        """``(N, D)`` embeddings in the compared space, float32 or wider.

        With ``embedding="layer"`` the forward stops after the layer. ``grad_enabled`` keeps
        the graph to the inputs, for gradient methods explaining the same score.
        """
        check_mask_before_forward(pooling_mask, inputs, role)
        if self.embedding == "output":
            with torch.set_grad_enabled(grad_enabled):
                output = run_forward(self.forward_func, inputs, additional_forward_args)
            return embedding_of(output, self.embedding_key, inputs[0].shape[0])
        activations, mask = self._activations(
            inputs, additional_forward_args, attribute_to_layer_input, pooling_mask, role,
            grad_enabled,
        )  # fmt: skip
        return masked_mean(activations, mask)

    def queries(
        self,
        inputs: tuple[Tensor, ...],
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        pooling_mask: PoolingMask = None,
    ) -> Queries:
        """The query side: one forward (stopped after the layer for ``embedding="layer"``)."""
        check_mask_before_forward(pooling_mask, inputs, "inputs")
        if self.embedding == "layer":
            activations, mask = self._activations(
                inputs, additional_forward_args, attribute_to_layer_input, pooling_mask
            )
            pooled = masked_mean(activations, mask)
            return Queries(activations, mask, pooled, pooled, None)
        return self._queries_through_head(
            inputs, additional_forward_args, attribute_to_layer_input, pooling_mask
        )

    def _activations(
        self,
        inputs: tuple[Tensor, ...],
        additional_forward_args: Any,
        attribute_to_layer_input: bool,
        pooling_mask: PoolingMask,
        role: str = "inputs",
        grad_enabled: bool = False,
    ) -> tuple[Tensor, Tensor | None]:
        """The layer's ``(N, C, *S)`` activations and their pooling mask."""
        with torch.set_grad_enabled(grad_enabled):
            value = self._layer_value(inputs, additional_forward_args, attribute_to_layer_input)
        activations = activations_of(
            value, inputs, self.token_layout, attribute_to_layer_input, self._say
        )
        if not all_finite(activations):
            raise ValueError(
                f"the layer's {where(attribute_to_layer_input)} contains NaN or Inf for these "
                "inputs; check the model and its preprocessing"
            )
        return activations, self._mask(pooling_mask, inputs, activations, role)

    def _layer_value(
        self, inputs: tuple[Tensor, ...], additional_forward_args: Any, to_input: bool
    ) -> tuple[Any, ...]:
        if self._data_parallel:
            return layer_eval_data_parallel(
                self.forward_func, inputs, self.layer, additional_forward_args, self.device_ids,
                to_input, torch.is_grad_enabled(), self._did_not_run,
            )  # fmt: skip
        try:
            captured = capture_layer(
                self._capture_runner(),
                self.layer,
                inputs,
                additional_forward_args,
                attribute_to_layer_input=to_input,
                stop_early=self._early_exit,
            )
        except LayerDidNotRun:
            raise ValueError(self._did_not_run()) from None
        if captured.swallowed_stop:
            self._early_exit = False
            self._say(
                "the model caught the exception FAM raises to stop the forward after the layer "
                "and ran to the end; FAM now runs full forwards for this model (same maps, "
                "more time)"
            )
        return captured.value

    def _queries_through_head(
        self,
        inputs: tuple[Tensor, ...],
        additional_forward_args: Any,
        to_input: bool,
        pooling_mask: PoolingMask,
    ) -> Queries:
        """One forward that records the head (the model after the layer) for a backward."""
        runner = self._capture_runner()
        if self._data_parallel:
            if not isinstance(self.forward_func, nn.DataParallel):
                raise ValueError(
                    "embedding='output' with device_ids: pass the DataParallel model itself "
                    "as forward_func (FAM runs its module for the query side), or use "
                    "embedding='layer'"
                )
            runner = self.forward_func.module
        n = inputs[0].shape[0]
        with outside_inference_mode() as usable, torch.no_grad():
            inputs, additional_forward_args = usable(inputs), usable(additional_forward_args)
            try:
                captured = capture_layer(
                    runner,
                    self.layer,
                    inputs,
                    additional_forward_args,
                    attribute_to_layer_input=to_input,
                    restart_graph=lambda value: single_tensor(value, to_input),
                )
            except LayerDidNotRun:
                raise ValueError(self._did_not_run()) from None
            with torch.enable_grad():  # selecting and promoting the output stay on the graph
                output = embedding_of(captured.output, self.embedding_key, n)
        leaf = captured.leaf
        assert leaf is not None
        activations = activations_of(
            (leaf.detach(),), inputs, self.token_layout, to_input, self._say
        )
        mask = self._mask(pooling_mask, inputs, activations, "inputs")
        unrelated = ValueError(
            "embedding='output': the model's output does not depend on the layer's "
            f"{where(to_input)}; choose a layer on the path to the output"
        )
        if not output.requires_grad:
            raise unrelated
        grid_size = image_size(inputs)

        def pull_back(coefficients: Tensor) -> Tensor:
            with outside_inference_mode():
                (gradient,) = torch.autograd.grad(
                    output,
                    leaf,
                    coefficients.to(output.dtype),
                    retain_graph=True,
                    allow_unused=True,
                )
            if gradient is None:
                raise unrelated
            # For o = head(mean A): the sum over positions of do/dA is do/de, the head's
            # Jacobian. Prefix tokens count: a class-token head has its whole gradient there.
            if self.token_layout is not None:
                summed = self.token_layout.position_sum(gradient, grid_size)
            else:
                summed = gradient.flatten(2).sum(dim=2)
            return summed.to(activations.dtype)

        pooled = masked_mean(activations, mask)
        return Queries(activations, mask, pooled, output.detach(), pull_back)

    def _mask(
        self,
        pooling_mask: PoolingMask,
        inputs: tuple[Tensor, ...],
        activations: Tensor,
        role: str,
    ) -> Tensor | None:
        raw = mask_from_inputs(pooling_mask, inputs, role)
        if raw is None:
            return None
        shape = (activations.shape[0], *activations.shape[2:])
        return check_mask(raw, shape, role).to(activations.device)

    def _capture_runner(self) -> Callable[..., Any]:
        original = original_module(self.forward_func)
        if original is None:
            return self.forward_func
        self._say(
            "forward_func is compiled with torch.compile, and module hooks do not fire inside "
            "a compiled graph: FAM reads the layer by running the original module (eagerly) "
            "for the query side"
        )
        return original

    # ----------------------------------------------------------------------------------------
    # References

    def rows(
        self,
        plan: References,
        query_embeddings: Tensor,
        additional_forward_args: Any = None,
        attribute_to_layer_input: bool = False,
        pooling_mask: PoolingMask = None,
    ) -> Tensor:
        """Reference embeddings paired with the queries ``(N, D)``; ``(K, D)`` for a set."""
        n = query_embeddings.shape[0]
        if plan.inputs is not None:
            m = plan.size
            args = (
                reference_forward_args(additional_forward_args, n, m)
                if not plan.shared
                else shared_forward_args(additional_forward_args, n, plan.role)
            )
            embeddings = self.embed(
                plan.inputs, args, attribute_to_layer_input, pooling_mask, plan.role
            )
        else:
            assert plan.embeddings is not None
            embeddings = plan.embeddings
            if embeddings.shape[1] != query_embeddings.shape[1]:
                space = "model output" if self.embedding == "output" else "layer"
                raise ValueError(
                    f"{plan.role}_embeddings have {embeddings.shape[1]} channels but the "
                    f"{space} has {query_embeddings.shape[1]}: embeddings must live in the "
                    "space of fam.embed"
                )
        embeddings = embeddings.to(device=query_embeddings.device, dtype=query_embeddings.dtype)
        if plan.shared:
            return embeddings
        rows = pair_rows(embeddings, n)
        self.similarity.validate(query_embeddings, rows)
        return rows

    # ----------------------------------------------------------------------------------------
    # Coefficients, weights, maps

    def scores(self, query_embeddings: Tensor, rows: Tensor) -> Tensor:
        """``(N,)`` similarities of paired rows."""
        return self.similarity.score(query_embeddings, rows)

    def score_matrix(self, query_embeddings: Tensor, rows: Tensor) -> Tensor:
        """``(N, K)`` similarities of every query with every row of ``rows (K, D)``."""
        n, k = query_embeddings.shape[0], rows.shape[0]
        queries = query_embeddings.repeat_interleave(k, dim=0)
        candidates = rows.repeat(n, 1)
        self.similarity.validate(queries, candidates)
        return self.similarity.score(queries, candidates).reshape(n, k)

    def output_coefficients(
        self,
        queries: Queries,
        rows: Tensor,
        foil_rows: Tensor | None = None,
        background: Tensor | None = None,
    ) -> Tensor:
        """``(N, D)`` coefficients of the explained score in the compared space.

        The score is ``s(q, r)``, minus ``s(q, f)`` with a foil, minus the mean of ``s(q, b)``
        over a background set ``(K, D)``: what the reference shares with the foil or with
        typical items cancels.
        """
        coefficients = self.similarity.coefficients(queries.embeddings, rows)
        if foil_rows is not None:
            coefficients = coefficients - self.similarity.coefficients(
                queries.embeddings, foil_rows
            )
        if background is not None:
            n, k = queries.count, background.shape[0]
            embeddings = queries.embeddings.repeat_interleave(k, dim=0)
            items = background.repeat(n, 1)
            self.similarity.validate(embeddings, items)
            per_item = self.similarity.coefficients(embeddings, items)
            coefficients = coefficients - per_item.reshape(n, k, -1).mean(dim=1)
        return coefficients

    def channel_coefficients(self, queries: Queries, output_coefficients: Tensor) -> Tensor:
        """Output-space coefficients pulled back to the layer's channels ``(N, C)``."""
        if queries.pull_back is None:
            return output_coefficients
        return queries.pull_back(output_coefficients)

    def maps(
        self,
        queries: Queries,
        channel_coefficients: Tensor,
        relu_attributions: bool = True,
        normalize_weights: bool = True,
    ) -> Tensor:
        """``(N, 1, *S)`` maps from channel coefficients; masked positions are exactly 0."""
        weights = channel_weights(queries.pooled, channel_coefficients, self.weighting)
        maps = combine_activation_maps(
            queries.activations, weights, relu_attributions, normalize_weights
        )
        if queries.mask is not None:
            maps = torch.where(queries.mask.unsqueeze(1), maps, torch.zeros((), dtype=maps.dtype))
        return maps

    def explain(
        self,
        queries: Queries,
        rows: Tensor,
        foil_rows: Tensor | None = None,
        background: Tensor | None = None,
        relu_attributions: bool = True,
        normalize_weights: bool = True,
    ) -> Tensor:
        """Maps of prepared queries against paired reference rows (and a foil or background)."""
        coefficients = self.output_coefficients(queries, rows, foil_rows, background)
        return self.maps(
            queries,
            self.channel_coefficients(queries, coefficients),
            relu_attributions,
            normalize_weights,
        )

    # ----------------------------------------------------------------------------------------

    def _say(self, message: str) -> None:
        """Warn once per engine (a server calling FAM in a loop hears it once)."""
        if message not in self._said:
            self._said.add(message)
            warnings.warn(message, stacklevel=caller_stacklevel())

    def _did_not_run(self) -> str:
        return (
            f"layer {type(self.layer).__name__} did not run during forward_func: pass a module "
            "that the model calls (e.g. model.layer4, not a detached copy). A model compiled "
            "with torch.compile must be passed itself (FAM runs its original module), not "
            "inside a function; a TorchScript model cannot be hooked inside"
        )
