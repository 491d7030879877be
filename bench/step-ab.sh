#!/bin/bash
# Same-call A/B of the decode step's GPU time (examples/cuda_step.rs: the captured graph
# replayed back to back) on the N-layer file of bench/quick-ab.sh, built here if absent:
#   bench/step-ab.sh BIN OUT LAYERS SWITCH ...
# Each SWITCH runs REPS times (default 2) interleaved with the defaults, into
# OUT/step-ab.log. CTX (default 4096) and PREFILL (2100: past 2048 the indexer selects)
# set the position. A SWITCH BIN=DIR runs the binaries of DIR instead (another build: a
# kernel change without a switch).
set -u
B=$(cd "$1" && pwd) OUT=$2 N=$3
shift 3
LOG=$OUT/step-ab.log
. "$(dirname "$0")/ab-file.sh"
for rep in $(seq "${REPS:-2}"); do
    for sw in DS4_AB=none "$@"; do
        bin=$B
        case $sw in BIN=*) bin=$(cd "${sw#BIN=}" && pwd) ;; esac
        r=$(timeout 120 env $sw "$bin/cuda_step" "$QAB" --ctx "${CTX:-4096}" \
            --prefill "${PREFILL:-2100}" --reps 100 --rounds 5 2>&1 | tail -4 | tr "\n" " ")
        echo "[$rep] $sw: $r" | tee -a "$LOG"
    done
done
