"""Baselines of the shapes CLIP's map figures (used by :mod:`captum_fam.zoo.evaluate_clip`).

On the same scenes and captions as FAM's pointing figures, and on the same score (the cosine
of the image and caption embeddings, :func:`captum_fam.interop.similarity_forward`):

- image side: Captum's LayerGradCam at the image layer (plain, and contrastive on the score
  minus the foil caption's score), Captum's IntegratedGradients on the pixels (black baseline),
  and the reference-agnostic map (the layer's channel mean);
- text side: Captum's LayerIntegratedGradients on the word embeddings (baseline: the padding
  embedding, zero), and the reference-agnostic token map (the token states' channel mean);
- the time of every method as a ratio to the forwards FAM needs (one forward of each tower);
- cascading randomisation of each tower (:func:`captum_fam.metrics.randomization_check`).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch
from captum.attr import IntegratedGradients, LayerGradCam, LayerIntegratedGradients
from torch import Tensor

from captum_fam.attribution import FeatureActivationMap
from captum_fam.interop import similarity_forward
from captum_fam.metrics import pointing_game, randomization_check
from captum_fam.zoo.captions import caption_classes
from captum_fam.zoo.clip import ShapesClip
from captum_fam.zoo.shapes import SEEN_CLASSES, SHAPE_CLASSES, make_shapes

__all__ = [
    "IMAGE_METHODS",
    "SEEN_CLASS_INDICES",
    "TOKEN_METHODS",
    "clip_fams",
    "image_pointing_rates",
    "image_side",
    "randomisation",
    "token_hits",
    "token_pointing_rate",
    "token_pointing_scenes",
    "token_side",
]

SEEN_CLASS_INDICES = tuple(SHAPE_CLASSES.index(c) for c in SEEN_CLASSES)
"""Indices of the classes the CLIP was trained on (every figure is on these unless named)."""

IMAGE_METHODS = ("FAM", "contrastive FAM", "LayerGradCam", "contrastive LayerGradCam",
                 "IntegratedGradients", "reference-agnostic")  # fmt: skip
TOKEN_METHODS = ("FAM", "LayerIntegratedGradients", "reference-agnostic")


def clip_fams(clip: ShapesClip) -> tuple[FeatureActivationMap, FeatureActivationMap]:
    """FAM on each tower: ``block4`` of the image tower and the text tower's token states, both
    explaining the towers' outputs (``embedding="output"``, the default)."""
    image_fam = FeatureActivationMap(clip.image_tower, clip.image_layer)
    text_fam = FeatureActivationMap(clip.text_tower, clip.text_layer, token_layout="sequence")
    return image_fam, text_fam


def token_pointing_scenes(
    clip: ShapesClip, seed: int, n: int
) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor]:
    """One-object images and captions naming their class and another ("a star and a
    triangle", random template and order).

    Returns:
        ``images (n, 3, 64, 64)``, ``(input_ids, attention_mask)`` and ``target (n, T)``, True
        on the present class's word.
    """
    batch = make_shapes(n, objects=1, seed=seed, classes=SEEN_CLASS_INDICES)
    g = torch.Generator().manual_seed(seed + 1)
    present = batch.labels[:, 0].tolist()
    pick = torch.randint(len(SEEN_CLASS_INDICES) - 1, (n,), generator=g).tolist()
    foils = [
        [c for c in SEEN_CLASS_INDICES if c != p][k] for p, k in zip(present, pick, strict=True)
    ]
    captions = caption_classes([[p, f] for p, f in zip(present, foils, strict=True)], seed=seed + 2)
    input_ids, attention_mask = clip.tokenizer.encode(captions)
    word_ids = torch.tensor([clip.tokenizer.vocabulary.index(SHAPE_CLASSES[p].lower())
                             for p in present])  # fmt: skip
    return batch.images, (input_ids, attention_mask), input_ids == word_ids[:, None]


def token_hits(token_maps: Tensor, attention_mask: Tensor, target: Tensor) -> Tensor:
    """``(n,)`` True where the largest value of a ``(n, 1, T)`` or ``(n, T)`` token map over
    the caption's tokens is on a target token."""
    values = token_maps.reshape(target.shape).float()
    values = values.masked_fill(attention_mask.to(values.device) == 0, float("-inf"))
    return target.to(values.device).gather(1, values.argmax(dim=1, keepdim=True))[:, 0]


def token_pointing_rate(clip: ShapesClip, *, seed: int, n: int = 500) -> float:
    """Share of one-object images whose caption "a <present> and a <foil>" (either order,
    random template) gets its largest FAM token attribution on the present class's word.

    The token map is FAM on the text tower's token states with the image's embedding as the
    reference (signed: ``relu_attributions=False``).

    Args:
        clip (ShapesClip): The model.
        seed (int): Base seed of the scenes and captions.
        n (int, optional): Images (seen classes). Default: 500

    Returns:
        float: The token pointing rate.
    """
    images, texts, target = token_pointing_scenes(clip, seed, n)
    image_fam, text_fam = clip_fams(clip)
    device = clip.device
    inputs = tuple(t.to(device) for t in texts)
    with torch.no_grad():
        maps = text_fam.attribute(
            inputs,
            reference_embeddings=image_fam.embed(images.to(device)),
            pooling_mask=1,
            relu_attributions=False,
        )
    return float(token_hits(maps, texts[1], target).float().mean())


def image_pointing_rates(clip: ShapesClip, *, seed: int, scenes: int = 500) -> dict[str, float]:
    """Pointing rates of FAM image maps on two-object scenes, the caption naming one object.

    Args:
        clip (ShapesClip): The model.
        seed (int): Base seed of the scenes and captions.
        scenes (int, optional): Two-object scenes (seen classes). Default: 500

    Returns:
        dict[str, float]: ``plain_object1``, ``plain_object2``, ``contrastive_object1``,
        ``contrastive_object2``.
    """
    batch = make_shapes(scenes, objects=2, seed=seed, classes=SEEN_CLASS_INDICES)
    images = batch.images.to(clip.device)
    texts = [
        clip.embed_texts(caption_classes(batch.labels[:, k : k + 1].tolist(), seed=seed + 1 + k))
        for k in range(2)
    ]
    fam = clip_fams(clip)[0]
    out = {}
    for contrastive in (False, True):
        for k in range(2):
            foil = texts[1 - k] if contrastive else None
            with torch.no_grad():
                maps = fam.attribute(images, reference_embeddings=texts[k], foil_embeddings=foil)
            name = "contrastive" if contrastive else "plain"
            out[f"{name}_object{k + 1}"] = float(
                pointing_game(maps, batch.masks[:, k]).float().mean()
            )
    return out


def _timed(fn: Callable[[], Tensor]) -> tuple[Tensor, float]:
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def _forwards_time(clip: ShapesClip, images: Tensor, texts: tuple[Tensor, Tensor]) -> float:
    """Seconds of the forwards FAM cannot avoid: each tower once over its inputs."""
    with torch.no_grad():
        clip.image_tower(images), clip.text_tower(*texts)  # warm-up
        start = time.perf_counter()
        clip.image_tower(images), clip.text_tower(*texts)
    return time.perf_counter() - start


def image_side(
    clip: ShapesClip, *, seed: int, scenes: int = 500, ig_steps: int = 32
) -> dict[str, dict[str, float]]:
    """Pointing rates and time ratios of every image-side method on two-object scenes, the
    caption naming one object (each object in turn; contrastive: the other object's caption
    as the foil).

    Returns:
        dict[str, dict[str, float]]: method (:data:`IMAGE_METHODS`) to ``object1``, ``object2``
        (pointing rates) and ``time`` (seconds over both objects, divided by the forwards'
        time: the images through the image tower and the captions through the text tower).
    """
    batch = make_shapes(scenes, objects=2, seed=seed, classes=SEEN_CLASS_INDICES)
    captions = [
        caption_classes(batch.labels[:, k : k + 1].tolist(), seed=seed + 1 + k) for k in range(2)
    ]
    texts = [clip.tokenizer.encode(c) for c in captions]
    image_fam, text_fam = clip_fams(clip)
    forward = similarity_forward(image_fam)
    gradcam = LayerGradCam(forward, clip.image_layer)
    contrastive_gradcam = LayerGradCam(
        lambda x, r, f: forward(x, r) - forward(x, f), clip.image_layer
    )
    integrated = IntegratedGradients(forward)
    images = batch.images

    def methods(k: int) -> dict[str, Callable[[], Tensor]]:
        other = 1 - k

        def embed(side: int) -> Tensor:
            return text_fam.embed(texts[side], pooling_mask=1)

        def fam(contrastive: bool) -> Tensor:
            foil = embed(other) if contrastive else None
            return image_fam.attribute(images, reference_embeddings=embed(k), foil_embeddings=foil)

        def agnostic() -> Tensor:
            return image_fam.engine.queries((images,)).activations.mean(dim=1, keepdim=True)

        return {
            "FAM": lambda: fam(False),
            "contrastive FAM": lambda: fam(True),
            "LayerGradCam": lambda: gradcam.attribute(
                images, additional_forward_args=(embed(k),), relu_attributions=True
            ),
            "contrastive LayerGradCam": lambda: contrastive_gradcam.attribute(
                images, additional_forward_args=(embed(k), embed(other)), relu_attributions=True
            ),
            "IntegratedGradients": lambda: integrated.attribute(
                images,
                baselines=0.0,
                additional_forward_args=(embed(k),),
                n_steps=ig_steps,
                internal_batch_size=500,
            ).sum(dim=1, keepdim=True),
            "reference-agnostic": agnostic,
        }

    limit = _forwards_time(clip, images, texts[0])
    out: dict[str, dict[str, float]] = {name: {"time": 0.0} for name in IMAGE_METHODS}
    for k in range(2):
        for name, run in methods(k).items():
            with torch.set_grad_enabled(name not in ("FAM", "contrastive FAM")):
                maps, seconds = _timed(run)
            hits = pointing_game(maps.detach(), batch.masks[:, k])
            out[name][f"object{k + 1}"] = float(hits.float().mean())
            out[name]["time"] += seconds / (2 * limit)
    return out


def token_side(
    clip: ShapesClip, *, seed: int, n: int = 500, ig_steps: int = 32
) -> dict[str, dict[str, float]]:
    """Token pointing rate and time ratio of every text-side method: one-object images, the
    caption naming the present class and another; a hit when the largest token value is on
    the present class's word.

    Returns:
        dict[str, dict[str, float]]: method (:data:`TOKEN_METHODS`) to ``pointing`` and
        ``time`` (a ratio to the forwards' time, as in :func:`image_side`).
    """
    images, texts, target = token_pointing_scenes(clip, seed, n)
    image_fam, text_fam = clip_fams(clip)
    forward = similarity_forward(text_fam)
    integrated = LayerIntegratedGradients(
        lambda ids, mask, rows: forward((ids, mask), rows), clip.text_tower.embedding
    )

    def fam() -> Tensor:
        return text_fam.attribute(
            texts,
            reference_embeddings=image_fam.embed(images),
            pooling_mask=1,
            relu_attributions=False,
        )

    def lig() -> Tensor:
        input_ids, attention_mask = texts
        attributions = integrated.attribute(
            input_ids,
            baselines=torch.zeros_like(input_ids),  # the padding id: a zero embedding
            additional_forward_args=(attention_mask, image_fam.embed(images)),
            n_steps=ig_steps,
            internal_batch_size=500,
        )
        return attributions.sum(dim=-1)

    def agnostic() -> Tensor:
        return text_fam.engine.queries(texts, pooling_mask=1).activations.mean(dim=1)

    limit = _forwards_time(clip, images, texts)
    out: dict[str, dict[str, float]] = {}
    for name, run in zip(TOKEN_METHODS, (fam, lig, agnostic), strict=True):
        with torch.set_grad_enabled(name == "LayerIntegratedGradients"):
            maps, seconds = _timed(run)
        hits = token_hits(maps.detach(), texts[1], target)
        out[name] = {"pointing": float(hits.float().mean()), "time": seconds / limit}
    return out


def randomisation(clip: ShapesClip, *, seed: int, n: int = 50) -> dict[str, list[float]]:
    """Cascading randomisation of each tower, top first: the mean Spearman correlation of
    FAM's maps with the original ones after each step (the other tower is left intact, so the
    references stay those of the trained model).

    Returns:
        dict[str, list[float]]: ``image_layers``/``image_spearman`` and
        ``text_layers``/``text_spearman`` (names as ``str`` in a list of one, correlations
        per step).
    """
    batch = make_shapes(n, objects=2, seed=seed, classes=SEEN_CLASS_INDICES)
    captions = caption_classes(batch.labels[:, :1].tolist(), seed=seed + 1)
    texts = clip.tokenizer.encode(captions)
    image_fam, text_fam = clip_fams(clip)
    text_embeddings = text_fam.embed(texts, pooling_mask=1)
    image_embeddings = image_fam.embed(batch.images)

    def image_maps(tower: Any) -> Tensor:
        fam = FeatureActivationMap(tower, tower.trunk.block4)
        return fam.attribute(batch.images, reference_embeddings=text_embeddings)

    def token_maps(tower: Any) -> Tensor:
        fam = FeatureActivationMap(tower, tower.encoder, token_layout="sequence")
        return fam.attribute(
            texts, reference_embeddings=image_embeddings, pooling_mask=1, relu_attributions=False
        )

    image_layers = ["projection", "trunk.block4", "trunk.block3", "trunk.block2", "trunk.block1"]
    text_layers = ["projection", "encoder", "embedding"]
    with torch.no_grad():
        image = randomization_check(image_maps, clip.image_tower, image_layers, seed=seed)
        text = randomization_check(token_maps, clip.text_tower, text_layers, seed=seed)
    return {
        "image_layers": image_layers,
        "image_spearman": image.spearman.nan_to_num(0.0).mean(dim=1).tolist(),
        "text_layers": text_layers,
        "text_spearman": text.spearman.nan_to_num(0.0).mean(dim=1).tolist(),
    }
