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
    python benchmarks/retrieval.py --search    # vector search rows (FAISS; see below)
    python benchmarks/retrieval.py --search --quick   # 10,000 / 20,000 vectors (a smoke run)

Vector search (``--search``, needs faiss-cpu): one query explained against its top-10 in a
FAISS flat index of 100,000 vectors and an IVF-PQ index of 1,000,000 vectors
(``explain_search``: query forward + search + reconstruction + 10 maps), against the bare
search (query forward + search), timed side by side. Target: <= 1.3x. The indexes hold random
unit vectors of the model's embedding width (the search costs the same for any values; a
cosine model, so inner-product indexes over unit vectors). The IVF-PQ index
(``IVF1024,PQ64np``: 1,024 lists, 64-byte codes, no polysemous training) is trained on 10,000
other random vectors and searched with nprobe = 16. Memory is measured in fresh child
processes that load the saved index: the index's own resident memory, and each row's peak
above a child that only loaded the model and the index (FAM's share is the explained row's
minus the bare row's).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchvision
from torch import nn

from captum_fam import FeatureActivationMap
from captum_fam.search import explain_search
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
    add_search_arguments(parser)
    args = parser.parse_args(argv)
    if args.search or args.peak_row:
        search_benchmark(args)
        return
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


# --- Vector search: explain_search over FAISS indexes (--search) ---------------------------------

SEARCH_TARGET = 1.3
BARE, EXPLAINED, LOADED = "bare", "explained", "loaded"


def add_search_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("vector search (--search)")
    group.add_argument("--search", action="store_true", help="time explain_search on FAISS")
    group.add_argument("--flat-size", type=int, default=100_000)
    group.add_argument("--ivfpq-size", type=int, default=1_000_000)
    group.add_argument(  # np: no polysemous training (minutes, only for polysemous search)
        "--ivfpq", default="IVF1024,PQ64np", help="index_factory of the IVF-PQ"
    )
    group.add_argument("--nprobe", type=int, default=16)
    group.add_argument("--train-size", type=int, default=10_000, help="IVF-PQ training sample")
    group.add_argument(
        "--index-dir", help="keep the built indexes here and reuse them (default: a temp dir)"
    )
    group.add_argument("--peak-row", help=argparse.SUPPRESS)  # a memory child: this row
    group.add_argument("--index-file", help=argparse.SUPPRESS)


def search_benchmark(args: argparse.Namespace) -> None:
    """Build each index, time bare and explained search side by side, measure memory."""
    import faiss

    if args.quick:
        args.repeats, args.flat_size, args.ivfpq_size = 5, 10_000, 20_000
        args.ivfpq, args.train_size = "IVF64,PQ64np", 10_000
    if args.threads:  # on a loaded machine, OpenMP teams of 2 wait for each other
        torch.set_num_threads(args.threads)
        faiss.omp_set_num_threads(args.threads)
    model, fam, query = search_model(args)
    if args.peak_row:  # a child process of the memory measurement
        print(json.dumps(peak_child(args, faiss, model, fam, query)), flush=True)
        return
    dim = fam.embed(query).shape[1]
    specs = [("flat", "Flat", args.flat_size), ("IVF-PQ", args.ivfpq, args.ivfpq_size)]
    table = []
    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.index_dir or temporary)
        folder.mkdir(parents=True, exist_ok=True)
        for name, factory, count in specs:
            path = folder / f"{factory.replace(',', '_')}_{count}x{dim}.faiss"
            built = None
            if path.exists():
                index = faiss.read_index(str(path))
            else:
                start = time.perf_counter()
                index = build_random_index(faiss, factory, count, dim, args)
                built = time.perf_counter() - start
                faiss.write_index(index, str(path))
            print(f"{name} ({factory}, {count:,} x {dim}): built in {built or 0:.0f} s",
                  file=sys.stderr)  # fmt: skip
            calls = search_calls(model, fam, query, index, args.k, declared=name != "flat")
            timings = harness.time_interleaved(calls, args.repeats)
            medians = {row: timing.median / 1000 for row, timing in timings.items()}
            del index
            memory = {row: run_peak_child(args, row, path) for row in (LOADED, BARE, EXPLAINED)}
            table.append((name, factory, count, built, medians, memory))
    print_search_table(table, dim, args)


def search_model(args: argparse.Namespace) -> tuple[nn.Module, FeatureActivationMap, Any]:
    """ResNet-50 as a feature extractor (random weights): the index holds its 2048-d output."""
    torch.manual_seed(0)
    model = torchvision.models.resnet50(weights=None)
    model.fc = nn.Identity()
    model.eval()
    fam = FeatureActivationMap(model, model.layer4)  # cosine on the model's output
    size = 112 if args.quick else args.size
    return model, fam, torch.rand(1, 3, size, size)


def random_unit_vectors(count: int, dim: int, seed: int, chunk: int = 50_000) -> Iterator[Any]:
    """Random directions, float32, ``chunk`` rows at a time (1,000,000 x 2048 is 8 GB)."""
    generator = np.random.default_rng(seed)
    for start in range(0, count, chunk):
        rows = generator.standard_normal((min(chunk, count - start), dim), dtype=np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        yield rows


def build_random_index(faiss: Any, factory: str, count: int, dim: int, args: Any) -> Any:
    index = faiss.index_factory(dim, factory, faiss.METRIC_INNER_PRODUCT)
    if not index.is_trained:  # a random sample, drawn apart from the stored vectors
        index.train(next(random_unit_vectors(args.train_size, dim, seed=1, chunk=args.train_size)))
    for rows in random_unit_vectors(count, dim, seed=0):
        index.add(rows)
    ivf = faiss.try_extract_index_ivf(index)
    if ivf is not None:
        ivf.make_direct_map()  # explain_search reconstructs the hits by id
        ivf.nprobe = args.nprobe
    return index


def search_calls(
    model: nn.Module, fam: FeatureActivationMap, query: Any, index: Any, k: int, declared: bool
) -> dict[str, Callable[[], object]]:
    """Bare search (what a system runs without explanations) and explained search."""

    def bare() -> object:
        with torch.inference_mode():
            embedding = torch.nn.functional.normalize(model(query), dim=1)
        return index.search(embedding.numpy(), k)

    def explained() -> object:
        # Decoded PQ vectors are only close to unit length: the unit norm is declared.
        return explain_search(fam, query, index, k=k, normalized=True if declared else None)

    return {BARE: bare, EXPLAINED: explained}


def faiss_threads() -> int:
    import faiss

    return int(faiss.omp_get_max_threads())


def current_rss_mib() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("memory needs Linux's /proc/self/status")


def peak_child(args: Any, faiss: Any, model: nn.Module, fam: Any, query: Any) -> dict:
    """One fresh process: load the index, run one row once, report memory."""
    before = current_rss_mib()
    index = faiss.read_index(args.index_file)
    loaded = current_rss_mib() - before
    start_peak = harness.peak_rss_mib()
    if args.peak_row != LOADED:
        declared = faiss.try_extract_index_ivf(index) is not None
        search_calls(model, fam, query, index, args.k, declared)[args.peak_row]()
    return {"row": args.peak_row, "index_mib": loaded, "peak_mib": harness.peak_rss_mib(),
            "peak_before_row_mib": start_peak}  # fmt: skip


def run_peak_child(args: Any, row: str, path: Path) -> dict:
    command = [sys.executable, str(Path(__file__).resolve()), "--peak-row", row,
               "--index-file", str(path), "--k", str(args.k), "--size", str(args.size)]  # fmt: skip
    if args.quick:
        command.append("--quick")
    if args.threads:
        command += ["--threads", str(args.threads)]
    done = subprocess.run(command, capture_output=True, text=True, check=False,
                          env=dict(os.environ))  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"memory child {row} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def print_search_table(table: list, dim: int, args: Any) -> None:
    print(
        f"ResNet-50 feature extractor (random weights, {dim}-d output, cosine), "
        f"{112 if args.quick else args.size} px, 1 query, top-{args.k}; indexes of random unit "
        f"vectors; medians of {args.repeats} interleaved repeats; torch {torch.__version__}, "
        f"{torch.get_num_threads()} torch thread(s), {faiss_threads()} FAISS thread(s), "
        f"{platform.machine()}, load average {os.getloadavg()[0]:.1f}"
    )
    print()
    print("| index | row | median ms | ratio to bare search | peak above loaded index MiB "
          "| target |")  # fmt: skip
    print("| --- | --- | ---: | ---: | ---: | --- |")
    for name, factory, count, _, medians, memory in table:
        label = f"{name} ({factory}), {count:,} vectors"
        floor = medians[BARE]
        above = {row: memory[row]["peak_mib"] - memory[LOADED]["peak_mib"] for row in memory}
        ratio = medians[EXPLAINED] / floor
        verdict = "met" if ratio <= SEARCH_TARGET else "missed"
        print(f"| {label} | bare search: query forward + search | {1000 * floor:.1f} | 1.00x | "
              f"{above[BARE]:.0f} | |")  # fmt: skip
        print(
            f"| {label} | explain_search: + reconstruction + {args.k} maps | "
            f"{1000 * medians[EXPLAINED]:.1f} | {ratio:.2f}x | {above[EXPLAINED]:.0f} | "
            f"<= {SEARCH_TARGET}x ({verdict}) |"
        )
    print()
    for name, factory, count, built, _, memory in table:
        explained, bare = memory[EXPLAINED]["peak_mib"], memory[BARE]["peak_mib"]
        print(
            f"- {name} ({factory}, {count:,} x {dim}): index in RAM "
            f"{memory[LOADED]['index_mib']:.0f} MiB (resident growth on faiss.read_index); "
            f"FAM's own share {explained - bare:.0f} MiB (explained peak minus bare peak)"
            + ("" if built is None else f"; built in {built:.0f} s")
        )


if __name__ == "__main__":
    main()
