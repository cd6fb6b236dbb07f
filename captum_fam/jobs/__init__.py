"""Dataset-scale explanations: one job from a laptop to a cluster.

:func:`explain_dataset` explains every item of a map-style dataset against fixed references,
class prototypes or a gallery's top-k, and writes maps, scores, indices and per-item metrics
to a zarr store, in chunks. The same call runs in one process or in every process of a
``torchrun`` job (one machine or several, Gloo on CPU, NCCL on GPU); a rerun resumes where a
failed run stopped. Needs the ``jobs`` extra (``pip install captum-fam[jobs]``: zarr, tqdm).

- :mod:`.job`: :func:`explain_dataset`, the loop;
- :mod:`.sharding`: which chunks and batches each rank explains;
- :mod:`.items`: what a dataset item holds, and checked batches;
- :mod:`.references`: fixed references, prototypes, the sharded gallery search;
- :mod:`.store`: the zarr layout, chunk writes, completion records and resume;
- :mod:`.fingerprint`: the settings a resumed run must share;
- :mod:`.summaries`: scalar summaries reduced over ranks;
- :mod:`.distributed`: process setup from the ``torchrun`` environment.
"""

from captum_fam.jobs.distributed import DistributedContext, JobInterrupted, init_distributed
from captum_fam.jobs.job import DatasetExplanation, explain_dataset
from captum_fam.jobs.references import GalleryShard, shard_rows
from captum_fam.jobs.store import StoreError

__all__ = [
    "DatasetExplanation",
    "DistributedContext",
    "GalleryShard",
    "JobInterrupted",
    "StoreError",
    "explain_dataset",
    "init_distributed",
    "shard_rows",
]
