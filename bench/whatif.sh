#!/bin/bash
# The decode step's critical path by elimination on the full synthetic q2 file (an H200):
# cuda_step's step, then the step recaptured without each set of kernels in SETS_FILE
# (one line: sets separated by ';', the kernels of a set by ','), into OUT/whatif.log:
#   bench/whatif.sh BIN OUT SETS_FILE
set -u
SETS=$(cat "$3")
. "$(dirname "$0")/full-file.sh"
full_file "$1" "$2" whatif.log
timeout 400 "$B/cuda_step" $F --ctx "${CTX:-4196}" --prefill "${PREFILL:-2100}" --reps 50 \
    --rounds 3 --whatif "$SETS" 2>&1 | grep -v "results are wrong" | tee -a "$LOG"
