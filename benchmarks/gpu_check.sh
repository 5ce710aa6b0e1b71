#!/usr/bin/env bash
# The GPU check (benchmarks/gpu_check.py): torch, numpy and pyyaml only, no data files.
#   benchmarks/gpu_check.sh           on a CUDA machine, ~5 minutes on one H200
#   benchmarks/gpu_check.sh --smoke   every part on tiny sizes, on the CPU too (make test runs it)
# Results: $OUT/gpu_check.json when OUT is set, else benchmarks/results/.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi
exec "$PY" -m benchmarks.gpu_check "$@"
