#!/bin/bash
# Decode's products measured alone (cuda_profile's table: each product launched 50 times,
# its bandwidth against the copy bandwidth) for the defaults and each SWITCH, on the full
# synthetic q2 file (an H200), into OUT/products-ab.log:
#   bench/products-ab.sh BIN OUT SWITCH ...
# A short prefill and a small chunk keep each run to the table (the profiles of a step and
# a chunk that cuda_profile prints after it are of that short run).
set -u
B=$(cd "$1" && pwd) OUT=$2
shift 2
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
LOG=$OUT/products-ab.log
cd "$(dirname "$0")/.."
export DS4_CACHE_DIR=/tmp/ds4c DS4_CUDA_CACHE=/tmp/ds4k
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
grep -q H200 "$LOG" || { echo "not an H200: the full file does not fit"; exit 3; }
F=/mnt/ds4/flash-q2.gguf
if [ ! -f $F ]; then
    mkdir -p /mnt/ds4 && mount -t tmpfs -o size=110G,huge=always tmpfs /mnt/ds4
    /usr/bin/time -f "file built in %e s" "$B/ds4-quantize" --synthetic --recipe q2 -o $F \
        --quiet 2>&1 | tail -1 | tee -a "$LOG"
fi
for sw in DS4_AB=none "$@"; do
    echo "== $sw" | tee -a "$LOG"
    timeout 150 env $sw "$B/cuda_profile" $F --ctx 2048 --prefill 256 --chunk 256 --gen 8 2>&1 |
        sed -n '/^copy bandwidth/p;/^decode at/p;/^decode products/,/^one decode step/p' | tee -a "$LOG"
done
