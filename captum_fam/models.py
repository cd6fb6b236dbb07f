"""Load a model for FAM from a short specification, with its layer and preprocessing.

``load_model("torchvision:resnet50", weights="IMAGENET1K_V2")`` gives the network (its
classifier removed, see :mod:`captum_fam.backbones`), the layer to explain, the preprocessing
the weights were trained with, and notes worth telling the user ("random weights", "classifier
removed"). The command line's ``--model`` takes the same specifications:

- ``shapes``: the embedded shapes model (:mod:`captum_fam.zoo`), a toy of synthetic scenes.
- ``torchvision:NAME``: a torchvision model with ``weights`` (a name such as ``DEFAULT`` or
  ``IMAGENET1K_V2``, or ``"none"`` for random initialisation, which must be asked for).
- ``package.module:factory``: ``factory()`` returns an ``nn.Module``, or ``(module,
  preprocess)``; a module attribute ``preprocess`` also declares the preprocessing (a
  :class:`~captum_fam.images.Preprocess` or a ``PIL image -> tensor`` callable).
- the path of a TorchScript file.

Factory and TorchScript models are used as given: their output is the embedding.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import io
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from captum_fam.attribution import FeatureActivationMap
from captum_fam.backbones import candidate_layers, classifier_name, default_layer, strip_classifier
from captum_fam.images import Preprocess

__all__ = ["RANDOM_WEIGHTS", "LoadedModel", "ModelLoadError", "import_factory", "load_model"]

RANDOM_WEIGHTS = "none"
"""The ``weights`` value that asks for a randomly initialised torchvision model."""

_SCRIPT_SUFFIXES = (".pt", ".pth", ".ts", ".jit", ".torchscript")


class ModelLoadError(ValueError):
    """A model specification, weights name or layer name that cannot be resolved."""


@dataclass
class LoadedModel:
    r"""A model ready for FAM: the network, the layer to read and its image preprocessing.

    Args:
        model (nn.Module): The network FAM runs, in eval mode.
        layer (nn.Module): The module whose output is the activation map.
        layer_name (str): Its dotted name, for summaries.
        label (str): How the model was specified, for summaries.
        preprocess (Preprocess): Image file -> model input, and back for display.
        token_layout (str, optional): ``"auto"`` for transformer layers. Default: None
        embedding (str, optional): What the similarity compares: ``"output"`` (the model's
                    output) or ``"layer"`` (the layer's pooled channels, when the model's
                    output is the activation map itself). Default: ``"output"``
        random_weights (bool, optional): True for an untrained network. Default: False
        notes (list[str], optional): Facts to tell the user (classifier removed, ...).
        hint (str, optional): Advice appended to errors raised while running the model.
    """

    model: nn.Module
    layer: nn.Module
    layer_name: str
    label: str
    preprocess: Preprocess
    token_layout: str | None = None
    embedding: str = "output"
    random_weights: bool = False
    notes: list[str] = field(default_factory=list)
    hint: str = ""

    def explainer(self, **kwargs: Any) -> FeatureActivationMap:
        """A :class:`FeatureActivationMap` on this model and layer (``similarity=``,
        ``weighting=``, ``token_layout=`` as keywords; the token layout and embedding default
        to this model's)."""
        kwargs.setdefault("token_layout", self.token_layout)
        kwargs.setdefault("embedding", self.embedding)
        return FeatureActivationMap(self.model, self.layer, **kwargs)


def load_model(spec: str, weights: str | None = None, layer: str | None = None) -> LoadedModel:
    r"""Resolve a model specification into a model, a layer and its preprocessing.

    Args:
        spec (str): ``"shapes"``, ``"torchvision:NAME"``, ``"package.module:factory"`` or
                    the path of a TorchScript file (see the module's description).
        weights (str, optional): For ``torchvision:`` models, required: a weights name
                    (``"DEFAULT"``, ``"IMAGENET1K_V2"``, ``"ResNet50_Weights.IMAGENET1K_V2"``,
                    downloaded by torchvision on first use) or ``"none"`` for random weights.
        layer (str, optional): Dotted module name of the layer to explain. Default: the
                    family's layer (:func:`captum_fam.backbones.default_layer`).

    Returns:
        LoadedModel: the model in eval mode, its layer, preprocessing and notes.

    Raises:
        ModelLoadError: For unknown specifications, models, weights or layers, missing
                    weights, or weights that cannot be fetched. A factory's own errors pass
                    through unchanged.
    """
    if weights is not None and not spec.startswith("torchvision:"):
        raise ModelLoadError("weights apply to torchvision:NAME models only")
    if spec == "shapes":
        return _load_shapes(layer)
    if spec.startswith("torchvision:"):
        return _load_torchvision(spec.partition(":")[2], weights, layer)
    path = Path(spec)
    if path.is_file() or path.suffix.lower() in _SCRIPT_SUFFIXES:
        return _load_torchscript(path, layer)
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", spec):
        return _load_factory(spec, layer)
    raise ModelLoadError(
        f"unknown model {spec!r}: expected 'shapes', 'torchvision:NAME', "
        "'package.module:factory' or the path of a TorchScript file"
    )


def _load_shapes(layer: str | None) -> LoadedModel:
    from captum_fam.zoo import load_shapes_model

    try:
        model, default = load_shapes_model()
    except (FileNotFoundError, RuntimeError) as error:
        raise ModelLoadError(" ".join(str(error).split())) from None
    if layer is None:
        chosen, name = default, next(n for n, m in model.named_modules() if m is default)
    else:
        chosen, name = _get_layer(model, layer, "the shapes model"), layer
    # The model standardises [0, 1] RGB inside, and was trained on square 64 px scenes.
    preprocess = Preprocess(64, resize="squash", mean=None, std=None)
    return LoadedModel(model, chosen, name, "shapes", preprocess)


def _load_torchvision(name: str, weights: str | None, layer: str | None) -> LoadedModel:
    try:
        from torchvision import models
    except ImportError:
        raise ModelLoadError(
            "torchvision is not installed: pip install 'captum-fam[vision]'"
        ) from None
    available = models.list_models(module=models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5)
        hint = f"closest: {', '.join(close)}" if close else "see torchvision.models.list_models()"
        raise ModelLoadError(f"unknown torchvision model {name!r}; {hint}")
    enum = models.get_model_weights(name)
    if weights is None:
        trained = [m for m in enum.__members__ if m != "DEFAULT"]
        raise ModelLoadError(
            f"torchvision:{name} needs --weights: DEFAULT (or {', '.join(trained)}) for trained "
            f"weights, downloaded by torchvision once, or --weights {RANDOM_WEIGHTS} for random "
            "initialisation, whose scores and maps say nothing about images"
        )
    random = weights.lower() == RANDOM_WEIGHTS
    weight = None if random else _torchvision_weights(enum, name, weights)
    notice = io.StringIO()
    try:
        # torch.hub writes a download notice (stdout) and a progress bar (stderr): on error,
        # only the error is reported. Random initialisation of some families warns about
        # torchvision's own plans.
        with (
            contextlib.redirect_stdout(notice),
            contextlib.redirect_stderr(io.StringIO()),
            warnings.catch_warnings(),
        ):
            warnings.simplefilter("ignore", FutureWarning)
            model = models.get_model(name, weights=weight)
    except (OSError, RuntimeError, ValueError) as error:
        if weight is None:
            raise
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise ModelLoadError(
            f"cannot fetch torchvision weights {weight} ({_reason(error)}): connect to the "
            f"internet once, or put the file {Path(weight.url).name} in {cache}"
        ) from None
    sys.stdout.write(notice.getvalue())
    model.eval()
    label = f"torchvision:{name}"
    notes = []
    head = classifier_name(model)
    if head is not None:
        strip_classifier(model)
        notes.append(f"classifier {head} replaced by Identity: the output is the pooled features")
    if weight is None:
        preprocess = Preprocess(224, resize="crop", resize_size=256)
    else:
        preprocess = Preprocess.from_torchvision(weight.transforms())
        label += f" ({weight})"
    chosen, layer_name, token_layout = _choose_layer(model, layer, label)
    return LoadedModel(
        model,
        chosen,
        layer_name,
        label,
        preprocess,
        token_layout=token_layout,
        random_weights=random,
        notes=notes,
    )


def _torchvision_weights(enum: Any, name: str, weights: str) -> Any:
    members = list(enum.__members__)
    key = weights.rpartition(".")[2] if weights.startswith(enum.__name__ + ".") else weights
    if key not in members:
        raise ModelLoadError(
            f"unknown weights {weights!r} for torchvision:{name}; available: "
            f"{', '.join(members)}, or '{RANDOM_WEIGHTS}' for random initialisation"
        )
    return enum[key]


def _load_torchscript(path: Path, layer: str | None) -> LoadedModel:
    if not path.is_file():
        raise ModelLoadError(f"TorchScript file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            script = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, OSError, ValueError) as error:
        raise ModelLoadError(
            f"cannot load {path} as TorchScript ({_reason(error)}); save the model with "
            "torch.jit.script(model).save(path)"
        ) from None
    script.eval()
    label, preprocess = str(path), Preprocess()
    sequential = getattr(script, "original_name", "") == "Sequential"
    children = dict(script.named_children())
    # Compiled code does not call Python hooks, so FAM reads the activations at a Python
    # boundary: the whole file's output, or a top-level child of a scripted nn.Sequential.
    if layer is None:
        tap = _Tap(script)
        hint = (
            "a TorchScript file without --layer must output the (N, C, H, W) activation map: "
            "export the network up to the layer to explain"
        )
        if sequential:
            hint += f", or pass --layer with one of {', '.join(children)}"
        # The output is the map: its pooled channels are the embedding.
        return LoadedModel(
            tap, tap, "(model output)", label, preprocess, embedding="layer", hint=hint
        )
    if not sequential or layer not in children:
        raise ModelLoadError(
            f"layer {layer!r} is not available in the TorchScript file {path}: compiled "
            "models cannot be hooked inside; export the network up to the layer to explain "
            "(its output is then the activation map) and give no layer, or script an "
            "nn.Sequential and name one of its top-level children"
            + (f" ({', '.join(children)})" if children else "")
        )
    tapped = nn.Sequential(*(_Tap(c) if n == layer else c for n, c in children.items()))
    return LoadedModel(tapped, tapped[list(children).index(layer)], layer, label, preprocess)


class _Tap(nn.Module):
    """A Python module around a compiled one, so that forward hooks see its output."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: Any) -> Any:
        return self.module(*inputs)


def import_factory(spec: str) -> Callable[[], Any]:
    """The callable that ``"package.module:factory"`` names (``factory`` may be dotted).

    Raises:
        ModelLoadError: If the module cannot be imported or has no such callable. The
                    module's own import errors are named in the message.
    """
    module_name, _, attribute = spec.partition(":")
    # Like other tools that import user code by name, look in the working directory too.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise ModelLoadError(f"cannot import {module_name!r} for model {spec}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise ModelLoadError(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise ModelLoadError(f"model {spec}: {attribute!r} is not callable")
    return target


def _load_factory(spec: str, layer: str | None) -> LoadedModel:
    attribute = spec.partition(":")[2]
    built = import_factory(spec)()
    model, declared = built if isinstance(built, tuple) and len(built) == 2 else (built, None)
    if not isinstance(model, nn.Module):
        raise ModelLoadError(
            f"model {spec}: {attribute}() returned {type(model).__name__}, expected a "
            "torch.nn.Module or a (module, preprocess) pair"
        )
    model.eval()
    head = classifier_name(model)
    if head is not None:
        warnings.warn(
            f"model {spec} still has its classifier ({head}): its output, which FAM compares, "
            "is class logits; return captum_fam.backbones.strip_classifier(model) from the "
            "factory to compare image features",
            stacklevel=3,
        )
    declared = declared if declared is not None else getattr(model, "preprocess", None)
    preprocess = _declared_preprocess(declared, spec)
    chosen, layer_name, token_layout = _choose_layer(model, layer, spec)
    return LoadedModel(model, chosen, layer_name, spec, preprocess, token_layout=token_layout)


def _declared_preprocess(declared: Any, spec: str) -> Preprocess:
    if declared is None:
        return Preprocess()
    if isinstance(declared, Preprocess):
        return declared
    if callable(declared):
        # A torchvision-style transform states its normalisation, which display() can undo.
        mean, std = getattr(declared, "mean", None), getattr(declared, "std", None)
        known = mean is not None and std is not None and len(mean) == len(std) == 3
        return Preprocess(
            transform=declared,
            mean=tuple(mean) if known and mean is not None else None,
            std=tuple(std) if known and std is not None else None,
            label=f"the model's own transform ({type(declared).__name__})",
        )
    raise ModelLoadError(
        f"model {spec}: its preprocess is a {type(declared).__name__}; expected a "
        "captum_fam.images.Preprocess or a callable PIL image -> (3, H, W) tensor"
    )


def _choose_layer(
    model: nn.Module, layer: str | None, label: str
) -> tuple[nn.Module, str, str | None]:
    choice = default_layer(model)
    if layer is not None:
        # A transformer's other blocks need the family's token layout just as well.
        return _get_layer(model, layer, label), layer, choice.token_layout if choice else None
    if choice is not None:
        return model.get_submodule(choice.name), choice.name, choice.token_layout
    candidates = candidate_layers(model)
    raise ModelLoadError(
        f"no default layer is known for {label}: pass --layer NAME (layer=NAME); "
        + (f"candidates: {', '.join(candidates)}" if candidates else "it has no submodules")
    )


def _get_layer(model: nn.Module, name: str, label: str) -> nn.Module:
    try:
        return model.get_submodule(name) if name else model
    except AttributeError:
        names = [n for n, _ in model.named_modules() if n]
        close = difflib.get_close_matches(name, names, n=5, cutoff=0.5)
        hint = (
            f"closest: {', '.join(close)}"
            if close
            else f"top-level modules: {', '.join(n for n, _ in model.named_children())}"
        )
        raise ModelLoadError(f"unknown layer {name!r} in {label}; {hint}") from None


def _reason(error: BaseException, limit: int = 160) -> str:
    """The first sentence of a third-party error message, for a parenthesis."""
    text = " ".join(str(error).split()).split(". ")[0] or type(error).__name__
    return text if len(text) <= limit else text[: limit - 1] + "…"
