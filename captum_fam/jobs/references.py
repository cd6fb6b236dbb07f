"""What each item is explained against: fixed references, class prototypes, or a gallery.

All three are embeddings in the space of ``fam.embed``; each turns a batch's queries into
``R`` maps per item, their scores and the reference rows they explain:

- :class:`FixedReferences`: one embedding shared by every item, or one per item (R = 1);
- :class:`PrototypeReferences`: each item against the prototype of its own label (R = 1),
  with the class of the most similar prototype as a prediction;
- :class:`GalleryReferences`: each item against its top-k gallery items (R = k). The gallery
  is sharded across ranks: each rank scores every rank's queries against its own rows
  (the queries' embeddings are gathered), sends each query's local top-k back to the rank that
  holds its activations, which merges them and computes the maps there. Ties go to the lower
  gallery index, so the result does not depend on how the gallery is split.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from captum_fam._checks import format_embeddings
from captum_fam._engine import Engine, Queries
from captum_fam._engine.references import plan_references
from captum_fam.jobs.distributed import DistributedContext
from captum_fam.jobs.fingerprint import tensor_digest

__all__ = [
    "FixedReferences",
    "GalleryReferences",
    "GalleryShard",
    "Explained",
    "PrototypeReferences",
    "shard_rows",
]

# Query x gallery pairs scored at once while searching a gallery shard (bounds the memory of
# the repeated embeddings that ``engine.score_matrix`` builds).
_PAIRS_PER_BLOCK = 1 << 16


@dataclass
class Explained:
    """One batch's results: ``maps (B, R, *S)``, ``scores (B, R)``, ``indices (B, R)``."""

    maps: Tensor
    scores: Tensor
    indices: Tensor
    predictions: Tensor | None = None


@dataclass(frozen=True)
class GalleryShard:
    r"""This rank's part of a gallery too large for one process.

    Args:
        embeddings (Tensor): ``(G_r, D)`` the rows this rank holds.
        start (int): The gallery index of its first row.
        size (int): Rows in the whole gallery. The shards of all ranks must tile
                    ``[0, size)`` exactly.

    Examples::

        >>> rows = shard_rows(total, context.rank, context.world_size)
        >>> shard = GalleryShard(load_rows(rows.start, rows.stop), rows.start, total)
    """

    embeddings: Tensor
    start: int
    size: int


def shard_rows(size: int, rank: int, world_size: int) -> range:
    """Rank ``rank``'s contiguous share of ``size`` gallery rows (sizes differ by at most 1)."""
    step, extra = divmod(size, world_size)
    start = rank * step + min(rank, extra)
    return range(start, start + step + (rank < extra))


class FixedReferences:
    """Every item against one shared embedding ``(1, D)``, or item i against row i ``(N, D)``."""

    collective = False
    count = 1
    predicts = False

    def __init__(self, embeddings: Any, items: int) -> None:
        rows = format_embeddings(embeddings, "reference_embeddings")
        if rows.shape[0] not in (1, items):
            raise ValueError(
                f"reference_embeddings must have 1 row (shared by every item) or one per item "
                f"({items}); got {rows.shape[0]}"
            )
        self.rows = rows.detach()

    def fingerprint(self, context: DistributedContext) -> dict[str, Any]:
        return {"references": "fixed", "references_digest": tensor_digest([self.rows])}

    def constants(self) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
        if self.rows.shape[0] != 1:
            return {}  # one row per item: the caller's, not repeated in the store
        values = self.rows.cpu().float().numpy()
        return {"reference_embeddings": (values, ("reference_row", "channel"))}

    def explain(self, engine: Engine, queries: Queries, indices: range, labels: Any,
                explain_args: dict[str, Any]) -> Explained:  # fmt: skip
        shared = self.rows.shape[0] == 1
        rows = self.rows if shared else self.rows[indices.start : indices.stop]
        rows = _paired(engine, queries, rows.to(queries.embeddings))
        maps = engine.explain(queries, rows, **explain_args)
        index = torch.zeros(queries.count, 1, dtype=torch.int64) if shared else (
            torch.arange(indices.start, indices.stop, dtype=torch.int64)[:, None]
        )  # fmt: skip
        return Explained(maps, engine.scores(queries.embeddings, rows)[:, None], index)


class PrototypeReferences:
    """Each item against the prototype of its label; ``predictions``: the closest class."""

    collective = False
    count = 1
    predicts = True

    def __init__(self, prototypes: Any, classes: Any) -> None:
        rows = format_embeddings(prototypes, "prototypes")
        if classes is None:
            classes = torch.arange(rows.shape[0])
        if not isinstance(classes, Tensor) or classes.shape != (rows.shape[0],):
            raise ValueError(
                f"classes must be a tensor of {rows.shape[0]} labels, one per prototype "
                "(as class_prototypes returns them)"
            )
        if classes.is_floating_point() or classes.dtype == torch.bool:
            raise TypeError(f"classes must be integer labels; got {classes.dtype}")
        if len(set(classes.tolist())) != len(classes):
            raise ValueError("classes must not repeat a label")
        self.rows, self.classes = rows.detach(), classes.to(torch.int64).cpu()
        self._row_of = {label: row for row, label in enumerate(self.classes.tolist())}

    def fingerprint(self, context: DistributedContext) -> dict[str, Any]:
        digest = tensor_digest([self.rows, self.classes])
        return {"references": "prototypes", "references_digest": digest}

    def constants(self) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
        return {
            "prototypes": (self.rows.cpu().float().numpy(), ("class", "channel")),
            "classes": (self.classes.numpy(), ("class",)),
        }

    def explain(self, engine: Engine, queries: Queries, indices: range, labels: Any,
                explain_args: dict[str, Any]) -> Explained:  # fmt: skip
        if labels is None:
            raise ValueError(
                "prototypes need a label per item: dataset items must be (inputs, label)"
            )
        unknown = [(i, lab) for i, lab in zip(indices, labels.tolist(), strict=True)
                   if lab not in self._row_of]  # fmt: skip
        if unknown:
            item, label = unknown[0]
            raise ValueError(
                f"dataset item {item} has label {label}, which has no prototype; classes: "
                f"{self.classes.tolist()}"
            )
        index = torch.tensor([self._row_of[lab] for lab in labels.tolist()], dtype=torch.int64)
        prototypes = self.rows.to(queries.embeddings)
        rows = _paired(engine, queries, prototypes[index.to(prototypes.device)])
        maps = engine.explain(queries, rows, **explain_args)
        closest = engine.score_matrix(queries.embeddings, prototypes).argmax(dim=1).cpu()
        scores = engine.scores(queries.embeddings, rows)[:, None]
        return Explained(maps, scores, index[:, None], self.classes[closest])


class GalleryReferences:
    """Each item against its top-k gallery rows, the gallery sharded across ranks."""

    collective = True
    predicts = False

    def __init__(self, gallery: Any, k: int, context: DistributedContext) -> None:
        if isinstance(gallery, GalleryShard):
            shard = gallery
            rows = format_embeddings(shard.embeddings, "gallery_embeddings")
        else:
            rows = format_embeddings(gallery, "gallery_embeddings")
            part = shard_rows(rows.shape[0], context.rank, context.world_size)
            shard = GalleryShard(rows, part.start, rows.shape[0])
            rows = rows[part.start : part.stop]
        self.rows, self.start, self.size = rows.detach(), int(shard.start), int(shard.size)
        self._moved: Tensor | None = None
        self._digest = tensor_digest([self.rows])
        shards = context.all_gather_object(
            (self.start, int(rows.shape[0]), self.size, self._digest)
        )
        expected = 0
        tiles: list[tuple[int, int, int, str]] = sorted(shards)  # type: ignore[arg-type, type-var]
        for start, length, size, _ in tiles:
            if size != self.size or start != expected:
                raise ValueError(
                    "the gallery shards of the ranks must tile [0, size) exactly, with one "
                    f"size; got (start, rows, size) = {[s[:3] for s in shards]}"  # type: ignore[index]
                )
            expected = start + length
        if expected != self.size:
            raise ValueError(f"the gallery shards cover {expected} rows of size={self.size}")
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= self.size:
            raise ValueError(f"k must be an int between 1 and the gallery size {self.size}; "
                             f"got {k!r}")  # fmt: skip
        self.k, self.count = k, k
        # Candidates merge in gallery order: the rank holding the lowest rows first.
        self._rank_order = sorted(range(len(shards)), key=lambda r: shards[r][0])  # type: ignore[index]
        combined = hashlib.sha256("".join(shards[r][3] for r in self._rank_order).encode())  # type: ignore[index]
        self._gallery_digest = combined.hexdigest()[:16]

    def fingerprint(self, context: DistributedContext) -> dict[str, Any]:
        return {"references": f"gallery top-{self.k}", "references_digest": self._gallery_digest,
                "gallery_size": self.size}  # fmt: skip

    def constants(self) -> dict[str, tuple[np.ndarray, tuple[str, ...]]]:
        return {}

    def explain_step(
        self,
        engine: Engine,
        queries: Queries | None,
        capacity: int,
        dim: int,
        dtype: torch.dtype,
        device: torch.device,
        context: DistributedContext,
        explain_args: dict[str, Any],
    ) -> Explained | None:
        """One lockstep round over all ranks; ``queries`` None when this rank has no batch.

        Every tensor has a fixed shape (``capacity`` queries of width ``dim``), as collectives
        need, and lives on ``device``, where the model runs.
        """
        n = 0 if queries is None else queries.count
        padded = torch.zeros(capacity, dim, dtype=dtype, device=device)
        if queries is not None:
            padded[:n] = queries.embeddings
        everyone = context.all_gather(padded)
        counts = [int(c) for c in context.all_gather(torch.tensor([n], dtype=torch.int64))]
        gallery = self._gallery(device, dtype)
        sends: list[list[Tensor]] = [[], [], []]
        for rank in range(context.world_size):
            found = self._local_top_k(engine, gallery, everyone[rank][: counts[rank]], capacity)
            for slot, tensor in zip(sends, found, strict=True):
                slot.append(tensor)
        got_values, got_indices, got_rows = (context.all_to_all(slot) for slot in sends)
        if queries is None:
            return None
        order = self._rank_order
        values = torch.cat([got_values[r][:n] for r in order], dim=1)
        indices = torch.cat([got_indices[r][:n] for r in order], dim=1)
        rows = torch.cat([got_rows[r][:n] for r in order], dim=1)
        ranked = torch.sort(values, dim=1, descending=True, stable=True).indices[:, : self.k]
        top_rows = rows.gather(1, ranked[:, :, None].expand(-1, -1, dim))
        top_rows = top_rows.to(queries.embeddings)
        maps = torch.cat(
            [engine.explain(queries, top_rows[:, j], **explain_args) for j in range(self.k)],
            dim=1,
        )
        return Explained(maps, values.gather(1, ranked), indices.gather(1, ranked))

    def _gallery(self, device: torch.device, dtype: torch.dtype) -> Tensor:
        """This shard on the model's device and in the embeddings' dtype, moved once."""
        if self._moved is None or (self._moved.device, self._moved.dtype) != (device, dtype):
            self._moved = self.rows.to(device=device, dtype=dtype)
        return self._moved

    def _local_top_k(
        self, engine: Engine, gallery: Tensor, embeddings: Tensor, capacity: int
    ) -> tuple[Tensor, Tensor, Tensor]:
        """Each query's top-k over this shard, padded to ``(capacity, k)``: scores, gallery
        indices and rows (``-inf``, -1 and zeros where the shard has fewer than k rows)."""
        k, dim, device = self.k, gallery.shape[1], embeddings.device
        values = torch.full((capacity, k), float("-inf"), dtype=embeddings.dtype, device=device)
        indices = torch.full((capacity, k), -1, dtype=torch.int64, device=device)
        rows = torch.zeros(capacity, k, dim, dtype=embeddings.dtype, device=device)
        n, size = embeddings.shape[0], gallery.shape[0]
        if n == 0 or size == 0:
            return values, indices, rows
        best = torch.empty(n, 0, dtype=embeddings.dtype, device=device)
        best_index = torch.empty(n, 0, dtype=torch.int64, device=device)
        step = max(1, _PAIRS_PER_BLOCK // n)
        for start in range(0, size, step):
            block = gallery[start : start + step]
            scores = engine.score_matrix(embeddings, block)
            block_index = torch.arange(start, start + block.shape[0], device=device).expand(n, -1)
            # Candidates in ascending gallery index among equal scores; a stable sort keeps
            # that order, so ties go to the lower index whatever the blocks and shards.
            candidates = torch.cat([best, scores], dim=1)
            candidate_index = torch.cat([best_index, block_index], dim=1)
            order = torch.sort(candidates, dim=1, descending=True, stable=True).indices[:, :k]
            best, best_index = candidates.gather(1, order), candidate_index.gather(1, order)
        kept = best.shape[1]
        values[:n, :kept] = best
        indices[:n, :kept] = best_index + self.start
        rows[:n, :kept] = gallery[best_index]
        return values, indices, rows


def _paired(engine: Engine, queries: Queries, rows: Tensor) -> Tensor:
    """Rows paired with the queries, checked as ``fam.attribute`` checks them."""
    plan = plan_references(queries.count, (queries.embeddings,), None, rows, "reference")
    return engine.rows(plan, queries.embeddings)
