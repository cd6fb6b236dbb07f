"""Retrieval: one query explained against its top-k of a cached 1,000-item gallery.

``explain_retrieval`` with ``gallery_embeddings`` runs one query forward, scores the gallery in
chunks and combines the k maps from the query's activations: tensor work on top of the
forward. The table prints its median time as a ratio to that one query forward (the floor),
measured side by side in one process, rows interleaved round-robin so that machine noise hits
both alike (``benchmarks/harness.py``). Target: <= 1.2x for ResNet-50 at 224 px, k = 10.

The gallery embeddings are random non-negative vectors of the width of ``fam.embed`` (the
pooled layer4 of a ResNet-50 used as a feature extractor, ``model.fc = nn.Identity()``): the
cost does not depend on their values, and embedding 1,000 real images first would only make
the script slow.

Usage::

    python benchmarks/retrieval.py             # ResNet-50, 224 px, gallery 1,000, k = 10
    python benchmarks/retrieval.py --quick     # 112 px, 3 repeats, one torch thread (smoke run)
    python benchmarks/retrieval.py --markdown  # print the table as Markdown (for the README)
"""

from __future__ import annotations

import argparse

import torch
import torchvision
from torch import nn

from captum_fam import FeatureActivationMap
from captum_fam.tasks import explain_retrieval

if __package__:
    from benchmarks import harness
else:  # python benchmarks/retrieval.py: this folder is on sys.path
    import harness

FORWARD, RETRIEVAL = "forward", "retrieval"
TIME_TARGET = 1.2
COLUMNS = (
    harness.Column("row", "row"),
    harness.Column("median", "median ms", "right"),
    harness.Column("spread", "spread ms", "right"),
    harness.Column("ratio", "ratio to one query forward", "right"),
    harness.Column("target", "target"),
)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gallery", type=int, default=1000)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--threads", type=int, help="torch threads (all cores; 1 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    args = parser.parse_args(argv)
    if args.quick:
        args.size, args.repeats, args.threads = 112, 3, args.threads or 1

    harness.seed_everything(args.seed)
    harness.set_threads(args.threads)
    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Identity()
    model.eval()
    fam = FeatureActivationMap(model, model.layer4)
    query = torch.rand(1, 3, args.size, args.size)
    width = fam.embed(query).shape[1]
    gallery_embeddings = torch.randn(args.gallery, width).abs()

    def forward() -> object:
        with torch.inference_mode():
            return model(query)

    def retrieval() -> object:
        return explain_retrieval(fam, query, gallery_embeddings=gallery_embeddings, k=args.k)

    times = harness.time_interleaved({FORWARD: forward, RETRIEVAL: retrieval}, args.repeats)
    ratio = times[RETRIEVAL].median / times[FORWARD].median
    table = harness.Table(COLUMNS)
    table.add(
        row="query forward (inference)", median=f"{times[FORWARD].median:.1f}",
        spread=times[FORWARD].spread_text(1), ratio="1.00x", target="",
    )  # fmt: skip
    table.add(
        row=f"explain_retrieval, top-{args.k} maps",
        median=f"{times[RETRIEVAL].median:.1f}",
        spread=times[RETRIEVAL].spread_text(1),
        ratio=f"{ratio:.2f}x",
        target=f"<= {TIME_TARGET}x: {harness.verdict(ratio <= TIME_TARGET)}",
    )
    print(
        f"ResNet-50 feature extractor (random weights), {args.size} px, 1 query, cached gallery "
        f"of {args.gallery}, k = {args.k}; medians of {args.repeats} round-robin repeats "
        "(spread: fastest-slowest)."
    )
    print()
    print(table.render(args.markdown))
    print()
    print(harness.machine_facts(("torch", "torchvision", "captum")))


if __name__ == "__main__":
    main()
