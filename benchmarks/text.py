"""Speed and peak memory of explaining sentence pairs: FAM against the limit, LIG and occlusion.

What is measured: explaining 16 sentence pairs of 128 tokens with a BERT-base-sized encoder
(``transformers``' BertModel, 12 layers, width 768, random weights, mean pooling, cosine; CPU,
one process). The rows:

- ``limit``: the inference forwards FAM cannot avoid, the encoder on sentences ``a`` and on
  sentences ``b`` under ``torch.inference_mode``;
- ``FAM``: ``explain_pair(fam, a, b, pooling_mask=1, token_pairs=True)``: both sentences'
  signed token maps and the ``(16, 128, 128)`` pair matrix;
- ``LayerIntegratedGradients``: Captum's LIG on the embedding layer (``model.embeddings``,
  n_steps=50, a baseline of ``[PAD]`` between the special tokens), what Captum's maintainers
  recommend for sentence similarity, explaining the cosine of each sentence with the other's
  embedding, both sides (two calls);
- ``occlusion``: one token at a time, as txtai explains similarity: the score drop when the
  token is removed (its attention-mask entry set to 0, so it is neither attended to nor pooled),
  one forward of the 16 sentences per position, both sides.

The time floor of a gradient-free method is the ``limit`` row, so every time is printed as a
ratio to it. Target: FAM <= 1.05x. Peak memory is measured in fresh child processes, one per
row (``--peak-memory-row=NAME``), as Linux's ``VmHWM``; a ``baseline`` child that only builds the
model and inputs gives the floor that the last column subtracts.

Method (``benchmarks/harness.py``): seeded; every row runs once as a warm-up (LIG on 2 steps,
occlusion on 2 positions); then each repeat times every row once, round-robin with a rotating
start so that load on a shared machine hits all rows alike; medians and spreads. LIG and
occlusion cost about a hundred limits each, so they are timed in the first ``--slow-repeats``
repeats only (default 1). Their memory children run one side (LIG) and four positions of one
side (occlusion): every further step repeats the same shapes, so the peak is the same.

Usage::

    python benchmarks/text.py               # full run (about 30 minutes on 2 quiet cores)
    python benchmarks/text.py --quick       # smoke run: a small encoder, 2 pairs, 16 tokens
    python benchmarks/text.py --markdown    # the table as Markdown
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

import torch
from captum.attr import LayerIntegratedGradients
from torch import Tensor, nn

from captum_fam import FeatureActivationMap
from captum_fam.tasks import explain_pair
from captum_fam.text import SentenceEncoder, sentence_fam
from captum_fam.zoo.text_encoders import random_text_encoder

if __package__:
    from benchmarks import harness
else:  # python benchmarks/text.py: this folder is on sys.path
    import harness

LIMIT, FAM, LIG, OCCLUSION = "limit", "fam", "lig", "occlusion"
ROWS = (LIMIT, FAM, LIG, OCCLUSION)
LABELS = {
    LIMIT: "limit: inference forwards (sentences a + b)",
    FAM: "FAM, both sides + token pairs",
    LIG: "Captum LayerIntegratedGradients, embeddings, both sides",
    OCCLUSION: "occlusion, one token at a time, both sides",
}
FAM_TIME_TARGET = 1.05
FULL = {"pairs": 16, "tokens": 128, "width": 768, "layers": 12, "heads": 12, "repeats": 5,
        "lig_steps": 50, "threads": None}  # fmt: skip
# One thread for the smoke run: on a busy machine, two threads wait for each other on tiny ops.
QUICK = {"pairs": 2, "tokens": 16, "width": 64, "layers": 2, "heads": 4, "repeats": 2,
         "lig_steps": 4, "threads": 1}  # fmt: skip
QUICK_MEMORY_ROWS = (LIMIT, FAM)
COLUMNS = harness.speed_columns((harness.Column("ratio", "ratio to limit", "right"),))


@dataclass(frozen=True)
class Config:
    """The benchmark's settings, shared by the timing process and the memory children."""

    pairs: int
    tokens: int
    width: int
    layers: int
    heads: int
    repeats: int
    slow_repeats: int
    lig_steps: int
    lig_batch: int
    threads: int
    seed: int
    memory_workers: int
    memory_rows: tuple[str, ...]
    rows: tuple[str, ...] = ROWS

    def child_args(self) -> list[str]:
        """The options that make a peak-memory child build exactly the same workload."""
        return [
            f"--pairs={self.pairs}", f"--tokens={self.tokens}", f"--width={self.width}",
            f"--layers={self.layers}", f"--heads={self.heads}", f"--lig-steps={self.lig_steps}",
            f"--lig-batch={self.lig_batch}", f"--threads={self.threads}", f"--seed={self.seed}",
        ]  # fmt: skip


@dataclass
class Workload:
    encoder: SentenceEncoder
    fam: FeatureActivationMap
    a: tuple[Tensor, Tensor]  # (input_ids, attention_mask)
    b: tuple[Tensor, Tensor]
    pad_id: int
    special_ids: tuple[int, int]  # [CLS], [SEP]

    @property
    def embeddings(self) -> tuple[Tensor, Tensor]:
        """Both sides' sentence embeddings, for the methods that take the other side's."""
        with torch.inference_mode():
            return self.encoder(*self.a).clone(), self.encoder(*self.b).clone()


def sentences(count: int, tokens: int, vocabulary: int, special: tuple[int, int],
              generator: torch.Generator) -> tuple[Tensor, Tensor]:  # fmt: skip
    """``[CLS] w ... w [SEP] [PAD] ...`` with between half and all of ``tokens`` valid."""
    lengths = torch.randint(tokens // 2, tokens + 1, (count,), generator=generator)
    lengths[0] = tokens  # the batch is as long as its longest sentence
    ids = torch.randint(len(special) + 3, vocabulary, (count, tokens), generator=generator)
    mask = (torch.arange(tokens)[None] < lengths[:, None]).long()
    ids[:, 0] = special[0]
    ids[torch.arange(count), lengths - 1] = special[1]
    return ids * mask, mask  # padding id 0


def build_workload(config: Config) -> Workload:
    harness.seed_everything(config.seed)
    harness.set_threads(config.threads)
    model, tokenizer = random_text_encoder(
        "bert", hidden_size=config.width, layers=config.layers, heads=config.heads,
        max_length=max(config.tokens, 128), seed=config.seed,
    )  # fmt: skip
    special = (tokenizer.cls_token_id, tokenizer.sep_token_id)
    generator = torch.Generator().manual_seed(config.seed)
    a = sentences(config.pairs, config.tokens, len(tokenizer), special, generator)
    b = sentences(config.pairs, config.tokens, len(tokenizer), special, generator)
    fam = sentence_fam(model)
    assert isinstance(fam.forward_func, SentenceEncoder)
    return Workload(fam.forward_func, fam, a, b, tokenizer.pad_token_id, special)


class CosineToReference(nn.Module):
    """One score per sentence: the cosine of its embedding with a given embedding (LIG)."""

    def __init__(self, encoder: SentenceEncoder) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: Tensor, mask: Tensor, reference_embeddings: Tensor) -> Tensor:
        return torch.cosine_similarity(self.encoder(ids, mask), reference_embeddings, dim=1)


def lig_baseline(ids: Tensor, work: Workload) -> Tensor:
    """Captum's text baseline: ``[PAD]`` everywhere but the special tokens."""
    keep = (ids == work.special_ids[0]) | (ids == work.special_ids[1])
    return torch.where(keep, ids, torch.full_like(ids, work.pad_id))


def lig_side(work: Workload, config: Config, side: tuple[Tensor, Tensor], other: Tensor,
             steps: int) -> Tensor:  # fmt: skip
    """LIG on the embedding layer: one value per token, ``(N, T)``."""
    lig = LayerIntegratedGradients(CosineToReference(work.encoder), work.encoder.model.embeddings)
    ids, mask = side
    attributions = lig.attribute(
        ids, baselines=lig_baseline(ids, work), additional_forward_args=(mask, other),
        n_steps=steps, internal_batch_size=config.lig_batch,
    )  # fmt: skip
    return attributions.sum(-1)


@torch.inference_mode()
def occlusion_side(work: Workload, side: tuple[Tensor, Tensor], other: Tensor,
                   positions: int | None = None) -> Tensor:  # fmt: skip
    """Score drop per token when it is removed from the attention mask (specials kept)."""
    ids, mask = side
    scores = torch.cosine_similarity(work.encoder(ids, mask), other, dim=1)
    drops = torch.zeros(ids.shape, dtype=scores.dtype)
    special = (ids == work.special_ids[0]) | (ids == work.special_ids[1])
    for position in range(1, ids.shape[1] if positions is None else 1 + positions):
        valid = mask[:, position].bool() & ~special[:, position]
        if not valid.any():
            continue
        removed = mask.clone()
        removed[:, position] = 0
        occluded = torch.cosine_similarity(work.encoder(ids, removed), other, dim=1)
        drops[:, position] = torch.where(valid, scores - occluded, torch.zeros(()))
    return drops


def make_rows(work: Workload, config: Config, embeddings: tuple[Tensor, Tensor],
              memory_child: bool = False) -> dict[str, Callable[[], object]]:  # fmt: skip
    """Each row as a call without arguments; ``embeddings`` are both sides', precomputed.

    A memory child runs LIG on one side and occlusion on four positions of one side: the
    further steps repeat the same shapes, so the peak is the same.
    """
    encoder, fam, a, b = work.encoder, work.fam, work.a, work.b
    e_a, e_b = embeddings

    def limit() -> None:
        with torch.inference_mode():
            encoder(*a)
            encoder(*b)

    def fam_row() -> object:
        return explain_pair(fam, a, b, pooling_mask=1, relu_attributions=False,
                            normalize_weights=False, token_pairs=True)  # fmt: skip

    def lig_row() -> None:
        lig_side(work, config, a, e_b, config.lig_steps)
        if not memory_child:
            lig_side(work, config, b, e_a, config.lig_steps)

    def occlusion_row() -> None:
        if memory_child:
            occlusion_side(work, a, e_b, positions=4)
            return
        occlusion_side(work, a, e_b)
        occlusion_side(work, b, e_a)

    return {LIMIT: limit, FAM: fam_row, LIG: lig_row, OCCLUSION: occlusion_row}


def time_rows(work: Workload, config: Config) -> dict[str, harness.Timing]:
    embeddings = work.embeddings
    rows = {name: run for name, run in make_rows(work, config, embeddings).items()
            if name in config.rows}  # fmt: skip
    slow = [name for name in (LIG, OCCLUSION) if name in rows]
    warmups = {
        LIG: lambda: lig_side(work, config, work.a, embeddings[1], 2),
        OCCLUSION: lambda: occlusion_side(work, work.a, embeddings[1], positions=2),
    }
    return harness.time_interleaved(
        rows,
        config.repeats,
        repeats_of={name: config.slow_repeats for name in slow},
        warmups={name: warmups[name] for name in slow},
    )


def run_row(name: str, config: Config) -> None:
    """The peak-memory child: build the workload, run one row once (or none), report."""
    work = build_workload(config)
    if name == harness.BASELINE:
        harness.report_peak(name, None)
        return
    harness.report_peak(name, make_rows(work, config, work.embeddings, memory_child=True)[name])


def table(times: dict[str, harness.Timing], memory: harness.PeakMemory) -> harness.Table:
    result = harness.Table(COLUMNS)
    limit = times[LIMIT].median
    for name in (row for row in ROWS if row in times):
        median = times[name].median
        ratio = median / limit
        measured = name in memory.peaks
        target = (
            f"time <= {FAM_TIME_TARGET:.2f}x: {harness.verdict(ratio <= FAM_TIME_TARGET)}"
            if name == FAM
            else ""
        )
        result.add(
            row=LABELS[name], median=f"{median:.0f}", spread=times[name].spread_text(),
            ratio=f"{ratio:.2f}x", peak=f"{memory.peaks[name]:.0f}" if measured else "-",
            above=f"{memory.above_baseline(name):.0f}" if measured else "-", target=target,
        )  # fmt: skip
    result.add(
        row="baseline: model + inputs only", median="", spread="", ratio="",
        peak=f"{memory.baseline:.0f}", above="0", target="",
    )  # fmt: skip
    return result


def notes(config: Config, times: dict[str, harness.Timing]) -> list[str]:
    return [
        f"BertModel (transformers, random weights, eval mode), {config.layers} layers, width "
        f"{config.width}, {config.heads} heads; {config.pairs} sentence pairs of {config.tokens} "
        "tokens (half to all of them valid, the rest padding), mean pooling, cosine; CPU, one "
        f"process; medians over {len(times[LIMIT].milliseconds)} round-robin repeats (spread: "
        f"fastest-slowest), LIG and occlusion over {config.slow_repeats} (LIG "
        f"n_steps={config.lig_steps}, internal_batch_size={config.lig_batch}); ratios are to "
        "the limit row's median.",
        "LIG and occlusion explain each sentence's cosine with the other's embedding, computed "
        "once outside the timing; the limit and FAM rows compute both embeddings.",
        "Peak RSS: VmHWM of a fresh process (python benchmarks/text.py --peak-memory-row=NAME) "
        "that builds the model and inputs, computes both embeddings and runs the row once "
        "(LIG: one side; occlusion: four positions of one side, the shapes of every other "
        "step); 'above baseline' subtracts the baseline process, which only builds the model "
        "and inputs."
        + ("" if len(config.memory_rows) == len(ROWS) else " '-': not measured in this run."),
        harness.machine_facts(("torch", "transformers", "captum")),
    ]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    parser = harness.speed_parser(
        __doc__.split("\n\n")[0], QUICK, FULL["repeats"], ROWS, memory_workers=1
    )
    parser.add_argument("--slow-repeats", type=int, default=1,
                        help="repeats that time LIG and occlusion (default 1)")  # fmt: skip
    parser.add_argument("--pairs", type=int, help=f"sentence pairs ({FULL['pairs']})")
    parser.add_argument("--tokens", type=int, help=f"tokens per sentence ({FULL['tokens']})")
    parser.add_argument("--width", type=int, help=f"hidden size ({FULL['width']})")
    parser.add_argument("--layers", type=int, help=f"transformer blocks ({FULL['layers']})")
    parser.add_argument("--heads", type=int, help=f"attention heads ({FULL['heads']})")
    parser.add_argument("--lig-steps", type=int, help=f"LIG n_steps ({FULL['lig_steps']})")
    parser.add_argument("--lig-batch", type=int, default=64, help="LIG internal_batch_size (64)")
    parser.add_argument(
        "--rows",
        type=_row_names,
        default=ROWS,
        help=f"comma-separated rows to run, the limit always included ({','.join(ROWS)})",
    )
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    repeats = args.repeats or defaults["repeats"]
    config = Config(
        pairs=args.pairs or defaults["pairs"],
        tokens=args.tokens or defaults["tokens"],
        width=args.width or defaults["width"],
        layers=args.layers or defaults["layers"],
        heads=args.heads or defaults["heads"],
        repeats=repeats,
        slow_repeats=max(1, min(args.slow_repeats, repeats)),
        lig_steps=args.lig_steps or defaults["lig_steps"],
        lig_batch=args.lig_batch,
        threads=args.threads or defaults["threads"] or harness.available_cores(),
        seed=args.seed,
        memory_workers=args.memory_workers,
        memory_rows=tuple(
            row for row in (QUICK_MEMORY_ROWS if args.quick else ROWS) if row in args.rows
        ),
        rows=args.rows,
    )
    return args, config


def _row_names(text: str) -> tuple[str, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(ROWS))
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}; choose from {list(ROWS)}")
    return tuple(row for row in ROWS if row == LIMIT or row in names)


def main(argv: list[str] | None = None) -> None:
    args, config = parse_args(argv)
    if args.peak_memory_row:  # a peak-memory child: one JSON line on stdout
        run_row(args.peak_memory_row, config)
        return
    work = build_workload(config)
    times = time_rows(work, config)
    del work  # the children measure memory; this process need not hold the model meanwhile
    memory = harness.measure_peak_memory(
        config.memory_rows, config.child_args(), workers=config.memory_workers
    )
    print(table(times, memory).render(args.markdown))
    print()
    for line in notes(config, times):
        print(f"- {line}" if args.markdown else line)


if __name__ == "__main__":
    main()
