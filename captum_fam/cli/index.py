"""``captum-fam index build``: a FAISS index of a folder of images, with its ids file; and the
search that ``captum-fam explain QUERY --index FILE`` explains (:func:`search`).

The ids file maps the index's ids to image files, one ``ID<TAB>PATH`` line each (paths
relative to the ids file's folder), after a ``#`` header line that records how the index was
built (model, layer, similarity, preprocessing, factory), so that ``explain --index`` can warn
when it embeds the query differently.
"""

from __future__ import annotations

import argparse
import os
import shlex
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from captum_fam.cli import options
from captum_fam.cli.common import CLIError, add_fam_options, model_errors, warn
from captum_fam.gallery import embed_images
from captum_fam.images import RESIZE_MODES, ImageReadError, list_images, read_image
from captum_fam.models import load_model

__all__ = ["IDS_SUFFIX", "IndexHits", "add_parser", "default_ids_path", "read_ids", "run", "search"]

IDS_SUFFIX = ".ids.txt"
"""The ids file's default name: the index file's, with this suffix (gallery.ids.txt)."""

_HEADER = "# captum-fam index:"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "index",
        help="build a FAISS index of a folder of images (for explain --index)",
        description="Vector indexes of image folders, searched and explained by "
        "'captum-fam explain QUERY --index FILE'. Needs faiss-cpu "
        "(pip install 'captum-fam[index]').",
    )
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="embed the images of DIR and write a FAISS index and its ids file",
        description="Embed every image under DIR (recursively) with the model and write a FAISS "
        "index of the embeddings (an inner-product index of unit vectors for cosine, inner "
        "product for dot, L2 for euclidean) and an ids file that maps the index's ids to the "
        "files.",
    )
    build.add_argument("directory", metavar="DIR", help="folder of images")
    build.add_argument("--out", required=True, help="index file to write (e.g. gallery.faiss)")
    build.add_argument(
        "--ids", metavar="FILE", help=f"ids file to write (default: OUT with {IDS_SUFFIX})"
    )
    build.add_argument(
        "--factory",
        default="Flat",
        help="faiss index_factory description: Flat (exact, the default), IVF256,PQ16np "
        "(compressed: 16 bytes per image), HNSW32, ...",
    )
    build.add_argument(
        "--train-size", type=int, metavar="N", help="train IVF/PQ indexes on N random images"
    )
    model = build.add_argument_group("model (the same as explain's)")
    model.add_argument("--model", default="shapes", help="as for captum-fam explain")
    model.add_argument("--weights", help="as for captum-fam explain")
    model.add_argument("--layer", help="as for captum-fam explain")
    model.add_argument(
        "--token-layout",
        type=options.token_layout,
        metavar="{auto,none,channels-last,prefix=N}",
        help="as for captum-fam explain",
    )
    add_fam_options(build)
    pre = build.add_argument_group("preprocessing (default: the model's own)")
    pre.add_argument("--image-size", type=int, metavar="PX", help="as for captum-fam explain")
    pre.add_argument("--resize", choices=RESIZE_MODES, help="as for captum-fam explain")
    pre.add_argument(
        "--normalize",
        type=options.normalization,
        metavar="{imagenet,none,MEAN,STD}",
        help="as for captum-fam explain",
    )
    build.add_argument(
        "--batch-size", type=int, default=32, metavar="B", help="images per forward (default: 32)"
    )
    return parser


def run(args: argparse.Namespace) -> int:
    from captum_fam.search import build_index

    faiss = _import_faiss()
    if args.batch_size < 1:
        raise CLIError(f"--batch-size must be at least 1, got {args.batch_size}")
    out = Path(args.out)
    ids_path = Path(args.ids) if args.ids else default_ids_path(out)
    files = options.gallery_files(args.directory, list_images)
    loaded = load_model(args.model, args.weights, args.layer)
    preprocess = options.preprocessing(loaded.preprocess, args)
    token_layout = loaded.token_layout if args.token_layout is None else args.token_layout
    fam = loaded.explainer(
        similarity=args.similarity,
        weighting=args.weighting,
        token_layout=None if token_layout == "none" else token_layout,
    )

    kept, rows, skipped = [], [], []
    with model_errors(loaded.hint):
        for start in range(0, len(files), args.batch_size):
            images = []
            for path in files[start : start + args.batch_size]:
                try:
                    images.append(options.prepare(preprocess, read_image(path), path))
                except (ImageReadError, CLIError):
                    skipped.append(path)
                    continue
                kept.append(path)
            if images:
                rows.append(embed_images(fam, images, args.batch_size))
    if not kept:
        raise CLIError(f"none of the {len(files)} files under {args.directory} could be read")
    if skipped:
        warn(f"{len(skipped)} unreadable image(s) skipped, e.g. {skipped[0]}")
    embeddings = torch.cat(rows)
    try:
        index = build_index(fam, embeddings, args.factory, args.train_size)
    except (RuntimeError, ValueError) as error:  # FAISS reports a bad factory as RuntimeError
        raise CLIError(f"--factory {args.factory}: {_faiss_reason(error)}") from None

    header = {
        "model": args.model,
        "weights": args.weights or "",
        "layer": loaded.layer_name,
        "similarity": args.similarity,
        "preprocessing": preprocess.description,
        "factory": args.factory,
    }
    _write_atomically(out, lambda path: faiss.write_index(index, str(path)))
    _write_atomically(ids_path, lambda path: path.write_text(_ids_text(kept, ids_path, header)))
    metric = "inner product" if index.metric_type == faiss.METRIC_INNER_PRODUCT else "L2"
    print(
        f"index {out}: {index.ntotal} images of {args.directory}, {embeddings.shape[1]} values "
        f"each ({args.factory}, {metric}{', unit vectors' if args.similarity == 'cosine' else ''})"
    )
    print(f"model {loaded.label}, layer {loaded.layer_name}, {args.similarity} similarity")
    print(f"preprocessing: {preprocess.description}")
    print(f"ids: {ids_path}")
    return 0


@dataclass
class IndexHits:
    """What ``explain --index`` shows: the hits, best first, and both sides' maps."""

    names: list[str]
    references: list[Tensor]  # preprocessed hit images
    maps: Tensor  # (k, 1, h, w) the query against each hit
    reference_maps: list[Tensor]  # each (1, h', w'): the hit against the query
    embeddings: Tensor  # (k, D) the vectors the index scored
    index_scores: Tensor  # (k,) the index's numbers
    scores: Tensor  # (k,) what the maps explain, in FAM's sense
    metric: str
    size: int


def search(
    fam: Any, query: Tensor, args: argparse.Namespace, preprocess: Any, top_k: int
) -> IndexHits:
    """Search ``args.index`` for the query and explain the top-k on both sides."""
    from captum_fam.search import explain_search

    faiss = _import_faiss()
    ids_path = Path(args.ids) if args.ids else default_ids_path(Path(args.index))
    if not Path(args.index).is_file():
        raise CLIError(f"--index {args.index}: no such file")
    try:
        index = faiss.read_index(str(args.index))
    except RuntimeError as error:
        reason = _faiss_reason(error)
        raise CLIError(f"--index {args.index}: not a FAISS index ({reason})") from None
    paths, header = read_ids(ids_path)
    _check_header(header, args, preprocess, ids_path)
    loaded: dict[int, Tensor] = {}

    def load_items(ids: Tensor) -> Tensor:
        for key in ids.tolist():
            if key not in loaded:
                if key not in paths:
                    raise CLIError(f"id {key} of --index is not in the ids file {ids_path}")
                path = paths[key]
                loaded[key] = options.prepare(preprocess, read_image(path), path)
        return torch.stack([loaded[key] for key in ids.tolist()])

    built_unit = header.get("similarity") == "cosine"  # index build normalised the vectors
    normalized = True if (args.normalized or built_unit) and args.similarity == "cosine" else None
    hits = explain_search(
        fam, query, index, k=min(top_k, index.ntotal), load_items=load_items,
        normalized=normalized, batch_size=args.batch_size,
    )  # fmt: skip
    ids = hits.indices[0].tolist()
    assert hits.gallery_maps is not None and hits.explained_scores is not None
    assert hits.vectors is not None
    return IndexHits(
        names=[_shown(paths[key]) for key in ids],
        references=[loaded[key] for key in ids],
        maps=hits.maps[0].unsqueeze(1),
        reference_maps=[m.unsqueeze(0) for m in hits.gallery_maps[0]],
        embeddings=hits.vectors[0],
        index_scores=hits.scores[0],
        scores=hits.explained_scores[0],
        metric=hits.metric,
        size=int(index.ntotal),
    )


def default_ids_path(index_path: Path) -> Path:
    """``gallery.faiss`` -> ``gallery.ids.txt``, next to it."""
    return index_path.with_name(index_path.stem + IDS_SUFFIX)


def read_ids(path: Path) -> tuple[dict[int, Path], dict[str, str]]:
    """The ids file: ``{id: image path}`` (relative paths resolved against its folder) and the
    header's fields. Lines are ``ID<TAB>PATH``, or a bare ``PATH`` whose id is its line number
    among the non-comment lines."""
    if not path.is_file():
        raise CLIError(
            f"ids file {path} not found: pass --ids FILE (captum-fam index build writes one)"
        )
    paths: dict[int, Path] = {}
    header: dict[str, str] = {}
    number = 0
    for line_number, line in enumerate(path.read_text().splitlines(), 1):
        if line.startswith(_HEADER):
            header = dict(
                field.split("=", 1) for field in shlex.split(line[len(_HEADER) :]) if "=" in field
            )
        if not line.strip() or line.startswith("#"):
            continue
        key, tab, name = line.partition("\t")
        if not tab:
            key, name = str(number), line
        if not key.strip().lstrip("-").isdigit():
            raise CLIError(f"{path}:{line_number}: expected ID<TAB>PATH, got {line!r}")
        file = Path(name)
        paths[int(key)] = file if file.is_absolute() else path.parent / file
        number += 1
    if not paths:
        raise CLIError(f"ids file {path} lists no images")
    return paths, header


def _ids_text(files: list[Path], ids_path: Path, header: dict[str, str]) -> str:
    root = ids_path.resolve().parent
    lines = [_HEADER + " " + " ".join(f"{key}={shlex.quote(value)}" for key, value in
                                      header.items())]  # fmt: skip
    for key, file in enumerate(files):
        resolved = file.resolve()
        try:
            name = os.path.relpath(resolved, root)
        except ValueError:  # another drive
            name = str(resolved)
        lines.append(f"{key}\t{name}")
    return "\n".join(lines) + "\n"


def _check_header(
    header: dict[str, str], args: argparse.Namespace, preprocess: Any, ids_path: Path
) -> None:
    """Warn when the query is embedded differently from the indexed images."""
    ours = {
        "model": args.model,
        "weights": args.weights or "",
        "similarity": args.similarity,
        "preprocessing": preprocess.description,
    }
    for key, value in ours.items():
        if key in header and header[key] != value:
            warn(
                f"the index was built with {key} {header[key]!r} ({ids_path}), the query uses "
                f"{value!r}: the scores compare embeddings of different kinds"
            )


def _shown(path: Path) -> str:
    """A path as the user would type it: relative to the working folder when inside it."""
    resolved = path.resolve()
    try:
        return str(resolved.relative_to(Path.cwd()))
    except ValueError:
        return str(resolved)


def _write_atomically(path: Path, write: Any) -> None:
    """Write through a temporary file in the same folder: nothing half-written on failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(handle)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.unlink(temporary)


def _import_faiss() -> Any:
    try:
        import faiss
    except ImportError:
        raise CLIError(
            "vector indexes need FAISS: pip install 'captum-fam[index]' (faiss-cpu)"
        ) from None
    return faiss


def _faiss_reason(error: BaseException) -> str:
    """FAISS's messages start with the C++ location; keep what follows it."""
    text = " ".join(str(error).split())
    return text.rsplit(": ", 1)[-1] if "Error in" in text else text
