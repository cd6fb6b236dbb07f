"""Map methods on the shapes world, scored with captum_fam.metrics.

Models (``--model``):

- ``shapes`` (default): the shipped shapes model (``load_shapes_model``), whose output is the
  pooled last block, so its output cosine and the layer's pooled-channel cosine are one score;
- ``shapes-head``: the shipped shapes model with a projection head (a bias-free Linear) after
  the pooled last block (``load_shapes_head_model``), so the two scores differ. This option
  needs a captum_fam whose ``captum_fam.zoo`` has ``load_shapes_head_model``; ``shapes`` runs
  without it.
- ``common-mode``: the shipped shapes model with a shared, tilted component on every channel of
  the explained layer, which its head centres away (``load_common_mode_model``): the mechanism
  that makes layer-space maps reference-agnostic on a real face network.

The first two fall back to random weights, with a note in the output, if their weights file is
missing.

Workload: two-object images from ``make_shapes(n, objects=2)``. References are class prototypes:
the mean embedding of single-object support images of each class
(:func:`captum_fam.tasks.class_prototypes` of ``fam.embed``), in the space the method compares (the
model's output for ``embedding="output"`` and the gradient baselines, the layer's pooled channels
for ``embedding="layer"``). Object A is an image's first object, B its second; a method's map of an
image is computed against the prototype of A's class ("map A") and of B's class ("map B"). Every
map is scored on the similarity the model computes: the cosine of its output to the output-space
prototype of A's class.

Methods (all maps at the layer's 8x8 resolution, except IG at the 64x64 input, summed over
RGB):

- FAM at ``block4`` with ``embedding="output"`` (the default) and ``"layer"``, each with
  ``weighting="reference"`` (the default) and ``"contribution"``, each plain and contrastive
  (foil: the prototype of the other object's class);
- Captum LayerGradCam at ``block4`` and IntegratedGradients (black baseline, 50 steps; 20 with
  ``--quick``), both on ``metrics.similarity_forward`` of the default FAM: the model's output
  cosine, through autograd;
- background FAM: ``weighting="reference"`` against a background set (the method's embeddings of
  16 ordinary two-object scenes), both embeddings: "why this prototype rather than a typical
  scene";
- activation: the mean channel activation of the layer (reference-agnostic);
- random: a fixed uniform random 8x8 map (model- and reference-agnostic: the chance level).

Columns (arrows give the better direction):

- deletion / insertion AUC: trapezoid area of the raw cosine over the share of pixels removed
  from the image (deletion) or revealed on its blurred copy (insertion), most important first,
  for map A;
- pointing: pointing game with a tolerance of 5% of the side (3.2 px), over both maps (map A
  on A's mask and map B on B's mask);
- specificity: reference specificity, the share of images where both maps hit their object;
- rand. ρ: Spearman rank correlation of map A before and after cascading re-initialisation of
  the model's modules from the top (the head, if any, then block4 down to block1; prototypes
  re-embedded with the randomised model), shown as "after the first / after all"; a map that
  does not depend on the weights stays at 1;
- agnostic: the median Pearson correlation, over the layer's positions, of map A (brought to
  the layer's grid) with the reference-agnostic activation map (``metrics.position_correlation``,
  as ``metrics.reference_dependence`` does for FAM); 1 means the map ignores the reference, and
  0.97 is where ``reference_dependence`` flags it;
- time / forward: the method's median wall time for all N images (prototypes cached), as a
  ratio to the median of one inference forward of the N images; the forward and the methods
  are timed round-robin in one process (``benchmarks/harness.py``), 3 repeats (1 with
  ``--quick``; IntegratedGradients 1).

Usage::

    python benchmarks/compare.py --quick                      # small sample, prints the table
    python benchmarks/compare.py --out docs/benchmarks.md     # full run, writes the report
    python benchmarks/compare.py --model shapes-head --quick  # the model with a projection head
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from captum.attr import IntegratedGradients, LayerGradCam
from torch import Tensor, nn

from captum_fam import FeatureActivationMap, metrics
from captum_fam.tasks import class_prototypes
from captum_fam.zoo import (
    SHAPE_CLASSES,
    ShapesEmbeddingNet,
    load_common_mode_model,
    load_shapes_model,
    make_shapes,
)

if __package__:
    from benchmarks import harness
else:  # python benchmarks/compare.py: this folder is on sys.path
    import harness

try:
    from captum_fam.zoo import ShapesProjectionNet, load_shapes_head_model
except ImportError:  # a captum_fam without the projection-head model: --model shapes only
    ShapesProjectionNet = load_shapes_head_model = None

Explain = Callable[..., Tensor]  # (model, layer, images, rows, foil_rows, background, config)
MODELS = ("shapes", "shapes-head", "common-mode")
BACKGROUND = 16  # ordinary scenes in a background set
POINTING_TOLERANCE = 0.05  # of the image side
IG = "IntegratedGradients"

COLUMNS = (
    harness.Column("method", "method"),
    harness.Column("deletion", "deletion AUC ↓", "right"),
    harness.Column("insertion", "insertion AUC ↑", "right"),
    harness.Column("pointing", "pointing ↑", "right"),
    harness.Column("specificity", "specificity ↑", "right"),
    harness.Column("rho", "rand. ρ ↓", "right"),
    harness.Column("agnostic", "agnostic ↓", "right"),
    harness.Column("time", "time / forward ↓", "right"),
)


@dataclass(frozen=True)
class Config:
    model: str
    n: int
    steps: int
    ig_steps: int
    support: int
    random_n: int
    repeats: int
    seed: int
    weights: str
    threads: int | None  # None: all available cores


# The quick run is a smoke test (it runs in the test suite): fewer images, steps and IG steps.
# One torch thread: on a loaded machine two threads wait on each other at every barrier.
QUICK = {"n": 4, "steps": 5, "support": 3, "random_n": 2, "repeats": 1, "ig_steps": 20,
         "threads": 1}  # fmt: skip
FULL = {"n": 32, "steps": 16, "support": 8, "random_n": 12, "repeats": 3, "ig_steps": 50,
        "threads": None}  # fmt: skip


# --- methods -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Method:
    """A map method: the space its prototypes live in, and how it explains."""

    space: str  # "output" or "layer": which fam.embed gives its reference rows
    explain: Explain  # (model, images, rows, foil_rows, config) -> maps


def fam_method(embedding: str, weighting: str, contrast: str | None) -> Method:
    def explain(model, layer, images, rows, foil_rows, background, cfg):
        fam = FeatureActivationMap(model, layer, weighting=weighting, embedding=embedding)
        return fam.attribute(
            images,
            reference_embeddings=rows,
            foil_embeddings=foil_rows if contrast == "foil" else None,
            background_embeddings=background if contrast == "background" else None,
        )

    return Method(embedding, explain)


def output_similarity(model: nn.Module, layer: nn.Module) -> Callable[..., Tensor]:
    """The model's output cosine as a differentiable forward ``f(images, rows) -> (N,)``."""
    return metrics.similarity_forward(FeatureActivationMap(model, layer, embedding="output"))


def grad_cam(model, layer, images, rows, foil_rows, background, cfg):
    with torch.enable_grad():
        return LayerGradCam(output_similarity(model, layer), layer).attribute(
            images, additional_forward_args=(rows,), relu_attributions=True
        ).detach()  # fmt: skip


def integrated_gradients(model, layer, images, rows, foil_rows, background, cfg):
    with torch.enable_grad():
        attributions = IntegratedGradients(output_similarity(model, layer)).attribute(
            images, baselines=0.0, additional_forward_args=(rows,), n_steps=cfg.ig_steps,
            internal_batch_size=max(len(images), 64),
        )  # fmt: skip
    return attributions.detach().sum(dim=1, keepdim=True)


def layer_activations(model: nn.Module, layer: nn.Module, images: Tensor) -> Tensor:
    captured = []
    hook = layer.register_forward_hook(lambda m, i, o: captured.append(o))
    try:
        with torch.no_grad():
            model(images)
    finally:
        hook.remove()
    return captured[-1]


def activation(model, layer, images, rows, foil_rows, background, cfg):
    return layer_activations(model, layer, images).mean(dim=1, keepdim=True)


def random_map(model, layer, images, rows, foil_rows, background, cfg):
    g = torch.Generator().manual_seed(cfg.seed)
    return torch.rand(len(images), 1, 8, 8, generator=g)


def fam_label(embedding: str, weighting: str, contrast: str | None = None) -> str:
    prefix = {None: "", "foil": "contrastive ", "background": "background "}[contrast]
    return f"{prefix}FAM ({embedding}, {weighting})"


METHODS: dict[str, Method] = {
    fam_label(embedding, weighting, contrast): fam_method(embedding, weighting, contrast)
    for embedding in ("output", "layer")
    for weighting in ("reference", "contribution")
    for contrast in (None, "foil")
}
METHODS.update({
    fam_label(embedding, "reference", "background"): fam_method(embedding, "reference",
                                                                "background")
    for embedding in ("output", "layer")
})  # fmt: skip
METHODS.update({
    "LayerGradCam": Method("output", grad_cam),
    IG: Method("output", integrated_gradients),
    "activation": Method("output", activation),
    "random": Method("output", random_map),
})  # fmt: skip


# --- workload ------------------------------------------------------------------------------------


@dataclass
class Workload:
    model: nn.Module
    layer_name: str  # the explained layer, found again in randomised copies
    images: Tensor
    labels: Tensor  # (N, 2) classes of objects A and B
    masks: Tensor  # (N, 2, H, W)
    support: Tensor  # (classes * support, 3, H, W)
    support_labels: Tensor
    rows: dict[str, tuple[Tensor, Tensor]]  # space -> prototypes of A's and of B's class
    background: dict[str, Tensor]  # space -> embeddings of the background set
    agnostic: Tensor  # (N, 1, h, w) the reference-agnostic map of the images
    randomised: list[str]  # the modules randomised, top first
    note: str

    @property
    def layer(self) -> nn.Module:
        return self.model.get_submodule(self.layer_name)


def load_model(cfg: Config) -> tuple[nn.Module, str, str]:
    """The model, its layer's name and a note on its weights (random if they cannot load)."""
    if cfg.model == "common-mode":
        model, _ = load_common_mode_model()
        return (
            model,
            "layer",
            (
                "shapes model with a common mode (load_common_mode_model(): shared offset 5x the "
                "mean activation on every channel, tilt 2, centring head), shipped trunk weights"
            ),
        )
    model, note = load_weights(cfg)
    return model, "block4", note


def load_weights(cfg: Config) -> tuple[nn.Module, str]:
    if cfg.model == "shapes-head":
        loader, architecture = load_shapes_head_model, ShapesProjectionNet
        name = "shapes model with a projection head"
    else:
        loader, architecture, name = load_shapes_model, ShapesEmbeddingNet, "shapes model"
    if cfg.weights == "shipped":
        try:
            model, _ = loader()
            return model, f"{name}, shipped weights ({loader.__name__}())"
        except (FileNotFoundError, RuntimeError) as error:
            note = f"{name}, RANDOM WEIGHTS: the shipped weights could not be loaded ({error})"
    else:
        note = f"{name}, RANDOM WEIGHTS (--weights random)"
    torch.manual_seed(0)
    return architecture().eval(), note


def prototype_rows(
    model: nn.Module,
    layer: nn.Module,
    space: str,
    support: Tensor,
    support_labels: Tensor,
    labels: Tensor,
) -> tuple[Tensor, Tensor]:
    """The prototypes of A's and of B's class, ``(N, D)`` each, in ``space``, with ``model``."""
    embeddings = FeatureActivationMap(model, layer, embedding=space).embed(support)
    classes, prototypes = class_prototypes(embeddings, support_labels)
    index = torch.searchsorted(classes, labels)
    if not bool((classes[index.clamp_max(len(classes) - 1)] == labels).all()):
        raise ValueError("every class of the two-object images needs support images")
    return prototypes[index[:, 0]], prototypes[index[:, 1]]


def build(cfg: Config) -> Workload:
    harness.seed_everything(cfg.seed)
    model, layer_name, note = load_model(cfg)
    layer = model.get_submodule(layer_name)
    batch = make_shapes(cfg.n, objects=2, seed=cfg.seed + 1)
    support = [
        make_shapes(cfg.support, classes=[c], seed=1000 + c) for c in range(len(SHAPE_CLASSES))
    ]
    support_images = torch.cat([s.images for s in support])
    support_labels = torch.cat([s.labels[:, 0] for s in support])
    rows = {
        space: prototype_rows(model, layer, space, support_images, support_labels, batch.labels)
        for space in ("output", "layer")
    }
    ordinary = make_shapes(BACKGROUND, objects=2, seed=cfg.seed + 7).images
    background = {
        space: FeatureActivationMap(model, layer, embedding=space).embed(ordinary)
        for space in ("output", "layer")
    }
    named = dict(model.named_modules())
    randomised = [
        full
        for short in ("head", "block4", "block3", "block2", "block1")
        for full in named
        if full.rsplit(".", 1)[-1] == short
    ]
    return Workload(
        model=model,
        layer_name=layer_name,
        images=batch.images,
        labels=batch.labels,
        masks=batch.masks,
        support=support_images,
        support_labels=support_labels,
        rows=rows,
        background=background,
        agnostic=layer_activations(model, layer, batch.images).mean(dim=1, keepdim=True),
        randomised=randomised,
        note=note,
    )


# --- measurements --------------------------------------------------------------------------------


def time_methods(work: Workload, cfg: Config) -> tuple[dict[str, float], float]:
    """Each method's median time as a ratio to one forward, and the forward's median (ms)."""
    model, images = work.model, work.images

    def forward() -> None:
        with torch.inference_mode():
            model(images)

    def call(name: str, count: int | None = None) -> Callable[[], object]:
        method = METHODS[name]
        rows_a, rows_b = work.rows[method.space]
        background, layer = work.background[method.space], work.layer
        n = count or len(images)
        return lambda: method.explain(
            model, layer, images[:n], rows_a[:n], rows_b[:n], background, cfg
        )

    rows = {"forward": forward, **{name: call(name) for name in METHODS}}
    times = harness.time_interleaved(
        rows,
        cfg.repeats,
        repeats_of={IG: 1},
        warmups={IG: call(IG, 1)},  # IG: one call
    )
    limit = times["forward"].median
    return {name: times[name].median / limit for name in METHODS}, limit


def evaluate(name: str, work: Workload, cfg: Config) -> dict[str, Tensor | float]:
    """The scores of one method (everything but its time)."""
    method = METHODS[name]
    model, images = work.model, work.images
    rows_a, rows_b = work.rows[method.space]
    layer, background = work.layer, work.background[method.space]
    scorer = FeatureActivationMap(model, layer, embedding="output")
    output_a = work.rows["output"][0]

    def score_a(x: Tensor) -> Tensor:
        return scorer.similarity_scores(x, reference_embeddings=output_a)

    maps_a = method.explain(model, layer, images, rows_a, rows_b, background, cfg)
    maps_b = method.explain(model, layer, images, rows_b, rows_a, background, cfg)
    grid = tuple(work.agnostic.shape[-2:])
    on_grid = maps_a if tuple(maps_a.shape[-2:]) == grid else F.adaptive_avg_pool2d(maps_a, grid)
    agnostic = metrics.position_correlation(on_grid.float(), work.agnostic)
    curves = dict(steps=cfg.steps, batch_size=256)
    tolerance = POINTING_TOLERANCE * max(images.shape[-2:])
    hits_a = metrics.pointing_game(maps_a, work.masks[:, 0], tolerance)
    hits_b = metrics.pointing_game(maps_b, work.masks[:, 1], tolerance)
    specific = metrics.reference_specificity(work.masks, maps=(maps_a, maps_b), tolerance=tolerance)

    r = cfg.random_n
    sub_images, sub_labels = images[:r], work.labels[:r]

    def explain_with(m: nn.Module) -> Tensor:
        copy_layer = m.get_submodule(work.layer_name)
        a, b = prototype_rows(
            m, copy_layer, method.space, work.support, work.support_labels, sub_labels
        )
        return method.explain(m, copy_layer, sub_images, a, b, background, cfg)

    randomised = metrics.randomization_check(
        explain_with, model, layers=work.randomised, seed=cfg.seed
    )
    rho = randomised.spearman.mean(dim=1)
    return {
        "deletion": metrics.deletion(score_a, images, maps_a, **curves).auc,
        "insertion": metrics.insertion(score_a, images, maps_a, **curves).auc,
        "pointing": torch.cat([hits_a, hits_b]).float(),
        "specificity": specific.float(),
        "rho_first": float(rho[0]),
        "rho_all": float(rho[-1]),
        "agnostic": float(agnostic.nanmedian()),
    }


# --- report --------------------------------------------------------------------------------------


def mean(values: Tensor | float) -> float:
    return float(values.mean()) if isinstance(values, Tensor) else float(values)


def results_table(results: dict[str, dict], ratios: dict[str, float]) -> harness.Table:
    table = harness.Table(COLUMNS)
    for name, r in results.items():
        table.add(
            method=name,
            deletion=f"{mean(r['deletion']):.3f}",
            insertion=f"{mean(r['insertion']):.3f}",
            pointing=f"{mean(r['pointing']):.2f}",
            specificity=f"{mean(r['specificity']):.2f}",
            rho=f"{r['rho_first']:.2f} / {r['rho_all']:.2f}",
            agnostic=f"{r['agnostic']:.2f}",
            time=f"{ratios[name]:.2f}x",
        )
    return table


# The column's value for picking a winner, and whether lower is better.
SCORES: dict[str, tuple[Callable[[dict, float], float], bool]] = {
    "deletion AUC ↓": (lambda r, t: mean(r["deletion"]), True),
    "insertion AUC ↑": (lambda r, t: mean(r["insertion"]), False),
    "pointing ↑": (lambda r, t: mean(r["pointing"]), False),
    "specificity ↑": (lambda r, t: mean(r["specificity"]), False),
    "rand. ρ ↓": (lambda r, t: float(r["rho_all"]), True),
    "agnostic ↓": (lambda r, t: float(r["agnostic"]), True),
    "time / forward ↓": (lambda r, t: t, True),
}


def winners(results: dict[str, dict], ratios: dict[str, float]) -> list[str]:
    lines = []
    for column, (value, lower) in SCORES.items():
        scores = {name: value(r, ratios[name]) for name, r in results.items()}
        best = min(scores.values()) if lower else max(scores.values())
        names = [n for n, s in scores.items() if abs(s - best) < 1e-9]
        lines.append(f"- {column}: {', '.join(names)} ({best:.3f})")
    return lines


def weighting_comparison(results: dict[str, dict]) -> list[str]:
    """Per-image paired comparison of the two FAM weightings, for each embedding."""
    lines = []
    for embedding in ("output", "layer"):
        c = results[fam_label(embedding, "contribution")]
        r = results[fam_label(embedding, "reference")]
        for key, label, lower in (
            ("deletion", "deletion AUC", True),
            ("insertion", "insertion AUC", False),
        ):
            a, b = c[key], r[key]
            better = (a < b) if lower else (a > b)
            lines.append(
                f"- embedding={embedding}, {label}: contribution {mean(a):.3f}, reference "
                f"{mean(b):.3f}; contribution better on {int(better.sum())}/{len(a)} images, "
                f"tied on {int((a == b).sum())}"
            )
    return lines


def report(
    cfg: Config,
    work: Workload,
    results: dict[str, dict],
    ratios: dict[str, float],
    forward_ms: float,
    command: str,
    wall: float,
    markdown: bool,
) -> str:
    cascade = ", ".join(work.randomised)
    return "\n".join(
        [
            f"# Benchmarks: map methods on the shapes world (--model {cfg.model})",
            "",
            "Generated by `benchmarks/compare.py`; definitions of every column are in its module",
            "docstring. Command:",
            "",
            f"    {command}",
            "",
            f"{harness.machine_facts()}. Wall time of the run: {wall:.0f} s.",
            "",
            f"Model: {work.note}. {cfg.n} two-object images (64 px, seed {cfg.seed + 1}), "
            f"prototypes from {cfg.support} single-object images per class; deletion/insertion "
            f"with {cfg.steps} steps and a blurred fill; IG {cfg.ig_steps} steps; pointing "
            f"tolerance {POINTING_TOLERANCE:.0%} of the side; randomisation on the first "
            f"{cfg.random_n} images (cascade: {cascade}). Forward: {forward_ms:.1f} ms for the "
            f"{cfg.n} images (median of the round-robin).",
            "",
            results_table(results, ratios).render(markdown),
            "",
            "FAM (embedding, weighting); contrastive rows take the other object's prototype as",
            f"the foil, background rows the embeddings of {BACKGROUND} ordinary scenes. Scores",
            "are means over images, all on the model's output cosine to A's class prototype;",
            "pointing over both maps; rand. ρ: Spearman after randomising",
            f"{work.randomised[0]} / all of {cascade}; agnostic: median correlation of map A with",
            "the reference-agnostic activation map.",
            "",
            "Best per column:",
            "",
            *winners(results, ratios),
            "",
            "FAM weightings, paired per image:",
            "",
            *weighting_comparison(results),
            "",
        ]
    )


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, Config]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help="small sample, one torch thread (a smoke run)"
    )
    parser.add_argument("--out", help="write the Markdown report to this file")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument(
        "--model", choices=MODELS, default="shapes",
        help="shapes: the shipped shapes model; shapes-head: with a projection head; "
        "common-mode: a layer whose channels share a tilted offset that the head removes",
    )  # fmt: skip
    parser.add_argument("--n", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--ig-steps", type=int)
    parser.add_argument("--support", type=int)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--threads", type=int, help="torch threads (default: all cores; 1 with --quick)"
    )
    parser.add_argument("--weights", choices=("shipped", "random"), default="shipped")
    args = parser.parse_args(argv)
    if args.model == "shapes-head" and load_shapes_head_model is None:
        parser.error(
            "--model shapes-head needs captum_fam.zoo.load_shapes_head_model, which this "
            "captum_fam does not have"
        )
    preset = QUICK if args.quick else FULL
    n = args.n or preset["n"]
    cfg = Config(
        model=args.model,
        n=n,
        steps=args.steps or preset["steps"],
        ig_steps=args.ig_steps or preset["ig_steps"],
        support=args.support or preset["support"],
        random_n=min(preset["random_n"], n),
        repeats=preset["repeats"],
        seed=args.seed,
        weights=args.weights,
        threads=args.threads or preset["threads"],
    )
    return args, cfg


def main(argv: list[str] | None = None) -> None:
    args, cfg = parse_args(argv)
    harness.set_threads(cfg.threads)
    start = time.perf_counter()
    work = build(cfg)
    ratios, forward_ms = time_methods(work, cfg)
    results = {}
    for name in METHODS:
        t0 = time.perf_counter()
        results[name] = evaluate(name, work, cfg)
        harness.log(f"{name}: {time.perf_counter() - t0:.1f} s")
    command = "python benchmarks/compare.py " + " ".join(sys.argv[1:] if argv is None else argv)
    wall = time.perf_counter() - start
    print(report(cfg, work, results, ratios, forward_ms, command.strip(), wall, args.markdown))
    if args.out:
        with open(args.out, "w") as fh:
            fh.write(report(cfg, work, results, ratios, forward_ms, command.strip(), wall, True))


if __name__ == "__main__":
    main()
