"""Evaluation of the shapes embedding model: ``python -m captum_fam.zoo.evaluate``.

Every figure of docs/model_card.md comes from this module, on world seeds that training never
uses (training seeds stay below 10**9). Figures:

- few-shot accuracy: W-way K-shot episodes, cosine nearest prototype (prototype = mean of the
  L2-normalised support embeddings), on seen, held-out and all classes;
- retrieval mAP: every single-object image queries all others by cosine similarity;
- two-object top-2 rate: fraction of two-object scenes whose two nearest class prototypes are
  exactly its two objects (all 12 classes; and the 9 trained classes alone);
- pointing rate: for a two-object scene and the prototype of one object's class as reference,
  the share of FAM maps (both weightings; plain, and contrastive with the other object's class
  as the foil) whose maximum falls on that object (the pointing game, 5% tolerance).
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_fam.attribution import FeatureActivationMap
from captum_fam.metrics import pointing_game
from captum_fam.zoo.shapes import HELD_OUT_CLASSES, SEEN_CLASSES, SHAPE_CLASSES, make_shapes

__all__ = [
    "EVAL_SEED",
    "class_pool",
    "embed",
    "evaluate",
    "few_shot_accuracy",
    "pointing_rate",
    "prototypes",
    "retrieval_map",
    "top2_rate",
]

EVAL_SEED = 2_000_000_000
"""Base world seed of the evaluation (disjoint from every training seed)."""


@torch.no_grad()
def embed(model: nn.Module, images: Tensor, batch_size: int = 250) -> Tensor:
    """Returns the L2-normalised ``(N, C)`` embeddings of ``images``, computed in batches."""
    out = [model(images[i : i + batch_size]) for i in range(0, len(images), batch_size)]
    return F.normalize(torch.cat(out), dim=1)


def class_pool(
    per_class: int, classes: Sequence[int] | None = None, *, seed: int = EVAL_SEED
) -> tuple[Tensor, Tensor]:
    """Single-object images, ``per_class`` of each class, with a distinct world seed per class.

    Returns:
        tuple[Tensor, Tensor]: ``(images (N, 3, 64, 64), labels (N,))``, grouped by class.
    """
    classes = list(range(len(SHAPE_CLASSES))) if classes is None else list(classes)
    batches = [make_shapes(per_class, seed=seed + 1 + c, classes=[c]) for c in classes]
    images = torch.cat([b.images for b in batches])
    labels = torch.cat([b.labels[:, 0] for b in batches])
    return images, labels


def prototypes(embeddings: Tensor, labels: Tensor, num_classes: int) -> Tensor:
    """``(num_classes, C)`` L2-normalised class means (rows of absent classes are zero)."""
    onehot = F.one_hot(labels, num_classes).to(embeddings.dtype)
    return F.normalize(onehot.t() @ embeddings, dim=1)


def few_shot_accuracy(
    embeddings: Tensor,
    labels: Tensor,
    *,
    ways: int,
    shots: int,
    classes: Sequence[int],
    episodes: int = 600,
    queries: int = 15,
    seed: int = 0,
) -> tuple[float, float]:
    """Mean accuracy and 95% half-interval of W-way K-shot cosine nearest-prototype episodes.

    Args:
        embeddings (Tensor): ``(N, C)`` L2-normalised embeddings of a class pool.
        labels (Tensor): ``(N,)`` their labels; each class needs ``shots + queries`` items.
        ways (int): Classes per episode, drawn from ``classes``.
        shots (int): Support images per class.
        classes (Sequence[int]): Class indices the episodes draw from.
        episodes (int, optional): Number of episodes. Default: 600
        queries (int, optional): Query images per class and episode. Default: 15
        seed (int, optional): Seed of the episode sampling. Default: 0

    Returns:
        tuple[float, float]: ``(mean accuracy, 1.96 * standard error)`` over episodes.
    """
    g = torch.Generator().manual_seed(seed)
    members = {c: torch.nonzero(labels == c).flatten() for c in classes}
    pool = torch.tensor(list(classes))
    accs = []
    for _ in range(episodes):
        chosen = pool[torch.randperm(len(pool), generator=g)[:ways]]
        support, query = [], []
        for c in chosen.tolist():
            idx = members[c][torch.randperm(len(members[c]), generator=g)[: shots + queries]]
            support.append(embeddings[idx[:shots]].mean(0))
            query.append(embeddings[idx[shots:]])
        protos = F.normalize(torch.stack(support), dim=1)
        q = torch.cat(query)
        target = torch.arange(ways).repeat_interleave(queries)
        accs.append(float(((q @ protos.t()).argmax(1) == target).float().mean()))
    acc = torch.tensor(accs)
    return float(acc.mean()), float(1.96 * acc.std() / len(acc) ** 0.5)


def retrieval_map(embeddings: Tensor, labels: Tensor) -> float:
    """Mean average precision of cosine retrieval, each item querying all the others."""
    sims = embeddings @ embeddings.t()
    sims.fill_diagonal_(float("-inf"))
    order = sims.argsort(dim=1, descending=True)[:, :-1]  # drop the query itself (last)
    rel = (labels[order] == labels[:, None]).float()
    hits = rel.cumsum(1)
    ranks = torch.arange(1, rel.shape[1] + 1, dtype=torch.float32)
    ap = (rel * hits / ranks).sum(1) / rel.sum(1).clamp_min(1)
    return float(ap.mean())


def top2_rate(
    embeddings: Tensor, labels: Tensor, protos: Tensor, classes: Sequence[int] | None = None
) -> float:
    """Fraction of two-object scenes whose two nearest prototypes are its two classes.

    ``classes`` restricts the candidate prototypes (default: all of them).
    """
    similarity = embeddings @ protos.t()
    if classes is not None:
        candidate = torch.zeros(protos.shape[0], dtype=torch.bool)
        candidate[list(classes)] = True
        similarity = similarity.masked_fill(~candidate, float("-inf"))
    top = similarity.topk(2, dim=1).indices.sort(dim=1).values
    return float((top == labels.sort(dim=1).values).all(dim=1).float().mean())


@torch.no_grad()
def pointing_rate(
    model: nn.Module,
    layer: nn.Module,
    images: Tensor,
    masks: Tensor,
    references: Tensor,
    *,
    weighting: str = "reference",
    foils: Tensor | None = None,
) -> float:
    """Share of FAM maps whose maximum falls on the target object (the pointing game).

    Args:
        model (nn.Module): The embedding model.
        layer (nn.Module): The layer whose output is the activation map.
        images (Tensor): ``(N, 3, H, W)`` queries.
        masks (Tensor): ``(N, H, W)`` bool target masks.
        references (Tensor): ``(N, C)`` reference embeddings (e.g. the target's prototype).
        weighting (str, optional): FAM's weighting. Default: "reference"
        foils (Tensor, optional): ``(N, C)`` foil embeddings for contrastive maps ("why the
                    target rather than the foil"). Default: None

    Returns:
        float: The pointing rate, with :func:`captum_fam.metrics.pointing_game`'s tolerance
        (5% of the image side).
    """
    fam = FeatureActivationMap(model, layer, weighting=weighting)
    maps = fam.attribute(images, reference_embeddings=references, foil_embeddings=foils)
    return float(pointing_game(maps, masks).float().mean())


def evaluate(
    model: nn.Module,
    layer: nn.Module,
    *,
    seed: int = EVAL_SEED,
    per_class: int = 60,
    episodes: int = 600,
    scenes: int = 500,
    support_per_class: int = 20,
) -> dict[str, float]:
    """Computes every figure of the model card.

    Args:
        model (nn.Module): The embedding model (in eval mode).
        layer (nn.Module): Its last convolutional block.
        seed (int, optional): Base world seed. Default: EVAL_SEED
        per_class (int, optional): Single-object images per class in the pool. Default: 60
        episodes (int, optional): Few-shot episodes per setting. Default: 600
        scenes (int, optional): Two-object scenes for the top-2 and pointing rates.
                    Default: 500
        support_per_class (int, optional): Support images per prototype for the scene
                    figures (drawn from a separate pool). Default: 20

    Returns:
        dict[str, float]: Figure name to value (few-shot entries also have a ``*_ci95`` key).
    """
    n_cls = len(SHAPE_CLASSES)
    seen = [SHAPE_CLASSES.index(c) for c in SEEN_CLASSES]
    held = [SHAPE_CLASSES.index(c) for c in HELD_OUT_CLASSES]
    every = list(range(n_cls))
    images, labels = class_pool(per_class, seed=seed)
    emb = embed(model, images)

    out: dict[str, float] = {}
    settings = [("seen", seen, 5), ("held_out", held, min(5, len(held))), ("all", every, 5)]
    for name, classes, ways in settings:
        for shots in (1, 5):
            key = f"{name}_{ways}way_{shots}shot"
            acc, ci = few_shot_accuracy(
                emb, labels, ways=ways, shots=shots, classes=classes, episodes=episodes, seed=seed
            )
            out[key], out[key + "_ci95"] = acc, ci
    out["retrieval_map_all"] = retrieval_map(emb, labels)
    out["retrieval_map_seen"] = retrieval_map(*_subset(emb, labels, seen))
    out["retrieval_map_held_out"] = retrieval_map(*_subset(emb, labels, held))

    sup_images, sup_labels = class_pool(support_per_class, seed=seed + 1000)
    protos = prototypes(embed(model, sup_images), sup_labels, n_cls)
    batch = make_shapes(scenes, objects=2, seed=seed + 2000)
    out["two_object_top2"] = top2_rate(embed(model, batch.images), batch.labels, protos)
    # The trained classes alone: held-out prototypes come from classes the model never learnt.
    seen_batch = make_shapes(scenes, objects=2, seed=seed + 3000, classes=seen)
    out["two_object_top2_seen"] = top2_rate(
        embed(model, seen_batch.images), seen_batch.labels, protos, classes=seen
    )
    for weighting in ("reference", "contribution"):
        for contrastive in (False, True):
            for k in range(2):
                foils = protos[batch.labels[:, 1 - k]] if contrastive else None
                kind = "contrastive" if contrastive else "plain"
                out[f"pointing_{weighting}_{kind}_object{k + 1}"] = pointing_rate(
                    model,
                    layer,
                    batch.images,
                    batch.masks[:, k],
                    protos[batch.labels[:, k]],
                    weighting=weighting,
                    foils=foils,
                )
    return out


def _subset(emb: Tensor, labels: Tensor, classes: Sequence[int]) -> tuple[Tensor, Tensor]:
    keep = torch.isin(labels, torch.tensor(list(classes)))
    return emb[keep], labels[keep]


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: prints every figure, one per line."""
    from captum_fam.zoo.model import load_shapes_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", default=None, help="weights file (default: shipped)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="base world seed")
    parser.add_argument("--episodes", type=int, default=600, help="episodes per setting")
    parser.add_argument("--scenes", type=int, default=500, help="two-object scenes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.weights is None:
        model, layer = load_shapes_model()
    else:
        model, layer = load_shapes_model(path=args.weights, sha256=None)
    figures = evaluate(model, layer, seed=args.seed, episodes=args.episodes, scenes=args.scenes)
    for key, value in figures.items():
        print(f"{key:40s} {value:.4f}")


if __name__ == "__main__":
    main()
