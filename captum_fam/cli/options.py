"""``captum-fam explain``'s options: parsing, checks, preprocessing choices, notices, files."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from captum_fam.cli.common import CLIError
from captum_fam.images import IMAGENET_MEAN, IMAGENET_STD, RESIZE_MODES, Preprocess
from captum_fam.models import LoadedModel
from captum_fam.tokens import TokenLayout

__all__ = [
    "SHAPES_WORLD_SIDES",
    "add_model_options",
    "add_preprocessing_options",
    "check_explain_args",
    "gallery_files",
    "map_format",
    "normalization",
    "notices",
    "prepare",
    "preprocessing",
    "relative",
    "save_maps",
    "token_layout",
]

MAP_FORMATS = {".pt": "torch", ".pth": "torch", ".npz": "numpy"}
DEFAULT_TOP_K = 5

SHAPES_WORLD_SIDES = (32, 128)
"""The shapes model is trained on square scenes of 64 px (``make_shapes`` draws 32 px and up).
An image that is not square, or whose side is outside this range, is not one of them."""

_COMMON_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def add_model_options(parser: argparse.ArgumentParser) -> None:
    """``--model``, ``--weights``, ``--layer`` and ``--token-layout``."""
    model = parser.add_argument_group("model")
    model.add_argument(
        "--model",
        default="shapes",
        help="'shapes' (default: a toy model of synthetic shapes), 'torchvision:NAME', "
        "'package.module:factory' or a TorchScript file; with --text, an image-text model: "
        "'shapes-clip' (a toy CLIP of the shapes world) or 'hf-clip:NAME' (a transformers "
        "CLIPModel by hub name or local folder)",
    )
    model.add_argument(
        "--weights",
        help="for torchvision:NAME, required: a weights name (DEFAULT, IMAGENET1K_V2, ...), "
        "downloaded by torchvision on first use, or 'none' for random initialisation",
    )
    model.add_argument(
        "--layer",
        help="dotted module name of the layer to explain (default: the family's last "
        "convolutional block, e.g. layer4 for ResNets; a block before the last for ViT)",
    )
    model.add_argument(
        "--token-layout",
        type=token_layout,
        metavar="{auto,none,channels-last,prefix=N}",
        help="how the layer's output becomes a grid: auto (transformer tokens (N, T, C) with "
        "class/register tokens dropped, or channels-last (N, h, w, C) stages such as Swin's), "
        "none ((N, C, H, W) maps), channels-last, or prefix=N tokens to drop "
        "(default: auto for ViT and Swin, else none)",
    )


def add_preprocessing_options(parser: argparse.ArgumentParser) -> None:
    """``--image-size``, ``--resize`` and ``--normalize`` (default: the model's own)."""
    pre = parser.add_argument_group("preprocessing (default: the model's own)")
    pre.add_argument(
        "--image-size", type=int, metavar="PX", help="input side: the crop's, or the shorter one"
    )
    pre.add_argument(
        "--resize",
        choices=RESIZE_MODES,
        help="squash (both sides to PX), crop (shorter side, then a centred square crop) or "
        "keep (shorter side to PX, aspect ratio kept)",
    )
    pre.add_argument(
        "--normalize",
        type=normalization,
        metavar="{imagenet,none,MEAN,STD}",
        help="imagenet (mean/std), none (RGB in [0, 1], for models that normalise inside), "
        "or MEAN,STD / R,G,B,R,G,B values",
    )


def token_layout(text: str) -> str | TokenLayout:
    """``--token-layout``: auto, none, channels-last or prefix=N."""
    if text in ("auto", "none"):
        return text
    if text == "channels-last":
        return TokenLayout(channels_last=True)
    name, _, count = text.partition("=")
    if name == "prefix" and count.isdigit():
        return TokenLayout(prefix_tokens=int(count))
    raise argparse.ArgumentTypeError(
        f"expected auto, none, channels-last or prefix=N; got {text!r}"
    )


def normalization(text: str) -> tuple[tuple[float, ...] | None, tuple[float, ...] | None]:
    """``--normalize``: imagenet, none, ``MEAN,STD`` (all channels) or ``R,G,B,R,G,B``."""
    if text.lower() == "imagenet":
        return IMAGENET_MEAN, IMAGENET_STD
    if text.lower() == "none":
        return None, None
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        values = []
    if len(values) == 2:
        return (values[0],) * 3, (values[1],) * 3
    if len(values) == 6:
        return tuple(values[:3]), tuple(values[3:])
    raise argparse.ArgumentTypeError(
        f"expected imagenet, none, MEAN,STD or R,G,B,R,G,B (mean then std); got {text!r}"
    )


def map_format(path: str | None) -> str | None:
    if path is None:
        return None
    suffix = Path(path).suffix.lower()
    if suffix not in MAP_FORMATS:
        raise CLIError(
            f"--save-maps {path!r}: unsupported extension {suffix or '(none)'!r}; use .pt or "
            ".pth (torch.save of a dict) or .npz (numpy.savez)"
        )
    return MAP_FORMATS[suffix]


def check_explain_args(args: argparse.Namespace) -> int:
    """Refuse contradictory or out-of-range options; return the top-k to use."""
    given = {
        "REFERENCE images": bool(args.references),
        "--gallery DIR": args.gallery is not None,
        "--index FILE": args.index is not None,
    }
    sources = [name for name, present in given.items() if present]
    if len(sources) > 1:
        raise CLIError(
            f"give one of REFERENCE images, --gallery DIR or --index FILE; got "
            f"{' and '.join(sources)}"
        )
    if not sources:
        raise CLIError("give at least one REFERENCE image, --gallery DIR or --index FILE")
    if args.top_k is not None and args.gallery is None and args.index is None:
        raise CLIError(
            "--top-k ranks a --gallery DIR or --index FILE; with REFERENCE images every "
            "reference is explained"
        )
    if args.index is None and (args.ids is not None or args.normalized):
        raise CLIError("--ids and --normalized go with --index FILE")
    if args.top_k is not None and args.top_k < 1:
        raise CLIError(f"--top-k must be at least 1, got {args.top_k}")
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    if args.image_size is not None and args.image_size < 8:
        raise CLIError(f"--image-size must be at least 8 pixels, got {args.image_size}")
    return DEFAULT_TOP_K if args.top_k is None else args.top_k


def gallery_files(
    directory: str, lister: Callable[[str], list[Path]], option: str = "gallery"
) -> list[Path]:
    """The image files of a folder given as ``option`` (``gallery``, ``--background``)."""
    files = lister(directory)
    if not files:
        raise CLIError(
            f"{option} {directory} holds no images (looked for {', '.join(_COMMON_EXTENSIONS)}, "
            "...)"
        )
    return files


def preprocessing(base: Preprocess, args: argparse.Namespace) -> Preprocess:
    """The model's preprocessing with ``--image-size``, ``--resize`` and ``--normalize``."""
    given = [
        flag
        for flag, value in (
            ("--image-size", args.image_size),
            ("--resize", args.resize),
            ("--normalize", args.normalize),
        )
        if value is not None
    ]
    if base.transform is not None and given:
        raise CLIError(
            f"--model {args.model} brings its own preprocessing transform; {given[0]} cannot "
            "change it (declare a captum_fam.images.Preprocess instead to allow that)"
        )
    preprocess = base
    try:
        if args.image_size is not None:
            preprocess = preprocess.resized(args.image_size)
        if args.resize is not None:
            margin = preprocess.resize_size if args.resize == "crop" else None
            preprocess = replace(preprocess, resize=args.resize, resize_size=margin)
        if args.normalize is not None:
            mean, std = args.normalize
            preprocess = replace(preprocess, mean=mean, std=std)
    except ValueError as error:
        raise CLIError(f"preprocessing: {error}") from None
    return preprocess


def prepare(preprocess: Preprocess, image: Image.Image, path: str | Path) -> Tensor:
    """One image's model input; a preprocessing that refuses it names the file."""
    try:
        return preprocess(image)
    except ValueError as error:
        raise CLIError(f"{path}: {error}") from None


def notices(
    loaded: LoadedModel, args: argparse.Namespace, images: Sequence[Image.Image]
) -> list[str]:
    """What makes the scores and maps meaningless or doubtful, for stderr and the figure."""
    found = []
    if loaded.random_weights:
        found.append(
            f"RANDOM WEIGHTS: {loaded.label} is untrained (--weights none), so its scores and "
            "maps say nothing about these images"
        )
    if loaded.label == "shapes":
        low, high = SHAPES_WORLD_SIDES
        paths = [args.query, *args.references]
        foreign = [
            (path, image.size)
            for path, image in zip(paths, images, strict=True)
            if image.width != image.height or not low <= image.width <= high
        ]
        if foreign:
            path, (width, height) = foreign[0]
            found.append(
                "TOY MODEL: 'shapes' is a small CNN trained on synthetic 64x64 scenes of 12 "
                f"shapes; {Path(path).name} ({width}x{height}) is not like them (not square with "
                f"a side of {low}-{high} px), so the scores and maps say little about it. Pass a "
                "real model: --model "
                "torchvision:resnet50 --weights DEFAULT, package.module:factory or a "
                "TorchScript file"
            )
    return found


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return path.name


def save_maps(
    path: Path,
    format: str | None,
    record: dict[str, Any],
    ragged: Sequence[str] = ("reference_maps",),
) -> None:
    """Write maps, scores and names: a dict with torch.save, or arrays with numpy.savez.

    The ``ragged`` entries are lists (reference maps of different sizes with ``--resize keep``,
    token maps of captions of different lengths): stacked when their items are tensors of one
    shape, else a list for torch and one array per item, ``KEY_0``, ``KEY_1``, ... for numpy.
    """
    record = dict(record)
    lists = {key: list(record.pop(key)) for key in ragged}
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        for key, items in lists.items():
            stackable = all(isinstance(m, Tensor) for m in items)
            if stackable and len({tuple(m.shape) for m in items}) == 1:
                record[key] = torch.stack(items)
            elif format == "torch":
                record[key] = [m.cpu() if isinstance(m, Tensor) else m for m in items]
            else:
                record.update({f"{key}_{i}": m for i, m in enumerate(items)})
        if format == "torch":
            torch.save(
                {k: v.cpu() if isinstance(v, Tensor) else v for k, v in record.items()}, path
            )
            return
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
