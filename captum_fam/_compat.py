"""Every use of Captum and torch internals, in one place.

captum-fam is a Captum plugin and uses a few of Captum's private helpers; torch keeps compiled
modules behind a private class. When either library changes under us, this is the one module to
adapt, and ``tests/test_compat.py`` fails loudly, naming what moved, before anything else does.

Tested with Captum 0.9 (:data:`TESTED_CAPTUM`) and torch 2.14.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from captum._utils.common import _format_additional_forward_args
from captum._utils.gradient import _forward_layer_eval
from captum.log import log_usage
from captum.metrics._core.sensitivity import default_perturb_func
from torch import Tensor, nn

__all__ = [
    "TESTED_CAPTUM",
    "default_perturb_func",
    "format_additional_forward_args",
    "layer_eval_data_parallel",
    "log_usage",
    "original_module",
]

TESTED_CAPTUM = ("0.9",)
"""Captum minor versions the test suite runs against."""

# Captum's layer-capture helper reports these two conditions as AssertionErrors.
_DID_NOT_RUN = "Forward hook did not obtain"
_SEVERAL_DEVICES = "Layer tensors are saved on multiple devices"


def format_additional_forward_args(additional_forward_args: Any) -> tuple[Any, ...]:
    """Captum's convention: None -> (), a tuple stays, anything else becomes a 1-tuple."""
    return _format_additional_forward_args(additional_forward_args) or ()


def layer_eval_data_parallel(
    forward_func: Callable[..., Any],
    inputs: tuple[Tensor, ...],
    layer: nn.Module,
    additional_forward_args: Any,
    device_ids: list[int] | None,
    attribute_to_layer_input: bool,
    grad_enabled: bool,
    did_not_run: Callable[[], str],
) -> tuple[Any, ...]:
    """The layer's value gathered across DataParallel replicas (Captum's capture helper).

    Replicas run in worker threads, one per device; Captum keys their values by device and
    concatenates them in ``device_ids`` order. Captum's assertions become ValueErrors.
    """
    try:
        return _forward_layer_eval(
            forward_func,
            inputs,
            layer,
            additional_forward_args=additional_forward_args,
            device_ids=device_ids,
            attribute_to_layer_input=attribute_to_layer_input,
            grad_enabled=grad_enabled,
        )
    except AssertionError as error:
        message = str(error)
        if message.startswith(_DID_NOT_RUN):
            raise ValueError(did_not_run()) from None
        if message.startswith(_SEVERAL_DEVICES):
            raise ValueError(
                "the layer ran on several devices: pass device_ids (the DataParallel device "
                "list) or the DataParallel model itself as forward_func"
            ) from None
        raise


def original_module(forward_func: Any) -> nn.Module | None:
    """The eager module behind a module compiled by ``torch.compile``; None if not compiled.

    Module hooks do not fire inside a compiled graph, so layer capture runs the original.
    """
    if isinstance(forward_func, nn.Module):
        original = getattr(forward_func, "_orig_mod", None)
        if isinstance(original, nn.Module):
            return original
    return None
