"""One rank of the multi-process job tests, and the job they run (shared with the tests).

Run as ``python tests/jobs/job_worker.py KIND=PATH ... [--exit-at ITEM]`` in every process of
a ``torchrun``-style launch (or alone): each ``KIND=PATH`` runs :func:`explain_dataset` for
that kind (``prototypes`` or ``gallery``) into the store ``PATH``. ``--exit-at ITEM`` makes the
rank that loads item ITEM exit on the spot (status 17), as a crashed process would, once the
chunks it finished before are on disk (their writing runs in the background): the test hook for
interrupted runs. Rank 0 prints one JSON line per job with the chunk counts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import Dataset

from captum_fam import FeatureActivationMap
from captum_fam.jobs import explain_dataset, init_distributed
from captum_fam.tasks import class_prototypes
from captum_fam.zoo import SHAPE_CLASSES, load_shapes_model, make_shapes

ITEMS, BATCH, CHUNK = 36, 4, 8  # 5 chunks, the last one short; ranks 0 and 1 hold 3 and 2
SETTINGS = {"batch_size": BATCH, "chunk_size": CHUNK, "map_dtype": "float32", "progress": False}


class ShapesItems(Dataset):
    """Single-object shapes scenes as ``(image, label, mask)`` items."""

    def __init__(self, exit_at: int | None = None, out: str = "") -> None:
        self.scenes = make_shapes(ITEMS, objects=1, seed=11)
        self.exit_at, self.out = exit_at, out

    def __len__(self) -> int:
        return ITEMS

    def __getitem__(self, index: int):
        if index == self.exit_at:
            finished = [c for c in range(index // CHUNK) if c % 2 == 1]  # rank 1's, before
            records = [Path(self.out, "chunk_digest", "c", str(c)) for c in finished]
            deadline = time.monotonic() + 60
            while not all(r.exists() for r in records) and time.monotonic() < deadline:
                time.sleep(0.05)
            sys.stdout.flush()
            os._exit(17)  # no cleanup, no exception: a process that dies
        scenes = self.scenes
        return scenes.images[index], int(scenes.labels[index, 0]), scenes.masks[index, 0]


def job(
    kind: str, exit_at: int | None = None, out: str = ""
) -> tuple[FeatureActivationMap, Dataset, dict]:
    """The model, the dataset and the references of the tested jobs."""
    model, layer = load_shapes_model()
    fam = FeatureActivationMap(model, layer)
    if kind == "prototypes":
        support = [make_shapes(2, seed=100 + c, classes=[c]) for c in range(len(SHAPE_CLASSES))]
        images = torch.cat([s.images for s in support])
        labels = torch.cat([s.labels[:, 0] for s in support])
        classes, prototypes = class_prototypes(fam.embed(images), labels)
        references = {"prototypes": prototypes, "classes": classes}
    elif kind == "gallery":
        references = {"gallery_embeddings": fam.embed(make_shapes(30, seed=13).images), "k": 3}
    else:
        raise ValueError(f"unknown job kind {kind!r}")
    return fam, ShapesItems(exit_at, out), {**references, **SETTINGS}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("jobs", nargs="+", metavar="KIND=PATH")
    parser.add_argument("--exit-at", type=int, default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    context = init_distributed(timeout=60)
    for spec in args.jobs:
        kind, path = spec.split("=", 1)
        fam, dataset, options = job(kind, args.exit_at, path)
        result = explain_dataset(fam, dataset, path, **options)
        if context.is_main:
            print(json.dumps({"job": kind, "computed": result.computed,
                              "resumed": result.resumed}), flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
