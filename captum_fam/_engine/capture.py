"""Reading one layer during a forward: this call's forward only, stopping early where allowed.

A forward hook on a shared module sees every forward that runs through it, from any thread. Each
capture therefore registers its own hook that records only the forward of the thread that
registered it, so that concurrent calls on one model (a server's threads) each read their own
activations. DataParallel runs its replicas in worker threads, one per device: those forwards
are read through Captum's device-keyed capture instead (:mod:`captum_fam._compat`), which is not
safe to share across threads.

When only the layer's value is needed, the hook stops the forward with a private exception right
after the layer, so that the layers after it never run. A model that catches the exception and
carries on is detected: its forward returned anyway, the value is still correct, and the caller
falls back to full forwards.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from captum_fam._compat import format_additional_forward_args

__all__ = ["Capture", "LayerDidNotRun", "capture_layer", "run_forward"]


class _StopForward(Exception):  # noqa: N818 (a control-flow signal, not an error)
    """Raised by a capture hook to end the forward right after the layer."""


class LayerDidNotRun(ValueError):
    """The layer's hook never fired during the forward."""


@dataclass
class Capture:
    """What one forward revealed about the layer.

    Attributes:
        value (tuple): The layer's output (or input) as a tuple of values.
        output (Any): The forward's return value; None if the forward was stopped early.
        leaf (Tensor or None): With ``restart_graph``, the detached copy of the layer's tensor
                    that the rest of the forward was computed from, requiring grad.
        swallowed_stop (bool): The hook asked the forward to stop and the model carried on.
    """

    value: tuple[Any, ...]
    output: Any
    leaf: Tensor | None
    swallowed_stop: bool


def run_forward(
    forward_func: Callable[..., Any], inputs: tuple[Tensor, ...], additional_forward_args: Any
) -> Any:
    """``forward_func(*inputs, *additional_forward_args)``, Captum's calling convention."""
    return forward_func(*inputs, *format_additional_forward_args(additional_forward_args))


def capture_layer(
    forward_func: Callable[..., Any],
    layer: nn.Module,
    inputs: tuple[Tensor, ...],
    additional_forward_args: Any,
    attribute_to_layer_input: bool = False,
    stop_early: bool = False,
    restart_graph: Callable[[tuple[Any, ...]], Tensor] | None = None,
) -> Capture:
    """Run the forward once and read the layer, in this thread only.

    Args:
        forward_func (Callable): The model or function to run.
        layer (nn.Module): The module to read.
        inputs (tuple[Tensor, ...]): Positional inputs.
        additional_forward_args (Any): Further arguments, Captum's convention.
        attribute_to_layer_input (bool): Read the layer's input instead of its output.
        stop_early (bool): End the forward right after the layer (the output is then None).
        restart_graph (Callable, optional): Picks the layer's tensor from its value; the rest
                    of the forward then runs from a detached copy of it that requires grad,
                    with grad enabled, so that the layers after ``layer`` (the head) are
                    recorded for a backward while the backbone ran without a graph.

    Returns:
        Capture

    Raises:
        LayerDidNotRun: If the layer did not run in this forward.
        ValueError: If the layer ran more than once in one forward.
    """
    owner = threading.get_ident()
    state: dict[str, Any] = {"calls": 0, "stopped": False, "leaf": None}

    def on_value(value: tuple[Any, ...]) -> tuple[Any, ...] | None:
        if threading.get_ident() != owner or state["stopped"]:
            # Another thread's forward through the same module; or a model that caught the
            # stop and runs the layer again: the value read before the stop stands.
            return None
        state["calls"] += 1
        if state["calls"] > 1:
            return None  # reported after the forward (raising here could be swallowed)
        state["value"] = value
        if restart_graph is not None:
            tensor = restart_graph(value)
            leaf = tensor.detach().requires_grad_(True)
            state["leaf"] = leaf
            torch.set_grad_enabled(True)  # the caller's context restores the mode on exit
            # A non-leaf copy, so that in-place operations downstream stay legal.
            return tuple(leaf.clone() if v is tensor else v for v in value)
        if stop_early:
            state["stopped"] = True
            raise _StopForward
        return None

    if attribute_to_layer_input:

        def pre_hook(module: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...] | None:
            return on_value(args)

        handle = layer.register_forward_pre_hook(pre_hook)
    else:

        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> Any:
            value = output if isinstance(output, tuple) else (output,)
            replaced = on_value(value)
            if replaced is None:
                return None
            return replaced if isinstance(output, tuple) else replaced[0]

        handle = layer.register_forward_hook(hook)
    output, stopped = None, False
    try:
        with torch.set_grad_enabled(torch.is_grad_enabled()):  # undo the hook's switch
            output = run_forward(forward_func, inputs, additional_forward_args)
    except _StopForward:
        stopped = True
    finally:
        handle.remove()
    if "value" not in state:
        raise LayerDidNotRun
    if state["calls"] > 1:
        raise ValueError(
            f"layer {type(layer).__name__} ran {state['calls']} times in one forward; FAM "
            "reads a layer that runs once per forward (a weight-shared module called twice "
            "has no single activation map)"
        )
    return Capture(
        value=state["value"],
        output=output,
        leaf=state["leaf"],
        swallowed_stop=state["stopped"] and not stopped,
    )
