"""References, foils and background sets: checked before any forward, paired with queries.

M references pair with N queries when M == 1 (shared), M == N (one each) or N is a multiple of
M: reference j pairs with the N // M consecutive queries ``j * N // M, ...``, the
repeat_interleave order in which NoiseTunnel and Captum's metrics expand inputs. A background
set is different: all of its K items stand against every query.
"""

from __future__ import annotations

from typing import Any, Literal, NamedTuple, overload

from torch import Tensor

from captum_fam._checks import check_like, check_pairing, format_batch, format_embeddings, one_of
from captum_fam._compat import format_additional_forward_args

__all__ = [
    "References",
    "pair_rows",
    "plan_references",
    "reference_forward_args",
    "shared_forward_args",
]


class References(NamedTuple):
    """A checked reference-like argument: model inputs to embed, or embeddings.

    Attributes:
        role (str): ``"reference"``, ``"foil"`` or ``"background"``, for error messages.
        inputs (tuple[Tensor, ...] or None): Inputs structured like the queries'.
        embeddings (Tensor or None): ``(M, D)`` embeddings.
        shared (bool): A background set: every row stands against every query.
    """

    role: str
    inputs: tuple[Tensor, ...] | None
    embeddings: Tensor | None
    shared: bool = False

    @property
    def size(self) -> int:
        """M, the number of references (or background items)."""
        source = self.inputs[0] if self.inputs is not None else self.embeddings
        assert source is not None
        return int(source.shape[0])


@overload
def plan_references(
    n: int,
    batch: tuple[Tensor, ...],
    inputs: Any,
    embeddings: Any,
    role: str,
    required: Literal[True] = True,
) -> References: ...


@overload
def plan_references(
    n: int, batch: tuple[Tensor, ...], inputs: Any, embeddings: Any, role: str, required: bool
) -> References | None: ...


def plan_references(
    n: int,
    batch: tuple[Tensor, ...],
    inputs: Any,
    embeddings: Any,
    role: str,
    required: bool = True,
) -> References | None:
    """Check a pair of alternative arguments (``role`` and ``role_embeddings``).

    Returns None when neither is given and ``required`` is False. A ``"background"`` is a
    shared set: any number of rows, each standing against every query.
    """
    if not required and inputs is None and embeddings is None:
        return None
    one_of(inputs, embeddings, (role, f"{role}_embeddings"))
    shared = role == "background"
    if inputs is not None:
        formatted = format_batch(inputs, role)
        check_like(formatted, batch, role, "inputs")
        if not shared:
            check_pairing(n, formatted[0].shape[0], role)
        return References(role, formatted, None, shared)
    rows = format_embeddings(embeddings, f"{role}_embeddings")
    if not shared:
        check_pairing(n, rows.shape[0], f"{role}_embeddings")
    return References(role, None, rows, shared)


def pair_rows(embeddings: Tensor, n: int) -> Tensor:
    """Row i of the result is the reference of query i (M == 1, M == N or N % M == 0)."""
    m = embeddings.shape[0]
    if m == n:
        return embeddings
    if m == 1:
        return embeddings.expand(n, -1)
    return embeddings.repeat_interleave(n // m, dim=0)


def reference_forward_args(additional_forward_args: Any, n: int, m: int) -> Any:
    """Per-example arguments for a forward of M references: the rows of each group's first query.

    Tensors whose first dimension is N are per-example; anything else is passed unchanged.
    """
    if additional_forward_args is None or m == n:
        return additional_forward_args
    step = n // m if m and n % m == 0 else None
    return tuple(
        _rows_for(arg, n, step) for arg in format_additional_forward_args(additional_forward_args)
    )


def _rows_for(arg: Any, n: int, step: int | None) -> Any:
    if not (isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == n):
        return arg
    if step is None:
        raise ValueError(
            f"additional_forward_args holds a per-example tensor of {n} rows, which a shared "
            "set of a different size cannot use: give such a set as embeddings"
        )
    return arg[::step]


def shared_forward_args(additional_forward_args: Any, n: int, role: str) -> Any:
    """A shared set runs with the shared arguments; per-example ones have no row to give it."""
    for arg in format_additional_forward_args(additional_forward_args):
        if isinstance(arg, Tensor) and arg.dim() > 0 and arg.shape[0] == n:
            raise ValueError(
                f"additional_forward_args holds a per-example tensor of {n} rows, which the "
                f"{role} set cannot use: give {role}_embeddings instead"
            )
    return additional_forward_args
