#!/bin/bash
# A quick same-call A/B of decode and prefill on an N-layer synthetic q2 file of the full
# Flash widths (~2 GB a layer on disk, so no tmpfs and any 80 GB card), without the full
# checks of bench/h200.sh. The absolute figures are not the 43-layer model's (the output
# head weighs more in fewer layers); the ratios between switches are what it is for:
#   bench/quick-ab.sh BIN OUT LAYERS SWITCH ...
# Each SWITCH ("A=1", or "A=0 B=1" for one run with two variables) runs REPS times (default
# 2), interleaved with the defaults, into OUT/quick-ab.log; CTX (default 2048) is the
# prompt's length. A SWITCH BIN=DIR runs the binaries of DIR instead.
set -u
B=$(cd "$1" && pwd) OUT=$2 N=$3
shift 3
LOG=$OUT/quick-ab.log
. "$(dirname "$0")/ab-file.sh"
run() {
    local bin=$B
    case $1 in BIN=*) bin=$(cd "${1#BIN=}" && pwd) ;; esac
    timeout 120 env "$@" "$bin/ds4-bench" --cuda -m "$QAB" --prompt-file "$B/promessi_sposi.txt" \
        --ctx-start "${CTX:-2048}" --ctx-max "${CTX:-2048}" --step-incr 2048 --gen-tokens 64 2>&1 | grep "ctx " | tail -1
}
for rep in $(seq "${REPS:-2}"); do
    for sw in DS4_AB=none "$@"; do
        echo "[$rep] $sw: $(run $sw)" | tee -a "$LOG"
    done
done
