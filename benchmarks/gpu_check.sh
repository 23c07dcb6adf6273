#!/usr/bin/env bash
# The device checks of issue 13, as ONE prepared script for a session that has a CUDA GPU.
#
#   bash benchmarks/gpu_check.sh [OUT]        # OUT: where the results go (default: $OUT,
#                                             # else benchmarks/results/gpu_check)
#
# Runs, each under its own timeout so that one failure does not stop the rest (about 8 min
# in all on one GPU; the timeouts add up to 9.5 min):
#   1. the solver benchmark at batch 256, width 1,024 on CUDA, deqlib against torchdeq's
#      defaults and its best Anderson, plus deqlib's solvers reading the stopping test every
#      10 steps against every step (the host synchronisation), and Picard with a sync every
#      step against every 10 steps                  -> benchmarks/results/solvers_cuda.json
#   2. the DELM's MNIST-shape (m = 784) full-batch step against a linear step
#                                                    -> benchmarks/results/delm_step_cuda.json
#   3. the library's tests, which include the CUDA-only ones (skipped on a CPU)
#   4. chapter 4 (training a DEQ) executed with the device CUDA (the chapter picks CUDA when
#      present), into OUT/04_training_a_deq_cuda.ipynb: the committed chapter is not touched.
# A summary with the device, the date and each step's exit status and time is written to
# OUT/gpu_check.txt, and the JSON results are copied to OUT.
set -u
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-benchmarks/results/gpu_check}}
if [ -z "${PY:-}" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python; fi
fi
mkdir -p "$OUT"
SUMMARY="$OUT/gpu_check.txt"

{
  echo "gpu_check $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>&1
  "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda,
      'available', torch.cuda.is_available())"
} > "$SUMMARY" 2>&1

step() {   # step NAME SECONDS COMMAND...: run with a timeout, log, record status and time
  local name=$1 limit=$2
  shift 2
  local start=$SECONDS
  timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc after $((SECONDS - start)) s (limit $limit s)" | tee -a "$SUMMARY"
}

"$PY" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" || {
  echo "no CUDA device: nothing to check" | tee -a "$SUMMARY"; exit 1; }
# torchdeq is the benchmark's peer (pure Python); without it (no network) the solver
# benchmark still runs deqlib's solvers and says that torchdeq was skipped.
"$PY" -c "import torchdeq" 2>/dev/null || "$PY" -m pip install -q -r benchmarks/requirements.txt \
  >> "$SUMMARY" 2>&1 || echo "torchdeq unavailable: its contenders are skipped" >> "$SUMMARY"

step solvers 240 "$PY" benchmarks/bench_solvers.py --device cuda --shape 256x1024 \
  --check-every 10 --repeats 3
step delm_step 90 "$PY" benchmarks/bench_delm_step.py --device cuda --repeats 5
step tests 150 "$PY" -m pytest tests -m "not book and not browser" -q -x -p no:cacheprovider
step chapter4 90 "$PY" -c "
import sys, nbformat, nbclient
nb = nbformat.read('book/04_training_a_deq.ipynb', as_version=4)
nbclient.NotebookClient(nb, timeout=80, kernel_name='python3',
                        resources={'metadata': {'path': 'book'}}).execute()
nbformat.write(nb, sys.argv[1])
print([o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.outputs
       if 'cuda' in str(o.get('text', '')).lower()][:3])
" "$OUT/04_training_a_deq_cuda.ipynb"

cp benchmarks/results/solvers_cuda.json benchmarks/results/delm_step_cuda.json "$OUT"/ \
  2>/dev/null
grep -h "^ratio" "$OUT/solvers.log" "$OUT/delm_step.log" >> "$SUMMARY" 2>/dev/null
grep -E "passed|failed" "$OUT/tests.log" | tail -1 >> "$SUMMARY"
cat "$SUMMARY"
