#!/usr/bin/env bash
# Absolute figures on one accelerator in under 10 minutes: train steps at
# batch 256 and 1,024 (lenet5, resnet8x4), the pair scan at n = 20,000
# (200M pairs), ADMM at 1,000,000 x 256 and a short CIFAR-shaped job, written
# to benchmarks/results/accelerator.{md,json} (benchmarks/accelerator_bench.py
# says what each measures).
#
#   benchmarks/on_accelerator.sh                 # full sizes, ~9 minutes max
#   benchmarks/on_accelerator.sh --smoke         # tiny sizes (CPU, < 1 min),
#                                                # to a temporary folder
#   benchmarks/on_accelerator.sh --out DIR       # elsewhere
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$here/.."
python="${PYTHON:-python}"
# The script's own guard (540 s) skips or cuts sections; this one stops the
# process outright if something hangs, so the whole run stays under 10 min.
limit=590
for arg in "$@"; do
  [[ "$arg" == "--smoke" ]] && limit=170
done
exec timeout --signal=INT --kill-after=10 "$limit" \
  "$python" benchmarks/accelerator_bench.py "$@"
