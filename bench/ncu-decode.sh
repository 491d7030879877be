#!/bin/bash
# Hardware counters and stall samples (Nsight Compute) for decode kernels named by the
# regular expression KERNELS, on a 4-layer synthetic q2 file of the full Flash widths (no
# H200 needed): COUNT launches after the first SKIP of cuda_profile's decode steps
# (those kernels run only in decode), into OUT/ncu-decode.log:
#   bench/ncu-decode.sh BIN OUT KERNELS SKIP COUNT [ENV ...]
set -u
B=$(cd "$1" && pwd) OUT=$2 K=$3 SKIP=$4 COUNT=$5
shift 5
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export DS4_CACHE_DIR=/tmp/ds4c DS4_CUDA_CACHE=/tmp/ds4k
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
LOG=$OUT/ncu-decode.log
echo "== ncu: ${NCU:-none} $K skip $SKIP count $COUNT $*" >> "$LOG"
[ -n "$NCU" ] || exit 0
echo '{"n_layer":4,"compress_ratios":[0,4,128,4],"n_hash_layer":1}' > /tmp/q4l.json
[ -f /tmp/q4l.gguf ] || "$B/ds4-quantize" --synthetic --config /tmp/q4l.json --recipe q2 -o /tmp/q4l.gguf --quiet
timeout 300 env "$@" "$NCU" --kernel-name "regex:$K" --launch-skip "$SKIP" --launch-count "$COUNT" \
    --section SpeedOfLight --section WarpStateStats --section Occupancy --section LaunchStats \
    --section SchedulerStats --section SourceCounters \
    "$B/cuda_profile" /tmp/q4l.gguf --ctx 4096 --prefill 2048 --chunk 2048 --gen 4 >> "$LOG" 2>&1
