#!/usr/bin/env bash
# One call on a borrowed GPU, at most BUDGET seconds (default 560: a run call of timeout_s 590): first a
# piece of the Fig. 3 MNIST run (README, "Fig. 3 at the paper's scale"), then the checks and
# measurements of the fused step (issue 19, item 3) with the time it leaves.
#
#   bash benchmarks/gpu_check.sh MNIST_DIR [BUDGET] [UPDATE] [PRECISION]
#
# MNIST_DIR: the four MNIST files (qmf_lite.load_mnist verifies them; nothing is downloaded).
# UPDATE, PRECISION: the Fig. 3 run's SGD update and precision (default torch, fp32). The bundle holds
#   the networks of one update and precision: others get a bundle and a data file of their own
#   (book/data/fig3_paper_UPDATE_PRECISION.*), so the plain run's files are never overwritten.
# Output: the log (gpu_check.log) and the Fig. 3 bundle and data file are copied to $OUT when it is
# set (the device tool brings that folder back), and stay in book/data/ either way.
set -uo pipefail
mnist=${1:?usage: bash benchmarks/gpu_check.sh MNIST_DIR [BUDGET] [UPDATE] [PRECISION]}
budget=${2:-560}
update=${3:-torch}
precision=${4:-fp32}
checks=330                       # seconds the checks below take on an H100 (estimate; each has a timeout)
start=$(date +%s)
left() { echo $(( budget - ($(date +%s) - start) )); }
# run MAX CMD...: CMD under a timeout of MAX seconds or what the budget leaves (less 5 s), skipped under 20 s
run() {
  local t=$(( $(left) - 5 )); [ "$1" -lt "$t" ] && t=$1; shift
  if [ "$t" -lt 20 ]; then echo "skipped (no time left): $*"; return 0; fi
  timeout "$t" "$@"; echo "exit status $? ($*), $(( $(date +%s) - start )) s into the call"
}
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
out=${OUT:-.}
log=$out/gpu_check.log
name=book/data/fig3_paper          # the bundle and the data file; other updates and precisions get their own
[ "$update" = torch ] && [ "$precision" = fp32 ] || name=book/data/fig3_paper_${update}_${precision}
bundle=$name.bundle

{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

  # 1. Fig. 3: train until the deadline leaves time for the checks, rewrite the bundle and data file
  deadline=$(( $(left) - checks - 90 ))
  if [ "$deadline" -gt 60 ]; then
    echo "== fig3 piece: deadline ${deadline} s, update $update, precision $precision, bundle $bundle"
    run $(( deadline + 80 )) python3 -m qmf_lite fig3 --profile paper --mnist "$mnist" --deadline "$deadline" \
      --bundle "$bundle" --out "$name.json" --update "$update" --precision "$precision" --quiet
    [ "$out" = . ] || cp "$bundle" "$name.json" "$out"/
  fi

  # 2. the fused kernels compiled, against torch.optim.SGD and float64
  run 100 python3 -m pytest -q -p no:cacheprovider tests/test_fused.py
  # 3. speed: every update and precision in one process, with a per-kernel profile of each step
  B="python3 benchmarks/bench_training.py --device cuda --skip-fig1 --skip-batching"
  run 140 $B --depths 10,110 --steps 10 --compare --profile-step
  # 4. accuracy: five Fig. 3 cells per variant, MNIST, width 2048, 400 steps (a line per variant as it goes)
  run 300 $B --depths 10 --steps 5 --accuracy --mnist "$mnist"
  echo "call ended after $(( $(date +%s) - start )) s"
} 2>&1 | tee "$log"
