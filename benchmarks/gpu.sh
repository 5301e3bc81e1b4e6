#!/usr/bin/env bash
# Everything on a fresh GPU machine with no network, in one command:
#   bash benchmarks/gpu.sh [OUT_DIR] [-- benchmark args, e.g. --only rel_pos --quick]
# 1. installs the wheels carried in $LOWBIT_WHEELS (default .whl/: nvidia-cutlass, attn-gym, ml_dtypes),
# 2. builds the CUDA kernels, 3. runs the test suite on the GPU (float64 / exact references, poisoned outputs),
# 4. runs each benchmarks/sanitize_*.py under compute-sanitizer memcheck, 5. runs every benchmark,
# 6. (phase "aoti", not in the default list) builds the C++ op library and runs examples/deploy_aoti.py on CUDA.
# LOWBIT_GPU_PHASES (default "build tests sanitize bench") picks steps, to split the work over several calls;
# LOWBIT_TEST_ARGS the pytest arguments (default: tests), LOWBIT_SANITIZE the sanitizer drivers (names without
# .py, default: every benchmarks/sanitize_*.py), arguments after -- the benchmarks (e.g. --only s8s4_linear).
# A CUDA library built elsewhere for the same paths (LOWBIT_FLEX_CACHE, carried) skips the ~2 minute build.
# OUT_DIR (default $LOWBIT_BENCH_OUT, $OUT, or bench_out) receives results.json, results.md, plots.tar.gz and one
# log: few files, so the device tool can bring them all back.
set -uo pipefail
cd "$(dirname "$0")/.."
out=${1:-${LOWBIT_BENCH_OUT:-${OUT:-bench_out}}}
shift $(( $# > 0 ? 1 : 0 ))
[ "${1:-}" = "--" ] && shift
mkdir -p "$out"
log="$out/gpu_log.txt"
exec > >(tee "$log") 2>&1
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
wheels=${LOWBIT_WHEELS:-.whl}
if compgen -G "$wheels/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --target /tmp/lowbit_site --upgrade "$wheels"/*.whl
  export PYTHONPATH="$PYTHONPATH:/tmp/lowbit_site"
fi
phases=" ${LOWBIT_GPU_PHASES:-build tests sanitize bench} "
status=0
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv
# The CUDA library is needed by every later phase: build it even when the phase list omits it.
echo "== build"; time python3 -m lowbit_flex.cuda_build || status=1
if [[ $phases == *" tests "* ]]; then
  echo "== tests on GPU"
  # One line per failing test as it happens (-v, passes and skips filtered out), so a call cut short by its time
  # limit still names what failed; the summary at the end repeats them with their first error line (-rfE).
  python3 -m pytest -v -rfE --tb=line -p no:cacheprovider --timeout=900 ${LOWBIT_TEST_ARGS:-tests} \
    | grep --line-buffered -v -E " (PASSED|SKIPPED|XFAIL)( |$)" || status=1
fi
if [[ $phases == *" sanitize "* ]]; then
  drivers=(benchmarks/sanitize_*.py)
  [ -n "${LOWBIT_SANITIZE:-}" ] && drivers=($(printf 'benchmarks/%s.py ' $LOWBIT_SANITIZE))
  for s in "${drivers[@]}"; do
    [ -f "$s" ] || { echo "no sanitizer driver $s"; status=1; continue; }
    echo "== compute-sanitizer memcheck $s"
    compute-sanitizer --tool memcheck --error-exitcode 9 python3 "$s" || status=1
  done
fi
if [[ $phases == *" bench "* ]]; then
  echo "== benchmarks"
  python3 -m benchmarks.run --out "$out/bench" "$@" || status=1
  cp "$out"/bench/results.json "$out"/bench/results.md "$out"/ 2>/dev/null
  tar -czf "$out/plots.tar.gz" -C "$out/bench" $(cd "$out/bench" && ls *.png 2>/dev/null) 2>/dev/null
  rm -rf "$out/bench"
fi
if [[ $phases == *" aoti "* ]]; then
  echo "== AOTInductor packages on CUDA (the loader runs in a fresh process without lowbit_flex)"
  python3 -m lowbit_flex.cuda_build --torch-ops || status=1
  python3 -X faulthandler -m examples.deploy_aoti --device cuda ${LOWBIT_AOTI_ARGS:-} || status=1
fi
echo "== done, status $status"
exit $status
