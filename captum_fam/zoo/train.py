"""Trains a shapes embedding CNN from a seed: ``python -m captum_fam.zoo.train --out FILE``.

``--head`` trains :class:`~captum_fam.zoo.ShapesProjectionNet` (the same trunk with a projection
head) instead of :class:`~captum_fam.zoo.ShapesEmbeddingNet`; objective and loop are the same,
applied to whatever the model outputs (the head's output for the head model).

Objective: prototypical episodes with multi-positive queries. Each step draws single-object
images of the seen classes (half of them form class prototypes, the other half are queries) and
two-object scenes (queries with two positive classes). Every positive class of a query must beat
all negative prototypes under a scaled cosine softmax, so a two-object embedding is pulled
towards both of its objects' prototypes: this is what lets FAM maps of a scene point at either
object. Data are drawn fresh each step, so no step sees the same image twice.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_fam.zoo.model import (
    HEAD_WEIGHTS_PATH,
    WEIGHTS_PATH,
    ShapesEmbeddingNet,
    ShapesProjectionNet,
)
from captum_fam.zoo.shapes import SEEN_CLASSES, SHAPE_CLASSES, make_shapes
from captum_fam.zoo.weights import report_written, write_weights

__all__ = ["multi_positive_prototype_loss", "train", "training_seed"]


def training_seed(seed: int, step: int, part: int) -> int:
    """World seed of a training batch; training seeds stay below 10**9, evaluation ones above."""
    return 1_000_000 * (seed + 1) + 2 * step + part


def multi_positive_prototype_loss(
    support: Tensor,
    support_labels: Tensor,
    queries: Tensor,
    query_labels: Tensor,
    num_classes: int,
    scale: Tensor | float,
) -> Tensor:
    r"""Prototype loss where a query may belong to several classes.

    For each (query, positive class) pair the loss is the cross-entropy of that positive
    against the query's negative prototypes only (other positives are left out of the
    denominator), so a two-object query is asked to rank both of its classes above all others.

    Args:
        support (Tensor): ``(S, C)`` L2-normalised support embeddings.
        support_labels (Tensor): ``(S,)`` long labels.
        queries (Tensor): ``(Q, C)`` L2-normalised query embeddings.
        query_labels (Tensor): ``(Q, K)`` long labels, ``-1`` marks padding.
        num_classes (int): Number of label values.
        scale (Tensor or float): Inverse temperature of the cosine logits.

    Returns:
        Tensor: Scalar mean loss over (query, positive) pairs whose class has a prototype.
    """
    onehot = F.one_hot(support_labels, num_classes).to(support.dtype)  # (S, K)
    counts = onehot.sum(0)
    present = counts > 0
    protos = F.normalize((onehot.t() @ support)[present], dim=1)
    cls_index = torch.full((num_classes,), -1, dtype=torch.long)
    cls_index[present] = torch.arange(int(present.sum()))
    logits = scale * queries @ protos.t()  # (Q, P)
    pos = torch.zeros_like(logits, dtype=torch.bool)
    for k in range(query_labels.shape[1]):
        col = cls_index[query_labels[:, k].clamp_min(0)]
        ok = (query_labels[:, k] >= 0) & (col >= 0)
        pos[ok, col[ok]] = True
    neg_lse = logits.masked_fill(pos, float("-inf")).logsumexp(dim=1, keepdim=True)
    per_pos = torch.logaddexp(logits, neg_lse) - logits
    return per_pos[pos].mean()


def train(
    *,
    seed: int = 0,
    steps: int = 600,
    singles: int = 40,
    pairs: int = 40,
    lr: float = 5e-3,
    weight_decay: float = 5e-4,
    threads: int = 2,
    log_every: int = 25,
    head: bool = False,
) -> ShapesEmbeddingNet:
    """Trains a :class:`ShapesEmbeddingNet` on the seen classes and returns it in eval mode.

    The loss is taken on the L2-normalised model output: the pooled last block, or with
    ``head=True`` the projection head's output of a :class:`ShapesProjectionNet`.

    Args:
        seed (int, optional): Seed of the initialisation and of every training batch.
                    Default: 0
        steps (int, optional): Optimisation steps. Default: 600
        singles (int, optional): Single-object images per step (half support, half query).
                    Default: 40
        pairs (int, optional): Two-object images per step. Default: 40
        lr (float, optional): Peak AdamW learning rate (warm-up then cosine decay).
                    Default: 5e-3
        weight_decay (float, optional): AdamW weight decay. Default: 5e-4
        threads (int, optional): ``torch.set_num_threads`` value. Default: 2
        log_every (int, optional): Print the running loss every this many steps (0: never).
                    Default: 25
        head (bool, optional): Train a :class:`ShapesProjectionNet` instead. Default: False

    Returns:
        ShapesEmbeddingNet: The trained model (a :class:`ShapesProjectionNet` with
        ``head=True``), in eval mode, on CPU.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    net = ShapesProjectionNet() if head else ShapesEmbeddingNet()
    model = net.to(memory_format=torch.channels_last)
    seen = [SHAPE_CLASSES.index(c) for c in SEEN_CLASSES]
    log_scale = torch.nn.Parameter(torch.tensor(math.log(16.0)))
    proxies = torch.nn.Parameter(torch.randn(len(seen), model.embedding_dim))
    proxy_labels = torch.tensor(seen)
    opt = torch.optim.AdamW(
        [
            {"params": list(model.parameters()), "weight_decay": weight_decay},
            {"params": [log_scale, proxies], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    model.train()
    start, running = time.perf_counter(), 0.0
    for step in range(steps):
        # Curriculum: clutter ramps up over the first half, so shapes are found before clutter.
        clutter = min(1.0, step / max(1, steps // 2))
        one = make_shapes(
            singles, objects=1, seed=training_seed(seed, step, 0), classes=seen, clutter=clutter
        )
        two = make_shapes(
            pairs, objects=2, seed=training_seed(seed, step, 1), classes=seen, clutter=clutter
        )
        images = torch.cat([one.images, two.images]).contiguous(memory_format=torch.channels_last)
        emb = F.normalize(model(images), dim=1)
        half = singles // 2
        query_labels = torch.cat([F.pad(one.labels[half:], (0, 1), value=-1), two.labels])
        scale = log_scale.exp()
        loss = multi_positive_prototype_loss(
            emb[:half], one.labels[:half, 0], emb[half:], query_labels, len(SHAPE_CLASSES), scale
        )
        # Learned class proxies give a steadier signal than in-batch prototypes alone.
        all_labels = torch.cat([F.pad(one.labels, (0, 1), value=-1), two.labels])
        loss = loss + multi_positive_prototype_loss(
            F.normalize(proxies, dim=1), proxy_labels, emb, all_labels, len(SHAPE_CLASSES), scale
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if log_every and (step + 1) % log_every == 0:
            elapsed = time.perf_counter() - start
            print(
                f"step {step + 1}/{steps}  loss {running / log_every:.4f}  "
                f"scale {float(log_scale.detach().exp()):.1f}  {elapsed:.0f}s",
                flush=True,
            )
            running = 0.0
    model.eval()
    return model.to(memory_format=torch.contiguous_format)


def save_weights(model: ShapesEmbeddingNet, path: str | Path) -> None:
    """Saves ``model``'s ``state_dict``; the bytes depend only on the weights, not on ``path``."""
    write_weights({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, path)


def training_parser(
    description: str, *, steps: int, singles: int, pairs: int, lr: float
) -> argparse.ArgumentParser:
    """The options of every zoo training command: ``--seed``, ``--steps``, ``--singles``,
    ``--pairs`` (scenes of one and two objects per step), ``--lr`` and ``--threads``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    parser.add_argument(
        "--steps", type=int, default=steps, help=f"optimisation steps (default {steps})"
    )
    parser.add_argument(
        "--singles", type=int, default=singles, help=f"one-object scenes per step ({singles})"
    )
    parser.add_argument(
        "--pairs", type=int, default=pairs, help=f"two-object scenes per step ({pairs})"
    )
    parser.add_argument("--lr", type=float, default=lr, help=f"peak learning rate ({lr})")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    return parser


def main(argv: list[str] | None = None) -> None:
    """Command line entry point; prints the SHA-256 of the written weights."""
    parser = training_parser(__doc__.splitlines()[0], steps=600, singles=40, pairs=40, lr=5e-3)
    parser.add_argument(
        "--head", action="store_true", help="train the model with a projection head"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="weights file to write (default: the shipped file of the chosen model)",
    )
    args = parser.parse_args(argv)

    start = time.perf_counter()
    model = train(
        seed=args.seed,
        steps=args.steps,
        singles=args.singles,
        pairs=args.pairs,
        lr=args.lr,
        threads=args.threads,
        head=args.head,
    )
    out = args.out if args.out is not None else HEAD_WEIGHTS_PATH if args.head else WEIGHTS_PATH
    out.parent.mkdir(parents=True, exist_ok=True)
    save_weights(model, out)
    report_written(out, start)


if __name__ == "__main__":
    main()
