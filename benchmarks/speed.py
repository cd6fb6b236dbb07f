"""Speed and peak memory of FAM against the inference limit and two gradient baselines.

What is measured: explaining 8 query/reference pairs with a ResNet-50 (random weights, 224 px,
CPU, one process), the rows being

- ``limit``: the inference forwards FAM cannot avoid, ``model(queries)`` and
  ``model(references)`` under ``torch.inference_mode``;
- ``FAM``: ``fam.attribute(queries, reference=references)``;
- ``FAM, cached``: ``fam.attribute(queries, reference_embeddings=...)`` with the references'
  embeddings computed beforehand by ``fam.embed`` (a gallery or a prototype cache);
- ``LayerGradCam``: Captum's Grad-CAM on ``model.layer4`` of a cosine forward, which returns
  one score per query, the cosine of its pooled layer4 features with its reference's embedding;
- ``IntegratedGradients``: Captum's IG on the same cosine forward, w.r.t. the input pixels.

FAM is gradient-free: it needs the layer's activations of the queries and of the references,
one forward each, and nothing else. Its cost floor is therefore the ``limit`` row, and the
table prints every row's time as a ratio to that floor: the ratio is what FAM's code controls
(overhead on top of the forwards), whereas absolute times mostly say how fast this machine is.
The targets are FAM <= 1.05x the limit, cached <= 0.55x (the query forward only), and a peak
memory below LayerGradCam's (no autograd graph). They are printed beside the measurements, not
asserted: timings on a shared machine are evidence, not a test.

Method: everything is seeded; every row runs once as a warm-up; then each repeat times every
row once, round-robin (the starting row rotates from repeat to repeat) so that machine noise
hits all rows alike, and the table shows medians. IntegratedGradients costs about
``3 * n_steps / 2`` limits, so it is timed in the first ``--ig-repeats`` repeats only and warmed
up on one internal batch instead of a full call. Peak memory comes from separate runs of this
script (``--row NAME``), one per row, each reporting its own peak resident set size after
building the model and inputs and running its row once; a ``baseline`` child that only builds
the model and inputs gives the floor that the last column subtracts. The peak is Linux's
``VmHWM`` (``/proc/self/status``), not ``ru_maxrss``: ``ru_maxrss`` is preserved across
``execve``, so a child spawned by this (large) timing process would report at least the
parent's resident size at the spawn, whatever the child itself uses.

Usage::

    python benchmarks/speed.py               # full run (a few minutes to an hour on 2 cores)
    python benchmarks/speed.py --quick       # smoke run: 2 pairs, 112 px, 2 repeats, IG 10 steps
    python benchmarks/speed.py --markdown    # print the table as Markdown (for the README)
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import captum
import numpy as np
import torch
import torchvision
from captum.attr import IntegratedGradients, LayerGradCam
from torch import Tensor, nn

from captum_fam import FeatureActivationMap

LIMIT, FAM, CACHED, GRADCAM, IG = "limit", "fam", "fam_cached", "gradcam", "ig"
ROWS = (LIMIT, FAM, CACHED, GRADCAM, IG)
BASELINE = "baseline"
LABELS = {
    LIMIT: "limit: inference forwards (queries + references)",
    FAM: "FAM, reference images",
    CACHED: "FAM, cached reference embeddings",
    GRADCAM: "Captum LayerGradCam, cosine forward",
    IG: "Captum IntegratedGradients, cosine forward",
    BASELINE: "baseline: model + inputs only",
}
FAM_TIME_TARGET = 1.05
CACHED_TIME_TARGET = 0.55
FULL = {"pairs": 8, "image_size": 224, "repeats": 7, "ig_steps": 50}
QUICK = {"pairs": 2, "image_size": 112, "repeats": 2, "ig_steps": 10}


@dataclass(frozen=True)
class Config:
    """The benchmark's settings, shared by the timing process and the memory children."""

    pairs: int
    image_size: int
    repeats: int
    ig_repeats: int
    ig_steps: int
    ig_batch: int
    threads: int
    seed: int

    def child_args(self) -> list[str]:
        """The options that make a ``--row`` child build exactly the same workload."""
        return [
            f"--pairs={self.pairs}",
            f"--image-size={self.image_size}",
            f"--ig-steps={self.ig_steps}",
            f"--ig-batch={self.ig_batch}",
            f"--threads={self.threads}",
            f"--seed={self.seed}",
        ]


@dataclass
class Workload:
    """The model, its FAM and the query/reference batches."""

    model: nn.Module
    fam: FeatureActivationMap
    queries: Tensor
    references: Tensor


class CosineToReference(nn.Module):
    """One score per query: cosine of its pooled layer4 features with its reference embedding.

    The ResNet's own modules run (so Captum can hook ``model.layer4``); the classifier head is
    skipped, as the embedding is the global average of layer4. The reference embeddings come as
    a forward argument, so that IntegratedGradients expands them along with its scaled inputs.
    """

    def __init__(self, model: torchvision.models.ResNet) -> None:
        super().__init__()
        self.trunk = nn.Sequential(*list(model.children())[:-2])  # up to and including layer4

    def forward(self, inputs: Tensor, reference_embeddings: Tensor) -> Tensor:
        embeddings = self.trunk(inputs).mean(dim=(2, 3))
        return torch.cosine_similarity(embeddings, reference_embeddings, dim=1)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 (the global state is what libraries draw from)
    torch.manual_seed(seed)


def build_workload(config: Config) -> Workload:
    """A random-weight ResNet-50 in eval mode and ``pairs`` query/reference images."""
    seed_everything(config.seed)
    torch.set_num_threads(config.threads)
    model = torchvision.models.resnet50(weights=None).eval()
    shape = (config.pairs, 3, config.image_size, config.image_size)
    queries, references = torch.randn(shape), torch.randn(shape)
    return Workload(model, FeatureActivationMap(model, model.layer4), queries, references)


def make_rows(workload: Workload, config: Config, embeddings: Tensor) -> dict[str, Callable]:
    """Each row as a call without arguments; ``embeddings`` are the references', precomputed."""
    model, fam, queries, references = (
        workload.model, workload.fam, workload.queries, workload.references,
    )  # fmt: skip
    cosine = CosineToReference(model)
    gradcam = LayerGradCam(cosine, model.layer4)
    integrated_gradients = IntegratedGradients(cosine)

    def limit() -> None:
        with torch.inference_mode():
            model(queries)
            model(references)

    return {
        LIMIT: limit,
        FAM: lambda: fam.attribute(queries, reference=references),
        CACHED: lambda: fam.attribute(queries, reference_embeddings=embeddings),
        GRADCAM: lambda: gradcam.attribute(
            queries, additional_forward_args=embeddings, relu_attributions=True
        ),
        IG: lambda: integrated_gradients.attribute(
            queries,
            additional_forward_args=embeddings,
            n_steps=config.ig_steps,
            internal_batch_size=config.ig_batch,
        ),
    }


def ig_warmup(workload: Workload, config: Config, embeddings: Tensor) -> Callable:
    """IG on as many steps as fill one internal batch: the timed call's shapes, at low cost."""
    steps = max(2, config.ig_batch // config.pairs)
    integrated_gradients = IntegratedGradients(CosineToReference(workload.model))
    return lambda: integrated_gradients.attribute(
        workload.queries,
        additional_forward_args=embeddings,
        n_steps=steps,
        internal_batch_size=config.ig_batch,
    )


def time_rows(config: Config) -> dict[str, list[float]]:
    """Round-robin timings in this process: milliseconds per row, one entry per repeat."""
    workload = build_workload(config)
    embeddings = workload.fam.embed(workload.references)
    rows = make_rows(workload, config, embeddings)
    warmups = {**rows, IG: ig_warmup(workload, config, embeddings)}
    for name in ROWS:
        log(f"warm-up: {name}")
        warmups[name]()
    times: dict[str, list[float]] = {name: [] for name in ROWS}
    for repeat in range(config.repeats):
        order = ROWS[repeat % len(ROWS) :] + ROWS[: repeat % len(ROWS)]
        for name in order:
            if name == IG and repeat >= config.ig_repeats:
                continue
            gc.collect()
            start = time.perf_counter()
            rows[name]()
            times[name].append((time.perf_counter() - start) * 1e3)
        log(f"repeat {repeat + 1}/{config.repeats}: " + ", ".join(
            f"{name} {times[name][-1]:.0f} ms" for name in order if len(times[name]) > repeat
        ))  # fmt: skip
    return times


def run_row(name: str, config: Config) -> float:
    """Build the workload, run one row once, return this process's peak RSS in MiB."""
    workload = build_workload(config)
    if name != BASELINE:
        embeddings = workload.fam.embed(workload.references)
        make_rows(workload, config, embeddings)[name]()
    return peak_rss_mib()


def peak_rss_mib() -> float:
    """This process's peak resident set size (MiB) since its ``execve``.

    Linux's ``VmHWM`` belongs to the address space, which ``execve`` replaces. ``ru_maxrss``
    survives ``execve`` and so includes the spawning parent's size (checked: a child of a
    parent holding 800 MiB reports 811 MiB of ``ru_maxrss`` and 11 MiB of ``VmHWM``); it is
    only the fallback where ``/proc`` is missing.
    """
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    maxrss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return maxrss / 2**20 if sys.platform == "darwin" else maxrss / 1024  # bytes or KiB


def measure_peak(name: str, config: Config) -> float:
    """Peak RSS (MiB) of a fresh ``--row NAME`` child of this script."""
    log(f"peak memory: {name}")
    command = [sys.executable, str(Path(__file__).resolve()), f"--row={name}"]
    result = subprocess.run(
        command + config.child_args(), check=True, capture_output=True, text=True
    )
    return float(json.loads(result.stdout.strip().splitlines()[-1])["peak_rss_mib"])


def target_cells(medians: dict[str, float], peaks: dict[str, float]) -> dict[str, str]:
    """The targets, each with whether this run met it."""

    def verdict(met: bool) -> str:
        return "met" if met else "MISSED"

    fam_ratio, cached_ratio = (medians[name] / medians[LIMIT] for name in (FAM, CACHED))
    memory_met = peaks[FAM] < peaks[GRADCAM]
    return {
        FAM: f"time <= {FAM_TIME_TARGET:.2f}x: {verdict(fam_ratio <= FAM_TIME_TARGET)}; "
        f"peak < LayerGradCam's: {verdict(memory_met)}",
        CACHED: f"time <= {CACHED_TIME_TARGET:.2f}x: {verdict(cached_ratio <= CACHED_TIME_TARGET)}",
        GRADCAM: "FAM's peak must stay below this",
    }


def table(times: dict[str, list[float]], peaks: dict[str, float]) -> list[list[str]]:
    header = ["row", "median ms", "ratio to limit", "peak RSS MiB", "above baseline MiB", "target"]
    medians = {name: statistics.median(values) for name, values in times.items()}
    targets = target_cells(medians, peaks)
    lines = [header]
    for name in ROWS:
        label = LABELS[name] + (" [b]" if name in (GRADCAM, IG) else "")
        lines.append([
            label,
            f"{medians[name]:.0f}",
            f"{medians[name] / medians[LIMIT]:.2f}x",
            f"{peaks[name]:.0f}",
            f"{peaks[name] - peaks[BASELINE]:.0f}",
            targets.get(name, ""),
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


def machine() -> str:
    cpu = "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    return (
        f"Machine: {cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"torchvision {torchvision.__version__}, captum {captum.__version__}"
    )


def notes(config: Config, times: dict[str, list[float]]) -> list[str]:
    return [
        f"ResNet-50 (torchvision, random weights, eval mode), {config.image_size} px, "
        f"{config.pairs} query/reference pairs, CPU, one process; medians over "
        f"{len(times[LIMIT])} interleaved repeats, IntegratedGradients over "
        f"{len(times[IG])} (n_steps={config.ig_steps}, internal_batch_size={config.ig_batch}); "
        "ratios are to the limit row's median.",
        "[b] The cosine forward compares each query with its reference's embedding, computed "
        "once by fam.embed outside the timing, as for the cached FAM row; the limit row counts "
        "the reference forward, these rows do not.",
        "Peak RSS: VmHWM of a fresh process (python benchmarks/speed.py --row NAME) that "
        "builds the model and inputs, computes the reference embeddings where the row uses "
        "them (one inference forward, no higher than the row's own) and runs the row once. "
        "'above baseline' subtracts the baseline process, which only builds the model and "
        "inputs.",
        "Spread of the timed repeats (min-max ms): "
        + ", ".join(f"{name} {min(times[name]):.0f}-{max(times[name]):.0f}" for name in ROWS)
        + ".",
        machine(),
    ]


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smoke run: " + str(QUICK))
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--repeats", type=int, help=f"timed repeats (default {FULL['repeats']})")
    parser.add_argument("--ig-repeats", type=int, default=3, help="repeats timing IG (default 3)")
    parser.add_argument("--pairs", type=int, help=f"query/reference pairs ({FULL['pairs']})")
    parser.add_argument("--image-size", type=int, help=f"pixels ({FULL['image_size']})")
    parser.add_argument("--ig-steps", type=int, help=f"IG n_steps ({FULL['ig_steps']})")
    parser.add_argument("--ig-batch", type=int, default=25, help="IG internal_batch_size (25)")
    parser.add_argument("--threads", type=int, help="torch threads (default: all cores)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--row", choices=(*ROWS, BASELINE), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    defaults = QUICK if args.quick else FULL
    repeats = args.repeats or defaults["repeats"]
    config = Config(
        pairs=args.pairs or defaults["pairs"],
        image_size=args.image_size or defaults["image_size"],
        repeats=repeats,
        ig_repeats=max(1, min(args.ig_repeats, repeats)),
        ig_steps=args.ig_steps or defaults["ig_steps"],
        ig_batch=args.ig_batch,
        threads=args.threads or len(os.sched_getaffinity(0)),
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
