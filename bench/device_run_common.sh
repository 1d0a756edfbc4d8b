# Shared set-up of the device scripts (run_device_bench.sh, run_device_quant.sh), sourced with the
# log file's name as $1: the staged binaries' environment, $OUT, $B (compactor), $machine, and
# `step NAME CMD...`, which runs a command into $OUT/NAME.out, appends it to the log and records
# its exit status and time in `summary`.
D=${D:-/tmp/d}
export LD_LIBRARY_PATH=$D/lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
export COMPACTOR_SHARED_DIR=${COMPACTOR_SHARED_DIR:-$D/shared} COMPACTOR_BINARY=${COMPACTOR_BINARY:-$D/bin/compactor}
OUT=${OUT:-bench/results}
mkdir -p "$OUT"
B=$D/bin/compactor
machine=$(nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null | head -1 | tr ' ' '-' | tr -cd 'A-Za-z0-9-')
machine=${machine:-unknown-gpu}
log=$OUT/$1
: > "$log"
summary=()

step() {  # step NAME CMD...: runs, logs, records pass/fail
  local name=$1; shift
  echo "=== $name: $*" | tee -a "$log"
  local t0=$SECONDS
  "$@" > "$OUT/$name.out" 2>&1
  local rc=$?
  cat "$OUT/$name.out" >> "$log"
  summary+=("$(printf '%-34s rc=%-3s %4ss' "$name" "$rc" "$((SECONDS - t0))")")
  return $rc
}

nvidia-smi --query-gpu=name,memory.total,clocks.max.sm,clocks.max.mem --format=csv >> "$log" 2>&1
