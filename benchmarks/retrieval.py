"""Retrieval: one query explained against its top-k of a cached 1,000-item gallery.

``explain_retrieval`` with ``gallery_embeddings`` runs one query forward, scores the gallery in
chunks and combines the k maps from the query's activations: tensor work on top of the
forward. The table prints its median time as a ratio to that one query forward (the floor),
measured side by side in one process, rows interleaved round-robin so that machine noise hits
both alike. Target: <= 1.2x for ResNet-50 at 224 px, k = 10.

The gallery embeddings are random non-negative vectors of the layer's width (post-ReLU
features): the cost does not depend on their values, and embedding 1,000 real images first
would only make the script slow.

Usage::

    python benchmarks/retrieval.py             # ResNet-50, 224 px, gallery 1,000, k = 10
    python benchmarks/retrieval.py --quick     # 112 px, 3 repeats (a smoke run)
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from collections.abc import Callable

import torch
import torchvision

from captum_fam import FeatureActivationMap
from captum_fam.tasks import explain_retrieval


def median_seconds(rows: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Median wall time of each row, rows interleaved and the starting row rotated."""
    names = list(rows)
    for name in names:  # warm-up
        rows[name]()
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            start = time.perf_counter()
            rows[name]()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.repeats = 112, 3

    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None).eval()
    fam = FeatureActivationMap(model, model.layer4)
    query = torch.rand(1, 3, args.size, args.size)
    gallery_embeddings = torch.randn(args.gallery, 2048).abs()

    def forward() -> object:
        with torch.inference_mode():
            return model(query)

    def retrieval() -> object:
        return explain_retrieval(fam, query, gallery_embeddings=gallery_embeddings, k=args.k)

    medians = median_seconds(
        {"query forward": forward, "explain_retrieval": retrieval}, args.repeats
    )
    floor = medians["query forward"]
    print(
        f"ResNet-50, {args.size} px, 1 query, cached gallery of {args.gallery}, k = {args.k}; "
        f"medians of {args.repeats} interleaved repeats; torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads, {platform.machine()}"
    )
    print("| row | median ms | ratio to one query forward | target |")
    print("| --- | ---: | ---: | --- |")
    print(f"| query forward (inference) | {1000 * floor:.1f} | 1.00x | |")
    ratio = medians["explain_retrieval"] / floor
    verdict = "met" if ratio <= 1.2 else "missed"
    print(
        f"| explain_retrieval, top-{args.k} maps | {1000 * medians['explain_retrieval']:.1f} | "
        f"{ratio:.2f}x | <= 1.2x ({verdict}) |"
    )


if __name__ == "__main__":
    main()
