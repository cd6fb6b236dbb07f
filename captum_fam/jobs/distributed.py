"""Process setup from the environment ``torchrun`` sets, and the few collectives a job uses.

``torchrun`` (``python -m torch.distributed.run``) starts one process per rank with ``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR`` and ``MASTER_PORT`` set. :func:`init_distributed`
reads them and starts the default process group: NCCL when CUDA is available (each process on
the GPU ``LOCAL_RANK``), Gloo on CPU. A plain ``python`` process has no ``WORLD_SIZE`` (or 1)
and needs no setup at all: every collective below is then the identity.
"""

from __future__ import annotations

import atexit
import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["DistributedContext", "JobInterrupted", "init_distributed"]

_TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")


class JobInterrupted(RuntimeError):
    """A collective failed: another rank of the job died, was stopped or timed out."""


@contextlib.contextmanager
def _collective(name: str) -> Iterator[None]:
    try:
        yield
    except RuntimeError as error:  # the backend's error: a closed connection, a timeout
        first_line = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
        raise JobInterrupted(
            f"{name} failed: another rank of the job stopped, failed or timed out (see its "
            "log). Chunks completed so far are kept: run the same job again to resume. "
            f"Backend error: {first_line}"
        ) from error


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a job.

    Attributes:
        rank (int): This process, ``0 <= rank < world_size``.
        world_size (int): Processes in the job (1 without ``torchrun``).
        local_rank (int): This process on its machine (its GPU index with NCCL).
        device (torch.device): Where collective tensors live: the process's GPU with NCCL,
                    the CPU with Gloo or without a process group.
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that creates the store, shows progress and writes summaries."""
        return self.rank == 0

    def barrier(self) -> None:
        if self.world_size > 1:
            with _collective("barrier"):
                dist.barrier()

    def all_reduce_sum(self, tensor: Tensor) -> Tensor:
        """The element-wise sum over ranks (returned on ``tensor``'s device)."""
        if self.world_size == 1:
            return tensor
        moved = tensor.to(self.device)
        with _collective("all_reduce"):
            dist.all_reduce(moved, op=dist.ReduceOp.SUM)
        return moved.to(tensor.device)

    def all_reduce_max(self, value: int) -> int:
        if self.world_size == 1:
            return value
        tensor = torch.tensor([value], dtype=torch.int64, device=self.device)
        with _collective("all_reduce"):
            dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return int(tensor.item())

    def all_gather(self, tensor: Tensor) -> list[Tensor]:
        """Every rank's ``tensor`` (same shape on all ranks), in rank order."""
        if self.world_size == 1:
            return [tensor]
        moved = tensor.contiguous().to(self.device)
        gathered = [torch.empty_like(moved) for _ in range(self.world_size)]
        with _collective("all_gather"):
            dist.all_gather(gathered, moved)
        return [t.to(tensor.device) for t in gathered]

    def all_to_all(self, tensors: list[Tensor]) -> list[Tensor]:
        """Send ``tensors[r]`` to rank r; returns what each rank sent here, in rank order.

        All ranks send tensors of one shape.
        """
        if self.world_size == 1:
            return list(tensors)
        sent = [t.contiguous().to(self.device) for t in tensors]
        received = [torch.empty_like(sent[0]) for _ in range(self.world_size)]
        with _collective("all_to_all"):
            dist.all_to_all(received, sent)
        return [t.to(tensors[0].device) for t in received]

    def broadcast_object(self, value: object) -> object:
        """Rank 0's picklable ``value`` on every rank (a decision: go on, or this error)."""
        if self.world_size == 1:
            return value
        box = [value]
        with _collective("broadcast"):
            dist.broadcast_object_list(box, src=0)
        return box[0]

    def all_gather_object(self, value: object) -> list[object]:
        """Every rank's picklable ``value``, in rank order (small values: settings, digests)."""
        if self.world_size == 1:
            return [value]
        gathered: list[object] = [None] * self.world_size
        with _collective("all_gather"):
            dist.all_gather_object(gathered, value)
        return gathered


def init_distributed(
    backend: str | None = None, timeout: float | None = None
) -> DistributedContext:
    r"""Join the job ``torchrun`` started, or run alone.

    Idempotent: with a process group already initialised (by the caller or an earlier call)
    its rank and size are used as they are. Without ``WORLD_SIZE`` in the environment, or
    with ``WORLD_SIZE=1``, nothing is set up.

    Args:
        backend (str, optional): ``"gloo"`` or ``"nccl"``. Default: NCCL when CUDA is
                    available, Gloo otherwise.
        timeout (float, optional): Seconds a collective waits for the other ranks before
                    failing. Default: PyTorch's (10 minutes for NCCL, 30 for Gloo)

    Returns:
        :class:`DistributedContext` of this process.

    Examples::

        >>> # torchrun --nproc-per-node 2 my_job.py
        >>> context = init_distributed()
        >>> context.rank, context.world_size
        (0, 2)
    """
    if dist.is_available() and dist.is_initialized():
        return _context(dist.get_backend())
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size == 1:
        return DistributedContext()
    missing = [name for name in _TORCHRUN_VARIABLES if name not in os.environ]
    if missing:
        raise ValueError(
            f"WORLD_SIZE={world_size} but {', '.join(missing)} not set: start the processes "
            "with torchrun (python -m torch.distributed.run), which sets RANK, WORLD_SIZE, "
            "MASTER_ADDR and MASTER_PORT"
        )
    if not dist.is_available():
        raise RuntimeError("this PyTorch build has no torch.distributed")
    if backend is None:
        backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend not in ("gloo", "nccl"):
        raise ValueError(f"backend must be 'gloo' or 'nccl'; got {backend!r}")
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(
        backend, timeout=None if timeout is None else timedelta(seconds=float(timeout))
    )
    atexit.register(_destroy)
    return _context(backend)


def _context(backend: str) -> DistributedContext:
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = (
        torch.device("cuda", torch.cuda.current_device())
        if backend == "nccl"
        else torch.device("cpu")
    )
    return DistributedContext(dist.get_rank(), dist.get_world_size(), local_rank, device)


def _destroy() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()
