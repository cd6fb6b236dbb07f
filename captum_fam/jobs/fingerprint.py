"""The fingerprint of a job: every setting that must not change between a run and its resume.

A resumed job keeps the chunks an earlier run completed, so that run and this one must compute
the same thing: the same model weights (a digest of the state dict), layer, similarity,
weighting, embedding, reference embeddings, dataset length and item form, store layout and
world size. Any difference stops the rerun with a message naming the settings that differ.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from captum_fam.jobs.distributed import DistributedContext

__all__ = [
    "check_ranks_agree",
    "differences",
    "explainer_settings",
    "layer_name",
    "model_digest",
    "similarity_digest",
    "tensor_digest",
]


def _update(digest: Any, tensor: Tensor) -> None:
    flat = tensor.detach().to("cpu").contiguous().reshape(-1)
    digest.update(f"{flat.dtype}{tuple(tensor.shape)}".encode())
    digest.update(flat.view(torch.uint8).numpy().tobytes())


def tensor_digest(tensors: Iterable[Tensor]) -> str:
    """SHA-256 (hex, 16 characters) of tensors' dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for tensor in tensors:
        _update(digest, tensor)
    return digest.hexdigest()[:16]


def model_digest(model: Any) -> str:
    """SHA-256 of a model's state dict (names, dtypes, shapes, values); '' for a function."""
    if not isinstance(model, nn.Module):
        return ""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        _update(digest, tensor)
    return digest.hexdigest()[:16]


def layer_name(model: Any, layer: nn.Module) -> str:
    """The layer's dotted name in the model (its class name when the model is a function)."""
    if isinstance(model, nn.Module):
        for name, module in model.named_modules():
            if module is layer:
                return name or "<model>"
    return type(layer).__name__


def similarity_digest(similarity: Any) -> str:
    """The similarity's repr, with a digest of any tensors it holds (a learned metric)."""
    tensors = [v for v in vars(similarity).values() if isinstance(v, Tensor)]
    return repr(similarity) + (f"[{tensor_digest(tensors)}]" if tensors else "")


def differences(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """``"name (store: a, now: b)"`` for every setting that differs."""
    return [
        f"{key} (store: {stored.get(key)!r}, now: {current.get(key)!r})"
        for key in sorted(set(stored) | set(current))
        if stored.get(key) != current.get(key)
    ]


def explainer_settings(
    engine: Any, relu_attributions: bool, normalize_weights: bool, pooling_mask: int | None
) -> dict[str, Any]:
    """The explainer's part of the fingerprint: the model, the layer and the method."""
    return {
        "model": model_digest(engine.forward_func),
        "layer": layer_name(engine.forward_func, engine.layer),
        "similarity": similarity_digest(engine.similarity),
        "weighting": engine.weighting,
        "embedding": engine.embedding,
        "embedding_key": _describe(engine.embedding_key),
        "token_layout": repr(engine.token_layout),
        "relu_attributions": bool(relu_attributions),
        "normalize_weights": bool(normalize_weights),
        "pooling_mask": pooling_mask,
    }


def check_ranks_agree(fingerprint: dict[str, Any], context: DistributedContext) -> None:
    """Every rank must run the same job (same weights, references, ...): a ValueError on all
    ranks names what differs."""
    gathered = context.all_gather_object(fingerprint)
    for rank, other in enumerate(gathered):
        if other != fingerprint:
            raise ValueError(
                f"rank {rank} runs another job than rank {context.rank}: "
                + "; ".join(differences(other, fingerprint))  # type: ignore[arg-type]
            )


def _describe(key: Any) -> str | int | None:
    if key is None or isinstance(key, (str, int)):
        return key
    return getattr(key, "__qualname__", type(key).__name__)
