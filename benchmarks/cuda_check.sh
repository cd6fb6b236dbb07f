#!/usr/bin/env bash
# The CUDA checks, in one run on a machine with an NVIDIA GPU (the figures of docs/benchmarks.md):
#   1. the tests marked cuda (pytest -m cuda);
#   2. the speed benchmark on the GPU (benchmarks/speed.py --device cuda);
#   3. a dataset job on the GPU under torchrun (NCCL), compared with the same job on the CPU.
# Usage, from the repository root: bash benchmarks/cuda_check.sh [OUTPUT_DIR]
set -uo pipefail
out=${1:-cuda-check}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
python=${PYTHON:-python3}
status=0

nvidia-smi -L | tee "$out/gpu.txt"
$python -c "import torch, captum; print('torch', torch.__version__, '| captum', captum.__version__,
      '|', torch.cuda.get_device_name())" | tee -a "$out/gpu.txt"

echo "== tests marked cuda"
# Only the files that hold them: collecting every test module needs the docs and notebook tools.
mapfile -t files < <(grep -rl --include="test_*.py" "requires_cuda" tests)
$python -m pytest -m cuda -q -p no:cacheprovider "${files[@]}" 2>&1 | tee "$out/cuda_tests.txt" \
    || status=1

echo "== speed benchmark on the GPU"
$python benchmarks/speed.py --device cuda --markdown --pairs 32 --ig-batch 100 --threads 8 \
    2>&1 | tee "$out/speed_cuda.md" || status=1

echo "== dataset job: on the GPU alone, on the GPU under torchrun with NCCL, on the CPU"
work=$(mktemp -d)
cat > "$work/nccl_job.py" <<'PY'
# One NCCL rank: the job's collectives (barriers, broadcasts, gathers) run through NCCL.
import sys

import torch.distributed as dist

dist.init_process_group("nccl")
from captum_fam.cli.main import main  # noqa: E402

print("process group backend:", dist.get_backend())
raise SystemExit(main(sys.argv[1:]))
PY
job=(explain-dataset --shapes 256 --seed 5 --batch-size 64 --no-progress)
$python -m captum_fam "${job[@]}" --device cuda --out "$work/gpu.zarr" 2>&1 \
    | tee "$out/job_gpu.txt" || status=1
$python -m torch.distributed.run --nproc-per-node 1 "$work/nccl_job.py" "${job[@]}" \
    --out "$work/nccl.zarr" 2>&1 | tee "$out/job_nccl.txt" || status=1
$python -m captum_fam "${job[@]}" --device cpu --out "$work/cpu.zarr" 2>&1 \
    | tee "$out/job_cpu.txt" || status=1
$python - "$work" <<'EOF' 2>&1 | tee "$out/job_compare.txt" || status=1
import sys

import numpy as np
import zarr

stores = {n: zarr.open_group(f"{sys.argv[1]}/{n}.zarr", mode="r") for n in ("gpu", "nccl", "cpu")}
for key in ("scores", "maps", "predictions"):
    cpu = np.asarray(stores["cpu"][key][:], dtype=np.float32)
    for name in ("gpu", "nccl"):
        values = np.asarray(stores[name][key][:], dtype=np.float32)
        print(f"{key}: {name} - cpu, shape {values.shape}, "
              f"largest difference {np.abs(values - cpu).max():.2e}")
        assert values.shape == cpu.shape and np.allclose(values, cpu, atol=2e-3), (name, key)
EOF
exit $status
