#!/bin/bash
# Same-call A/B on the full 43-layer synthetic q2 file (an H200: the 86.7 GB file lives in
# a tmpfs and on the card):
#   bench/full-ab.sh BIN OUT SWITCH ...
# Each SWITCH (VAR=value words, or BIN=DIR for another build) gets a cuda_step for each
# CTX:PREFILL of STEPS (default 4196:2100, where the indexer's selection is active: at
# 2048 a ratio-4 layer sees 512 rows, no more than its top-k; the step's GPU time back to
# back and from idle, the host loop, a token's parts, the capture time) and a ds4-bench at 2k and 8k with
# 64 generated tokens, interleaved with the defaults REPS times (default 1), into
# OUT/full-ab.log. STEPS=none: no cuda_step (switches that only change prefill).
set -u
. "$(dirname "$0")/full-file.sh"
full_file "$1" "$2" full-ab.log
shift 2
for rep in $(seq "${REPS:-1}"); do
    for sw in DS4_AB=none "$@"; do
        bin=$B
        case $sw in BIN=*) bin=$(cd "${sw#BIN=}" && pwd) ;; esac
        echo "== [$rep] $sw" | tee -a "$LOG"
        for cp in ${STEPS:-4196:2100}; do
            [ "$cp" = none ] && continue
            echo "cuda_step ctx ${cp%:*} prefill ${cp#*:}:" | tee -a "$LOG"
            timeout 150 env $sw "$bin/cuda_step" $F --ctx "${cp%:*}" --prefill "${cp#*:}" \
                --reps 50 --rounds 3 2>&1 | tail -4 | tee -a "$LOG"
        done
        timeout 120 env $sw "$bin/ds4-bench" --cuda -m $F --prompt-file "$B/promessi_sposi.txt" \
            --ctx-start 2048 --ctx-max 8192 --step-incr 6144 --gen-tokens 64 2>&1 |
            grep "ctx " | tee -a "$LOG"
    done
done
# The table of every arm against the defaults of its repetition (bench/ab-summary.py).
if command -v python3 > /dev/null; then python3 bench/ab-summary.py "$LOG" | tee -a "$LOG"; fi
