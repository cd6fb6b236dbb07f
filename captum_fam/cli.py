"""The ``captum-fam`` command line: an offline demo and FAM explanations of your own images.

``captum-fam demo --out demo.png`` explains a two-object scene of the embedded shapes world
against one reference per object, next to Integrated Gradients of the same similarity.

``captum-fam explain QUERY REFERENCE... --out out.png`` explains why a model finds the query
similar to each reference (or to its top-k neighbours in a ``--gallery`` folder), for the
shapes model, torchvision models, your own ``package.module:factory`` or a TorchScript file.

Bad input (missing or unreadable images, unknown models or layers, an empty gallery, an
unsupported output format) ends with exit status 2 and one ``captum-fam: error: ...`` line.
"""

from __future__ import annotations

import argparse
import contextlib
import difflib
import importlib
import io
import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from PIL import Image
from torch import Tensor, nn

from captum_fam._images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageReadError,
    Preprocess,
    image_extensions,
    list_images,
    read_image,
)
from captum_fam.attribution import FeatureActivationMap
from captum_fam.visualization import attribution_to_numpy, visualize_fam

__all__ = ["CLIError", "LoadedModel", "Retrieval", "load_model", "main", "retrieve"]

PROG = "captum-fam"
SIMILARITIES = ("cosine", "dot", "euclidean")
WEIGHTINGS = ("reference", "contribution")
MAP_FORMATS = {".pt": "torch", ".pth": "torch", ".npz": "numpy"}

# Default layer to explain per model family: the last convolutional block, whose pooled output
# is (or directly precedes) the model's embedding. Matched on the torchvision model name or,
# for other models, on the lower-cased class name. Checked on torchvision 0.29: each gives an
# (N, C, 7, 7) map at 224 px. DenseNet applies its last ReLU functionally, after `features`, so
# its map is pre-ReLU; VGG's and AlexNet's `features` end with the last max-pool.
DEFAULT_LAYERS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("resnet", "resnext", "wide_resnet"), "layer4"),
    (
        ("vgg", "densenet", "mobilenet", "efficientnet", "convnext", "alexnet", "squeezenet"),
        "features",
    ),
    (("regnet",), "trunk_output"),
    (("googlenet",), "inception5b"),
    (("inception",), "Mixed_7c"),
    (("shufflenet",), "conv5"),
    (("mnasnet",), "layers"),
)


class CLIError(Exception):
    """A problem with the user's input: reported as one line, exit status 2."""


@dataclass
class LoadedModel:
    r"""A model ready for FAM, with the layer to read and its image preprocessing.

    Args:
        model (nn.Module): The network FAM runs (in eval mode).
        layer (nn.Module): The module whose output is the ``(N, C, H, W)`` activation map.
        layer_name (str): Its dotted name, for summaries.
        label (str): How the model was specified, for summaries.
        preprocess (Preprocess): Image file -> model input, and back for display.
        hint (str, optional): Advice appended to errors raised while running the model.
    """

    model: nn.Module
    layer: nn.Module
    layer_name: str
    label: str
    preprocess: Preprocess
    hint: str = ""


@dataclass
class Retrieval:
    r"""The top-k gallery items for a query, best first, with their FAM maps.

    Args:
        paths (list[Path]): The retrieved files.
        scores (Tensor): ``(k,)`` similarities to the query.
        maps (Tensor): ``(k, 1, h, w)`` FAM maps of the query against each item.
        embeddings (Tensor): ``(k, C)`` the items' pooled embeddings.
        gallery_size (int): Number of gallery images embedded.
        skipped (list[Path]): Gallery files that could not be read.
    """

    paths: list[Path]
    scores: Tensor
    maps: Tensor
    embeddings: Tensor
    gallery_size: int
    skipped: list[Path] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Models and layers


def load_model(
    spec: str,
    weights: str | None = None,
    layer: str | None = None,
    image_size: int | None = None,
) -> LoadedModel:
    r"""Resolve a ``--model`` specification into a model, a layer and its preprocessing.

    Args:
        spec (str): ``"shapes"`` (the embedded shapes model), ``"torchvision:NAME"``,
                    ``"package.module:factory"`` (``factory()`` returns an ``nn.Module``) or
                    the path of a TorchScript file.
        weights (str, optional): torchvision weights name (``"DEFAULT"``,
                    ``"IMAGENET1K_V2"`` or ``"ResNet50_Weights.IMAGENET1K_V2"``); only for
                    ``torchvision:`` models. Default: None (random initialisation)
        layer (str, optional): Dotted module name of the layer to explain. Default: the
                    known last convolutional block of the model family.
        image_size (int, optional): Input side in pixels, overriding the model's default.

    Returns:
        LoadedModel

    Raises:
        CLIError: For unknown specifications, models, weights or layers, or weights that
                    cannot be fetched.
    """
    if weights is not None and not spec.startswith("torchvision:"):
        raise CLIError("--weights applies to torchvision:NAME models only")
    if spec == "shapes":
        return _load_shapes(layer, image_size)
    if spec.startswith("torchvision:"):
        return _load_torchvision(spec.partition(":")[2], weights, layer, image_size)
    path = Path(spec)
    if path.is_file() or path.suffix.lower() in (".pt", ".pth", ".ts", ".jit", ".torchscript"):
        return _load_torchscript(path, layer, image_size)
    if re.fullmatch(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*", spec):
        return _load_factory(spec, layer, image_size)
    raise CLIError(
        f"unknown model {spec!r}: expected 'shapes', 'torchvision:NAME', "
        "'package.module:factory' or the path of a TorchScript file"
    )


def _imagenet_preprocess(image_size: int | None) -> Preprocess:
    size = image_size or 224
    return Preprocess(
        size, IMAGENET_MEAN, IMAGENET_STD, label=f"resize to {size} px, ImageNet normalisation"
    )


def _load_shapes(layer: str | None, image_size: int | None) -> LoadedModel:
    from captum_fam.zoo import load_shapes_model

    try:
        model, default_layer = load_shapes_model()
    except (FileNotFoundError, RuntimeError) as error:
        raise CLIError(_one_line(error)) from None
    if layer is None:
        name = next(n for n, m in model.named_modules() if m is default_layer)
        chosen = default_layer
    else:
        chosen, name = _get_layer(model, layer, "the shapes model"), layer
    size = image_size or 64
    preprocess = Preprocess(size, label=f"resize to {size} px, [0, 1]")
    return LoadedModel(model, chosen, name, "shapes", preprocess)


def _load_torchvision(
    name: str, weights: str | None, layer: str | None, image_size: int | None
) -> LoadedModel:
    try:
        from torchvision import models
    except ImportError:
        raise CLIError("torchvision is not installed: pip install 'captum-fam[vision]'") from None
    available = models.list_models(module=models)
    if name not in available:
        close = difflib.get_close_matches(name, available, n=5)
        hint = (
            f"; closest: {', '.join(close)}" if close else "; see torchvision.models.list_models()"
        )
        raise CLIError(f"unknown torchvision model {name!r}{hint}")
    weight = _torchvision_weights(models, name, weights) if weights is not None else None
    try:
        # torch.hub writes a download notice and a progress bar: keep stderr to one line on error.
        with contextlib.redirect_stderr(io.StringIO()):
            model = models.get_model(name, weights=weight)
    except (OSError, RuntimeError, ValueError) as error:
        if weight is None:
            raise
        cache = Path(torch.hub.get_dir()) / "checkpoints"
        raise CLIError(
            f"cannot fetch torchvision weights {weight} ({_reason(error)}): connect to the "
            f"internet once, or put the file {Path(weight.url).name} in {cache}"
        ) from None
    model.eval()
    if weight is not None:
        defaults = weight.transforms()
        if image_size is None:
            transform = defaults
        else:
            # Keep the family's resize-to-crop ratio (e.g. 256 / 224) at the new size.
            resize = round(image_size * defaults.resize_size[0] / defaults.crop_size[0])
            transform = weight.transforms(crop_size=image_size, resize_size=resize)
        crop = transform.crop_size[0]
        preprocess = Preprocess(
            crop, transform.mean, transform.std, transform, label=f"{weight}.transforms()"
        )
    else:
        preprocess = _imagenet_preprocess(image_size)
    chosen, layer_name = _choose_layer(model, layer, name, f"torchvision:{name}")
    return LoadedModel(model, chosen, layer_name, f"torchvision:{name}", preprocess)


def _torchvision_weights(models: Any, name: str, weights: str) -> Any:
    enum = models.get_model_weights(name)
    members = list(enum.__members__)
    key = weights.rpartition(".")[2] if weights.startswith(enum.__name__ + ".") else weights
    if key not in members:
        raise CLIError(
            f"unknown weights {weights!r} for torchvision:{name}; available: {', '.join(members)}"
        )
    return enum[key]


def _load_torchscript(path: Path, layer: str | None, image_size: int | None) -> LoadedModel:
    if not path.is_file():
        raise CLIError(f"TorchScript file not found: {path}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
            script = torch.jit.load(str(path), map_location="cpu")
    except (RuntimeError, OSError, ValueError) as error:
        raise CLIError(
            f"cannot load {path} as TorchScript ({_reason(error)}); save the model with "
            "torch.jit.script(model).save(path)"
        ) from None
    script.eval()
    label = str(path)
    preprocess = _imagenet_preprocess(image_size)
    # Compiled code does not call Python hooks, so FAM reads the activations at a Python
    # boundary: the whole file's output, or a top-level child of a scripted nn.Sequential.
    if layer is None:
        tap = _Tap(script)
        hint = (
            "a TorchScript file without --layer must output the (N, C, H, W) activation map: "
            "export the network up to the layer to explain"
        )
        if getattr(script, "original_name", "") == "Sequential":
            hint += f", or pass --layer with one of {', '.join(dict(script.named_children()))}"
        return LoadedModel(tap, tap, "(model output)", label, preprocess, hint)
    children = dict(script.named_children())
    if getattr(script, "original_name", "") != "Sequential" or layer not in children:
        raise CLIError(
            f"--layer {layer!r} is not available for the TorchScript file {path}: compiled "
            "models cannot be hooked inside; export the network up to the layer to explain "
            "(its output is then the activation map) and omit --layer, or script an "
            "nn.Sequential and name one of its top-level children"
            + (f" ({', '.join(children)})" if children else "")
        )
    tapped = nn.Sequential(
        *(_Tap(child) if name == layer else child for name, child in children.items())
    )
    return LoadedModel(tapped, tapped[list(children).index(layer)], layer, label, preprocess)


class _Tap(nn.Module):
    """A Python module around a compiled one, so that forward hooks see its output."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, *inputs: Any) -> Any:
        return self.module(*inputs)


def _load_factory(spec: str, layer: str | None, image_size: int | None) -> LoadedModel:
    module_name, _, attribute = spec.partition(":")
    # Like other tools that import user code by name, look in the working directory too.
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise CLIError(f"cannot import {module_name!r} for --model {spec}: {error}") from None
    for part in attribute.split("."):
        if not hasattr(target, part):
            raise CLIError(f"module {module_name!r} has no attribute {attribute!r}")
        target = getattr(target, part)
    if not callable(target):
        raise CLIError(f"--model {spec}: {attribute!r} is not callable")
    model = target()
    if not isinstance(model, nn.Module):
        raise CLIError(
            f"--model {spec}: {attribute}() returned {type(model).__name__}, expected a "
            "torch.nn.Module"
        )
    model.eval()
    chosen, layer_name = _choose_layer(model, layer, type(model).__name__, spec)
    return LoadedModel(model, chosen, layer_name, spec, _imagenet_preprocess(image_size))


def default_layer_name(family: str) -> str | None:
    """The default layer for a model or class name (``"resnet50"``, ``"ResNet"``), if known."""
    family = family.lower()
    for prefixes, layer in DEFAULT_LAYERS:
        if family.startswith(prefixes):
            return layer
    return None


def _choose_layer(
    model: nn.Module, layer: str | None, family: str, label: str
) -> tuple[nn.Module, str]:
    if layer is not None:
        return _get_layer(model, layer, label), layer
    default = default_layer_name(family)
    names = {name for name, _ in model.named_modules()}
    if default is not None and default in names:
        return model.get_submodule(default), default
    candidates = _candidate_layers(model)
    raise CLIError(
        f"no default layer is known for {label}: pass --layer NAME; "
        + (f"candidates: {', '.join(candidates)}" if candidates else "it has no submodules")
    )


def _candidate_layers(model: nn.Module, limit: int = 8) -> list[str]:
    """The last shallow modules holding a convolution, else the top-level children."""
    shallow = [
        name
        for name, module in model.named_modules()
        if name and name.count(".") <= 1 and any(isinstance(m, nn.Conv2d) for m in module.modules())
    ]
    return shallow[-limit:] or [name for name, _ in model.named_children()][:limit]


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
        raise CLIError(f"unknown layer {name!r} in {label}; {hint}") from None


# --------------------------------------------------------------------------------------------
# Retrieval


def retrieve(
    fam: FeatureActivationMap,
    query: Tensor,
    gallery: Sequence[Path],
    preprocess: Callable[[Image.Image], Tensor],
    top_k: int,
    batch_size: int = 32,
) -> Retrieval:
    r"""Rank a gallery of image files against a query and explain the top-k with FAM.

    The gallery is read and embedded once, in batches (:meth:`FeatureActivationMap.embed`,
    a progress bar on stderr); ranking and maps come from
    :func:`captum_fam.tasks.explain_retrieval` on those cached embeddings, i.e. the query
    explained against each of the top-k items.

    Args:
        fam (FeatureActivationMap): The explainer (model, layer, similarity, weighting).
        query (Tensor): The preprocessed query, ``(1, 3, H, W)``.
        gallery (Sequence[Path]): Image files; unreadable ones are skipped and reported.
        preprocess (Callable): PIL image -> ``(3, H, W)`` model input.
        top_k (int): Number of items to retrieve (at most the gallery size).
        batch_size (int, optional): Images per forward while embedding. Default: 32

    Returns:
        Retrieval
    """
    from tqdm.auto import tqdm

    from captum_fam.tasks import explain_retrieval

    rows: list[Tensor] = []
    kept: list[Path] = []
    skipped: list[Path] = []
    with tqdm(total=len(gallery), desc="embedding gallery", unit="img", file=sys.stderr) as bar:
        for start in range(0, len(gallery), batch_size):
            chunk = gallery[start : start + batch_size]
            images = []
            for path in chunk:
                try:
                    images.append(preprocess(read_image(path)))
                except ImageReadError:
                    skipped.append(path)
                    continue
                kept.append(path)
            if images:
                rows.append(fam.embed(torch.stack(images)))
            bar.update(len(chunk))
    if not kept:
        raise CLIError(f"none of the {len(gallery)} gallery files could be read as an image")
    embeddings = torch.cat(rows)
    found = explain_retrieval(
        fam,
        query,
        gallery_embeddings=embeddings,
        k=min(top_k, len(kept)),
        batch_size=batch_size,
    )
    indices = found.indices[0]
    return Retrieval(
        paths=[kept[i] for i in indices.tolist()],
        scores=found.scores[0],
        maps=found.maps[0].unsqueeze(1),
        embeddings=embeddings[indices],
        gallery_size=len(kept),
        skipped=skipped,
    )


# --------------------------------------------------------------------------------------------
# Commands


def _explain(args: argparse.Namespace) -> int:
    map_format = _map_format(args.save_maps)
    out = _figure_path(args.out)
    if args.gallery is not None and args.references:
        raise CLIError("give REFERENCE images or --gallery DIR, not both")
    if args.gallery is None and not args.references:
        raise CLIError("give at least one REFERENCE image, or --gallery DIR")
    if args.top_k < 1:
        raise CLIError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.image_size is not None and args.image_size < 8:
        raise CLIError(f"--image-size must be at least 8 pixels, got {args.image_size}")

    # Read every file before loading the model, so that a typo fails fast.
    query_image = read_image(args.query)
    reference_images = [read_image(p) for p in args.references]
    gallery: list[Path] = []
    if args.gallery is not None:
        gallery = list_images(args.gallery)
        if not gallery:
            raise CLIError(
                f"gallery {args.gallery} holds no images (looked for "
                f"{', '.join(e for e in image_extensions() if e in _COMMON_EXTENSIONS)}, ...)"
            )

    loaded = load_model(args.model, args.weights, args.layer, args.image_size)
    fam = FeatureActivationMap(
        loaded.model, loaded.layer, similarity=args.similarity, weighting=args.weighting
    )
    preprocess = loaded.preprocess
    query = preprocess(query_image).unsqueeze(0)
    with _model_errors(loaded.hint):
        if gallery:
            found = retrieve(fam, query, gallery, preprocess, args.top_k, args.batch_size)
            references = preprocess.load(found.paths)
            reference_embeddings, scores, maps = found.embeddings, found.scores, found.maps
            names = [_relative(p, Path(args.gallery)) for p in found.paths]
        else:
            references = torch.stack([preprocess(image) for image in reference_images])
            reference_embeddings = fam.embed(references)
            query_rows = query.expand(len(references), *query.shape[1:])
            maps = fam.attribute(query_rows, reference_embeddings=reference_embeddings)
            scores = fam.similarity.score(
                fam.embed(query).expand(len(references), -1), reference_embeddings
            )
            names = [Path(p).name for p in args.references]
        # The other side of each pair: what in the reference matches the query.
        reference_maps = fam.attribute(references, reference_embeddings=fam.embed(query))

    query_name = Path(args.query).name
    figure = _pair_figure(
        preprocess.display(query[0]),
        preprocess.display(references),
        maps,
        reference_maps,
        query_name,
        names,
        scores,
        args.similarity,
        ranked=bool(gallery),
        suptitle=(
            f"FAM · {loaded.label} · layer {loaded.layer_name} · {args.similarity} similarity, "
            f"{args.weighting} weights"
        ),
    )
    _save_figure(figure, out)
    if args.save_maps is not None:
        _save_maps(
            Path(args.save_maps),
            map_format,
            {
                "query": query_name,
                "references": names,
                "scores": scores,
                "maps": maps,
                "reference_maps": reference_maps,
                "model": loaded.label,
                "layer": loaded.layer_name,
                "similarity": args.similarity,
                "weighting": args.weighting,
            },
        )

    print(
        f"query {args.query}: model {loaded.label}, layer {loaded.layer_name} "
        f"({preprocess.label}), {args.similarity} similarity, {args.weighting} weights"
    )
    if gallery:
        skipped = (
            f", {len(found.skipped)} unreadable skipped ({_short(str(found.skipped[0]))}"
            + (", ...)" if len(found.skipped) > 1 else ")")
            if found.skipped
            else ""
        )
        print(f"gallery {args.gallery}: {found.gallery_size} images{skipped}; top {len(names)}:")
    width = max(len(n) for n in names)
    for rank, (name, score) in enumerate(zip(names, scores.tolist(), strict=True), 1):
        print(f"  {rank:>2}. {name:<{width}}  {args.similarity} {score:.4f}")
    print(f"figure: {out}")
    if args.save_maps is not None:
        print(f"maps: {Path(args.save_maps).resolve()}")
    return 0


_COMMON_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _demo(args: argparse.Namespace) -> int:
    from captum.attr import IntegratedGradients

    from captum_fam.metrics import similarity_forward
    from captum_fam.zoo import SHAPE_CLASSES, make_shapes

    out = _figure_path(args.out)
    loaded = load_model("shapes")
    model = loaded.model
    fam = FeatureActivationMap(
        model, loaded.layer, similarity=args.similarity, weighting=args.weighting
    )
    scene = make_shapes(1, objects=2, seed=args.seed)
    query, masks = scene.images, scene.masks[0]
    classes = scene.labels[0].tolist()
    names = [SHAPE_CLASSES[c] for c in classes]
    # One single-object reference per object in the scene, of that object's class.
    references = torch.cat(
        [
            make_shapes(1, objects=1, seed=args.seed + 1 + i, classes=[c]).images
            for i, c in enumerate(classes)
        ]
    )
    query_rows = query.expand(len(references), -1, -1, -1)
    reference_embeddings = fam.embed(references)
    maps = fam.attribute(query_rows, reference_embeddings=reference_embeddings)
    with torch.no_grad():
        scores = fam.similarity_scores(query_rows, reference_embeddings=reference_embeddings)

    # Integrated Gradients of the very same score (layer embedding against the reference's),
    # from a black image: the gradient-based view to compare with.
    ig = IntegratedGradients(similarity_forward(fam))
    integrated = ig.attribute(
        query_rows.clone(),
        baselines=torch.zeros_like(query_rows),
        additional_forward_args=(reference_embeddings,),
        n_steps=32,
        internal_batch_size=64,
    )
    integrated = integrated.detach().sum(dim=1, keepdim=True)

    size = (int(query.shape[-2]), int(query.shape[-1]))
    fam_mass = [_mask_mass(attribution_to_numpy(m, size), masks) for m in maps]
    ig_mass = [_mask_mass(attribution_to_numpy(m), masks) for m in integrated]

    figure = Figure(figsize=(4 * 2.6, len(names) * 2.9 + 0.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(len(names), 4, squeeze=False)
    for row, name in enumerate(names):
        score = float(scores[row])
        _show_image(axes[row, 0], query[0], f"query: {' + '.join(names)}")
        _show_image(axes[row, 1], references[row], f"reference: {name}")
        _overlay(axes[row, 2], maps[row], query[0], f"FAM vs {name}\n{args.similarity} {score:.3f}")
        _overlay(
            axes[row, 3], integrated[row], query[0], f"IG vs {name}\n{args.similarity} {score:.3f}"
        )
    figure.suptitle(
        f"FAM ({args.weighting} weights) and Integrated Gradients, shapes model, seed {args.seed}"
    )
    _save_figure(figure, out)

    print(
        f"FAM demo: query with {_article(names[0])} and {_article(names[1])} (seed {args.seed}), "
        "shapes model, "
        f"layer {loaded.layer_name}, {args.similarity} similarity, {args.weighting} weights"
    )
    width = max(len(n) for n in names)
    for row, name in enumerate(names):
        fam_share = ", ".join(
            f"{n} {100 * v:.0f}%" for n, v in zip(names, fam_mass[row], strict=True)
        )
        ig_share = ", ".join(
            f"{n} {100 * v:.0f}%" for n, v in zip(names, ig_mass[row], strict=True)
        )
        print(
            f"  reference {name:<{width}}  {args.similarity} {float(scores[row]):.4f} | "
            f"map mass on the objects: FAM {fam_share}; IG {ig_share}"
        )
    print(f"figure: {out}")
    return 0


def _article(noun: str) -> str:
    # "an L", "an hourglass": by sound, not spelling.
    vowel_sound = noun[0].lower() in "aeiou" or noun in ("L", "hourglass")
    return f"an {noun}" if vowel_sound else f"a {noun}"


def _mask_mass(heat: np.ndarray, masks: Tensor) -> list[float]:
    """Share of a map's positive mass inside each object mask."""
    positive = np.clip(heat[..., 0], 0.0, None)
    total = float(positive.sum())
    if total <= 0.0:
        return [0.0] * len(masks)
    return [float(positive[mask.numpy()].sum()) / total for mask in masks]


# --------------------------------------------------------------------------------------------
# Figures and files


def _pair_figure(
    query: Tensor,
    references: Tensor,
    maps: Tensor,
    reference_maps: Tensor,
    query_name: str,
    names: Sequence[str],
    scores: Tensor,
    similarity: str,
    ranked: bool,
    suptitle: str,
    columns: int = 5,
) -> Figure:
    """Per reference: the query with its map (top) and the reference with its map (below)."""
    count = len(names)
    columns = min(columns, count)
    blocks = -(-count // columns)
    figure = Figure(figsize=(columns * 2.8, blocks * 6.0 + 0.4), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.subplots(2 * blocks, columns, squeeze=False)
    for axis in axes.flat:
        axis.set_axis_off()
    for index, name in enumerate(names):
        block, column = divmod(index, columns)
        top, bottom = axes[2 * block, column], axes[2 * block + 1, column]
        top.set_axis_on()
        bottom.set_axis_on()
        label = f"{index + 1}. {_short(name)}" if ranked else _short(name)
        score = f"{similarity} {float(scores[index]):.3f}"
        _overlay(top, maps[index], query, f"{_short(query_name)} vs {label}\n{score}")
        _overlay(bottom, reference_maps[index], references[index], f"{label}\nvs the query")
    figure.suptitle(suptitle)
    return figure


def _overlay(axis: Any, attribution: Tensor, image: Tensor, title: str) -> None:
    visualize_fam(
        attribution,
        image,
        title=title,
        plt_fig_axis=(axis.figure, axis),
        use_pyplot=False,
        alpha_overlay=0.55,
    )
    axis.title.set_fontsize(9)


def _show_image(axis: Any, image: Tensor, title: str) -> None:
    axis.imshow(image.permute(1, 2, 0).clamp(0, 1).numpy())
    axis.set_xticks([])
    axis.set_yticks([])
    axis.set_title(title, fontsize=9)


def _short(name: str, limit: int = 26) -> str:
    return name if len(name) <= limit else "…" + name[-(limit - 1) :]


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def _figure_path(out: str) -> Path:
    path = Path(out)
    supported = FigureCanvasAgg(Figure()).get_supported_filetypes()
    extension = path.suffix.lower().lstrip(".")
    if extension not in supported:
        raise CLIError(
            f"cannot write a figure to {out!r}: use one of the extensions "
            + ", ".join(f".{e}" for e in sorted(supported))
        )
    if path.exists() and path.is_dir():
        raise CLIError(f"--out {out!r} is a directory; give a file name such as fam.png")
    return path.resolve()


def _save_figure(figure: Figure, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
    except OSError as error:
        raise CLIError(f"cannot write {path}: {error.strerror or error}") from None


def _map_format(path: str | None) -> str | None:
    if path is None:
        return None
    suffix = Path(path).suffix.lower()
    if suffix not in MAP_FORMATS:
        raise CLIError(
            f"--save-maps {path!r}: unsupported extension {suffix or '(none)'!r}; use .pt or "
            ".pth (torch.save of a dict) or .npz (numpy.savez)"
        )
    return MAP_FORMATS[suffix]


def _save_maps(path: Path, format: str | None, record: dict[str, Any]) -> None:
    """Write maps, scores and names: a dict with torch.save, or arrays with numpy.savez."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if format == "torch":
            torch.save(
                {k: v.cpu() if isinstance(v, Tensor) else v for k, v in record.items()}, path
            )
        else:
            arrays = {
                key: value.cpu().numpy() if isinstance(value, Tensor) else np.asarray(value)
                for key, value in record.items()
            }
            # Strings stay unicode arrays, so np.load needs no allow_pickle.
            with open(path, "wb") as handle:
                # numpy's stub types **kwds like its allow_pickle keyword.
                np.savez(handle, **arrays)  # type: ignore[arg-type]
    except OSError as error:
        raise CLIError(f"cannot write {path}: {error.strerror or error}") from None


@contextlib.contextmanager
def _model_errors(hint: str = "") -> Iterator[None]:
    """Report what FAM rejects, and a model failing on the images, as bad input."""
    suffix = f"; {hint}" if hint else ""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise CLIError(_one_line(error) + suffix) from None
    except RuntimeError as error:
        raise CLIError(
            f"the model failed on the preprocessed images ({_reason(error)}); check --model, "
            f"--layer and --image-size{suffix}"
        ) from None


def _one_line(error: BaseException) -> str:
    text = " ".join(str(error).split())
    return text or type(error).__name__


def _reason(error: BaseException, limit: int = 160) -> str:
    """The first sentence of a third-party error message, for a parenthesis."""
    text = _one_line(error).split(". ")[0]
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------------------------
# Entry point


def build_parser() -> argparse.ArgumentParser:
    """The ``captum-fam`` argument parser, with ``demo`` and ``explain`` subcommands."""
    from captum_fam import __version__

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Feature Activation Map (FAM): gradient-free explanations of "
        "similarity-based models.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def common(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--similarity",
            choices=SIMILARITIES,
            default="cosine",
            help="how embeddings are compared (default: cosine)",
        )
        sub.add_argument(
            "--weighting",
            choices=WEIGHTINGS,
            default="reference",
            help="FAM channel weights: the score's coefficient of each channel (reference, an "
            "exact decomposition of the score) or each channel's term of the score "
            "(contribution, the paper's wording) (default: reference)",
        )

    demo = commands.add_parser(
        "demo",
        help="offline demo on the embedded shapes world",
        description="Explain a two-object shapes scene against one reference per object, with "
        "FAM and, for comparison, Integrated Gradients of the same similarity.",
    )
    demo.add_argument("--out", default="fam-demo.png", help="figure file (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0, help="seed of the scene (default: 0)")
    common(demo)
    demo.set_defaults(run=_demo)

    explain = commands.add_parser(
        "explain",
        help="explain a query image against reference images or a gallery",
        description="Explain why a model finds QUERY similar to each REFERENCE (or to its "
        "top-k neighbours in --gallery) with FAM maps over both images.",
    )
    explain.add_argument("query", metavar="QUERY", help="query image file")
    explain.add_argument("references", metavar="REFERENCE", nargs="*", help="reference image files")
    explain.add_argument("--out", required=True, help="figure file (.png, .pdf, .svg, ...)")
    explain.add_argument(
        "--model",
        default="shapes",
        help="'shapes' (default), 'torchvision:NAME', 'package.module:factory' (factory() "
        "returns an nn.Module) or a TorchScript file",
    )
    explain.add_argument(
        "--weights",
        help="torchvision weights name (DEFAULT, IMAGENET1K_V2, ...), downloaded by "
        "torchvision on first use; without it the model is randomly initialised",
    )
    explain.add_argument(
        "--layer",
        help="dotted module name of the layer to explain (default: the model family's last "
        "convolutional block, e.g. layer4 for ResNets)",
    )
    common(explain)
    explain.add_argument("--gallery", metavar="DIR", help="rank a folder of images instead")
    explain.add_argument(
        "--top-k", type=int, default=5, help="gallery items to explain (default: 5)"
    )
    explain.add_argument(
        "--batch-size", type=int, default=32, help="images per forward (default: 32)"
    )
    explain.add_argument(
        "--image-size",
        type=int,
        help="input side in pixels (default: 64 for shapes, else the weights' crop or 224)",
    )
    explain.add_argument(
        "--save-maps",
        metavar="FILE",
        help="also save maps, scores and reference names: .pt/.pth (torch.save of a dict) or "
        ".npz (numpy.savez)",
    )
    explain.set_defaults(run=_explain)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    r"""Run the ``captum-fam`` command line.

    Args:
        argv (Sequence[str], optional): Arguments without the program name.
                    Default: ``sys.argv[1:]``

    Returns:
        *int*: the exit status: 0 on success, 2 for bad input (one ``captum-fam: error:``
        line on stderr). argparse's usage errors raise ``SystemExit(2)``.

    Examples::

        >>> from captum_fam.cli import main
        >>> main(["demo", "--out", "demo.png"])
        0
    """
    args = build_parser().parse_args(argv)
    with warnings.catch_warnings():
        warnings.showwarning = _WarningPrinter()
        try:
            return int(args.run(args))
        except (CLIError, ImageReadError) as error:
            print(f"{PROG}: error: {_one_line(error)}", file=sys.stderr)
            return 2
        except KeyboardInterrupt:
            print(f"{PROG}: interrupted", file=sys.stderr)
            return 130


class _WarningPrinter:
    """Print each distinct warning once, on one line, like the errors.

    Python's "once" filter cannot do this here: libraries that enter ``catch_warnings`` reset
    its registry, and a map drawn in several panels would warn once per panel.
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        file: Any = None,
        line: str | None = None,
    ) -> None:
        text = _one_line(Warning(str(message)))
        if text not in self.seen:
            self.seen.add(text)
            print(f"{PROG}: warning: {text}", file=sys.stderr)


if __name__ == "__main__":
    raise SystemExit(main())
