#!/usr/bin/env bash
# The first thing a session lent a GPU runs (under 8 minutes: at most 200 s for the tests, 260 s for the
# benchmark): the CUDA tests (CUDA-graph parity, fusion groups found on CUDA), then the benchmark at the
# GPU sizes of the fused backends' targets (T=100 B=64 I=H=512 fp32 with TF32 off, B=1 inference,
# LayerNorm-LSTM against eager), written to
# benchmarks/results/<device>.json/.md with the test summary in the report's meta ("note").
#
#   bash scripts/gpu_check.sh                              # on the GPU machine
#   bash scripts/gpu_check.sh --device cpu --quick         # the same steps on CPU at tiny sizes (tested)
#   bash scripts/gpu_check.sh --out-dir /tmp/results       # somewhere else than benchmarks/results
#
# Installs nothing: it runs with the machine's torch and the repository's files (PYTHONPATH); only if
# seqforge is not importable that way does it run `python3 -m pip install -e . --no-deps`.
set -euo pipefail
cd "$(dirname "$0")/.."

device=cuda
quick=0
out_dir=benchmarks/results
while [ $# -gt 0 ]; do
  case "$1" in
    --device) device="$2"; shift 2 ;;
    --quick) quick=1; shift ;;
    --out-dir) out_dir="$2"; shift 2 ;;
    *) echo "gpu_check.sh: unknown argument '$1' (expected --device cpu|cuda, --quick, --out-dir DIR)" >&2; exit 2 ;;
  esac
done
case "$device" in cpu|cuda) ;; *) echo "gpu_check.sh: --device: expected cpu or cuda, got '$device'" >&2; exit 2 ;; esac

py="${PYTHON:-python3}"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if ! "$py" -c "import seqforge" 2>/dev/null; then
  "$py" -m pip install -e . --no-deps
fi
if [ "$device" = cuda ] && ! "$py" -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  echo "gpu_check.sh: --device cuda but torch sees no CUDA device" >&2
  exit 1
fi

if [ "$quick" = 1 ]; then
  sizes=(8,4,16 8,1,16,inference); runs=2; warmup=1
else
  sizes=(100,64,512 100,1,512,inference); runs=20; warmup=3
fi

echo "== pytest -m cuda"
set +e
tests_out=$(timeout 200 "$py" -m pytest -q -p no:cacheprovider -m cuda tests/test_fused.py 2>&1)
tests_rc=$?
set -e
echo "$tests_out" | tail -n 20
summary=$(echo "$tests_out" | tail -n 1)

echo "== benchmark ($device, sizes ${sizes[*]})"
timeout 260 "$py" scripts/benchmark.py --device "$device" --cells lstm gru ln_lstm \
  --backends eager script cudnn torch.nn --sizes "${sizes[@]}" --runs "$runs" --warmup "$warmup" \
  --out-dir "$out_dir" --note "pytest -m cuda (exit $tests_rc): $summary" >/dev/null
echo "wrote $out_dir ($(ls -t "$out_dir" | head -n 2 | tr '\n' ' '))"
if [ "$tests_rc" -ne 0 ] && [ "$tests_rc" -ne 5 ]; then  # 5: no test collected
  echo "gpu_check.sh: the CUDA tests failed (exit $tests_rc)" >&2
  exit "$tests_rc"
fi
