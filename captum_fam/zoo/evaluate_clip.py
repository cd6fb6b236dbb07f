"""Evaluation of the shapes CLIP: ``python -m captum_fam.zoo.evaluate_clip``.

Every CLIP figure of docs/model_card.md comes from this module, on world and caption seeds that
training never uses (training seeds stay below 10**9, these start at 2,000,000,000). Figures:

- recall@1: pools of 100 fresh scenes (50 with one object, 50 with two) and one caption each;
  every image ranks the 100 captions and every caption the 100 images by cosine similarity. A
  hit is a top-1 candidate that matches the query (same classes, no contradicting colour word;
  :func:`~captum_fam.zoo.captions.caption_matches`), since a pool may hold several scenes of
  the same content;
- token pointing: a one-object image and a caption naming its class and another one
  ("a star and a triangle"); a hit when the largest value of FAM's token map (the text tower's
  token states against the image's embedding) is on the present class's word;
- image pointing: a two-object scene and a caption naming one object; a hit when the maximum
  of FAM's map (``embedding="output"``, reference = the caption's embedding; contrastive: the
  caption of the other object as the foil) falls on that object
  (:func:`captum_fam.metrics.pointing_game`, 5% tolerance).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch

from captum_fam.zoo.captions import (
    caption_matches,
    make_captions,
    scene_contents,
)
from captum_fam.zoo.clip import ShapesClip
from captum_fam.zoo.evaluate_clip_maps import (
    SEEN_CLASS_INDICES,
    image_pointing_rates,
    image_side,
    randomisation,
    token_pointing_rate,
    token_side,
)
from captum_fam.zoo.shapes import SHAPE_CLASSES, make_shapes

__all__ = [
    "CLIP_EVAL_SEED",
    "SEEN_CLASS_INDICES",
    "comparison_markdown",
    "evaluate_clip",
    "recall_at_1",
]

CLIP_EVAL_SEED = 2_000_000_000
"""Base world and caption seed of the evaluation (disjoint from every training seed)."""


def _scenes(n_single: int, n_pair: int, seed: int, classes: Sequence[int]):
    singles = make_shapes(n_single, objects=1, seed=seed, classes=classes)
    pairs = make_shapes(n_pair, objects=2, seed=seed + 1, classes=classes)
    captions = make_captions(singles, seed=seed + 2) + make_captions(pairs, seed=seed + 3)
    scenes = scene_contents(singles) + scene_contents(pairs)
    return torch.cat([singles.images, pairs.images]), captions, scenes


@torch.no_grad()
def recall_at_1(
    clip: ShapesClip,
    *,
    seed: int = CLIP_EVAL_SEED,
    pools: int = 10,
    size: int = 100,
    classes: Sequence[int] = SEEN_CLASS_INDICES,
) -> tuple[float, float]:
    """Image-to-text and text-to-image recall@1 among ``size`` candidates.

    Args:
        clip (ShapesClip): The model.
        seed (int, optional): Base seed of the scenes and captions. Default: CLIP_EVAL_SEED
        pools (int, optional): Independent pools; every item of a pool is a query once.
                    Default: 10
        size (int, optional): Scenes per pool, half with one object, half with two.
                    Default: 100
        classes (Sequence[int], optional): Classes the scenes are drawn from.
                    Default: the seen classes

    Returns:
        tuple[float, float]: ``(image_to_text, text_to_image)`` recall@1.
    """
    image_hits, text_hits, total = 0, 0, 0
    for p in range(pools):
        images, captions, scenes = _scenes(size // 2, size - size // 2, seed + 10 * p, classes)
        sims = clip.similarity(images.to(clip.device), captions)
        best_text = sims.argmax(dim=1).tolist()
        best_image = sims.argmax(dim=0).tolist()
        image_hits += sum(
            caption_matches(captions[t], s) for t, s in zip(best_text, scenes, strict=True)
        )
        text_hits += sum(
            caption_matches(c, scenes[i]) for c, i in zip(captions, best_image, strict=True)
        )
        total += len(captions)
    return image_hits / total, text_hits / total


def evaluate_clip(
    clip: ShapesClip, *, seed: int = CLIP_EVAL_SEED, pools: int = 10, scenes: int = 500
) -> dict[str, float]:
    """Computes every CLIP figure of the model card.

    Args:
        clip (ShapesClip): The model (towers in eval mode).
        seed (int, optional): Base seed. Default: CLIP_EVAL_SEED
        pools (int, optional): Recall pools of 100 scenes. Default: 10
        scenes (int, optional): Images for token pointing and scenes for image pointing.
                    Default: 500

    Returns:
        dict[str, float]: Figure name to value.
    """
    out: dict[str, float] = {}
    i2t, t2i = recall_at_1(clip, seed=seed, pools=pools)
    out["recall1_image_to_text_seen"], out["recall1_text_to_image_seen"] = i2t, t2i
    every = tuple(range(len(SHAPE_CLASSES)))
    i2t, t2i = recall_at_1(clip, seed=seed + 1000, pools=pools, classes=every)
    out["recall1_image_to_text_all"], out["recall1_text_to_image_all"] = i2t, t2i
    out["token_pointing"] = token_pointing_rate(clip, seed=seed + 2000, n=scenes)
    for key, value in image_pointing_rates(clip, seed=seed + 3000, scenes=scenes).items():
        out[f"image_pointing_{key}"] = value
    return out


def comparison_markdown(clip: ShapesClip, *, seed: int = CLIP_EVAL_SEED, scenes: int = 500) -> str:
    """The side-by-side tables of docs/benchmarks.md: every map method on the same cosine
    (:func:`~captum_fam.zoo.evaluate_clip_maps.image_side`,
    :func:`~captum_fam.zoo.evaluate_clip_maps.token_side`) and the randomisation check of each
    tower (:func:`~captum_fam.zoo.evaluate_clip_maps.randomisation`)."""
    image = image_side(clip, seed=seed + 3000, scenes=scenes)
    token = token_side(clip, seed=seed + 2000, n=scenes)
    random = randomisation(clip, seed=seed + 4000)
    lines = [
        f"Image side: {scenes} two-object scenes, a caption naming one object; pointing game "
        "(5% tolerance) on that object, each object in turn.",
        "",
        "| method | pointing, object 1 | pointing, object 2 | time / forwards |",
        "| --- | ---: | ---: | ---: |",
        *(
            f"| {name} | {v['object1']:.3f} | {v['object2']:.3f} | {v['time']:.1f}x |"
            for name, v in image.items()
        ),
        "",
        f"Text side: {scenes} one-object images, a caption naming the present shape and another; "
        "a hit when the largest token value is on the present shape's word.",
        "",
        "| method | token pointing | time / forwards |",
        "| --- | ---: | ---: |",
        *(f"| {name} | {v['pointing']:.3f} | {v['time']:.1f}x |" for name, v in token.items()),
        "",
        "Cascading randomisation (FAM maps; mean Spearman correlation with the trained model's "
        "maps after randomising each module, top first, cumulatively):",
        "",
    ]
    for side in ("image", "text"):
        steps = ", ".join(
            f"{name} {rho:.2f}"
            for name, rho in zip(random[f"{side}_layers"], random[f"{side}_spearman"], strict=True)
        )
        lines.append(f"- {side} tower: {steps}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: prints every figure, one per line."""
    from captum_fam.zoo.clip import load_shapes_clip

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights file (default: shipped)")
    parser.add_argument("--seed", type=int, default=CLIP_EVAL_SEED, help="base seed")
    parser.add_argument("--pools", type=int, default=10, help="recall pools of 100 scenes")
    parser.add_argument("--scenes", type=int, default=500, help="pointing images and scenes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--compare",
        action="store_true",
        help="also print the Markdown tables of FAM, LayerGradCam, IntegratedGradients and the "
        "reference-agnostic maps on the same cosine, with the randomisation check",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.weights is None:
        clip = load_shapes_clip()
    else:
        clip = load_shapes_clip(path=args.weights, sha256=None)
    figures = evaluate_clip(clip, seed=args.seed, pools=args.pools, scenes=args.scenes)
    for key, value in figures.items():
        print(f"{key:40s} {value:.4f}")
    if args.compare:
        print()
        print(comparison_markdown(clip, seed=args.seed, scenes=args.scenes))


if __name__ == "__main__":
    main()
