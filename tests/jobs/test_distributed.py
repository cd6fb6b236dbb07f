"""Two Gloo processes on CPU against one: the same store, a killed rank, a changed world size.

Ranks are started as ``torchrun`` starts them: ``python -m torch.distributed.run`` for the run
whose rank 1 dies, and, for the others, one process per rank with the variables torchrun sets
(RANK, WORLD_SIZE, MASTER_ADDR, ...), which skips the launcher's own start-up. Each launch
has a timeout, and every job has a 60 s collective timeout.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

zarr = pytest.importorskip("zarr")

import job_worker  # noqa: E402 (tests/jobs is on the path: pytest's rootdir-less import mode)

from captum_fam.jobs import StoreError, explain_dataset  # noqa: E402
from captum_fam.jobs.distributed import init_distributed  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
WORKER = Path(job_worker.__file__).resolve()
EXIT_AT = 28  # rank 1 holds chunks 1 (items 8-15) and 3 (24-31): it dies inside chunk 3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def environment(**variables: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    return {**env, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", **variables}


def launch(*args: str, world_size: int = 2, timeout: float = 240) -> tuple[list[int], str]:
    """Start one process per rank with torchrun's variables; their exit codes and output."""
    port = str(free_port())
    ranks = [
        subprocess.Popen(
            [sys.executable, str(WORKER), *args],
            env=environment(
                RANK=str(rank),
                LOCAL_RANK=str(rank),
                WORLD_SIZE=str(world_size),
                LOCAL_WORLD_SIZE=str(world_size),
                MASTER_ADDR="127.0.0.1",
                MASTER_PORT=port,
            ),  # fmt: skip
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in range(world_size)
    ]
    try:
        outputs = [rank.communicate(timeout=timeout)[0] for rank in ranks]
    finally:
        for rank in ranks:
            rank.kill()
    return [rank.returncode for rank in ranks], "".join(outputs)


def torchrun(*args: str, timeout: float = 240) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
               "--master-addr", "127.0.0.1", "--master-port", str(free_port()), str(WORKER),
               *args]  # fmt: skip
    return subprocess.run(command, env=environment(), cwd=ROOT, capture_output=True, text=True,
                          timeout=timeout)  # fmt: skip


def arrays(path: Path) -> dict[str, np.ndarray]:
    group = zarr.open_group(path, mode="r")
    return {name: group[name][...] for name in group.array_keys()}


def attributes(path: Path) -> dict:
    return zarr.open_group(path, mode="r").attrs.asdict()


def tree_digest(path: Path) -> str:
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode() + file.read_bytes())
    return digest.hexdigest()


def assert_same_arrays(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert sorted(a) == sorted(b)
    for name in a:
        assert a[name].dtype == b[name].dtype, name
        assert np.array_equal(a[name], b[name]), name  # bit for bit, NaN fills excluded


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The two-process runs (a killed one, then its rerun and two fresh jobs) and one process."""
    root = tmp_path_factory.mktemp("jobs")
    paths = {name: root / f"{name}.zarr" for name in ("killed", "p2", "g2", "p1", "g1")}
    killed = torchrun(f"prototypes={paths['killed']}", "--exit-at", str(EXIT_AT))
    digests_after_kill = np.asarray(zarr.open_group(paths["killed"])["chunk_digest"][:])
    codes, output = launch(
        f"prototypes={paths['killed']}", f"prototypes={paths['p2']}", f"gallery={paths['g2']}"
    )
    assert codes == [0, 0], output[-4000:]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for kind in ("prototypes", "gallery"):
            fam, dataset, options = job_worker.job(kind)
            explain_dataset(fam, dataset, paths[f"{kind[0]}1"], **options)
    finally:
        torch.set_num_threads(threads)
    reports = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    return paths, killed, digests_after_kill, reports


def test_two_processes_equal_one(runs):
    paths, *_ = runs
    for kind in "pg":
        two, one = arrays(paths[f"{kind}2"]), arrays(paths[f"{kind}1"])
        assert_same_arrays(two, one)
        assert two["item_index"].tolist() == list(range(job_worker.ITEMS))
        assert attributes(paths[f"{kind}2"])["summary"] == attributes(paths[f"{kind}1"])["summary"]
    assert arrays(paths["g2"])["indices"].shape == (job_worker.ITEMS, 3)  # sharded top-3


def test_a_killed_rank_fails_loudly_and_the_rerun_completes_the_store(runs):
    paths, killed, digests_after_kill, reports = runs
    assert killed.returncode != 0
    assert "exitcode  : 17" in killed.stderr or "exitcode: 17" in killed.stderr, killed.stderr
    # Rank 1 completed chunk 1, died inside chunk 3; rank 0 finished 0, 2 and 4 before the
    # launcher stopped it (or is stopped on its way): chunk 3 is never complete.
    done = digests_after_kill != 0
    assert done[1] and not done[3]
    assert reports[0] == {"job": "prototypes", "computed": int((~done).sum()),
                          "resumed": int(done.sum())}  # fmt: skip
    assert_same_arrays(arrays(paths["killed"]), arrays(paths["p2"]))
    assert attributes(paths["killed"]) == attributes(paths["p2"])  # summary, settings, status
    assert arrays(paths["killed"])["item_index"].tolist() == list(range(job_worker.ITEMS))


def test_a_changed_world_size_is_refused(runs):
    paths, *_ = runs
    before = tree_digest(paths["p2"])
    fam, dataset, options = job_worker.job("prototypes")
    with pytest.raises(StoreError, match=r"world_size \(store: 2, now: 1\)"):
        explain_dataset(fam, dataset, paths["p2"], **options)
    assert tree_digest(paths["p2"]) == before


def test_single_process_needs_no_setup(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    context = init_distributed()
    assert (context.rank, context.world_size, context.is_main) == (0, 1, True)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.delenv("MASTER_PORT", raising=False)
    with pytest.raises(ValueError, match="MASTER_PORT not set: start the processes with torchrun"):
        init_distributed()
