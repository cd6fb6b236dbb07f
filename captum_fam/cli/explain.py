"""``captum-fam explain``: why a model finds a query similar to references or gallery items.

The query is explained against each REFERENCE (or its top-k neighbours in ``--gallery``) and
each of those against the query, in one figure, with the scores, the preprocessing that ran and
any notice that makes the result doubtful, also printed.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from captum_fam.backbones import candidate_layers, default_layer
from captum_fam.cli import explain_image_text, options
from captum_fam.cli import index as index_cli
from captum_fam.cli.common import CLIError, add_fam_options, model_errors, warn
from captum_fam.cli.explain_image_text import is_image_text
from captum_fam.cli.figures import checked_figure_path, pair_figure, save_figure
from captum_fam.gallery import embed_images, retrieve
from captum_fam.images import ImageReadError, list_images, read_image
from captum_fam.metrics.diagnostics import reference_dependence
from captum_fam.models import load_model
from captum_fam.similarity import resolve_similarity

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "explain",
        help="explain a query image against reference images, a gallery or captions",
        description="Explain why a model finds QUERY similar to each REFERENCE (or to its "
        "top-k neighbours in --gallery) with FAM maps over both images; with --text and an "
        "image-text model, why QUERY matches each caption (image maps and word shares).",
    )
    parser.add_argument("query", metavar="QUERY", help="query image file")
    parser.add_argument("references", metavar="REFERENCE", nargs="*", help="reference images")
    parser.add_argument("--out", required=True, help="figure file (.png, .pdf, .svg, ...)")
    options.add_model_options(parser)
    add_fam_options(parser)
    options.add_preprocessing_options(parser)
    parser.add_argument(
        "--background",
        metavar="DIR",
        help="a folder of ordinary images: explain why each reference matches rather than a "
        "typical image (their mean score is subtracted; cures maps that ignore the reference)",
    )
    captions = parser.add_argument_group("captions (image-text models)")
    captions.add_argument(
        "--text",
        action="append",
        metavar="TEXT",
        help="explain QUERY against this caption instead of reference images (repeat for more "
        "captions; needs --model shapes-clip or hf-clip:NAME)",
    )
    captions.add_argument(
        "--contrast",
        action="store_true",
        help="with several --text: explain each caption against the others",
    )
    retrieval = parser.add_argument_group("gallery")
    retrieval.add_argument("--gallery", metavar="DIR", help="rank a folder of images instead")
    retrieval.add_argument(
        "--top-k", type=int, metavar="K", help="gallery items to explain (default: 5)"
    )
    retrieval.add_argument(
        "--index",
        metavar="FILE",
        help="search a FAISS index instead (captum-fam index build; needs faiss-cpu)",
    )
    retrieval.add_argument(
        "--ids",
        metavar="FILE",
        help=f"the index's ids file, ID<TAB>PATH lines (default: FILE with {index_cli.IDS_SUFFIX})",
    )
    retrieval.add_argument(
        "--normalized",
        action="store_true",
        help="the index holds unit vectors (a cosine index of lossy codes built elsewhere)",
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, metavar="B", help="images per forward (default: 32)"
    )
    parser.add_argument(
        "--save-maps",
        metavar="FILE",
        help="also save maps, scores and reference names: .pt/.pth (torch.save of a dict) or "
        ".npz (numpy.savez)",
    )
    return parser


def run(args: argparse.Namespace) -> int:
    if args.text is not None:
        return explain_image_text.run(args)
    if args.contrast:
        raise CLIError("--contrast goes with --text captions")
    if is_image_text(args.model):
        raise CLIError(f"--model {args.model} compares images with captions: give --text")
    map_format = options.map_format(args.save_maps)
    out = checked_figure_path(args.out)
    top_k = options.check_explain_args(args)

    # Read every file before loading the model, so that a typo fails fast.
    query_image = read_image(args.query)
    reference_images = [read_image(p) for p in args.references]
    gallery = [] if args.gallery is None else options.gallery_files(args.gallery, list_images)
    background_files = (
        []
        if args.background is None
        else options.gallery_files(args.background, list_images, "--background")
    )

    loaded = load_model(args.model, args.weights, args.layer)
    preprocess = options.preprocessing(loaded.preprocess, args)
    token_layout = loaded.token_layout if args.token_layout is None else args.token_layout
    notices = options.notices(loaded, args, [query_image, *reference_images])
    for notice in notices:
        warn(notice)
    fam = loaded.explainer(
        similarity=args.similarity,
        weighting=args.weighting,
        token_layout=None if token_layout == "none" else token_layout,
    )
    similarity = resolve_similarity(args.similarity)

    query = options.prepare(preprocess, query_image, args.query).unsqueeze(0)
    with model_errors(loaded.hint):
        query_embedding = _probed_embed(fam, query, loaded.layer_name, token_layout)
        background = None
        if background_files:
            background_files, ordinary = _readable(background_files, preprocess)
            background = embed_images(fam, ordinary, args.batch_size)
        if gallery:
            found = retrieve(fam, query, gallery, preprocess, top_k, args.batch_size)
            names = [options.relative(p, Path(args.gallery)) for p in found.paths]
            references = [options.prepare(preprocess, read_image(p), p) for p in found.paths]
            embeddings, maps, scores = found.embeddings, found.maps, found.scores
        elif args.index is not None:
            searched = index_cli.search(fam, query, args, preprocess, top_k)
            names, references = searched.names, searched.references
            embeddings, maps, scores = searched.embeddings, searched.maps, searched.scores
        else:
            names = [Path(p).name for p in args.references]
            references = [
                options.prepare(preprocess, image, path)
                for image, path in zip(reference_images, args.references, strict=True)
            ]
            embeddings = embed_images(fam, references, args.batch_size)
            scores = similarity.score(query_embedding.expand(len(embeddings), -1), embeddings)
        if background is not None or not (gallery or args.index is not None):
            maps = torch.cat(
                [
                    fam.attribute(
                        query.expand(len(chunk), *query.shape[1:]),
                        reference_embeddings=chunk,
                        background_embeddings=background,
                    )
                    for chunk in embeddings.split(args.batch_size)
                ]
            )
        # The other side of each pair: what in the reference matches the query.
        reference_maps = (
            searched.reference_maps
            if args.index is not None and background is None
            else [
                fam.attribute(
                    r.unsqueeze(0),
                    reference_embeddings=query_embedding,
                    background_embeddings=background,
                )[0]
                for r in references
            ]
        )
        dependence = reference_dependence(
            fam, query.expand(len(embeddings), *query.shape[1:]), reference_embeddings=embeddings
        )
    _check_maps(maps, query, loaded)
    if dependence.agnostic and background is None:
        notices = [*notices, dependence.describe()]
        warn(dependence.describe())

    description = preprocess.description
    setting = f"{args.similarity} similarity, {args.weighting} weights"
    model_text = f"{loaded.label}{' (RANDOM WEIGHTS)' if loaded.random_weights else ''}"
    figure = pair_figure(
        preprocess.display(query[0]),
        [preprocess.display(r) for r in references],
        maps,
        reference_maps,
        Path(args.query).name,
        names,
        scores.tolist(),
        args.similarity,
        ranked=bool(gallery) or args.index is not None,
        header=[
            f"FAM · {model_text} · layer {loaded.layer_name} · {setting}",
            f"preprocessing: {description}",
            *(
                [f"contrast: against {len(background_files)} background images"]
                if background is not None
                else []
            ),
        ],
        notices=notices,
    )
    save_figure(figure, out)
    if args.save_maps is not None:
        options.save_maps(
            Path(args.save_maps),
            map_format,
            {
                "query": Path(args.query).name,
                "references": names,
                "scores": scores,
                "maps": maps,
                "reference_maps": reference_maps,
                "model": loaded.label,
                "random_weights": loaded.random_weights,
                "layer": loaded.layer_name,
                "preprocessing": description,
                "similarity": args.similarity,
                "weighting": args.weighting,
                "background": [str(p) for p in background_files],
                "agnostic_correlation": dependence.correlation,
            },
        )

    compared = "the model's output" if loaded.embedding == "output" else "the pooled output map"
    print(f"query {args.query}: model {model_text}, layer {loaded.layer_name}, {setting}")
    print(f"preprocessing: {description}")
    print(f"compared: {compared}, {query_embedding.shape[1]} values per image")
    if background is not None:
        print(
            f"contrast: each map explains the score minus the mean score against "
            f"{len(background_files)} background images in {args.background}"
        )
    for note in loaded.notes:
        print(f"note: {note}")
    if gallery:
        skipped = ""
        if found.skipped:
            more = ", ...)" if len(found.skipped) > 1 else ")"
            skipped = f", {len(found.skipped)} unreadable skipped ({found.skipped[0].name}{more}"
        print(f"gallery {args.gallery}: {found.gallery_size} images{skipped}; top {len(names)}:")
    if args.index is not None:
        unit = "squared L2 distance" if searched.metric == "l2" else "inner product"
        print(f"index {args.index}: {searched.size} vectors, {unit}; top {len(names)}:")
    width = max(len(n) for n in names)
    for rank, (name, score) in enumerate(zip(names, scores.tolist(), strict=True), 1):
        given = ""
        if args.index is not None:
            given = f"  (index: {unit} {float(searched.index_scores[rank - 1]):.4f})"
        print(f"  {rank:>2}. {name:<{width}}  {args.similarity} {score:.4f}{given}")
    print(dependence.describe())
    print(f"figure: {out}")
    if args.save_maps is not None:
        print(f"maps: {Path(args.save_maps).resolve()}")
    return 0


def _readable(paths: list[Path], preprocess: Any) -> tuple[list[Path], list[Tensor]]:
    """The background files that read as images, prepared; the others are skipped, said once."""
    kept, inputs, skipped = [], [], []
    for path in paths:
        try:
            inputs.append(options.prepare(preprocess, read_image(path), path))
        except ImageReadError:
            skipped.append(path)
            continue
        kept.append(path)
    if skipped:
        warn(f"--background: skipped {len(skipped)} unreadable file(s) ({skipped[0].name}, ...)")
    if not kept:
        raise CLIError("none of the --background files could be read as an image")
    return kept, inputs


def _probed_embed(fam: Any, query: Tensor, layer_name: str, token_layout: str | None) -> Tensor:
    """The query's embedding; a layer that gives tokens without a token layout is refused with
    the option that reads them."""
    shapes: list[tuple[int, ...]] = []

    def record(module: Any, inputs: Any, output: Any) -> None:
        if isinstance(output, Tensor):
            shapes.append(tuple(output.shape))

    handle = fam.layer.register_forward_hook(record)
    try:
        embedding = fam.embed(query)
    except ValueError:
        _check_tokens(shapes, layer_name, token_layout)
        raise
    finally:
        handle.remove()
    _check_tokens(shapes, layer_name, token_layout)
    return embedding


def _check_tokens(shapes: list[tuple[int, ...]], layer: str, token_layout: str | None) -> None:
    if shapes and len(shapes[0]) == 3 and token_layout in (None, "none"):
        raise CLIError(
            f"layer {layer} outputs tokens {shapes[0]} (N, T, C), not (N, C, H, W) maps: pass "
            "--token-layout auto to read them as a grid (class and register tokens dropped)"
        )


def _check_maps(maps: Tensor, query: Tensor, loaded: Any) -> None:
    height, width = maps.shape[-2:]
    input_height, input_width = query.shape[-2:]
    if height * width == 1:
        choice = default_layer(loaded.model)
        suggestion = choice.name if choice else ", ".join(candidate_layers(loaded.model)[-3:])
        warn(
            f"layer {loaded.layer_name} gives 1x1 maps: one position cannot show where the "
            f"evidence lies; choose a convolutional block with --layer (e.g. {suggestion}) or a "
            "larger --image-size"
        )
    elif abs(math.log((height / width) / (input_height / input_width))) > math.log(2):
        warn(
            f"layer {loaded.layer_name} gives {height}x{width} maps for a {input_height}x"
            f"{input_width} input: if its output is channels-last (N, h, w, C), as Swin stages "
            "are, pass --token-layout channels-last (or auto)"
        )
