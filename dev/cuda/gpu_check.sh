#!/usr/bin/env bash
# dev/cuda/gpu_check.sh — every check that needs a GPU, in one run (under 8 minutes on an H100):
#   1. build everything (make all cuda cuda-dev)        5. training, CPU against GPU: every mixer pure and
#   2. token shards (data/prepare)                         3:1 over 4 layers, 30 steps from the same init
#   3. ./test_gla_cu, the GPU test suite                6. GPU resume bit-identity (20 steps = 10 + 10)
#   4. the dev/cuda/* kernel experiments' own checks    7. a GPU checkpoint resumed and evaluated by the CPU
#                                                       8. tokens/s of every mixer at T = 2048 (d 512, L 12)
# Every step runs under `timeout` and logs into ${OUT:-gpu_check_logs}/<step>.log; the summary (also
# printed) is summary.txt there. A failed step is reported and counted, the others still run; the exit
# status is non-zero when any failed. Needs nvcc and a GPU, no network. The text: $TINYSHAKESPEARE,
# data/tinyshakespeare/input.txt, shared/data/tinyshakespeare.txt or ../shared/data/tinyshakespeare.txt;
# else the byte-level shards already in data/tinyshakespeare/ (e.g. brought along with the checkout);
# else a synthetic text made of the repository's own sources (the losses are then not Tiny Shakespeare's).
#
#   dev/cuda/gpu_check.sh                 # from anywhere in the repository
#   OUT=/tmp/logs dev/cuda/gpu_check.sh
set -euo pipefail
cd "$(dirname "$0")/../.."

LOG_DIR=${OUT:-gpu_check_logs}
mkdir -p "$LOG_DIR"
LOG_DIR=$(cd "$LOG_DIR" && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")   # the runs' checkpoints: large, not kept
trap 'rm -rf "$WORK"' EXIT
SUMMARY=$LOG_DIR/summary.txt
: > "$SUMMARY"
START=$SECONDS
failures=0
CORES=$(nproc)
CPU_THREADS=$((CORES > 2 ? CORES - 1 : 1))   # one core left for the GPU run beside the CPU run

say() { echo "$*" | tee -a "$SUMMARY"; }

# run NAME LIMIT CMD...: CMD under `timeout LIMIT` seconds, its output into $LOG_DIR/NAME.log;
# returns CMD's exit status (124: timed out)
run() {
    local name=$1 limit=$2 t0=$SECONDS rc=0
    shift 2
    echo "\$ $*" > "$LOG_DIR/$name.log"
    timeout --kill-after=10 "$limit" "$@" >> "$LOG_DIR/$name.log" 2>&1 || rc=$?
    echo "(exit $rc after $((SECONDS - t0)) s$([ $rc -eq 124 ] && echo ", timed out at $limit s"))" >> "$LOG_DIR/$name.log"
    return $rc
}

# step NAME LIMIT CMD...: run, and say ok or FAIL (with the log's tail) in the summary
step() {
    local name=$1 t0=$SECONDS rc=0
    run "$@" || rc=$?
    if [ $rc -eq 0 ]; then
        say "ok    $name ($((SECONDS - t0)) s)"
    else
        say "FAIL  $name (exit $rc$([ $rc -eq 124 ] && echo ', timed out'); log $LOG_DIR/$name.log)"
        tail -n 15 "$LOG_DIR/$name.log" | sed 's/^/        /' | tee -a "$SUMMARY"
        failures=$((failures + 1))
    fi
    return $rc
}
bad() { say "FAIL  $*"; failures=$((failures + 1)); }

# the training loss printed at step S ("step    S/N | loss X | ..."), and the validation loss at S
loss_at() { sed -n "s/^step *$2\/[0-9]* | loss \([^ ]*\) .*/\1/p" "$1" | tail -n 1; }
val_at() { sed -n "s/^step *$2 | val loss \([^ ]*\) .*/\1/p" "$1" | tail -n 1; }
# |a − b| / |a| (printed), exit status 0 when at most tol
rel_diff() { awk -v a="$1" -v b="$2" -v tol="$3" 'BEGIN { d = a - b; if (d < 0) d = -d; if (a < 0) a = -a;
             r = a > 0 ? d / a : d; printf "%.1e", r; exit !(r <= tol) }'; }

say "== gpu_check: $(date -u '+%Y-%m-%d %H:%M UTC'), $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet 2>/dev/null || echo ' + local changes'), logs in $LOG_DIR"
{ nvidia-smi || true; nvcc --version || true; } > "$LOG_DIR/environment.log" 2>&1
ARCH=sm_90
cap=$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader 2>/dev/null | head -n 1 | tr -d ' .' || true)
[ -n "$cap" ] && ARCH=sm_$cap
say "GPU: $(nvidia-smi --query-gpu=name,memory.total --format=csv,noheader 2>/dev/null | head -n 1 || echo 'nvidia-smi not found') ($ARCH), $CORES CPU cores"

# ---------------------------------------------------------------------------------------------------
say "== 1. build"
step build 420 make -j"$CORES" all cuda cuda-dev CUDA_ARCH="$ARCH" || { say "the build failed: nothing else can run"; exit 1; }

say "== 2. data"
text=""
for f in "${TINYSHAKESPEARE:-}" data/tinyshakespeare/input.txt shared/data/tinyshakespeare.txt ../shared/data/tinyshakespeare.txt; do
    if [ -n "$f" ] && [ -s "$f" ]; then text=$f; break; fi
done
SHARDS=(data/tinyshakespeare/tiny_shakespeare_train.bin data/tinyshakespeare/tiny_shakespeare_val.bin data/tokenizer_bytes.bin)
if [ -n "$text" ]; then
    step data 120 ./data/prepare "$text" || { say "no token shards: nothing else can run"; exit 1; }
elif [ -s "${SHARDS[0]}" ] && [ -s "${SHARDS[1]}" ] && [ -s "${SHARDS[2]}" ]; then
    say "note  no text here: the byte-level shards already in data/ are used as they are"
else
    text=$WORK/synthetic.txt
    : > "$text"
    while [ "$(stat -c %s "$text")" -lt 1115394 ]; do cat README.md model.h train_gla.c test_gla.c train_gla.cu >> "$text"; done
    say "note  no Tiny Shakespeare here: a synthetic text instead (the repository's sources, $(stat -c %s "$text") bytes)"
    step data 120 ./data/prepare "$text" || { say "no token shards: nothing else can run"; exit 1; }
fi

# ---------------------------------------------------------------------------------------------------
say "== 3. the GPU test suite"
step test_gla_cu 360 ./test_gla_cu || true
say "      $(grep -E '^[0-9]+ passed, [0-9]+ failed' "$LOG_DIR/test_gla_cu.log" | tail -n 1 || echo 'no summary line')"
grep '^FAIL' "$LOG_DIR/test_gla_cu.log" | head -n 40 | sed 's/^/        /' | tee -a "$SUMMARY" || true

say "== 4. dev/cuda kernel experiments"
for exe in dev/cuda/*; do
    case "$exe" in *.*) continue ;; esac
    if [ ! -f "$exe" ] || [ ! -x "$exe" ]; then continue; fi
    step "dev_cuda_$(basename "$exe")" 120 "$exe" || true
done

# ---------------------------------------------------------------------------------------------------
say "== 5. training, CPU against GPU: 30 steps from the same init (seed 1), L=4 d=128 B=8 T=128"
TRAIN=(-L 4 -d 128 -b 8 -T 128 -n 30 -u 5 -v 0 -m 4 -s 0 -G 0 -k 0 --seed 1)
say "$(printf '%-16s %-6s %10s %10s %10s %10s %9s' mixer layout 'CPU step1' 'GPU step1' 'CPU step30' 'GPU step30' 'rel diff')"
for m in hgrn retnet gla hgrn2 deltanet gated_deltanet attn; do
    for layout in pure 3; do
        if [ $m = attn ]; then [ $layout = pure ] || continue; pat=attn; else pat=$m:$layout; fi
        name=train_${m}_$layout
        rc_gpu=0
        rc_cpu=0
        run "${name}_gpu" 150 ./train_gla_cu -p "$pat" "${TRAIN[@]}" --out "$WORK/${name}_gpu" &
        gpu_pid=$!
        run "${name}_cpu" 240 env OMP_NUM_THREADS="$CPU_THREADS" ./train_gla -p "$pat" "${TRAIN[@]}" --out "$WORK/${name}_cpu" || rc_cpu=$?
        wait $gpu_pid || rc_gpu=$?
        c1=$(loss_at "$LOG_DIR/${name}_cpu.log" 1)
        g1=$(loss_at "$LOG_DIR/${name}_gpu.log" 1)
        c30=$(loss_at "$LOG_DIR/${name}_cpu.log" 30)
        g30=$(loss_at "$LOG_DIR/${name}_gpu.log" 30)
        row=$(printf '%-16s %-6s %10s %10s %10s %10s' $m $layout "${c1:--}" "${g1:--}" "${c30:--}" "${g30:--}")
        if [ $rc_cpu -ne 0 ] || [ $rc_gpu -ne 0 ] || [ -z "$c30" ] || [ -z "$g30" ]; then
            bad "$row   (run failed: CPU exit $rc_cpu, GPU exit $rc_gpu; logs ${name}_{cpu,gpu}.log)"
        elif d=$(rel_diff "$c30" "$g30" 1e-3); then
            say "$row $(printf '%9s' "$d")"
        else
            bad "$row $(printf '%9s' "$d")   > 1e-3"
        fi
    done
done

# ---------------------------------------------------------------------------------------------------
say "== 6. GPU resume bit-identity: 20 steps straight against 10, stop, resume, 10 more (all seven mixers)"
ALL_SEVEN=hgrn,retnet,gla,attn,hgrn2,deltanet,gated_deltanet
RESUME=(-p "$ALL_SEVEN" -L 7 -d 128 -b 8 -T 128 -n 20 -u 5 -v 0 -m 4 -s 0 -G 0 -k 0 --seed 3)
if step resume_straight 150 ./train_gla_cu "${RESUME[@]}" --out "$WORK/res_a" &&
    step resume_first_10 150 ./train_gla_cu "${RESUME[@]}" --stop-at 10 --out "$WORK/res_b" &&
    step resume_last_10 150 ./train_gla_cu "${RESUME[@]}" -r 1 --out "$WORK/res_b"; then
    for kind in model state; do
        f=${kind}_00000020.bin
        if cmp "$WORK/res_a/$f" "$WORK/res_b/$f" > "$LOG_DIR/resume_cmp_$kind.log" 2>&1; then
            say "ok    resumed run's $f identical to the straight run's"
        else
            bad "resumed run's $f differs from the straight run's ($(head -c 200 "$LOG_DIR/resume_cmp_$kind.log"))"
        fi
    done
    grep -E '^step +(1[1-9]|20)/' "$LOG_DIR/resume_straight.log" | sed 's/ | [0-9.]* ms | .*//' > "$WORK/losses_a"
    grep -E '^step +(1[1-9]|20)/' "$LOG_DIR/resume_last_10.log" | sed 's/ | [0-9.]* ms | .*//' > "$WORK/losses_b"
    if [ -s "$WORK/losses_a" ] && cmp -s "$WORK/losses_a" "$WORK/losses_b"; then
        say "ok    the losses, learning rates and norms of steps 11-20 print the same"
    else
        bad "the printed losses of steps 11-20 differ (resume_straight.log, resume_last_10.log)"
    fi

    say "== 7. the GPU's step-20 checkpoint, resumed by the CPU program (0 more steps: validation, rewrite)"
    cp -r "$WORK/res_a" "$WORK/res_cpu"
    if step ckpt_gpu_to_cpu 240 env OMP_NUM_THREADS="$CORES" ./train_gla "${RESUME[@]}" -r 1 --out "$WORK/res_cpu"; then
        gv=$(val_at "$LOG_DIR/resume_straight.log" 20)
        cv=$(val_at "$LOG_DIR/ckpt_gpu_to_cpu.log" 20)
        # printed to 4 decimals: equal, or one apart in the last digit
        if [ -n "$gv" ] && [ -n "$cv" ] && awk -v a="$gv" -v b="$cv" 'BEGIN { d = a - b; exit !(d <= 1.5e-4 && d >= -1.5e-4) }'; then
            say "ok    validation loss at step 20: GPU $gv, CPU from the GPU's checkpoint $cv"
        else
            bad "validation loss at step 20: GPU '${gv}', CPU from the GPU's checkpoint '${cv}'"
        fi
        if cmp -s "$WORK/res_a/model_00000020.bin" "$WORK/res_cpu/model_00000020.bin"; then
            say "ok    the CPU program rewrote the GPU's model_00000020.bin bit for bit"
        else
            bad "the CPU program's rewrite of the GPU's model_00000020.bin differs"
        fi
    fi
else
    bad "GPU resume runs failed: no resume or checkpoint checks"
fi

# ---------------------------------------------------------------------------------------------------
say "== 8. GPU throughput, every mixer pure: L=12 d=512 B=8 T=2048 chunk 64, 10 steps (at most 12 s each)"
SPEED=(-L 12 -d 512 -b 8 -T 2048 -n 10 -u 2 -v 0 -m 1 -s 0 -G 0 -k 0 --chunk 64 --max-time 12 --seed 1
       --gla-heads 4 --hgrn2-heads 4 --retnet-heads 8 --deltanet-heads 4 --gdn-heads 6 --gdn-head-dim 64 --attn-heads 8)
say "$(printf '%-16s %12s %10s %12s' mixer 'tokens/s' 'ms/step' parameters)"
for m in hgrn retnet gla hgrn2 deltanet gated_deltanet attn; do
    pat=$m:pure
    [ $m = attn ] && pat=attn
    if run "speed_$m" 150 ./train_gla_cu -p "$pat" "${SPEED[@]}" --out "$WORK/speed_$m"; then
        # the median over the steps after the first (which pays for first-use allocations)
        tps=$(grep -o '| [0-9]* tok/s' "$LOG_DIR/speed_$m.log" | awk 'NR > 1 { print $2 }' | sort -n |
              awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }')
        ms=$(grep -o '| [0-9.]* ms |' "$LOG_DIR/speed_$m.log" | awk 'NR > 1 { print $2 }' | sort -n |
             awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }')
        params=$(sed -n 's/^parameters: [0-9]* (\(.*\))$/\1/p' "$LOG_DIR/speed_$m.log")
        say "$(printf '%-16s %12s %10s %12s' $m "${tps:--}" "${ms:--}" "${params:--}")"
    else
        bad "$(printf '%-16s' $m) throughput run failed (log speed_$m.log)"
        tail -n 5 "$LOG_DIR/speed_$m.log" | sed 's/^/        /' | tee -a "$SUMMARY"
    fi
done

say "== gpu_check: $failures failure(s) in $((SECONDS - START)) s"
exit $((failures > 0))
