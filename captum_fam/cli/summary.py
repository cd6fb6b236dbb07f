"""``captum-fam summary``: what a dataset job's store holds, and its best and worst items.

Prints the job's settings and summaries (or how far an unfinished job got) and draws the items
with the highest and the lowest scores, each map over the image the model saw: the shapes
world's scenes and image folders are read again from where the job recorded them.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import numpy as np
import torch

from captum_fam.cli.common import CLIError, warn
from captum_fam.cli.figures import checked_figure_path, save_figure, summary_figure

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "summary",
        help="print a dataset job's summaries and draw its best and worst items",
        description="Print what an explain-dataset store holds (settings, summaries, "
        "progress) and draw the items with the highest and the lowest scores.",
    )
    parser.add_argument("store", metavar="STORE", help="the zarr store of explain-dataset")
    parser.add_argument("--out", help="figure file (default: STORE's name with -summary.png, here)")
    parser.add_argument(
        "--count", type=int, default=6, metavar="N", help="items per row (default: 6)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from captum_fam.cli.explain_dataset import format_summary
    from captum_fam.jobs.store import ATTRIBUTE

    if args.count < 1:
        raise CLIError(f"--count must be at least 1; got {args.count}")
    name = Path(args.store.rstrip("/")).name.removesuffix(".zarr")
    out = checked_figure_path(args.out or f"{name}-summary.png")
    group, attrs = _open(args.store)
    settings = attrs.get("settings", {})
    records = np.asarray(group["chunk_digest"][:]) != 0  # chunks a run completed
    chunk_size = int(attrs[ATTRIBUTE]["layout"]["chunk_size"])
    total = int(group["item_index"].shape[0])
    written = np.repeat(records, chunk_size)[:total] & (np.asarray(group["item_index"][:]) >= 0)
    print(f"store {args.store}: {attrs.get('status')}, {int(written.sum())} of {total} items")
    print(
        f"  model {attrs.get('model', settings.get('model'))}, layer {settings.get('layer')}, "
        f"{settings.get('similarity')}, {settings.get('weighting')} weights, "
        f"references: {settings.get('references')}, {settings.get('world_size')} process(es)"
    )
    summary = attrs.get("summary")
    if summary is None:
        print(f"  unfinished: {int(records.sum())} of {len(records)} chunks complete; run the "
              "same explain-dataset command again to finish it")  # fmt: skip
    else:
        print("  " + format_summary(summary))
    if not written.any():
        raise CLIError(f"{args.store} holds no explained item yet")

    scores = np.asarray(group["scores"][:, 0], dtype=np.float64)
    order = np.flatnonzero(written)[np.argsort(-scores[written], kind="stable")]
    count = min(args.count, len(order))
    best, worst = order[:count], order[::-1][:count]
    pictures = _pictures(attrs, total, np.concatenate([best, worst]))
    names = attrs.get("class_names")
    rows = []
    for title, chosen in (("best", best), ("worst", worst)):
        items = []
        for index in chosen:
            index = int(index)
            attribution = torch.from_numpy(np.asarray(group["maps"][index, 0:1], np.float32))
            items.append((pictures[index], attribution, _title(group, index, names)))
        rows.append((title, items))
    header = [
        f"captum-fam summary · {args.store} · {attrs.get('model', '')} · layer "
        f"{settings.get('layer')} · {settings.get('similarity')}",
        format_summary(summary) if summary else "unfinished job",
        f"The {count} items with the highest and the lowest score (each item's first map): "
        "item, score, label (→ the prediction when it differs), pointing hit or miss.",
    ]
    save_figure(summary_figure(rows, header), out)
    print(f"figure: {out}")
    return 0


def _open(store: str) -> tuple[Any, dict[str, Any]]:
    from captum_fam.jobs.store import ATTRIBUTE

    try:
        import zarr

        group = zarr.open_group(store, mode="r")
        attrs = group.attrs.asdict()
    except ImportError:
        raise CLIError("reading a store needs zarr: pip install 'captum-fam[jobs]'") from None
    except Exception:  # noqa: BLE001 - zarr raises several kinds for "not a group"
        raise CLIError(f"{store} is not a zarr store") from None
    if ATTRIBUTE not in attrs:
        raise CLIError(f"{store} is not a store of captum-fam explain-dataset")
    return group, attrs


def _title(group: Any, index: int, names: list[str] | None) -> str:
    score = float(group["scores"][index, 0])
    first, parts = f"#{index} · score {score:.3f}", []
    if "labels" in group:
        label = int(group["labels"][index])
        text = names[label] if names and 0 <= label < len(names) else str(label)
        if "predictions" in group:
            predicted = int(group["predictions"][index])
            if predicted != label:
                text += f" → {names[predicted] if names else predicted}"
        parts.append(text)
    if "pointing" in group:
        parts.append("hit" if int(group["pointing"][index]) == 1 else "miss")
    return first + ("\n" + " · ".join(parts) if parts else "")


def _pictures(attrs: dict[str, Any], total: int, wanted: np.ndarray) -> dict[int, np.ndarray]:
    """The images the model saw, for the drawn items; grey panels where they cannot be read."""
    from captum_fam.visualization import image_to_numpy

    source = attrs.get("source") or {}
    grey = np.full((64, 64, 3), 0.5)
    if "shapes" in source:
        from captum_fam.zoo import make_shapes

        images = make_shapes(int(source["shapes"]), objects=1, seed=int(source["seed"])).images
        return {int(i): image_to_numpy(images[int(i)]) for i in wanted}
    if "images" in source and attrs.get("preprocess") is not None:
        from captum_fam.cli.datasets import labelled_files
        from captum_fam.images import Preprocess, read_image

        try:
            files = labelled_files(Path(source["images"]))[0]
        except CLIError:
            files = []
        if len(files) == total:
            preprocess = Preprocess(**attrs["preprocess"])
            return {
                int(i): image_to_numpy(preprocess.display(preprocess(read_image(files[int(i)]))))
                for i in wanted
            }
        warn(f"the images of {source['images']} changed since the job: maps drawn without them")
    return {int(i): grey for i in wanted}
