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
row (``--row NAME``), as Linux's ``VmHWM``; a ``baseline`` child that only builds the model and
inputs gives the floor that the last column subtracts.

Method: seeded; every row runs once as a warm-up (LIG on 2 steps, occlusion on 2 positions);
then each repeat times every row once, round-robin with a rotating start so that load on a
shared machine hits all rows alike; medians. LIG and occlusion cost about a hundred limits
each, so they are timed in the first ``--slow-repeats`` repeats only (default 1). Their memory
children run one side (LIG) and four positions of one side (occlusion): every further step
repeats the same shapes, so the peak is the same.

Usage::

    python benchmarks/text.py               # full run (about 30 minutes on 2 quiet cores)
    python benchmarks/text.py --quick       # smoke run: a small encoder, 2 pairs, 16 tokens
    python benchmarks/text.py --markdown    # the table as Markdown

The structure (rows as calls without arguments, round-robin timing, a child process per row
for the peak) is that of ``benchmarks/speed.py``.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import captum
import torch
import transformers
from captum.attr import LayerIntegratedGradients
from torch import Tensor, nn

from captum_fam import FeatureActivationMap
from captum_fam.tasks import explain_pair
from captum_fam.text import SentenceEncoder, sentence_fam
from captum_fam.zoo.text_encoders import random_text_encoder

LIMIT, FAM, LIG, OCCLUSION = "limit", "fam", "lig", "occlusion"
ROWS = (LIMIT, FAM, LIG, OCCLUSION)
SLOW = (LIG, OCCLUSION)
BASELINE = "baseline"
LABELS = {
    LIMIT: "limit: inference forwards (sentences a + b)",
    FAM: "FAM, both sides + token pairs",
    LIG: "Captum LayerIntegratedGradients, embeddings, both sides",
    OCCLUSION: "occlusion, one token at a time, both sides",
    BASELINE: "baseline: model + inputs only",
}
FAM_TIME_TARGET = 1.05
FULL = {"pairs": 16, "tokens": 128, "width": 768, "layers": 12, "heads": 12, "repeats": 5,
        "lig_steps": 50}  # fmt: skip
# One thread for the smoke run: on a busy machine, two threads wait for each other on tiny ops.
QUICK = {"pairs": 2, "tokens": 16, "width": 64, "layers": 2, "heads": 4, "repeats": 2,
         "lig_steps": 4, "threads": 1}  # fmt: skip


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

    def child_args(self) -> list[str]:
        """The options that make a ``--row`` child build exactly the same workload."""
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
    torch.manual_seed(config.seed)
    torch.set_num_threads(config.threads)
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


def lig_baseline(ids: Tensor, workload: Workload) -> Tensor:
    """Captum's text baseline: ``[PAD]`` everywhere but the special tokens."""
    keep = (ids == workload.special_ids[0]) | (ids == workload.special_ids[1])
    return torch.where(keep, ids, torch.full_like(ids, workload.pad_id))


def lig_side(workload: Workload, config: Config, side: tuple[Tensor, Tensor],
             other: Tensor, steps: int) -> Tensor:  # fmt: skip
    lig = LayerIntegratedGradients(CosineToReference(workload.encoder),
                                   workload.encoder.model.embeddings)  # fmt: skip
    ids, mask = side
    attributions = lig.attribute(
        ids, baselines=lig_baseline(ids, workload), additional_forward_args=(mask, other),
        n_steps=steps, internal_batch_size=config.lig_batch,
    )  # fmt: skip
    return attributions.sum(-1)  # (N, T): one value per token


@torch.inference_mode()
def occlusion_side(workload: Workload, side: tuple[Tensor, Tensor], other: Tensor,
                   positions: int | None = None) -> Tensor:  # fmt: skip
    """Score drop per token when it is removed from the attention mask (specials kept)."""
    ids, mask = side
    scores = torch.cosine_similarity(workload.encoder(ids, mask), other, dim=1)
    drops = torch.zeros(ids.shape, dtype=scores.dtype)
    special = (ids == workload.special_ids[0]) | (ids == workload.special_ids[1])
    for position in range(1, ids.shape[1] if positions is None else 1 + positions):
        valid = mask[:, position].bool() & ~special[:, position]
        if not valid.any():
            continue
        removed = mask.clone()
        removed[:, position] = 0
        occluded = torch.cosine_similarity(workload.encoder(ids, removed), other, dim=1)
        drops[:, position] = torch.where(valid, scores - occluded, torch.zeros(()))
    return drops


def make_rows(workload: Workload, config: Config, embeddings: tuple[Tensor, Tensor],
              memory_child: bool = False) -> dict[str, Callable]:  # fmt: skip
    """Each row as a call without arguments; ``embeddings`` are both sides', precomputed."""
    encoder, fam, a, b = workload.encoder, workload.fam, workload.a, workload.b
    e_a, e_b = embeddings

    def limit() -> None:
        with torch.inference_mode():
            encoder(*a)
            encoder(*b)

    def fam_row() -> None:
        explain_pair(fam, a, b, pooling_mask=1, relu_attributions=False,
                     normalize_weights=False, token_pairs=True)  # fmt: skip

    def lig_row() -> None:
        lig_side(workload, config, a, e_b, config.lig_steps)
        if not memory_child:
            lig_side(workload, config, b, e_a, config.lig_steps)

    def occlusion_row() -> None:
        if memory_child:
            occlusion_side(workload, a, e_b, positions=4)
            return
        occlusion_side(workload, a, e_b)
        occlusion_side(workload, b, e_a)

    return {LIMIT: limit, FAM: fam_row, LIG: lig_row, OCCLUSION: occlusion_row}


def reference_embeddings(workload: Workload) -> tuple[Tensor, Tensor]:
    with torch.inference_mode():
        return workload.encoder(*workload.a).clone(), workload.encoder(*workload.b).clone()


def time_rows(config: Config) -> dict[str, list[float]]:
    """Round-robin timings in this process: milliseconds per row, one entry per repeat."""
    workload = build_workload(config)
    embeddings = reference_embeddings(workload)
    rows = make_rows(workload, config, embeddings)
    warmups = {
        **rows,
        LIG: lambda: lig_side(workload, config, workload.a, embeddings[1], 2),
        OCCLUSION: lambda: occlusion_side(workload, workload.a, embeddings[1], positions=2),
    }
    for name in ROWS:
        log(f"warm-up: {name}")
        warmups[name]()
    times: dict[str, list[float]] = {name: [] for name in ROWS}
    for repeat in range(config.repeats):
        order = ROWS[repeat % len(ROWS) :] + ROWS[: repeat % len(ROWS)]
        for name in order:
            if name in SLOW and repeat >= config.slow_repeats:
                continue
            gc.collect()
            start = time.perf_counter()
            rows[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
            log(f"repeat {repeat + 1}/{config.repeats}: {name} {times[name][-1]:.0f} ms")
    return times


def run_row(name: str, config: Config) -> float:
    """Build the workload, run one row once, return this process's peak RSS in MiB."""
    workload = build_workload(config)
    if name != BASELINE:
        embeddings = reference_embeddings(workload)
        make_rows(workload, config, embeddings, memory_child=True)[name]()
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """This process's peak resident set size (MiB): ``VmHWM``, reset by ``execve``."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def measure_peak(name: str, config: Config) -> float:
    log(f"peak memory: {name}")
    command = [sys.executable, str(Path(__file__).resolve()), f"--row={name}"]
    result = subprocess.run(
        command + config.child_args(), check=True, capture_output=True, text=True
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mib"])


def table(times: dict[str, list[float]], peaks: dict[str, float]) -> list[list[str]]:
    header = ["row", "median ms", "ratio to limit", "peak RSS MiB", "above baseline MiB", "target"]
    medians = {name: statistics.median(values) for name, values in times.items()}
    ratio = medians[FAM] / medians[LIMIT]
    met = "met" if ratio <= FAM_TIME_TARGET else "MISSED"
    targets = {FAM: f"time <= {FAM_TIME_TARGET:.2f}x: {met}"}
    lines = [header]
    for name in ROWS:
        lines.append([
            LABELS[name], f"{medians[name]:.0f}", f"{medians[name] / medians[LIMIT]:.2f}x",
            f"{peaks[name]:.0f}", f"{peaks[name] - peaks[BASELINE]:.0f}", targets.get(name, ""),
        ])  # fmt: skip
    lines.append([LABELS[BASELINE], "", "", f"{peaks[BASELINE]:.0f}", "0", ""])
    return lines


def render(lines: list[list[str]], markdown: bool) -> str:
    if markdown:
        rule = ["---", "---:", "---:", "---:", "---:", "---"]
        return "\n".join("| " + " | ".join(cells) + " |" for cells in [lines[0], rule, *lines[1:]])
    widths = [max(len(cells[i]) for cells in lines) for i in range(len(lines[0]))]
    rows = [
        "  ".join(cell.ljust(width) for cell, width in zip(cells, widths, strict=True))
        for cells in lines
    ]
    return "\n".join([rows[0], "-" * len(rows[0]), *rows[1:]])


def notes(config: Config, times: dict[str, list[float]]) -> list[str]:
    cpu = next(
        (line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
         if line.startswith("model name")),
        "unknown CPU",
    )  # fmt: skip
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return [
        f"BertModel (transformers, random weights, eval mode), {config.layers} layers, width "
        f"{config.width}, {config.heads} heads; {config.pairs} sentence pairs of {config.tokens} "
        "tokens (half to all of them valid, the rest padding), mean pooling, cosine; CPU, one "
        f"process; medians over {len(times[LIMIT])} interleaved repeats, LIG and occlusion over "
        f"{len(times[LIG])} (LIG n_steps={config.lig_steps}, internal_batch_size="
        f"{config.lig_batch}); ratios are to the limit row's median.",
        "LIG and occlusion explain each sentence's cosine with the other's embedding, computed "
        "once outside the timing; the limit and FAM rows compute both embeddings.",
        "Peak RSS: VmHWM of a fresh process (python benchmarks/text.py --row NAME) that builds "
        "the model and inputs, computes both embeddings and runs the row once (LIG: one side; "
        "occlusion: four positions of one side, the same shapes as every other step). 'above "
        "baseline' subtracts the baseline process, which only builds the model and inputs.",
        "Spread of the timed repeats (min-max ms): "
        + ", ".join(f"{name} {min(times[name]):.0f}-{max(times[name]):.0f}" for name in ROWS)
        + ".",
        f"Machine: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
        f"load average at the end {load}; Python {platform.python_version()}, torch "
        f"{torch.__version__}, transformers {transformers.__version__}, captum "
        f"{captum.__version__}",
    ]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: " + str(QUICK))
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--repeats", type=int, help=f"timed repeats ({FULL['repeats']})")
    parser.add_argument("--slow-repeats", type=int, default=1,
                        help="repeats that time LIG and occlusion (default 1)")  # fmt: skip
    parser.add_argument("--pairs", type=int, help=f"sentence pairs ({FULL['pairs']})")
    parser.add_argument("--tokens", type=int, help=f"tokens per sentence ({FULL['tokens']})")
    parser.add_argument("--width", type=int, help=f"hidden size ({FULL['width']})")
    parser.add_argument("--layers", type=int, help=f"transformer blocks ({FULL['layers']})")
    parser.add_argument("--heads", type=int, help=f"attention heads ({FULL['heads']})")
    parser.add_argument("--lig-steps", type=int, help=f"LIG n_steps ({FULL['lig_steps']})")
    parser.add_argument("--lig-batch", type=int, default=64, help="LIG internal_batch_size (64)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--row", choices=(*ROWS, BASELINE), help=argparse.SUPPRESS)
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
        threads=args.threads or defaults.get("threads") or len(os.sched_getaffinity(0)),
        seed=args.seed,
    )
    return args, config


def main(argv: list[str] | None = None) -> None:
    args, config = parse_args(argv)
    if args.row:  # a memory child: one JSON line on stdout
        print(json.dumps({"row": args.row, "peak_rss_mib": run_row(args.row, config)}))
        return
    times = time_rows(config)
    peaks = {name: measure_peak(name, config) for name in (BASELINE, *ROWS)}
    print(render(table(times, peaks), args.markdown))
    print()
    for line in notes(config, times):
        print(f"- {line}" if args.markdown else line)


if __name__ == "__main__":
    main()
