"""``captum-fam demo``: FAM next to Integrated Gradients on a scene of the embedded shapes world.

Offline: a two-object query, one single-object reference per object, FAM's map of the query
against each reference and Integrated Gradients' map of the very same similarity, with the
scores and the share of each map's mass on each object, printed and drawn.
"""

from __future__ import annotations

import argparse
from typing import Any

import numpy as np
import torch
from torch import Tensor

from captum_fam.cli.common import add_fam_options
from captum_fam.cli.figures import IG_PERCENTILE, checked_figure_path, demo_figure, save_figure
from captum_fam.models import load_model
from captum_fam.visualization import attribution_to_numpy

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "demo",
        help="offline demo on the embedded shapes world",
        description="Explain a two-object shapes scene against one reference per object, with "
        "FAM and, for comparison, Integrated Gradients of the same similarity.",
    )
    parser.add_argument("--out", default="fam-demo.png", help="figure file (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scene (default: 0)")
    add_fam_options(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    from captum.attr import IntegratedGradients

    from captum_fam.metrics import reference_dependence, similarity_forward
    from captum_fam.zoo import SHAPE_CLASSES, make_shapes

    out = checked_figure_path(args.out)
    loaded = load_model("shapes")
    fam = loaded.explainer(similarity=args.similarity, weighting=args.weighting)
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
    scores = fam.similarity_scores(query_rows, reference_embeddings=reference_embeddings).detach()

    # Integrated Gradients of the very same score, from a black image: the gradient-based view.
    integrated = IntegratedGradients(similarity_forward(fam)).attribute(
        query_rows.clone(),
        baselines=torch.zeros_like(query_rows),
        additional_forward_args=(reference_embeddings,),
        n_steps=32,
        internal_batch_size=64,
    )
    integrated = integrated.detach().sum(dim=1, keepdim=True)

    size = (int(query.shape[-2]), int(query.shape[-1]))
    fam_mass = [mask_mass(attribution_to_numpy(m, size), masks) for m in maps]
    ig_mass = [mask_mass(attribution_to_numpy(m), masks) for m in integrated]
    setting = f"{args.similarity} similarity, {args.weighting} weights"
    figure = demo_figure(
        query[0],
        references,
        maps,
        integrated,
        masks,
        names,
        scores.tolist(),
        fam_mass,
        ig_mass,
        args.similarity,
        header=[
            f"FAM and Integrated Gradients (IG) of the same score · shapes model, layer "
            f"{loaded.layer_name} · {setting} · seed {args.seed}"
        ],
    )
    save_figure(figure, out)

    print(
        f"FAM demo: query with {_article(names[0])} and {_article(names[1])} (seed {args.seed}), "
        f"shapes model, layer {loaded.layer_name}, {setting}"
    )
    width = max(len(n) for n in names)
    for row, name in enumerate(names):
        shares = [
            ", ".join(f"{n} {100 * v:.0f}%" for n, v in zip(names, mass[row], strict=True))
            for mass in (fam_mass, ig_mass)
        ]
        print(
            f"  reference {name:<{width}}  {args.similarity} {float(scores[row]):.4f} | "
            f"map mass on the objects: FAM {shares[0]}; IG {shares[1]}"
        )
    area = ", ".join(
        f"{n} {100 * float(m.float().mean()):.0f}%" for n, m in zip(names, masks, strict=True)
    )
    print(f"  (the objects cover {area} of the image; IG drawn to its {IG_PERCENTILE:.0f}th pct.)")
    print(reference_dependence(fam, query_rows, reference_embeddings=reference_embeddings)
          .describe())  # fmt: skip
    print(f"figure: {out}")
    return 0


def mask_mass(heat: np.ndarray, masks: Tensor) -> list[float]:
    """Share of a map's positive mass inside each object mask."""
    positive = np.clip(heat[..., 0], 0.0, None)
    total = float(positive.sum())
    if total <= 0.0:
        return [0.0] * len(masks)
    return [float(positive[mask.numpy()].sum()) / total for mask in masks]


def _article(noun: str) -> str:
    # "an L", "an hourglass": by sound, not spelling.
    vowel_sound = noun[0].lower() in "aeiou" or noun in ("L", "hourglass")
    return f"an {noun}" if vowel_sound else f"a {noun}"
