"""``captum-fam explain-dataset``: explain every image of a folder (or of the shapes world) into a
zarr store, in one process or under ``torchrun``.

Each item is explained against its class prototype (``--prototypes``), its top-k gallery matches
(``--gallery``) or one reference (``--reference``), each given as images or as an embeddings
file. ``torchrun --nproc-per-node 2 -m captum_fam explain-dataset ...`` shares the work between
processes; a rerun on the same ``--out`` finishes a job that stopped. ``captum-fam summary``
reads the store back.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from captum_fam.cli import datasets, options
from captum_fam.cli.common import CLIError, add_fam_options, model_errors, one_line, warn
from captum_fam.images import read_image
from captum_fam.models import LoadedModel, load_model

__all__ = ["add_parser", "run"]

SHAPES_SUPPORT = 2
"""Support scenes per class of the shapes world's default prototypes."""


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "explain-dataset",
        help="explain every image of a folder into a zarr store (also under torchrun)",
        description="Explain every image of IMAGES (class subfolders give labels) or of the "
        "shapes world (--shapes N) against class prototypes, a gallery's top-k or one "
        "reference, and write maps, scores and metrics to a zarr store. Runs alone or as "
        "'torchrun --nproc-per-node N -m captum_fam explain-dataset ...'; a rerun resumes.",
    )
    parser.add_argument("images", metavar="IMAGES", nargs="?", help="folder of images")
    parser.add_argument(
        "--shapes", type=int, metavar="N", help="N scenes of the shapes world instead of IMAGES"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of --shapes (default: 0)")
    parser.add_argument("--out", required=True, help="the zarr store: a folder or an fsspec URL")
    references = parser.add_argument_group(
        "references (one; default with --shapes: the shapes world's class prototypes)"
    )
    references.add_argument(
        "--prototypes",
        metavar="DIR|FILE",
        help="class prototypes: a folder with one subfolder of images per class (named as "
        "IMAGES' subfolders), or embeddings (a row per class, 'classes' names optional)",
    )
    references.add_argument(
        "--gallery", metavar="DIR|FILE", help="gallery images or embeddings: the top-k of each"
    )
    references.add_argument(
        "--reference",
        metavar="IMAGE|FILE",
        help="one reference image, or embeddings: one row for all items, or one per item",
    )
    references.add_argument(
        "--top-k", type=int, default=5, metavar="K", help="with --gallery (default: 5)"
    )
    options.add_model_options(parser)
    add_fam_options(parser)
    options.add_preprocessing_options(parser)
    job = parser.add_argument_group("job")
    job.add_argument("--batch-size", type=int, default=64, metavar="B", help="(default: 64)")
    job.add_argument(
        "--chunk-size", type=int, default=256, metavar="C", help="items per chunk (default: 256)"
    )
    job.add_argument("--map-dtype", choices=("float16", "float32"), default="float16")
    job.add_argument(
        "--device",
        default="auto",
        help="where the model runs: auto (default: each process's GPU under torchrun with "
        "NCCL, else the GPU when there is one, else the CPU), cpu, cuda or cuda:N",
    )
    job.add_argument("--workers", type=int, default=0, help="DataLoader workers per process")
    job.add_argument("--overwrite", action="store_true", help="replace a store of another job")
    job.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def _device(option: str, context: Any) -> torch.device:
    """``--device``: several processes run where their backend puts them (NCCL: their GPU)."""
    if option == "auto":
        if context.world_size > 1:
            return context.device
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if context.world_size > 1:
        raise CLIError(
            "--device: under torchrun each process runs on its backend's device (NCCL: its "
            "GPU, Gloo: the CPU); leave --device at auto"
        )
    try:
        device = torch.device(option)
    except RuntimeError:
        raise CLIError(f"--device must be auto, cpu, cuda or cuda:N; got {option!r}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise CLIError("--device cuda: no CUDA device is available")
    if device.type not in ("cpu", "cuda"):
        raise CLIError(f"--device must be auto, cpu, cuda or cuda:N; got {option!r}")
    return device


def run(args: argparse.Namespace) -> int:
    from captum_fam.jobs import JobInterrupted, StoreError, explain_dataset, init_distributed

    _check(args)
    context = init_distributed()
    device = _device(args.device, context)
    loaded = load_model(args.model, args.weights, args.layer)
    loaded.model.to(device)
    preprocess = options.preprocessing(loaded.preprocess, args)
    token_layout = loaded.token_layout if args.token_layout is None else args.token_layout
    fam = loaded.explainer(
        similarity=args.similarity,
        weighting=args.weighting,
        token_layout=None if token_layout == "none" else token_layout,
    )
    if loaded.random_weights:
        warn(f"RANDOM WEIGHTS: {loaded.label} is untrained, its maps say nothing")
    if args.shapes is not None:
        dataset: Any = datasets.ShapesScenes(args.shapes, args.seed)
        source = {"shapes": args.shapes, "seed": args.seed}
    else:
        dataset = datasets.ImageFolder(args.images, preprocess)
        source = {"images": str(Path(args.images).resolve())}
    with model_errors(loaded.hint):
        references = _references(args, fam, dataset, preprocess, loaded, context, device)
    attributes = {
        "source": source,
        "class_names": dataset.classes,
        "model": loaded.label,
        "preprocessing": preprocess.description,
        "preprocess": None if preprocess.transform is not None else _fields(preprocess),
    }
    try:
        with model_errors(loaded.hint):
            result = explain_dataset(
                fam, dataset, args.out, **references, batch_size=args.batch_size,
                chunk_size=args.chunk_size, map_dtype=args.map_dtype, num_workers=args.workers,
                overwrite=args.overwrite, progress=not args.no_progress, attributes=attributes,
            )  # fmt: skip
    except (StoreError, JobInterrupted) as error:
        raise CLIError(one_line(error)) from None
    if context.is_main:
        summary = result.summary
        print(
            f"store {args.out}: {summary['items']} items, {result.computed} chunk(s) computed, "
            f"{result.resumed} kept from an earlier run, {context.world_size} process(es)"
        )
        print("  " + format_summary(summary))
        print(f"see the best and worst items: captum-fam summary {args.out}")
    return 0


def format_summary(summary: dict[str, Any]) -> str:
    """The scalar summaries on one line."""
    parts = [f"mean score {summary['mean_score']:.4f}"]
    for key, label in (("accuracy", "accuracy"), ("pointing_rate", "pointing rate"),
                       ("energy_rate", "energy rate")):  # fmt: skip
        if key in summary:
            parts.append(f"{label} {summary[key]:.3f}")
    return " · ".join(parts)


def _check(args: argparse.Namespace) -> None:
    if (args.images is None) == (args.shapes is None):
        raise CLIError("give a folder of IMAGES or --shapes N, not both" if args.images
                       else "give a folder of IMAGES, or --shapes N for the demo")  # fmt: skip
    given = [flag for flag in ("prototypes", "gallery", "reference") if getattr(args, flag)]
    if len(given) > 1:
        raise CLIError(f"give one of --prototypes, --gallery or --reference; got {given}")
    if not given and args.shapes is None:
        raise CLIError("give the references: --prototypes, --gallery or --reference")
    for name in ("shapes", "top_k", "batch_size", "chunk_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise CLIError(f"--{name.replace('_', '-')} must be at least 1; got {value}")
    if args.workers < 0:
        raise CLIError(f"--workers must be at least 0; got {args.workers}")


def _references(
    args: argparse.Namespace,
    fam: Any,
    dataset: Any,
    preprocess: Any,
    loaded: LoadedModel,
    context: Any,
    device: torch.device,
) -> dict[str, Any]:
    """The job's reference keyword arguments, the same on every rank."""
    from captum_fam.jobs import GalleryShard, shard_rows

    names: list[str] | None = dataset.classes
    if args.gallery is not None:
        path = Path(args.gallery)
        if path.is_dir():
            files = datasets.labelled_files(path)[0]
            rows = shard_rows(len(files), context.rank, context.world_size)
            mine = datasets.embed_files(fam, files[rows.start : rows.stop], preprocess,
                                        args.batch_size)  # fmt: skip
            gallery: Any = GalleryShard(mine, rows.start, len(files))
        else:
            gallery = datasets.read_embeddings(path)[0]
        return {"gallery_embeddings": gallery, "k": args.top_k}
    if args.reference is not None:
        path = Path(args.reference)
        if path.suffix.lower() in datasets.EMBEDDING_SUFFIXES:
            embeddings = datasets.read_embeddings(path)[0]
        else:
            image = options.prepare(preprocess, read_image(path), path)
            embeddings = fam.embed(image.unsqueeze(0).to(device)).cpu()
            embeddings = context.broadcast_object(embeddings)
        return {"reference_embeddings": embeddings}
    if names is None:
        raise CLIError(
            f"--prototypes needs labelled items: put the images of {args.images} in one "
            "subfolder per class"
        )
    if args.prototypes is None:  # the shapes world's own
        from captum_fam.zoo import make_shapes

        support = [make_shapes(SHAPES_SUPPORT, seed=10_000 + c, classes=[c])
                   for c in range(len(names))]  # fmt: skip
        embeddings = fam.embed(torch.cat([s.images for s in support]).to(device))
        classes, prototypes = _prototypes(embeddings, torch.cat([s.labels[:, 0] for s in support]))
    elif Path(args.prototypes).is_dir():
        classes, prototypes = datasets.folder_prototypes(
            fam, Path(args.prototypes), preprocess, args.batch_size, names
        )
    else:
        prototypes, row_names = datasets.read_embeddings(args.prototypes)
        if row_names is None:
            if len(prototypes) != len(names):
                raise CLIError(f"--prototypes {args.prototypes}: {len(prototypes)} rows for "
                               f"{len(names)} classes, and no class names")  # fmt: skip
            classes = torch.arange(len(names))
        else:
            unknown = [name for name in row_names if name not in names]
            if unknown:
                raise CLIError(f"--prototypes {args.prototypes}: classes {unknown[:5]} are not "
                               "classes of the items")  # fmt: skip
            classes = torch.tensor([names.index(name) for name in row_names])
    # Rank 0's prototypes on every rank: embeddings computed apart may differ in the last bits.
    classes, prototypes = context.broadcast_object((classes.cpu(), prototypes.cpu()))
    return {"prototypes": prototypes, "classes": classes}


def _prototypes(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[Any, Any]:
    from captum_fam.tasks import class_prototypes

    return class_prototypes(embeddings, labels.to(embeddings.device))


def _fields(preprocess: Any) -> dict[str, Any]:
    fields = asdict(preprocess)
    fields.pop("transform")
    fields.pop("label")
    return {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
