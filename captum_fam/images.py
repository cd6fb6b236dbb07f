"""Image files for a model: reading, listing a folder, and the preprocessing in between.

:func:`read_image` reads a file as RGB (transparent images are composited onto a background,
with a warning). A :class:`Preprocess` turns such an image into the model's input tensor and
back into a displayable ``[0, 1]`` picture, so that maps are drawn over what the model saw
(after its resize and crop), not over the original file. It states its choices (resize mode,
normalisation) in :attr:`Preprocess.description`, which the command line prints and draws.

Examples::

    >>> from captum_fam.images import Preprocess, read_image
    >>> imagenet = Preprocess(224, resize="crop", resize_size=256)      # ImageNet mean/std
    >>> faces = Preprocess(112, resize="keep", mean=None, std=None)     # [0, 1], aspect kept
    >>> x = faces(read_image("query.jpg")).unsqueeze(0)                 # (1, 3, 112, W)
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "MIN_IMAGE_SIDE",
    "RESIZE_MODES",
    "ImageReadError",
    "Preprocess",
    "image_extensions",
    "list_images",
    "read_image",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

RESIZE_MODES = ("squash", "crop", "keep")
"""``squash``: both sides to ``size`` (aspect ratio lost). ``crop``: the shorter side to
``resize_size``, then a centred ``size x size`` crop (torchvision's ImageNet recipe). ``keep``:
the shorter side to ``size``, nothing cropped (a non-square image stays non-square)."""

MIN_IMAGE_SIDE = 8
"""Images with a side below this many pixels are refused: upscaled to a model's input they hold
no spatial detail, so any map over them would be an artefact of the interpolation."""

_MAX_KEPT_ASPECT = 8.0
_INTERPOLATIONS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
}


class ImageReadError(ValueError):
    """An image file is missing, cannot be decoded or is too small; the message names it."""


def read_image(
    path: str | Path,
    background: tuple[int, int, int] = (255, 255, 255),
    min_side: int = MIN_IMAGE_SIDE,
) -> Image.Image:
    r"""Read an image file with PIL, fully decoded and converted to RGB.

    A transparent image (RGBA, LA, or a palette with a transparent colour) is composited onto
    ``background`` with a warning that says so: dropping the alpha channel instead would show
    the model whatever colour the transparent pixels happen to store.

    Args:
        path (str or Path): The image file.
        background (tuple[int, int, int], optional): RGB colour under transparent pixels.
                    Default: white ``(255, 255, 255)``
        min_side (int, optional): Smallest accepted width and height in pixels.
                    Default: :data:`MIN_IMAGE_SIDE`

    Returns:
        *PIL.Image.Image* in RGB mode.

    Raises:
        ImageReadError: If the file does not exist, is a directory, cannot be decoded (also
                    when it is truncated) or is smaller than ``min_side`` pixels.
    """
    image, transparent = _read_rgb(Path(path), background, min_side)
    if transparent:
        warnings.warn(
            f"{path} has transparency: composited onto the RGB background {background}",
            stacklevel=2,
        )
    return image


def _read_rgb(
    path: Path, background: tuple[int, int, int], min_side: int
) -> tuple[Image.Image, bool]:
    """The RGB image and whether it had transparency (no warning: callers aggregate)."""
    if not path.exists():
        raise ImageReadError(f"image not found: {path}")
    if path.is_dir():
        raise ImageReadError(f"expected an image file, got a directory: {path}")
    try:
        with Image.open(path) as image:
            # load() decodes now, so a truncated file fails here and not later in a transform.
            image.load()
            transparent = image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info
            if transparent:
                rgba = image.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (*background, 255))
                rgb = Image.alpha_composite(canvas, rgba).convert("RGB")
            else:
                rgb = image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(f"cannot read image {path}: {reason}") from None
    if min(rgb.size) < min_side:
        raise ImageReadError(
            f"image too small: {path} is {rgb.width}x{rgb.height} px; at least {min_side} px "
            "per side is needed (resized to the model's input, a smaller image has no spatial "
            "detail for a map)"
        )
    return rgb, transparent


def image_extensions() -> tuple[str, ...]:
    """File extensions (lower case, with the dot) that PIL can open."""
    Image.init()
    return tuple(
        sorted(ext for ext, fmt in Image.registered_extensions().items() if fmt in Image.OPEN)
    )


def list_images(directory: str | Path) -> list[Path]:
    r"""Image files under ``directory`` (recursively), sorted, picked by extension.

    Raises:
        ImageReadError: If ``directory`` is not a directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise ImageReadError(f"gallery is not a directory: {directory}")
    extensions = set(image_extensions())
    return sorted(p for p in directory.rglob("*") if p.is_file() and p.suffix.lower() in extensions)


@dataclass(frozen=True)
class Preprocess:
    r"""How image files become model inputs, and how inputs become displayable images again.

    Args:
        size (int, optional): The input side in pixels: the crop's side (``resize="crop"``),
                    both sides (``"squash"``) or the shorter side (``"keep"``). Default: 224
        resize (str, optional): One of :data:`RESIZE_MODES`. Default: ``"crop"``
        resize_size (int, optional): With ``resize="crop"``, the shorter side before the
                    centred crop (torchvision's ImageNet weights use e.g. 256 or 232 for a 224
                    crop). Default: ``size`` (the crop keeps the whole shorter side)
        mean (Sequence[float], optional): Per-channel mean subtracted after scaling to
                    ``[0, 1]``; None feeds ``[0, 1]`` RGB (for models that normalise inside).
                    Default: the ImageNet mean
        std (Sequence[float], optional): Per-channel standard deviation; None with ``mean``.
                    Default: the ImageNet standard deviation
        interpolation (str, optional): ``"bilinear"``, ``"bicubic"`` or ``"nearest"``.
                    Default: ``"bilinear"``
        transform (Callable, optional): A model's own ``PIL image -> (3, H, W) tensor``
                    transform, replacing all of the above; :meth:`display` then rescales its
                    output to ``[0, 1]`` unless ``mean`` and ``std`` describe its
                    normalisation. Default: None
        label (str, optional): Description of ``transform`` for :attr:`description`.

    Examples::

        >>> Preprocess(224, resize="crop", resize_size=256).description
        'shorter side to 256 px, centre crop 224x224 px; ImageNet mean/std'
        >>> Preprocess(64, resize="squash", mean=None, std=None).description
        'resized to 64x64 px (aspect ratio not kept); RGB in [0, 1], no normalisation'
    """

    size: int = 224
    resize: str = "crop"
    resize_size: int | None = None
    mean: Sequence[float] | None = IMAGENET_MEAN
    std: Sequence[float] | None = IMAGENET_STD
    interpolation: str = "bilinear"
    transform: Callable[[Image.Image], Tensor] | None = None
    label: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.size, int) or self.size < MIN_IMAGE_SIDE:
            raise ValueError(f"size must be an int >= {MIN_IMAGE_SIDE}; got {self.size!r}")
        if self.resize not in RESIZE_MODES:
            raise ValueError(f"resize must be one of {RESIZE_MODES}; got {self.resize!r}")
        if self.resize_size is not None and self.resize_size < self.size:
            raise ValueError(
                f"resize_size ({self.resize_size}) must be at least size ({self.size}): the "
                "crop is taken from the resized image"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(
                f"interpolation must be one of {tuple(_INTERPOLATIONS)}; got {self.interpolation!r}"
            )
        if (self.mean is None) != (self.std is None):
            raise ValueError("give both mean and std, or neither (no normalisation)")
        for name in ("mean", "std"):
            values = getattr(self, name)
            if values is not None:
                values = tuple(float(v) for v in values)
                if len(values) != 3:
                    raise ValueError(f"{name} must have 3 values (R, G, B); got {len(values)}")
                object.__setattr__(self, name, values)
        if self.std is not None and min(self.std) <= 0:
            raise ValueError(f"std must be positive; got {self.std}")

    @property
    def description(self) -> str:
        """What the preprocessing does, in words (printed and drawn by the command line)."""
        if self.transform is not None:
            return self.label or f"the model's own transform ({type(self.transform).__name__})"
        if self.resize == "squash":
            steps = f"resized to {self.size}x{self.size} px (aspect ratio not kept)"
        elif self.resize == "crop":
            steps = (
                f"shorter side to {self.resize_size or self.size} px, "
                f"centre crop {self.size}x{self.size} px"
            )
        else:
            steps = f"shorter side to {self.size} px, aspect ratio kept (no crop)"
        if self.interpolation != "bilinear":
            steps += f", {self.interpolation}"
        if self.mean is None or self.std is None:
            normalisation = "RGB in [0, 1], no normalisation"
        elif (tuple(self.mean), tuple(self.std)) == (IMAGENET_MEAN, IMAGENET_STD):
            normalisation = "ImageNet mean/std"
        else:
            normalisation = f"mean {_values(self.mean)}, std {_values(self.std)}"
        return f"{steps}; {normalisation}"

    @classmethod
    def from_torchvision(cls, preset: Any) -> Preprocess:
        """The preprocessing of torchvision weights: ``Preprocess.from_torchvision(
        weights.transforms())`` resizes, crops, interpolates and normalises as ``preset`` does
        (an ``ImageClassification`` preset: ``resize_size``, ``crop_size``, ``mean``, ``std``,
        ``interpolation``)."""
        return cls(
            preset.crop_size[0],
            resize="crop",
            resize_size=preset.resize_size[0],
            mean=tuple(preset.mean),
            std=tuple(preset.std),
            interpolation=preset.interpolation.value,
        )

    def resized(self, size: int) -> Preprocess:
        """The same preprocessing at another input size, keeping the crop's margin ratio."""
        if self.transform is not None:
            raise ValueError("a model's own transform fixes the input size; size cannot change")
        resize_size = None
        if self.resize_size is not None:
            resize_size = round(size * self.resize_size / self.size)
        return replace(self, size=size, resize_size=resize_size)

    def __call__(self, image: Image.Image) -> Tensor:
        """The ``(3, H, W)`` float32 input of one RGB image."""
        if self.transform is not None:
            tensor = self.transform(image)
            if not isinstance(tensor, Tensor) or tensor.dim() != 3 or tensor.shape[0] != 3:
                shape = tuple(tensor.shape) if isinstance(tensor, Tensor) else type(tensor)
                raise ValueError(
                    f"the preprocessing transform must return a (3, H, W) tensor; got {shape}"
                )
            return tensor.float()
        array = np.asarray(self._resize(image), dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
        if self.mean is not None and self.std is not None:
            tensor = (tensor - _column(self.mean)) / _column(self.std)
        return tensor

    def _resize(self, image: Image.Image) -> Image.Image:
        method = _INTERPOLATIONS[self.interpolation]
        if self.resize == "squash":
            return image.resize((self.size, self.size), method)
        short = (self.resize_size or self.size) if self.resize == "crop" else self.size
        width, height = image.size
        if self.resize == "keep" and max(width, height) > _MAX_KEPT_ASPECT * min(width, height):
            raise ValueError(
                f"a {width}x{height} image is more than {_MAX_KEPT_ASPECT:.0f} times longer than "
                "wide: with the aspect ratio kept the input would be huge; crop it first or "
                "use resize='crop'"
            )
        # torchvision's rule for Resize(int), so that "crop" matches weights.transforms().
        if width <= height:
            new = (short, int(short * height / width))
        else:
            new = (int(short * width / height), short)
        if new != image.size:
            image = image.resize(new, method)
        if self.resize == "keep":
            return image
        left = int(round((new[0] - self.size) / 2.0))
        top = int(round((new[1] - self.size) / 2.0))
        return image.crop((left, top, left + self.size, top + self.size))

    def load(self, paths: Sequence[str | Path]) -> Tensor:
        """Read and preprocess image files into one ``(N, 3, H, W)`` batch.

        Raises:
            ValueError: If the inputs differ in size (``resize="keep"`` on images of different
                        aspect ratios): preprocess them one by one instead.
        """
        tensors = [self(read_image(p)) for p in paths]
        shapes = {tuple(t.shape) for t in tensors}
        if len(shapes) > 1:
            raise ValueError(
                f"the images preprocess to different sizes {sorted(shapes)}; they cannot form "
                "one batch: preprocess them one by one"
            )
        return torch.stack(tensors)

    def display(self, inputs: Tensor) -> Tensor:
        """Undo the normalisation: model inputs ``(..., 3, H, W)`` back to ``[0, 1]``."""
        if self.mean is not None and self.std is not None:
            return (inputs * _column(self.std) + _column(self.mean)).clamp(0.0, 1.0)
        low, high = float(inputs.min()), float(inputs.max())
        if self.transform is not None and (low < 0.0 or high > 1.0):
            return (inputs - low) / max(high - low, 1e-12)
        return inputs.clamp(0.0, 1.0)


def _column(values: Sequence[float]) -> Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(3, 1, 1)


def _values(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{v:g}" for v in values) + ")"
