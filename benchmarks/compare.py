"""Map methods on the shapes world, scored with captum_fam.metrics.

Workload: two-object images from ``make_shapes(n, objects=2)`` and the shipped shapes model
(``load_shapes_model``; random weights with a note in the output if the weights file is
missing). References are class prototypes: the mean embedding (``fam.embed``, the pooled last
block) of single-object support images of each class. Object A is an image's first object,
B its second; every map explains the cosine similarity of the image to the prototype of A's
class (B's class for the second map of reference specificity).

Methods (all maps at the layer's 8x8 resolution, except IG at the 64x64 input, summed over
RGB):

- FAM, ``weighting="contribution"`` and ``"reference"``;
- contrastive FAM: reference = A's prototype, foil = B's prototype (and the reverse), with the
  default weighting ("reference");
- NoiseTunnel(FAM): smoothgrad, stdev 0.1, ``--nt-samples`` samples, default weighting;
- Captum LayerGradCam on ``metrics.similarity_forward`` (the same cosine, through autograd);
- Captum IntegratedGradients (black baseline, 50 steps; 20 with ``--quick``) on the same
  forward;
- activation: the mean channel activation of the layer (reference-agnostic);
- random: a fixed uniform random 8x8 map (model- and reference-agnostic).

Metrics (arrows give the better direction):

- deletion / insertion AUC: trapezoid area of the raw cosine over the share of pixels removed
  from the image (deletion) or revealed on its blurred copy (insertion), most important first;
- average drop and increase in confidence (Grad-CAM++), on the cosine (non-negative here: the
  embeddings are post-ReLU averages), image times max-normalised map;
- pointing game (tolerance 5% of the side, 3.2 px) and energy pointing game on A's mask;
- reference specificity: both maps (against A's and B's prototypes) point into their object;
- randomisation: Spearman rank correlation of maps before and after cascading re-initialisation
  of block4, then block3..block1 (prototypes re-embedded with the randomised model), shown as
  "after block4 / after all four"; a map that does not depend on the weights stays at 1;
- time: median wall time of the method for all N pairs (3 calls; IG one call), as a ratio to
  the forward limit (one inference forward of the N images, timed right before each call; the
  prototypes are cached, as they are for every method), and in ms per pair;
- peak memory: one fresh subprocess per method (one for all methods with ``--quick``); after
  building the workload, the peak resident set size is reset (``/proc/self/clear_refs``) and
  the method runs once; the column is the peak (``VmHWM``) minus the resident size just
  before the call (freed heap is first handed back to the OS with ``malloc_trim``, so that
  earlier freed pages do not hide the method's allocations). Torch runs one thread there.

Usage::

    python benchmarks/compare.py --quick              # small sample, prints the table
    python benchmarks/compare.py --out docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import captum
import torch
from captum.attr import IntegratedGradients, LayerGradCam, NoiseTunnel
from torch import Tensor, nn

from captum_fam import FeatureActivationMap, metrics
from captum_fam.zoo import SHAPE_CLASSES, ShapesEmbeddingNet, load_shapes_model, make_shapes

Explain = Callable[[nn.Module, Tensor, Tensor, Tensor, "Config"], Tensor]

COLUMNS = (
    "deletion AUC ↓",
    "insertion AUC ↑",
    "avg drop ↓",
    "increase ↑",
    "pointing ↑",
    "energy ↑",
    "specificity ↑",
    "rand. ρ ↓",
    "time / forward ↓",
    "ms / pair ↓",
    "peak MiB ↓",
)


@dataclass(frozen=True)
class Config:
    n: int
    steps: int
    nt_samples: int
    ig_steps: int
    support: int
    random_n: int
    repeats: int
    seed: int
    weights: str

    def child_args(self) -> list[str]:
        return [
            f"--n={self.n}",
            f"--nt-samples={self.nt_samples}",
            f"--ig-steps={self.ig_steps}",
            f"--support={self.support}",
            f"--seed={self.seed}",
            f"--weights={self.weights}",
        ]


# The quick run is a smoke test (it runs in the test suite): fewer images, steps and IG steps.
QUICK = {"n": 4, "steps": 5, "nt_samples": 4, "support": 3, "random_n": 2, "repeats": 1,
         "ig_steps": 20}  # fmt: skip
FULL = {"n": 32, "steps": 16, "nt_samples": 8, "support": 8, "random_n": 12, "repeats": 3,
        "ig_steps": 50}  # fmt: skip


def fam_map(weighting: str) -> Explain:
    def explain(model, images, rows, foil_rows, cfg):
        fam = FeatureActivationMap(model, model.block4, weighting=weighting)
        return fam.attribute(images, reference_embeddings=rows)

    return explain


def contrastive_fam(model, images, rows, foil_rows, cfg):
    fam = FeatureActivationMap(model, model.block4)
    return fam.attribute(images, reference_embeddings=rows, foil_embeddings=foil_rows)


def noise_tunnel_fam(model, images, rows, foil_rows, cfg):
    torch.manual_seed(cfg.seed)  # the same noise for every model in the randomisation check
    return NoiseTunnel(FeatureActivationMap(model, model.block4)).attribute(
        images, nt_type="smoothgrad", nt_samples=cfg.nt_samples, stdevs=0.1,
        reference_embeddings=rows,
    )  # fmt: skip


def grad_cam(model, images, rows, foil_rows, cfg):
    forward = metrics.similarity_forward(FeatureActivationMap(model, model.block4))
    with torch.enable_grad():
        return LayerGradCam(forward, model.block4).attribute(
            images, additional_forward_args=(rows,), relu_attributions=True
        ).detach()  # fmt: skip


def integrated_gradients(model, images, rows, foil_rows, cfg):
    forward = metrics.similarity_forward(FeatureActivationMap(model, model.block4))
    with torch.enable_grad():
        attributions = IntegratedGradients(forward).attribute(
            images, baselines=0.0, additional_forward_args=(rows,), n_steps=cfg.ig_steps,
            internal_batch_size=max(len(images), 64),
        )  # fmt: skip
    return attributions.detach().sum(dim=1, keepdim=True)


def activation(model, images, rows, foil_rows, cfg):
    captured = []
    hook = model.block4.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with torch.no_grad():
            model(images)
    finally:
        hook.remove()
    return captured[-1].mean(dim=1, keepdim=True)


def random_map(model, images, rows, foil_rows, cfg):
    g = torch.Generator().manual_seed(cfg.seed)
    return torch.rand(len(images), 1, 8, 8, generator=g)


METHODS: dict[str, Explain] = {
    "FAM (contribution)": fam_map("contribution"),
    "FAM (reference)": fam_map("reference"),
    "contrastive FAM": contrastive_fam,
    "NoiseTunnel(FAM)": noise_tunnel_fam,
    "LayerGradCam": grad_cam,
    "IntegratedGradients": integrated_gradients,
    "activation": activation,
    "random": random_map,
}


@dataclass
class Workload:
    model: nn.Module
    images: Tensor
    labels: Tensor
    masks: Tensor
    support: Tensor  # (classes * support, 3, H, W)
    support_labels: Tensor
    rows_a: Tensor
    rows_b: Tensor
    note: str


def load_model(weights: str) -> tuple[nn.Module, str]:
    if weights == "shipped":
        try:
            model, _ = load_shapes_model()
            return model, "shipped shapes model (captum_fam/zoo/shapes_cnn.pt)"
        except (FileNotFoundError, RuntimeError) as error:
            note = f"RANDOM WEIGHTS: the shipped weights could not be loaded ({error})"
    else:
        note = "RANDOM WEIGHTS (--weights random)"
    torch.manual_seed(0)
    return ShapesEmbeddingNet().eval(), note


def prototypes(model: nn.Module, support: Tensor, support_labels: Tensor) -> Tensor:
    """(classes, D) mean support embeddings, with this model (re-embedded when it changes)."""
    embeddings = FeatureActivationMap(model, model.block4).embed(support)
    rows = torch.zeros(len(SHAPE_CLASSES), embeddings.shape[1])
    counts = torch.bincount(support_labels, minlength=len(SHAPE_CLASSES)).clamp_min(1)
    return rows.index_add_(0, support_labels, embeddings) / counts[:, None]


def build(cfg: Config) -> Workload:
    torch.manual_seed(cfg.seed)
    model, note = load_model(cfg.weights)
    batch = make_shapes(cfg.n, objects=2, seed=cfg.seed + 1)
    support = [
        make_shapes(cfg.support, classes=[c], seed=1000 + c) for c in range(len(SHAPE_CLASSES))
    ]
    support_images = torch.cat([s.images for s in support])
    support_labels = torch.cat([s.labels[:, 0] for s in support])
    protos = prototypes(model, support_images, support_labels)
    return Workload(
        model=model,
        images=batch.images,
        labels=batch.labels,
        masks=batch.masks,
        support=support_images,
        support_labels=support_labels,
        rows_a=protos[batch.labels[:, 0]],
        rows_b=protos[batch.labels[:, 1]],
        note=note,
    )


def timed(fn: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def evaluate(name: str, work: Workload, cfg: Config, limit: float) -> dict[str, object]:
    explain = METHODS[name]
    model, images = work.model, work.images
    fam = FeatureActivationMap(model, model.block4)

    def score_a(x: Tensor) -> Tensor:
        return fam.similarity_scores(x, reference_embeddings=work.rows_a)

    explain(model, images[:1], work.rows_a[:1], work.rows_b[:1], cfg)  # warm-up
    # Each timed call follows a timed limit forward, so that load drifts on a shared machine
    # hit both sides of the ratio alike.
    seconds, limits = [], []
    repeats = 1 if name == "IntegratedGradients" else cfg.repeats  # IG: one call is plenty
    for _ in range(repeats):
        with torch.inference_mode():
            limits.append(timed(lambda: model(images), 1))
        start = time.perf_counter()
        maps_a = explain(model, images, work.rows_a, work.rows_b, cfg)
        seconds.append(time.perf_counter() - start)
    seconds_n = statistics.median(seconds)
    limit = statistics.median(limits)
    maps_b = explain(model, images, work.rows_b, work.rows_a, cfg)

    curves = dict(steps=cfg.steps, batch_size=256)
    dele = metrics.deletion(score_a, images, maps_a, **curves)
    ins = metrics.insertion(score_a, images, maps_a, **curves)
    drop = metrics.average_drop(score_a, images, maps_a)
    increase = metrics.increase_in_confidence(score_a, images, maps_a)
    hits = metrics.pointing_game(maps_a, work.masks[:, 0])
    energy = metrics.energy_pointing_game(maps_a, work.masks[:, 0])
    specific = metrics.reference_specificity(work.masks, maps=(maps_a, maps_b))

    r = cfg.random_n
    sub_images, sub_labels = images[:r], work.labels[:r]

    def explain_with(m: nn.Module) -> Tensor:
        protos = prototypes(m, work.support, work.support_labels)
        return explain(m, sub_images, protos[sub_labels[:, 0]], protos[sub_labels[:, 1]], cfg)

    randomised = metrics.randomization_check(
        explain_with, model, layers=["block4", "block3", "block2", "block1"], seed=cfg.seed
    )
    rho = randomised.spearman.mean(dim=1)
    return {
        "deletion": dele.auc,
        "insertion": ins.auc,
        "drop": drop,
        "increase": increase.float(),
        "pointing": hits.float(),
        "energy": energy,
        "specificity": specific.float(),
        "rho_top": float(rho[0]),
        "rho_all": float(rho[-1]),
        "ratio": seconds_n / limit,
        "ms_pair": 1000 * seconds_n / len(images),
    }


def memory_child(names: list[str], cfg: Config) -> None:
    """Runs each method once in this process and prints their peak RSS increases (MiB)."""
    torch.set_num_threads(1)
    work = build(cfg)
    peaks: dict[str, float | None] = {}
    for name in names:
        # Hand freed heap back to the OS, so that a method cannot reuse earlier pages unseen.
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        try:
            with open("/proc/self/clear_refs", "w") as fh:
                fh.write("5")  # resets VmHWM to the current resident size
        except OSError:
            peaks[name] = None
            continue
        before = _status_kib("VmRSS")
        METHODS[name](work.model, work.images, work.rows_a, work.rows_b, cfg)
        peaks[name] = (_status_kib("VmHWM") - before) / 1024
    print(json.dumps(peaks))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak_memory(cfg: Config, one_process: bool) -> dict[str, float | None]:
    """Peak RSS increase per method: a fresh process each, or one for all (quick runs)."""

    def run(names: list[str]) -> dict[str, float | None]:
        flags = [f"--memory-child={name}" for name in names]
        done = subprocess.run(
            [sys.executable, os.path.abspath(__file__), *flags, *cfg.child_args()],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0:
            print(f"memory child {names} failed:\n{done.stderr[-2000:]}", file=sys.stderr)
            return dict.fromkeys(names)
        return json.loads(done.stdout.strip().splitlines()[-1])

    if one_process:
        return run(list(METHODS))
    peaks: dict[str, float | None] = {}
    for name in METHODS:
        peaks.update(run([name]))
    return peaks


def mean(values: object) -> float:
    return float(values.mean()) if isinstance(values, Tensor) else float(values)


def row_cells(result: dict[str, object], peak: float | None) -> list[str]:
    return [
        f"{mean(result['deletion']):.3f}",
        f"{mean(result['insertion']):.3f}",
        f"{mean(result['drop']):.3f}",
        f"{mean(result['increase']):.2f}",
        f"{mean(result['pointing']):.2f}",
        f"{mean(result['energy']):.3f}",
        f"{mean(result['specificity']):.2f}",
        f"{result['rho_top']:.2f} / {result['rho_all']:.2f}",
        f"{result['ratio']:.1f}x",
        f"{result['ms_pair']:.1f}",
        "n/a" if peak is None else f"{peak:.1f}",
    ]


# The column's value for picking a winner, and whether lower is better.
SCORES: dict[str, tuple[Callable[[dict[str, object]], float], bool]] = {
    "deletion AUC ↓": (lambda r: mean(r["deletion"]), True),
    "insertion AUC ↑": (lambda r: mean(r["insertion"]), False),
    "avg drop ↓": (lambda r: mean(r["drop"]), True),
    "increase ↑": (lambda r: mean(r["increase"]), False),
    "pointing ↑": (lambda r: mean(r["pointing"]), False),
    "energy ↑": (lambda r: mean(r["energy"]), False),
    "specificity ↑": (lambda r: mean(r["specificity"]), False),
    "rand. ρ ↓": (lambda r: float(r["rho_all"]), True),
    "time / forward ↓": (lambda r: float(r["ratio"]), True),
}


def winners(results: dict[str, dict[str, object]]) -> list[str]:
    lines = []
    for column, (value, lower) in SCORES.items():
        scores = {name: value(r) for name, r in results.items()}
        best = min(scores.values()) if lower else max(scores.values())
        names = [n for n, s in scores.items() if abs(s - best) < 1e-9]
        lines.append(f"- {column}: {', '.join(names)} ({best:.3f})")
    return lines


def weighting_comparison(results: dict[str, dict[str, object]]) -> list[str]:
    """Per-image paired comparison of the two FAM weightings."""
    c, r = results["FAM (contribution)"], results["FAM (reference)"]
    lines = []
    for key, label, lower in (
        ("deletion", "deletion AUC", True),
        ("insertion", "insertion AUC", False),
        ("drop", "average drop", True),
    ):
        a, b = c[key], r[key]
        better = (a < b) if lower else (a > b)
        lines.append(
            f"- {label}: contribution {mean(a):.3f}, reference {mean(b):.3f}; contribution "
            f"better on {int(better.sum())}/{len(a)} images, tied on {int((a == b).sum())}"
        )
    return lines


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(line.split(":", 1)[1].strip() for line in fh if "model name" in line)
    except (OSError, StopIteration):
        pass
    return (
        f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, no GPU; "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"captum {captum.__version__}"
    )


def report(
    cfg: Config,
    work: Workload,
    results: dict[str, dict[str, object]],
    peaks: dict[str, float | None],
    limit: float,
    command: str,
    wall: float,
) -> str:
    header = "| method | " + " | ".join(COLUMNS) + " |"
    rule = "|---|" + "---|" * len(COLUMNS)
    rows = [
        f"| {name} | " + " | ".join(row_cells(results[name], peaks.get(name))) + " |"
        for name in METHODS
    ]
    return "\n".join(
        [
            "# Benchmarks: map methods on the shapes world",
            "",
            "Generated by `benchmarks/compare.py`; definitions of every column are in its module",
            "docstring. Command:",
            "",
            f"    {command}",
            "",
            f"Machine: {machine()}. Wall time of the run: {wall:.0f} s.",
            "",
            f"Model: {work.note}. {cfg.n} two-object images (64 px, seed {cfg.seed + 1}), "
            f"prototypes from {cfg.support} single-object images per class; deletion/insertion "
            f"with {cfg.steps} steps and a blurred fill; NoiseTunnel {cfg.nt_samples} samples; "
            f"IG {cfg.ig_steps} steps; randomisation on the first {cfg.random_n} images. "
            f"Forward limit: {1000 * limit:.1f} ms for the {cfg.n} images.",
            "",
            header,
            rule,
            *rows,
            "",
            "Scores are means over images (the cosine to A's class prototype for the",
            "faithfulness columns); rand. ρ: Spearman after randomising block4 / all four blocks.",
            "",
            "Best per column:",
            "",
            *winners(results),
            "",
            "FAM weightings, paired per image:",
            "",
            *weighting_comparison(results),
            "",
        ]
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sample (about a minute)")
    parser.add_argument("--out", help="write the Markdown report to this file")
    parser.add_argument("--n", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--nt-samples", type=int)
    parser.add_argument("--ig-steps", type=int)
    parser.add_argument("--support", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--weights", choices=("shipped", "random"), default="shipped")
    parser.add_argument("--memory-child", action="append", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    preset = QUICK if args.quick else FULL
    cfg = Config(
        n=args.n or preset["n"],
        steps=args.steps or preset["steps"],
        nt_samples=args.nt_samples or preset["nt_samples"],
        ig_steps=args.ig_steps or preset["ig_steps"],
        support=args.support or preset["support"],
        random_n=min(preset["random_n"], args.n or preset["n"]),
        repeats=preset["repeats"],
        seed=args.seed,
        weights=args.weights,
    )
    if args.memory_child:
        memory_child(args.memory_child, cfg)
        return

    start = time.perf_counter()
    # Quick runs measure memory alongside (timings are a smoke test there); full runs after.
    background = ThreadPoolExecutor(max_workers=1) if args.quick else None
    pending = background.submit(peak_memory, cfg, True) if background else None
    work = build(cfg)
    with torch.inference_mode():
        work.model(work.images)  # warm-up
        limit = timed(lambda: work.model(work.images), max(3, cfg.repeats))
    results = {}
    for name in METHODS:
        t0 = time.perf_counter()
        results[name] = evaluate(name, work, cfg, limit)
        print(f"{name}: {time.perf_counter() - t0:.1f} s", file=sys.stderr)
    peaks = pending.result() if pending else peak_memory(cfg, False)
    command = "python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    text = report(cfg, work, results, peaks, limit, command.strip(), time.perf_counter() - start)
    print(text)
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(text)


if __name__ == "__main__":
    main()
