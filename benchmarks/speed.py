"""Speed and peak memory of FAM on ResNet-50 against the inference forwards and Captum baselines.

What is measured: explaining 8 query/reference pairs with ResNet-50s (random weights, 224 px,
CPU, one process). FAM is gradient-free: it needs the layer's activations of the queries and of
the references, one forward each, so its cost floor is the model's own inference forwards of
the same images, and the table prints every row's time as a ratio to them (what FAM's code
controls) rather than absolute times (which mostly say how fast the machine is). The rows:

- ``forwards``: ``model(queries)`` and ``model(references)`` under ``torch.inference_mode``,
  the model being a ResNet-50 feature extractor (``model.fc = nn.Identity()``: its output is
  the pooled ``layer4``);
- ``FAM, default embedding``: ``FeatureActivationMap(model, model.layer4)``, with reference
  images and with cached reference embeddings (``fam.embed``, as for a gallery or prototypes);
- ``FAM, embedding="layer"`` at ``layer4`` and at ``layer3``: the similarity of the layer's
  pooled channels, for which the forward stops right after the layer (early exit), so at
  ``layer3`` FAM skips ``layer4`` altogether;
- Captum ``LayerGradCam`` at the same layers, on a cosine forward of the pooled layer features
  (the trunk up to the layer, then its global average): with reference images (their pooled
  features computed in the call, without gradients) and, at ``layer4``, with the cached
  reference embeddings, as is Captum ``IntegratedGradients`` on the ``layer4`` cosine forward;
- a ResNet-50 with a projection head (``model.fc = nn.Linear(2048, 256)``): its inference
  forwards and FAM with the default embedding.

Targets, printed beside the measurements with a verdict (never asserted: timings on a shared
machine are evidence, not a test): FAM with the default embedding <= 1.05x the forwards and a
peak memory below LayerGradCam's (no autograd graph through the backbone); cached references
<= 0.55x (the query forward only); the early exit at ``layer4`` <= 1.02x and at ``layer3``
<= 0.85x the full forwards it replaces.

Method (``benchmarks/harness.py``): everything is seeded; times are medians of round-robin
interleaved repeats in this process (IntegratedGradients, about ``3 * n_steps / 2`` forwards a
call, is timed in the first ``--ig-repeats`` repeats only and warmed up on one internal batch);
peak memory is the ``VmHWM`` of a fresh child process (this script with
``--peak-memory-row=NAME``) that builds the models and inputs, computes the reference
embeddings where the row takes them, and runs its row once, minus that of a baseline child that
only builds the models and inputs.

Usage::

    python benchmarks/speed.py               # full run (under 15 minutes on 2 cores, mostly IG)
    python benchmarks/speed.py --quick       # smoke run: 2 pairs, 64 px, 2 repeats, IG 10 steps,
                                             # one torch thread, peak memory of FAM and
                                             # LayerGradCam only
    python benchmarks/speed.py --markdown    # print the table as Markdown (for the README)
"""

from __future__ import annotations

import argparse
import copy
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property

import torch
import torchvision
from captum.attr import IntegratedGradients, LayerGradCam
from torch import Tensor, nn

from captum_fam import FeatureActivationMap

if __package__:
    from benchmarks import harness
else:  # python benchmarks/speed.py: this folder is on sys.path
    import harness

FORWARDS, FAM, CACHED, GRADCAM, IG = "forwards", "fam", "fam_cached", "gradcam", "ig"
EXIT4, GRADCAM4, EXIT3, GRADCAM3 = "fam_layer4", "gradcam_layer4", "fam_layer3", "gradcam_layer3"
HEAD_FORWARDS, HEAD_FAM = "head_forwards", "head_fam"
PROJECTION_DIM = 256
FULL = {"pairs": 8, "image_size": 224, "repeats": 7, "ig_steps": 50, "threads": None}
# One torch thread: on a loaded machine two threads wait on each other at every barrier.
QUICK = {"pairs": 2, "image_size": 64, "repeats": 2, "ig_steps": 10, "threads": 1}


@dataclass(frozen=True)
class Row:
    """One row of the table: what it runs is in :func:`make_rows`, under the same name."""

    name: str
    label: str
    floor: str  # the forwards row its time is a ratio to
    gradcam: str | None = None  # the LayerGradCam row at the same layer, for FAM rows
    time_target: float | None = None  # at most this ratio to the floor
    footnote: str = ""  # a marker explained in the notes under the table


ROWS = (
    Row(FORWARDS, "forwards: ResNet-50 feature extractor, queries + references", FORWARDS),
    Row(FAM, "FAM, default embedding ({default}), layer4, reference images", FORWARDS,
        gradcam=GRADCAM4, time_target=1.05),
    Row(CACHED, "FAM, default embedding ({default}), layer4, cached reference embeddings",
        FORWARDS, gradcam=GRADCAM, time_target=0.55),
    Row(GRADCAM, "Captum LayerGradCam, layer4, cosine forward, cached reference embeddings",
        FORWARDS, footnote="[b]"),
    Row(IG, "Captum IntegratedGradients, layer4 cosine forward, cached reference embeddings",
        FORWARDS, footnote="[b]"),
    Row(EXIT4, "FAM, embedding='layer' (early exit), layer4, reference images", FORWARDS,
        gradcam=GRADCAM4, time_target=1.02),
    Row(GRADCAM4, "Captum LayerGradCam, layer4, cosine forward, reference images", FORWARDS),
    Row(EXIT3, "FAM, embedding='layer' (early exit), layer3, reference images", FORWARDS,
        gradcam=GRADCAM3, time_target=0.85),
    Row(GRADCAM3, "Captum LayerGradCam, layer3, cosine forward, reference images", FORWARDS),
    Row(HEAD_FORWARDS, f"forwards: ResNet-50 + Linear(2048, {PROJECTION_DIM}) head, "
        "queries + references", HEAD_FORWARDS),
    Row(HEAD_FAM, "FAM on the head model, default embedding ({head_default}), layer4, "
        "reference images", HEAD_FORWARDS),
)  # fmt: skip
ROW_NAMES = tuple(row.name for row in ROWS)
MEMORY_TARGET = (FAM, GRADCAM)  # FAM's peak must stay below LayerGradCam's
# A child costs seconds of imports alone: the smoke run measures the memory target's rows only.
QUICK_MEMORY_ROWS = MEMORY_TARGET

RATIO_COLUMNS = (
    harness.Column("forwards", "ratio to forwards", "right"),
    harness.Column("gradcam", "ratio to LayerGradCam, same layer", "right"),
)
COLUMNS = harness.speed_columns(RATIO_COLUMNS)  # on CUDA: "peak CUDA MiB"


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
    memory_workers: int
    memory_rows: tuple[str, ...]  # the rows whose peak memory is measured
    device: str = "cpu"

    def child_args(self) -> list[str]:
        """The options that make a peak-memory child build exactly the same workload."""
        return [
            f"--pairs={self.pairs}",
            f"--image-size={self.image_size}",
            f"--ig-steps={self.ig_steps}",
            f"--ig-batch={self.ig_batch}",
            f"--threads={self.threads}",
            f"--seed={self.seed}",
            f"--device={self.device}",
        ]


class CosineToReference(nn.Module):
    """One score per query: the cosine of its pooled ``layer`` features with its reference's.

    The ResNet's own modules run up to and including ``layer`` (so Captum can hook it), then a
    global average. The reference embeddings come as a forward argument, so that
    IntegratedGradients expands them along with its scaled inputs.
    """

    def __init__(self, model: torchvision.models.ResNet, layer: str) -> None:
        super().__init__()
        names = [name for name, _ in model.named_children()]
        self.trunk = nn.Sequential(*list(model.children())[: names.index(layer) + 1])

    @torch.no_grad()
    def embed(self, images: Tensor) -> Tensor:
        return self.trunk(images).mean(dim=(2, 3))

    def forward(self, inputs: Tensor, reference_embeddings: Tensor) -> Tensor:
        embeddings = self.trunk(inputs).mean(dim=(2, 3))
        return torch.cosine_similarity(embeddings, reference_embeddings, dim=1)


class Workload:
    """Two random-weight ResNet-50s in eval mode, their FAMs and the query/reference batches."""

    def __init__(self, config: Config) -> None:
        harness.seed_everything(config.seed)
        harness.set_threads(config.threads)
        self.model = torchvision.models.resnet50(weights=None)
        self.model.fc = nn.Identity()  # a feature extractor: the output is the pooled layer4
        self.model.eval()
        self.head_model = copy.deepcopy(self.model)
        self.head_model.fc = nn.Linear(2048, PROJECTION_DIM)
        self.head_model.eval()
        shape = (config.pairs, 3, config.image_size, config.image_size)
        self.queries, self.references = torch.randn(shape), torch.randn(shape)
        device = torch.device(config.device)
        self.model.to(device)
        self.head_model.to(device)
        self.queries, self.references = self.queries.to(device), self.references.to(device)
        self.fam = FeatureActivationMap(self.model, self.model.layer4)
        self.exit4 = FeatureActivationMap(self.model, self.model.layer4, embedding="layer")
        self.exit3 = FeatureActivationMap(self.model, self.model.layer3, embedding="layer")
        self.head_fam = FeatureActivationMap(self.head_model, self.head_model.layer4)
        self.cosine4 = CosineToReference(self.model, "layer4")
        self.cosine3 = CosineToReference(self.model, "layer3")

    @cached_property
    def fam_embeddings(self) -> Tensor:
        """The references' embeddings in the space of the default FAM (cached rows)."""
        return self.fam.embed(self.references)

    @cached_property
    def cosine_embeddings(self) -> Tensor:
        """The references' pooled layer4 features (the gradient baselines' cached rows)."""
        return self.cosine4.embed(self.references)

    def prepare(self, names: tuple[str, ...]) -> None:
        """Computes the cached reference embeddings that these rows take, outside any timing."""
        if CACHED in names:
            _ = self.fam_embeddings
        if GRADCAM in names or IG in names:
            _ = self.cosine_embeddings

    def labels(self) -> dict[str, str]:
        """Row labels, with the embedding each default FAM actually uses."""
        default = getattr(self.fam, "embedding", "?")
        head_default = getattr(self.head_fam, "embedding", "?")
        return {
            row.name: row.label.format(default=default, head_default=head_default) for row in ROWS
        }


def make_rows(work: Workload, config: Config) -> dict[str, Callable[[], object]]:
    """Each row as a call without arguments (call ``work.prepare`` first for cached rows)."""
    queries, references = work.queries, work.references
    gradcam = LayerGradCam(work.cosine4, work.model.layer4)
    gradcam4 = LayerGradCam(work.cosine4, work.model.layer4)
    gradcam3 = LayerGradCam(work.cosine3, work.model.layer3)
    integrated_gradients = IntegratedGradients(work.cosine4)

    def forwards(model: nn.Module) -> Callable[[], None]:
        def run() -> None:
            with torch.inference_mode():
                model(queries)
                model(references)

        return run

    def gradcam_with_references(cosine: CosineToReference, method: LayerGradCam) -> Callable:
        def run() -> Tensor:
            rows = cosine.embed(references)  # without gradients, as FAM's reference forward
            return method.attribute(queries, additional_forward_args=rows, relu_attributions=True)

        return run

    rows: dict[str, Callable[[], object]] = {
        FORWARDS: forwards(work.model),
        FAM: lambda: work.fam.attribute(queries, reference=references),
        CACHED: lambda: work.fam.attribute(queries, reference_embeddings=work.fam_embeddings),
        GRADCAM: lambda: gradcam.attribute(
            queries, additional_forward_args=work.cosine_embeddings, relu_attributions=True
        ),
        IG: lambda: integrated_gradients.attribute(
            queries,
            additional_forward_args=work.cosine_embeddings,
            n_steps=config.ig_steps,
            internal_batch_size=config.ig_batch,
        ),
        EXIT4: lambda: work.exit4.attribute(queries, reference=references),
        GRADCAM4: gradcam_with_references(work.cosine4, gradcam4),
        EXIT3: lambda: work.exit3.attribute(queries, reference=references),
        GRADCAM3: gradcam_with_references(work.cosine3, gradcam3),
        HEAD_FORWARDS: forwards(work.head_model),
        HEAD_FAM: lambda: work.head_fam.attribute(queries, reference=references),
    }
    return {name: synchronized(run, config.device) for name, run in rows.items()}


def synchronized(run: Callable[[], object], device: str) -> Callable[[], object]:
    """``run``, returning only once a CUDA device has finished the work it queued."""
    if not device.startswith("cuda"):
        return run

    def call() -> object:
        out = run()
        torch.cuda.synchronize(device)
        return out

    return call


def ig_warmup(work: Workload, config: Config) -> Callable[[], object]:
    """IG on as many steps as fill one internal batch: the timed call's shapes, at low cost."""
    steps = max(2, config.ig_batch // config.pairs)
    integrated_gradients = IntegratedGradients(work.cosine4)
    return synchronized(
        lambda: integrated_gradients.attribute(
            work.queries,
            additional_forward_args=work.cosine_embeddings,
            n_steps=steps,
            internal_batch_size=config.ig_batch,
        ),
        config.device,
    )


def time_rows(work: Workload, config: Config) -> dict[str, harness.Timing]:
    work.prepare(ROW_NAMES)
    return harness.time_interleaved(
        make_rows(work, config),
        config.repeats,
        repeats_of={IG: config.ig_repeats},
        warmups={IG: ig_warmup(work, config)},
    )


def run_row(name: str, config: Config) -> None:
    """The peak-memory child: build the workload, run one row once (or none), report."""
    work = Workload(config)
    peak = harness.cuda_peak_mib if config.device.startswith("cuda") else harness.peak_rss_mib
    if name == harness.BASELINE:
        harness.report_peak(name, None, peak)
        return
    work.prepare((name,))
    harness.report_peak(name, make_rows(work, config)[name], peak)


def target_text(row: Row, ratio: float, memory: harness.PeakMemory) -> str:
    parts = []
    if row.time_target is not None:
        met = ratio <= row.time_target
        parts.append(f"time <= {row.time_target:.2f}x: {harness.verdict(met)}")
    if row.name == MEMORY_TARGET[0]:
        met = memory.peaks[row.name] < memory.peaks[MEMORY_TARGET[1]]
        parts.append(f"peak < LayerGradCam's: {harness.verdict(met)}")
    if row.name == MEMORY_TARGET[1]:
        parts.append("FAM's peak must stay below this")
    return "; ".join(parts)


def table(
    times: dict[str, harness.Timing],
    memory: harness.PeakMemory,
    labels: dict[str, str],
    device: str = "cpu",
) -> harness.Table:
    cuda = harness.speed_columns(RATIO_COLUMNS, "peak CUDA MiB")
    result = harness.Table(COLUMNS if device == "cpu" else cuda)
    for row in ROWS:
        median = times[row.name].median
        ratio = median / times[row.floor].median
        versus = "" if row.gradcam is None else f"{median / times[row.gradcam].median:.2f}x"
        measured = row.name in memory.peaks
        result.add(
            row=f"{labels[row.name]} {row.footnote}".strip(),
            median=f"{median:.0f}",
            spread=times[row.name].spread_text(),
            forwards=f"{ratio:.2f}x",
            gradcam=versus,
            peak=f"{memory.peaks[row.name]:.0f}" if measured else "-",
            above=f"{memory.above_baseline(row.name):.0f}" if measured else "-",
            target=target_text(row, ratio, memory),
        )
    result.add(
        row="baseline: models + inputs only", median="", spread="", forwards="", gradcam="",
        peak=f"{memory.baseline:.0f}", above="0", target="",
    )  # fmt: skip
    return result


def device_text(device: str) -> str:
    """The device in words, with the GPU's name on CUDA."""
    if device.startswith("cuda"):
        return f"CUDA ({torch.cuda.get_device_name(torch.device(device))})"
    return "CPU"


def notes(config: Config, times: dict[str, harness.Timing]) -> list[str]:
    return [
        f"ResNet-50s (torchvision, random weights, eval mode), {config.image_size} px, "
        f"{config.pairs} query/reference pairs, {device_text(config.device)}, one process; "
        "medians over "
        f"{len(times[FORWARDS].milliseconds)} round-robin repeats (spread: fastest-slowest), "
        f"IntegratedGradients over {len(times[IG].milliseconds)} (n_steps={config.ig_steps}, "
        f"internal_batch_size={config.ig_batch}). 'ratio to forwards': to the inference "
        "forwards of the same model (the head model's rows to its own); 'ratio to "
        "LayerGradCam': to the LayerGradCam row at the same layer that takes the references "
        "the same way (images or cached embeddings).",
        "[b] The cosine forward compares each query with its reference's pooled layer4 "
        "features, computed once outside the timing, as for the cached FAM row; the forwards "
        "row counts the reference forward, these rows do not.",
        (
            "Peak CUDA memory: torch.cuda.max_memory_allocated"
            if config.device != "cpu"
            else "Peak RSS: VmHWM"
        )
        + " of a fresh process (python benchmarks/speed.py "
        "--peak-memory-row=NAME) that builds the models and inputs, computes the cached "
        "reference embeddings where the row takes them (one inference forward, no higher than "
        "the row's own) and runs the row once; 'above baseline' subtracts the baseline process, "
        "which only builds the models and inputs."
        + ("" if len(config.memory_rows) == len(ROWS) else " '-': not measured (--quick)."),
        harness.machine_facts(("torch", "torchvision", "captum")),
    ]


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    parser = harness.speed_parser(
        __doc__.split("\n\n")[0], QUICK, FULL["repeats"], ROW_NAMES, memory_workers=2
    )
    parser.add_argument("--ig-repeats", type=int, default=3, help="repeats timing IG (default 3)")
    parser.add_argument("--pairs", type=int, help=f"query/reference pairs ({FULL['pairs']})")
    parser.add_argument("--image-size", type=int, help=f"pixels ({FULL['image_size']})")
    parser.add_argument("--ig-steps", type=int, help=f"IG n_steps ({FULL['ig_steps']})")
    parser.add_argument("--ig-batch", type=int, default=25, help="IG internal_batch_size (25)")
    parser.add_argument("--device", default="cpu", help="cpu (default) or cuda[:N]")
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
        threads=args.threads or defaults["threads"] or harness.available_cores(),
        seed=args.seed,
        memory_workers=args.memory_workers,
        memory_rows=QUICK_MEMORY_ROWS if args.quick else ROW_NAMES,
        device=args.device,
    )
    return args, config


def main(argv: list[str] | None = None) -> None:
    args, config = parse_args(argv)
    if args.peak_memory_row:  # a peak-memory child: one JSON line on stdout
        run_row(args.peak_memory_row, config)
        return
    work = Workload(config)
    times = time_rows(work, config)
    labels = work.labels()
    del work  # the children measure memory; this process need not hold the models meanwhile
    memory = harness.measure_peak_memory(
        config.memory_rows, config.child_args(), workers=config.memory_workers
    )
    print(table(times, memory, labels, config.device).render(args.markdown))
    print()
    for line in notes(config, times):
        print(f"- {line}" if args.markdown else line)


if __name__ == "__main__":
    main()
