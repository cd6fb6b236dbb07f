"""Where ``explain-dataset`` gets its items and references: image folders, the shapes world,
embedding files.

An image folder holds its images directly (unlabelled items) or in one subfolder per class
(labelled items, classes in sorted order, as torchvision's ``ImageFolder``). References are
embeddings in the model's space, read from a file (``.npy``; ``.npz`` or ``.pt`` with an
``embeddings`` array and optional ``classes`` names) or computed from image files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from captum_fam.attribution import FeatureActivationMap
from captum_fam.cli import options
from captum_fam.cli.common import CLIError
from captum_fam.gallery import embed_images
from captum_fam.images import Preprocess, list_images, read_image
from captum_fam.tasks import class_prototypes

__all__ = [
    "EMBEDDING_SUFFIXES",
    "ImageFolder",
    "ShapesScenes",
    "embed_files",
    "folder_prototypes",
    "read_embeddings",
]

EMBEDDING_SUFFIXES = (".npy", ".npz", ".pt", ".pth")


class ImageFolder(Dataset):
    """The images under ``root`` as model inputs; ``(input, label)`` with class subfolders.

    Args:
        root (str or Path): The folder.
        preprocess (Preprocess): Image file -> model input.
    """

    def __init__(self, root: str | Path, preprocess: Preprocess) -> None:
        self.root, self.preprocess = Path(root), preprocess
        self.files, self.classes, self.labels = labelled_files(self.root)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> Any:
        path = self.files[index]
        inputs = options.prepare(self.preprocess, read_image(path), path)
        return inputs if self.labels is None else (inputs, self.labels[index])


class ShapesScenes(Dataset):
    """``n`` single-object scenes of the embedded shapes world: ``(image, label, mask)``."""

    def __init__(self, n: int, seed: int) -> None:
        from captum_fam.zoo import SHAPE_CLASSES, make_shapes

        scenes = make_shapes(n, objects=1, seed=seed)
        self.images, self.labels, self.masks = scenes.images, scenes.labels[:, 0], scenes.masks
        self.classes = list(SHAPE_CLASSES)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple[Tensor, int, Tensor]:
        return self.images[index], int(self.labels[index]), self.masks[index, 0]


def labelled_files(root: Path) -> tuple[list[Path], list[str] | None, list[int] | None]:
    """The image files under ``root``, and their classes when they sit in class subfolders."""
    if not root.is_dir():
        raise CLIError(f"{root} is not a folder of images")
    files = list_images(root)
    if not files:
        raise CLIError(f"{root} holds no images")
    depths = {len(path.relative_to(root).parts) for path in files}
    if depths == {1}:
        return files, None, None
    if 1 in depths:
        loose = next(p for p in files if len(p.relative_to(root).parts) == 1)
        raise CLIError(
            f"{root} mixes images ({loose.name}) with class subfolders: put every image in "
            "its class's subfolder, or none"
        )
    names = sorted({path.relative_to(root).parts[0] for path in files})
    labels = [names.index(path.relative_to(root).parts[0]) for path in files]
    return files, names, labels


def embed_files(
    fam: FeatureActivationMap,
    files: Sequence[Path],
    preprocess: Preprocess,
    batch_size: int,
) -> Tensor:
    """``(len(files), D)`` embeddings of image files, read and embedded in batches."""
    model = fam.forward_func
    parameter = next(model.parameters(), None) if isinstance(model, torch.nn.Module) else None
    device = torch.device("cpu") if parameter is None else parameter.device
    rows = []
    for start in range(0, len(files), batch_size):
        chunk = files[start : start + batch_size]
        inputs = [options.prepare(preprocess, read_image(path), path).to(device) for path in chunk]
        rows.append(embed_images(fam, inputs, batch_size).cpu())
    return torch.cat(rows)


def folder_prototypes(
    fam: FeatureActivationMap,
    root: Path,
    preprocess: Preprocess,
    batch_size: int,
    class_names: Sequence[str],
) -> tuple[Tensor, Tensor]:
    """Prototypes of a folder with one subfolder of images per class, labelled as the items."""
    files, names, labels = labelled_files(root)
    if names is None:
        raise CLIError(f"--prototypes {root}: give one subfolder of images per class")
    unknown = [name for name in names if name not in class_names]
    if unknown:
        raise CLIError(
            f"--prototypes {root}: classes {unknown[:5]} are not classes of the items "
            f"({', '.join(class_names[:8])}{', ...' if len(class_names) > 8 else ''})"
        )
    assert labels is not None
    embeddings = embed_files(fam, files, preprocess, batch_size)
    rows, prototypes = class_prototypes(embeddings, torch.tensor(labels))
    classes = torch.tensor([class_names.index(names[int(row)]) for row in rows])
    return classes, prototypes


def read_embeddings(path: str | Path) -> tuple[Tensor, list[str] | None]:
    """``(M, D)`` embeddings and, when the file names them, the class of each row."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise CLIError(
            f"{path}: expected a folder of images or an embeddings file "
            f"({', '.join(EMBEDDING_SUFFIXES)})"
        )
    if not path.is_file():
        raise CLIError(f"{path}: no such file")
    names: Any = None
    if suffix == ".npy":
        values: Any = np.load(path)
    elif suffix == ".npz":
        with np.load(path) as archive:
            if "embeddings" not in archive:
                raise CLIError(f"{path}: the archive holds no 'embeddings' array")
            values = archive["embeddings"]
            names = archive["classes"].tolist() if "classes" in archive else None
    else:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(loaded, dict):
            if "embeddings" not in loaded:
                raise CLIError(f"{path}: the dictionary holds no 'embeddings' entry")
            values, names = loaded["embeddings"], loaded.get("classes")
        else:
            values = loaded
    embeddings = torch.as_tensor(np.asarray(values) if not isinstance(values, Tensor) else values)
    if embeddings.dim() == 1:
        embeddings = embeddings.unsqueeze(0)
    if embeddings.dim() != 2 or not embeddings.is_floating_point():
        raise CLIError(
            f"{path}: embeddings must be a floating point (M, D) array; got "
            f"{embeddings.dtype} of shape {tuple(embeddings.shape)}"
        )
    if names is not None:
        names = [str(name) for name in names]
        if len(names) != len(embeddings):
            raise CLIError(f"{path}: {len(names)} class names for {len(embeddings)} rows")
    return embeddings.float(), names
