#!/bin/bash
# Decode's products measured alone (cuda_profile's table: each product launched 50 times,
# its bandwidth against the copy bandwidth) for the defaults and each SWITCH, on the full
# synthetic q2 file (an H200), into OUT/products-ab.log:
#   bench/products-ab.sh BIN OUT SWITCH ...
# A short prefill and a small chunk keep each run to the table (the profiles of a step and
# a chunk that cuda_profile prints after it are of that short run).
set -u
. "$(dirname "$0")/full-file.sh"
full_file "$1" "$2" products-ab.log
shift 2
for sw in DS4_AB=none "$@"; do
    echo "== $sw" | tee -a "$LOG"
    timeout 150 env $sw "$B/cuda_profile" $F --ctx 2048 --prefill 256 --chunk 256 --gen 8 2>&1 |
        sed -n '/^copy bandwidth/p;/^decode at/p;/^decode products/,/^one decode step/p' | tee -a "$LOG"
done
