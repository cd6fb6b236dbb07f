"""Evaluation of the shapes embedding models: ``python -m captum_fam.zoo.evaluate``.

``--model head`` evaluates the model with a projection head (:func:`load_shapes_head_model`)
instead of the pooled-embedding model (:func:`load_shapes_model`); ``--model common-mode`` the
pooled model wrapped in :class:`~captum_fam.zoo.CommonModeNet`. Every figure of
docs/model_card.md comes from this module, on world seeds that training never uses (training
seeds stay below 10**9). Figures:

- few-shot accuracy: W-way K-shot episodes, cosine nearest prototype (prototype = mean of the
  L2-normalised support embeddings), on seen, held-out and all classes;
- retrieval mAP: every single-object image queries all others by cosine similarity;
- two-object top-2 rate: fraction of two-object scenes whose two nearest class prototypes are
  exactly its two objects (all 12 classes; and the 9 trained classes alone);
- pointing rate: for a two-object scene and the prototype of one object's class as reference,
  the share of FAM maps (both weightings; plain, and contrastive with the other object's class
  as the foil) whose maximum falls on that object (the pointing game, 5% tolerance), with the
  similarity taken on the model's output (``embedding="output"``) and on the layer's pooled
  channels (``embedding="layer"``), prototypes built in the same space; and Captum's
  LayerGradCam on the model's own cosine, the gradient baseline of the same score;
- reference-agnostic diagnostics: the pointing rate of the layer's channel mean (a map that
  ignores the reference), how closely FAM's plain maps follow it, the sign structure of FAM's
  channel weights, and the positional bias of the activations.

The few-shot, retrieval and top-2 figures are computed on the model's output, the embedding
the model compares.
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from captum_fam.attribution import FeatureActivationMap
from captum_fam.zoo.evaluate_maps import (
    agnostic_diagnostics,
    layer_activations,
    pointing_figures,
    pointing_rate,
    prototypes,
)
from captum_fam.zoo.shapes import (
    HELD_OUT_CLASSES,
    SEEN_CLASSES,
    SHAPE_CLASSES,
    make_shapes,
)

__all__ = [
    "EVAL_SEED",
    "agnostic_diagnostics",
    "class_pool",
    "embed",
    "evaluate",
    "few_shot_accuracy",
    "layer_activations",
    "pointing_figures",
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
    out.update(pointing_figures(model, layer, batch, sup_images, sup_labels))
    out.update(agnostic_diagnostics(model, layer, batch, sup_images, sup_labels))
    # How much class information the pooled layer itself carries (the space of
    # embedding="layer"); for a model without a head this repeats the figure above.
    layer_fam = FeatureActivationMap(model, layer, embedding="layer")
    layer_emb = F.normalize(layer_fam.embed(images), dim=1)
    out["layer_all_5way_1shot"], out["layer_all_5way_1shot_ci95"] = few_shot_accuracy(
        layer_emb, labels, ways=5, shots=1, classes=every, episodes=episodes, seed=seed
    )
    return out


def _subset(emb: Tensor, labels: Tensor, classes: Sequence[int]) -> tuple[Tensor, Tensor]:
    keep = torch.isin(labels, torch.tensor(list(classes)))
    return emb[keep], labels[keep]


def main(argv: list[str] | None = None) -> None:
    """Command line entry point: prints every figure, one per line."""
    from captum_fam.zoo.common_mode import load_common_mode_model
    from captum_fam.zoo.model import load_shapes_head_model, load_shapes_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model",
        choices=("pooled", "head", "common-mode"),
        default="pooled",
        help="pooled: the model whose embedding is the pooled last block (default); "
        "head: the model with a projection head; common-mode: the pooled model wrapped in "
        "CommonModeNet (no weights of its own, so --weights does not apply)",
    )
    parser.add_argument("--weights", default=None, help="weights file (default: shipped)")
    parser.add_argument("--seed", type=int, default=EVAL_SEED, help="base world seed")
    parser.add_argument("--episodes", type=int, default=600, help="episodes per setting")
    parser.add_argument("--scenes", type=int, default=500, help="two-object scenes")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model: nn.Module
    if args.model == "common-mode":
        if args.weights is not None:
            parser.error("--weights does not apply to --model common-mode")
        model, layer = load_common_mode_model()
    else:
        load = load_shapes_head_model if args.model == "head" else load_shapes_model
        if args.weights is None:
            model, layer = load()
        else:
            model, layer = load(path=args.weights, sha256=None)
    figures = evaluate(model, layer, seed=args.seed, episodes=args.episodes, scenes=args.scenes)
    for key, value in figures.items():
        print(f"{key:40s} {value:.4f}")


if __name__ == "__main__":
    main()
