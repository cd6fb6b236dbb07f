"""Retrieval over a folder of image files: rank them against a query and explain the top-k.

:func:`retrieve` reads and embeds the files once, in batches, and hands the cached embeddings
to :func:`captum_fam.tasks.explain_retrieval`; :func:`embed_images` is its batching step, also
for inputs of different sizes (a preprocessing that keeps the aspect ratio).

Examples::

    >>> from captum_fam.gallery import retrieve
    >>> from captum_fam.images import list_images, read_image
    >>> from captum_fam.models import load_model
    >>> loaded = load_model("torchvision:resnet50", weights="DEFAULT")
    >>> fam = loaded.explainer()
    >>> query = loaded.preprocess(read_image("query.jpg")).unsqueeze(0)
    >>> found = retrieve(fam, query, list_images("photos/"), loaded.preprocess, top_k=5)
    >>> found.paths, found.scores, found.maps.shape      # best first; (5, 1, h, w)
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch import Tensor

from captum_fam.attribution import FeatureActivationMap
from captum_fam.images import MIN_IMAGE_SIDE, ImageReadError, _read_rgb

__all__ = ["Retrieval", "embed_images", "retrieve"]


@dataclass
class Retrieval:
    r"""The top-k gallery items for a query, best first, with their FAM maps.

    Args:
        paths (list[Path]): The retrieved files.
        scores (Tensor): ``(k,)`` similarities to the query.
        maps (Tensor): ``(k, 1, h, w)`` FAM maps of the query against each item.
        embeddings (Tensor): ``(k, D)`` the items' embeddings (:meth:`FeatureActivationMap.embed`).
        gallery_size (int): Number of gallery images embedded.
        skipped (list[Path]): Gallery files that could not be read (or were too small).
    """

    paths: list[Path]
    scores: Tensor
    maps: Tensor
    embeddings: Tensor
    gallery_size: int
    skipped: list[Path] = field(default_factory=list)


def embed_images(
    fam: FeatureActivationMap, inputs: Sequence[Tensor], batch_size: int = 32
) -> Tensor:
    r"""Embeddings ``(N, D)`` of ``(3, H, W)`` inputs, batched by size, in the given order.

    Args:
        fam (FeatureActivationMap): The explainer whose :meth:`~FeatureActivationMap.embed`
                    is used.
        inputs (Sequence[Tensor]): Preprocessed images; they may differ in size.
        batch_size (int, optional): Images per forward. Default: 32
    """
    if not inputs:
        raise ValueError("inputs must hold at least one image; got none")
    groups: dict[tuple[int, ...], list[int]] = {}
    for index, tensor in enumerate(inputs):
        groups.setdefault(tuple(tensor.shape), []).append(index)
    rows: list[Tensor | None] = [None] * len(inputs)
    for indices in groups.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            embedded = fam.embed(torch.stack([inputs[i] for i in chunk]))
            for index, row in zip(chunk, embedded, strict=True):
                rows[index] = row
    return torch.stack([row for row in rows if row is not None])


def retrieve(
    fam: FeatureActivationMap,
    query: Tensor,
    gallery: Sequence[str | Path],
    preprocess: Callable[[Image.Image], Tensor],
    top_k: int,
    batch_size: int = 32,
    progress: bool = True,
) -> Retrieval:
    r"""Rank a gallery of image files against a query and explain the top-k with FAM.

    The gallery is read and embedded once, in batches (a progress bar on stderr); ranking and
    maps come from :func:`captum_fam.tasks.explain_retrieval` on those cached embeddings, i.e.
    the query explained against each of the top-k items. Unreadable files (and images under
    :data:`~captum_fam.images.MIN_IMAGE_SIDE` pixels) are skipped and listed in the result;
    transparent images are composited onto white, with one warning for all of them.

    Args:
        fam (FeatureActivationMap): The explainer (model, layer, similarity, weighting).
        query (Tensor): The preprocessed query, ``(1, 3, H, W)``.
        gallery (Sequence[str or Path]): Image files.
        preprocess (Callable): PIL image -> ``(3, H, W)`` model input, e.g. a
                    :class:`~captum_fam.images.Preprocess`.
        top_k (int): Number of items to retrieve (at most the gallery size).
        batch_size (int, optional): Images per forward while embedding. Default: 32
        progress (bool, optional): Show a progress bar on stderr. Default: True

    Returns:
        Retrieval: the top-k paths, scores, maps and embeddings, best first.

    Raises:
        ImageReadError: If none of the files can be read.
    """
    from tqdm.auto import tqdm

    from captum_fam.tasks import explain_retrieval

    if top_k < 1:
        raise ValueError(f"top_k must be at least 1; got {top_k}")
    rows: list[Tensor] = []
    kept: list[Path] = []
    skipped: list[Path] = []
    transparent = 0
    with tqdm(
        total=len(gallery),
        desc="embedding gallery",
        unit="img",
        file=sys.stderr,
        disable=not progress,
    ) as bar:
        for start in range(0, len(gallery), batch_size):
            images: list[Tensor] = []
            for name in gallery[start : start + batch_size]:
                path = Path(name)
                try:
                    image, alpha = _read_rgb(path, (255, 255, 255), MIN_IMAGE_SIDE)
                except ImageReadError:
                    skipped.append(path)
                    continue
                transparent += alpha
                images.append(preprocess(image))
                kept.append(path)
            if images:
                rows.append(embed_images(fam, images, batch_size))
            bar.update(min(batch_size, len(gallery) - start))
    if transparent:
        warnings.warn(
            f"{transparent} gallery image(s) have transparency: composited onto white",
            stacklevel=2,
        )
    if not kept:
        raise ImageReadError(f"none of the {len(gallery)} gallery files could be read as an image")
    embeddings = torch.cat(rows)
    found = explain_retrieval(
        fam, query, gallery_embeddings=embeddings, k=min(top_k, len(kept)), batch_size=batch_size
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
