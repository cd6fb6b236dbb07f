"""Dataset jobs: ``explain_dataset`` against ``fam.attribute`` on the same batches.

The workload is the shapes world: 2,000 single-object scenes (64 px) with their labels and
masks, each explained against the prototype of its class (two support images per class), in
batches of 64, chunks of 256, float16 maps. Three rows per configuration, timed side by side in
the same processes, round-robin (``benchmarks/harness.py``):

- **loop**: ``fam.attribute(batch, reference_embeddings=prototypes[labels])`` over the very
  batches the job forms, the images already stacked: the floor;
- **job**: ``explain_dataset`` with ``(image, label)`` items: item loading and collation, the
  probe forward, scores, predictions, the zarr store (created afresh every time), chunk records
  and summaries on top of the same maps;
- **job + masks**: the same with ``(image, label, mask)`` items: pointing and energy metrics of
  every item on top (work the loop does not do at all).

Configurations: one process with 2 torch threads, and 2 Gloo processes with 1 thread each
(started as ``torchrun`` starts them; each rank loops over its own share of the batches, and a
row's time runs from a barrier before it to a barrier after it, so it is the slower rank's).
Target: the job's time <= 1.10x the loop's.

Usage::

    python benchmarks/jobs.py              # 2,000 items, 3 repeats
    python benchmarks/jobs.py --quick      # 48 items, 1 repeat (smoke run)
    python benchmarks/jobs.py --markdown   # the table as Markdown
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import torch

from captum_fam import FeatureActivationMap
from captum_fam.jobs import explain_dataset, init_distributed
from captum_fam.jobs.sharding import batches_of, chunk_range, rank_chunks
from captum_fam.tasks import class_prototypes
from captum_fam.zoo import SHAPE_CLASSES, load_shapes_model, make_shapes

if __package__:
    from benchmarks import harness
else:  # python benchmarks/jobs.py: this folder is on sys.path
    import harness

LOOP, JOB, JOB_MASKS = "loop", "job", "job + masks"
ROWS = (LOOP, JOB, JOB_MASKS)
LABELS = {
    LOOP: "fam.attribute on the same batches (floor)",
    JOB: "explain_dataset, (image, label) items",
    JOB_MASKS: "explain_dataset, (image, label, mask) items: + pointing, energy",
}
OVERHEAD_TARGET = 1.10
RANK_OPTION = "--rank-worker"
COLUMNS = (
    harness.Column("setup", "processes x threads"),
    harness.Column("row", "row"),
    harness.Column("median", "median s", "right"),
    harness.Column("spread", "spread s", "right"),
    harness.Column("rate", "items/s", "right"),
    harness.Column("ratio", "ratio to loop", "right"),
    harness.Column("target", "target"),
)


class Workload:
    """The model, the scenes, the prototypes and the three rows, for one process."""

    def __init__(self, args: argparse.Namespace, rank: int = 0, world_size: int = 1) -> None:
        model, layer = load_shapes_model()
        self.fam = FeatureActivationMap(model, layer)
        scenes = make_shapes(args.items, objects=1, seed=args.seed)
        self.images, self.labels = scenes.images, scenes.labels[:, 0]
        self.masks = scenes.masks[:, 0]
        support = [make_shapes(2, seed=1000 + c, classes=[c]) for c in range(len(SHAPE_CLASSES))]
        self.classes, self.prototypes = class_prototypes(
            self.fam.embed(torch.cat([s.images for s in support])),
            torch.cat([s.labels[:, 0] for s in support]),
        )
        self.args, self.out = args, Path(args.out)
        self.batches = [
            batch
            for chunk in rank_chunks(args.items, args.chunk_size, rank, world_size)
            for batch in batches_of(chunk_range(chunk, args.items, args.chunk_size), args.batch)
        ]

    def rows(self) -> dict[str, Callable[[], object]]:
        return {LOOP: self.loop, JOB: lambda: self.job(False), JOB_MASKS: lambda: self.job(True)}

    def loop(self) -> None:
        rows = self.prototypes[self.labels]
        for batch in self.batches:
            self.fam.attribute(
                self.images[batch.start : batch.stop],
                reference_embeddings=rows[batch.start : batch.stop],
            )

    def job(self, masks: bool) -> None:
        items = Items(self.images, self.labels, self.masks if masks else None)
        explain_dataset(
            self.fam, items, self.out / ("masks.zarr" if masks else "labels.zarr"),
            prototypes=self.prototypes, classes=self.classes, batch_size=self.args.batch,
            chunk_size=self.args.chunk_size, overwrite=True, progress=False,
        )  # fmt: skip


class Items(torch.utils.data.Dataset):
    def __init__(self, images: torch.Tensor, labels: torch.Tensor, masks: torch.Tensor | None):
        self.images, self.labels, self.masks = images, labels, masks

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> tuple:
        item = (self.images[index], int(self.labels[index]))
        return item if self.masks is None else (*item, self.masks[index])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chunk-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="48 items, 1 repeat (smoke run)")
    parser.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    parser.add_argument("--out", help="folder for the stores (default: a temporary one)")
    parser.add_argument(RANK_OPTION, action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.quick:
        args.items, args.batch, args.chunk_size, args.repeats = 48, 16, 16, 1
    return args


def rank_worker(args: argparse.Namespace) -> None:
    """One rank of the 2-process configuration; rank 0 prints the row times as JSON."""
    harness.set_threads(1)
    context = init_distributed(backend="gloo")
    workload = Workload(args, context.rank, context.world_size)
    rows = workload.rows()
    times: dict[str, list[float]] = {name: [] for name in ROWS}
    for repeat in range(-1, args.repeats):  # repeat -1: the warm-up
        for name in harness.rotation(ROWS, max(repeat, 0)):
            context.barrier()
            start = time.perf_counter()
            rows[name]()
            context.barrier()
            if repeat >= 0:
                times[name].append((time.perf_counter() - start) * 1e3)
    if context.is_main:
        print(json.dumps(times), flush=True)


def two_processes(args: argparse.Namespace, out: Path) -> dict[str, harness.Timing]:
    """The 2-process rows: this script started twice with the variables torchrun sets."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [*harness.launcher(), RANK_OPTION, "--out", str(out), "--items", str(args.items),
               "--batch", str(args.batch), "--chunk-size", str(args.chunk_size),
               "--repeats", str(args.repeats), "--seed", str(args.seed)]  # fmt: skip
    ranks = [
        subprocess.Popen(
            command,
            env={
                **os.environ,
                "RANK": str(rank),
                "LOCAL_RANK": str(rank),
                "WORLD_SIZE": "2",
                "LOCAL_WORLD_SIZE": "2",
                "MASTER_ADDR": "127.0.0.1",
                "MASTER_PORT": str(port),
                "OMP_NUM_THREADS": "1",
            },  # fmt: skip
            stdout=subprocess.PIPE,
            text=True,
        )
        for rank in range(2)
    ]
    outputs = [rank.communicate()[0] for rank in ranks]
    if any(rank.returncode for rank in ranks):
        raise RuntimeError(f"a rank failed (exit codes {[r.returncode for r in ranks]})")
    times = json.loads(outputs[0].strip().splitlines()[-1])
    return {name: harness.Timing(tuple(times[name])) for name in ROWS}


def add_rows(table: harness.Table, setup: str, times: dict[str, harness.Timing], items: int):
    floor = times[LOOP].median
    for name in ROWS:
        ratio = times[name].median / floor
        target = ""
        if name == JOB:
            target = f"<= {OVERHEAD_TARGET:.2f}x: {harness.verdict(ratio <= OVERHEAD_TARGET)}"
        table.add(
            setup=setup, row=LABELS[name], median=f"{times[name].median / 1e3:.2f}",
            spread=f"{times[name].spread[0] / 1e3:.2f}-{times[name].spread[1] / 1e3:.2f}",
            rate=f"{items / (times[name].median / 1e3):.0f}", ratio=f"{ratio:.3f}x",
            target=target,
        )  # fmt: skip


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.rank_worker:
        rank_worker(args)
        return
    with tempfile.TemporaryDirectory() as scratch:
        out = Path(args.out or scratch)
        harness.seed_everything(args.seed)
        harness.set_threads(2)
        args.out = str(out / "one")
        one = harness.time_interleaved(Workload(args).rows(), args.repeats)
        harness.log("2 processes x 1 thread")
        two = two_processes(args, out / "two")
    table = harness.Table(COLUMNS)
    add_rows(table, "1 x 2", one, args.items)
    add_rows(table, "2 x 1", two, args.items)
    print(
        f"Shapes world, {args.items} items of 64 px, each against its class prototype; batches "
        f"of {args.batch}, chunks of {args.chunk_size}, float16 maps; medians of "
        f"{args.repeats} round-robin repeats after a warm-up (spread: fastest-slowest)."
    )
    print()
    print(table.render(args.markdown))
    print()
    speedup = one[JOB].median / two[JOB].median
    print(f"explain_dataset on 2 processes x 1 thread vs 1 process x 2 threads: {speedup:.2f}x")
    print(harness.machine_facts(("torch", "captum", "zarr")))


if __name__ == "__main__":
    main()
