#!/bin/bash
# The decode step's critical path by elimination on the full synthetic q2 file (an H200):
# cuda_step's step, then the step recaptured without each set of kernels in SETS_FILE
# (one line: sets separated by ';', the kernels of a set by ','), into OUT/whatif.log:
#   bench/whatif.sh BIN OUT SETS_FILE
set -u
B=$(cd "$1" && pwd) OUT=$2 SETS=$(cat "$3")
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/whatif.log
cd "$(dirname "$0")/.."
export DS4_CACHE_DIR=/tmp/ds4c DS4_CUDA_CACHE=/tmp/ds4k
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
grep -q H200 "$LOG" || { echo "not an H200: the full file does not fit"; exit 3; }
F=/mnt/ds4/flash-q2.gguf
if [ ! -f $F ]; then
    mkdir -p /mnt/ds4 && mount -t tmpfs -o size=110G,huge=always tmpfs /mnt/ds4
    "$B/ds4-quantize" --synthetic --recipe q2 -o $F --quiet 2>&1 | tail -1
fi
timeout 400 "$B/cuda_step" $F --ctx "${CTX:-4196}" --prefill "${PREFILL:-2100}" --reps 50 \
    --rounds 3 --whatif "$SETS" 2>&1 | grep -v "results are wrong" | tee -a "$LOG"
