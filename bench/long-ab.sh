#!/bin/bash
# Long-context A/B on the full synthetic q2 file (an H200), beside bench/h200.sh:
#   bench/long-ab.sh BIN OUT SWITCH ...
# For the defaults and each SWITCH (VAR=value words): a 64k prompt from an empty cache
# (ds4-bench, 8,192-token batches, 32 generated tokens) and the decode step's GPU time at
# 65,600 (cuda_step), into OUT/long.log.
set -u
. "$(dirname "$0")/full-file.sh"
full_file "$1" "$2" long.log
shift 2
for sw in DS4_AB=none "$@"; do
    echo "== $sw ctx 65536 from empty" | tee -a "$LOG"
    timeout 150 env $sw "$B/ds4-bench" --cuda -m $F --prompt-file "$B/promessi_sposi.txt" \
        --ctx-start 65536 --ctx-max 65536 --step-incr 65536 --gen-tokens 32 2>&1 |
        grep "ctx " | tee -a "$LOG"
    echo "== $sw decode step ctx 66000 at 65600" | tee -a "$LOG"
    timeout 150 env $sw "$B/cuda_step" $F --ctx 66000 --prefill 65600 --reps 30 --rounds 3 \
        2>&1 | tail -1 | tee -a "$LOG"
done
