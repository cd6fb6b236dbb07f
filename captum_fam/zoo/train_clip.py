"""Trains the shapes CLIP from a seed: ``python -m captum_fam.zoo.train_clip --out FILE``.

Objective: symmetric InfoNCE between image and caption embeddings (cosine similarity times a
learned inverse temperature, used in training only). Each step draws fresh one-object and
two-object scenes of the seen classes and one caption per scene (:func:`make_captions`). In a
world of nine classes many captions of a batch describe the same scene content, so the targets
are soft: an image's positives are all captions that match it (same classes, no contradicting
colour word; :func:`~captum_fam.zoo.captions.caption_matches`), and a caption's positives are
all images it matches. A caption that names only one object of a two-object scene ("a star"
for a star and a ring) is a weak positive of that scene (weight 0.1 against 1): without it, a
one-object caption learns to point away from anything a second object adds, and FAM's image
maps of such a caption light up the background instead of the object. A few filler words are
replaced by ``[UNK]`` (5%), so that the unknown-word token means "a word that names nothing".
Data are drawn fresh each step, so no step sees the same image twice.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from captum_fam.zoo.captions import (
    CAPTION_WORDS,
    COLOUR_NAMES,
    make_captions,
    named_matches,
    parse_caption,
    scene_contents,
)
from captum_fam.zoo.clip import CLIP_WEIGHTS_PATH, build_towers, checkpoint
from captum_fam.zoo.shapes import SEEN_CLASSES, SHAPE_CLASSES, make_shapes
from captum_fam.zoo.tokenizer import WordTokenizer
from captum_fam.zoo.train import training_parser
from captum_fam.zoo.weights import report_written, write_weights

__all__ = [
    "clip_training_seed",
    "drop_filler_words",
    "relevance",
    "soft_info_nce",
    "train_clip",
]


def clip_training_seed(seed: int, step: int, part: int) -> int:
    """Seed of a training batch's scenes, captions or word dropout (part 0 to 7).

    Training seeds stay below 10**9 (for ``seed < 999`` and fewer than 125,000 steps);
    evaluation seeds start at 2,000,000,000.
    """
    return 1_000_000 * (seed + 1) + 8 * step + part


def relevance(
    captions: list[str], scenes: list[dict[int, str]], partial_weight: float = 0.0
) -> Tensor:
    """``(len(scenes), len(captions))`` target weights: 1 where a caption matches a scene,
    ``partial_weight`` where it names only some of the scene's objects, 0 elsewhere."""
    named = [parse_caption(c) for c in captions]

    def weight(caption: tuple, scene: dict[int, str]) -> float:
        if named_matches(caption, scene):
            return 1.0
        return partial_weight if named_matches(caption, scene, partial=True) else 0.0

    return torch.tensor([[weight(c, s) for c in named] for s in scenes])


def drop_filler_words(
    input_ids: Tensor, tokenizer: WordTokenizer, rate: float, generator: torch.Generator
) -> Tensor:
    """Replaces each word that is neither a class nor a colour word by ``[UNK]`` with
    probability ``rate``, so that the unknown-word token learns to stand for a filler."""
    keep = {w.lower() for w in SHAPE_CLASSES} | set(COLOUR_NAMES)
    filler = torch.tensor(
        [i > tokenizer.unk_id and w not in keep for i, w in enumerate(tokenizer.vocabulary)]
    )
    drop = filler[input_ids] & (torch.rand(input_ids.shape, generator=generator) < rate)
    return input_ids.masked_fill(drop, tokenizer.unk_id)


def soft_info_nce(logits: Tensor, targets: Tensor) -> Tensor:
    r"""Symmetric InfoNCE with several positives per row and per column.

    Args:
        logits (Tensor): ``(N_images, N_texts)`` scaled cosine similarities.
        targets (Tensor): ``(N_images, N_texts)`` non-negative weights of the positives
                    (e.g. 1 where a text matches an image, 0 elsewhere); every row and column
                    needs a positive weight.

    Returns:
        Tensor: Scalar, the mean of the image-to-text and text-to-image cross-entropies
        against each row's (column's) weights, normalised to sum to 1.
    """
    t = targets.to(logits.dtype)
    image_to_text = -(t / t.sum(1, keepdim=True) * logits.log_softmax(dim=1)).sum(1).mean()
    text_to_image = -(t / t.sum(0, keepdim=True) * logits.log_softmax(dim=0)).sum(0).mean()
    return 0.5 * (image_to_text + text_to_image)


def train_clip(
    *,
    seed: int = 0,
    steps: int = 800,
    singles: int = 64,
    pairs: int = 64,
    lr: float = 3e-3,
    weight_decay: float = 5e-4,
    dim: int = 64,
    encoder: str = "transformer",
    kernel_size: int = 3,
    partial_weight: float = 0.1,
    unknown_rate: float = 0.05,
    threads: int = 2,
    device: torch.device | str = "cpu",
    log_every: int = 25,
) -> dict:
    """Trains both towers on the seen classes and returns the checkpoint to save.

    Args:
        seed (int, optional): Seed of the initialisation, every scene and every caption.
                    Default: 0
        steps (int, optional): Optimisation steps. Default: 800
        singles (int, optional): One-object scenes per step. Default: 64
        pairs (int, optional): Two-object scenes per step. Default: 64
        lr (float, optional): Peak AdamW learning rate (warm-up then cosine decay).
                    Default: 3e-3
        weight_decay (float, optional): AdamW weight decay. Default: 5e-4
        dim (int, optional): Width of the shared embedding space. Default: 64
        encoder (str, optional): Text encoder, ``"transformer"`` or ``"conv"``.
                    Default: ``"transformer"``
        kernel_size (int, optional): Kernel of the ``"conv"`` encoder. Default: 3
        partial_weight (float, optional): Target weight of a caption that names only some
                    of a scene's objects ("a star" for a star and a ring), relative to 1 for a
                    caption that names them all. Without it, a one-object caption learns to
                    point away from anything a second object adds, which FAM image maps show
                    as background. Default: 0.1
        unknown_rate (float, optional): Probability that a filler word of a training
                    caption is replaced by ``[UNK]`` (:func:`drop_filler_words`). Default: 0.05
        threads (int, optional): ``torch.set_num_threads`` value. Default: 2
        device (torch.device or str, optional): Where the towers train. Only CPU training
                    is reproducible bit for bit. Default: ``"cpu"``
        log_every (int, optional): Print the running loss every this many steps (0: never).
                    Default: 25

    Returns:
        dict: The checkpoint (``config``, ``words``, ``image_tower``, ``text_tower``), as
        :func:`captum_fam.zoo.load_shapes_clip` reads it.
    """
    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    tokenizer = WordTokenizer(CAPTION_WORDS)
    config = {"dim": dim, "encoder": encoder, "kernel_size": kernel_size}
    image_tower, text_tower = build_towers(config, len(tokenizer))
    image_tower = image_tower.to(device).to(memory_format=torch.channels_last)
    text_tower = text_tower.to(device)
    log_scale = torch.nn.Parameter(torch.tensor(math.log(10.0), device=device))
    params = list(image_tower.parameters()) + list(text_tower.parameters())
    opt = torch.optim.AdamW(
        [
            {"params": params, "weight_decay": weight_decay},
            {"params": [log_scale], "weight_decay": 0.0},
        ],
        lr=lr,
    )
    warmup = max(1, steps // 20)

    def lr_at(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
    seen = [SHAPE_CLASSES.index(c) for c in SEEN_CLASSES]
    image_tower.train()
    text_tower.train()
    start, running = time.perf_counter(), 0.0
    for step in range(steps):
        # Curriculum: clutter ramps up over the first half, so shapes are found before clutter.
        clutter = min(1.0, step / max(1, steps // 2))
        # The scenes are drawn on one thread: make_shapes runs many small elementwise ops, whose
        # two-thread synchronisation costs more than it saves (ten times more on a busy
        # machine), and its output does not depend on the thread count.
        with _num_threads(1):
            batches = [
                make_shapes(
                    count,
                    objects=objects,
                    seed=clip_training_seed(seed, step, part),
                    classes=seen,
                    clutter=clutter,
                )
                for part, (count, objects) in enumerate([(singles, 1), (pairs, 2)])
            ]
            captions = [
                caption
                for part, batch in enumerate(batches)
                for caption in make_captions(batch, seed=clip_training_seed(seed, step, 2 + part))
            ]
            scenes = [scene for batch in batches for scene in scene_contents(batch)]
        targets = relevance(captions, scenes, partial_weight).to(device)
        images = torch.cat([b.images for b in batches]).to(device)
        images = images.contiguous(memory_format=torch.channels_last)
        input_ids, attention_mask = tokenizer.encode(captions)
        dropout = torch.Generator().manual_seed(clip_training_seed(seed, step, 4))
        input_ids = drop_filler_words(input_ids, tokenizer, unknown_rate, dropout)
        input_ids, attention_mask = input_ids.to(device), attention_mask.to(device)
        v = F.normalize(image_tower(images), dim=1)
        t = F.normalize(text_tower(input_ids, attention_mask), dim=1)
        scale = log_scale.clamp(max=math.log(100.0)).exp()
        loss = soft_info_nce(scale * v @ t.t(), targets)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        running += float(loss.detach())
        if log_every and (step + 1) % log_every == 0:
            elapsed = time.perf_counter() - start
            print(
                f"step {step + 1}/{steps}  loss {running / log_every:.4f}  "
                f"scale {float(scale.detach()):.1f}  {elapsed:.0f}s",
                flush=True,
            )
            running = 0.0
    image_tower.eval()
    text_tower.eval()
    image_tower = image_tower.to("cpu").to(memory_format=torch.contiguous_format)
    return checkpoint(image_tower, text_tower, config, CAPTION_WORDS)


@contextmanager
def _num_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def main(argv: list[str] | None = None) -> None:
    """Command line entry point; prints the SHA-256 of the written weights."""
    parser = training_parser(__doc__.splitlines()[0], steps=800, singles=64, pairs=64, lr=3e-3)
    parser.add_argument("--out", type=Path, default=CLIP_WEIGHTS_PATH, help="file to write")
    parser.add_argument("--encoder", choices=["transformer", "conv"], default="transformer")
    parser.add_argument("--partial-weight", type=float, default=0.1, help="partial captions")
    parser.add_argument("--kernel-size", type=int, default=3, help="conv encoder kernel")
    parser.add_argument("--device", default="cpu", help="training device (only cpu is bitwise)")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    state = train_clip(
        seed=args.seed,
        steps=args.steps,
        singles=args.singles,
        pairs=args.pairs,
        lr=args.lr,
        encoder=args.encoder,
        partial_weight=args.partial_weight,
        kernel_size=args.kernel_size,
        threads=args.threads,
        device=args.device,
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_weights(state, args.out)
    report_written(args.out, start)


if __name__ == "__main__":
    main()
