#!/usr/bin/env bash
# The PTQ quality table (issue 4): method × bits × group size -> perplexity on WikiText-2 and on
# the in-domain fixture-val text, ΔPPL against the 16-bit model, bits per weight.
#
#   bench/ptq_quality.sh MODEL OUTDIR [VARIANT...]
#
# Env: BIN (compactor binary, default build/bin/compactor), QUANT_DEVICE (cpu|cuda, where the
# calibration runs, default cpu), EVAL_DEVICE (cpu|cuda, where perplexity runs, default cpu),
# THREADS (CPU threads), CALIB (default c4), CALIB_SAMPLES (128), CALIB_SEQLEN (512), SEED (0).
# A variant is METHOD:wBITS[gGROUP|pc][:FLAG...], e.g. gptq:w4g128, rtn:w8pc, gptq:w4g128:act-order.
# Each variant's quantize and eval JSON land in OUTDIR; the table is printed last (markdown) and
# written to OUTDIR/table.md. Perplexity is the full dataset (VERIFY.md convention, ctx 512).
set -uo pipefail
model=${1:?usage: ptq_quality.sh MODEL OUTDIR [VARIANT...]}
outdir=${2:?usage: ptq_quality.sh MODEL OUTDIR [VARIANT...]}
shift 2
variants=("$@")
if [[ ${#variants[@]} -eq 0 ]]; then
  variants=(rtn:w8pc gptq:w8pc rtn:w4g128 gptq:w4g128 awq:w4g128 rtn:w3g128 gptq:w3g128 awq:w3g128
            rtn:w4g32 gptq:w4g32 gptq:w4g128:act-order rtn:w4pc gptq:w4pc rtn:w2g64 gptq:w2g64)
fi
BIN=${BIN:-build/bin/compactor}
# Calibration runs OpenMP and OpenBLAS threads side by side: spinning waiters of one starve the
# other (16 threads on the H100 host scaled ~1.2x over one thread with the default policy).
export OMP_WAIT_POLICY=${OMP_WAIT_POLICY:-passive}
THREADS=${THREADS:-$(nproc)}
common=(--no-record --quiet --threads "$THREADS")
mkdir -p "$outdir"
work=$(mktemp -d "${TMPDIR:-/tmp}/ptq-quality.XXXXXX")
trap 'rm -rf "$work"' EXIT

# eval MODEL NAME: both perplexities into OUTDIR/NAME.eval.json
evaluate() {
  "$BIN" eval "$1" --tasks ppl:wikitext2,ppl:fixture-val --device "${EVAL_DEVICE:-cpu}" --json "${common[@]}" \
    > "$outdir/$2.eval.json"
}
# The two "ppl" values of an eval JSON, in task order (wikitext2, fixture-val).
ppls() { grep -E '^ *"ppl":' "$1" | sed -E 's/.*: *([0-9.eE+-]+),?/\1/' | tr '\n' ' '; }

t0=$SECONDS
evaluate "$model" base || { echo "error: evaluating the 16-bit model $model failed" >&2; exit 1; }
read -r base_wiki base_val <<< "$(ppls "$outdir/base.eval.json")"
rows=()
for v in "${variants[@]}"; do
  IFS=: read -r method spec flags <<< "$v"
  bits=${spec#w}; bits=${bits%%[gp]*}
  args=(--method "$method" --bits "$bits")
  case $spec in
    *pc) args+=(--per-channel) ;;
    *g*) args+=(--group "${spec##*g}") ;;
  esac
  [[ -n ${flags:-} ]] && for f in ${flags//:/ }; do args+=("--$f"); done
  name=${v//:/_}
  echo "== $name: quantize ${args[*]}" >&2
  if ! "$BIN" quantize "$model" "$work/$name" "${args[@]}" --calib "${CALIB:-c4}" \
      --calib-samples "${CALIB_SAMPLES:-128}" --calib-seqlen "${CALIB_SEQLEN:-512}" --seed "${SEED:-0}" \
      --device "${QUANT_DEVICE:-cpu}" --json "${common[@]}" > "$outdir/$name.quantize.json"; then
    rows+=("| $v | failed | | | | | |"); continue
  fi
  bpw=$(grep -E '"bits_per_weight_linears"' "$outdir/$name.quantize.json" | sed -E 's/.*: *([0-9.]+).*/\1/')
  qsec=$(grep -E '^ *"seconds"' "$outdir/$name.quantize.json" | tail -1 | sed -E 's/.*: *([0-9.]+).*/\1/')
  if ! evaluate "$work/$name" "$name"; then rows+=("| $v | $bpw | eval failed | | | | |"); continue; fi
  read -r wiki val <<< "$(ppls "$outdir/$name.eval.json")"
  rows+=("$(awk -v v="$v" -v b="$bpw" -v w="$wiki" -v bw="$base_wiki" -v f="$val" -v bf="$base_val" -v s="$qsec" \
    'BEGIN { printf "| %s | %.3f | %.3f | %+.3f (%+.2f%%) | %.3f | %+.3f (%+.2f%%) | %.1f |", v, b, w, w - bw, 100 * (w / bw - 1), f, f - bf, 100 * (f / bf - 1), s }')")
  rm -rf "${work:?}/$name"
done
{
  echo "model: $model; calibration ${CALIB:-c4} ${CALIB_SAMPLES:-128}×${CALIB_SEQLEN:-512} seed ${SEED:-0} on ${QUANT_DEVICE:-cpu};" \
       "perplexity on ${EVAL_DEVICE:-cpu}, ctx 512, whole files; $(($SECONDS - t0)) s in all"
  echo
  echo "| variant | bits/weight (linears) | WikiText-2 ppl | ΔPPL | fixture-val ppl | ΔPPL | quantize s |"
  echo "|---|---|---|---|---|---|---|"
  printf '| 16-bit | 16 | %.3f | | %.3f | | |\n' "$base_wiki" "$base_val"
  printf '%s\n' "${rows[@]}"
} | tee "$outdir/table.md"
