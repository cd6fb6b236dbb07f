"""Reading image files and preparing them the way a model expects, for the command line.

Images are read with PIL and converted to RGB. A :class:`Preprocess` turns them into the model's
input tensor and back into a displayable ``[0, 1]`` image, so that maps are drawn over what the
model saw (after its resize and crop), not over the original file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch import Tensor

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "ImageReadError",
    "Preprocess",
    "image_extensions",
    "list_images",
    "read_image",
]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageReadError(ValueError):
    """An image file is missing or cannot be decoded; the message names the file."""


def read_image(path: str | Path) -> Image.Image:
    r"""Read an image file with PIL, fully decoded and converted to RGB.

    Args:
        path (str or Path): The image file.

    Returns:
        *PIL.Image.Image* in RGB mode.

    Raises:
        ImageReadError: If the file does not exist, is a directory, or PIL cannot decode it
                    (also when it is truncated).
    """
    path = Path(path)
    if not path.exists():
        raise ImageReadError(f"image not found: {path}")
    if path.is_dir():
        raise ImageReadError(f"expected an image file, got a directory: {path}")
    try:
        with Image.open(path) as image:
            # load() decodes now, so a truncated file fails here and not later in a transform.
            image.load()
            return image.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise ImageReadError(f"cannot read image {path}: {reason}") from None


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
    r"""How images become model inputs, and how inputs become displayable images again.

    Args:
        size (int): Side of the square input in pixels (used when ``transform`` is None).
        mean (Sequence[float], optional): Per-channel mean subtracted after scaling to
                    ``[0, 1]``; None leaves ``[0, 1]`` inputs. Default: None
        std (Sequence[float], optional): Per-channel standard deviation. Default: None
        transform (Callable, optional): A transform ``PIL image -> (3, H, W) tensor`` that
                    replaces the resize and normalization (e.g. torchvision's
                    ``weights.transforms()``); ``mean`` and ``std`` must then describe its
                    normalization so that :meth:`display` can undo it. Default: None
        label (str, optional): Description for summaries.
    """

    size: int
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    transform: Callable[[Image.Image], Tensor] | None = None
    label: str = ""

    def __call__(self, image: Image.Image) -> Tensor:
        """The ``(3, H, W)`` float input of one RGB image."""
        if self.transform is not None:
            return self.transform(image).float()
        resized = image.resize((self.size, self.size), Image.Resampling.BILINEAR)
        array = np.asarray(resized, dtype=np.float32) / 255.0
        tensor = torch.from_numpy(array.copy()).permute(2, 0, 1)
        if self.mean is not None and self.std is not None:
            tensor = (tensor - _column(self.mean)) / _column(self.std)
        return tensor

    def load(self, paths: Sequence[str | Path]) -> Tensor:
        """Read and preprocess image files into one ``(N, 3, H, W)`` batch."""
        return torch.stack([self(read_image(p)) for p in paths])

    def display(self, inputs: Tensor) -> Tensor:
        """Undo the normalization: model inputs ``(..., 3, H, W)`` back to ``[0, 1]``."""
        if self.mean is None or self.std is None:
            return inputs.clamp(0.0, 1.0)
        return (inputs * _column(self.std) + _column(self.mean)).clamp(0.0, 1.0)


def _column(values: Sequence[float]) -> Tensor:
    return torch.tensor([float(v) for v in values], dtype=torch.float32).view(3, 1, 1)
