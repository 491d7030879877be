#!/bin/bash
# Hardware counters (Nsight Compute) for the kernels named by the regular
# expression KERNELS, on a 4-layer synthetic q2 file of the full Flash widths (~8 GB, so
# no tmpfs and no H200 needed), without the full checks and bench of bench/h200.sh:
#   bench/ncu-quick.sh BIN OUT KERNELS SKIP COUNT [ENV ...]
# ENV words (VAR=value) are set for the profiled run. Appends to OUT/ncu-quick.log. With
# DECODE=1 the sections are the stall summary and source counters of decode kernels (those
# that run only in decode: hc_pre_late, attention_split/combine, ...), into OUT/ncu-decode.log.
set -u
B=$(cd "$1" && pwd) OUT=$2 K=$3 SKIP=$4 COUNT=$5
shift 5
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export DS4_CACHE_DIR=/tmp/ds4c DS4_CUDA_CACHE=/tmp/ds4k
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
LOG=$OUT/ncu-quick.log
SECTIONS="SpeedOfLight MemoryWorkloadAnalysis ComputeWorkloadAnalysis WarpStateStats Occupancy
    LaunchStats InstructionStats SchedulerStats"
if [ -n "${DECODE:-}" ]; then
    LOG=$OUT/ncu-decode.log
    SECTIONS="SpeedOfLight WarpStateStats Occupancy LaunchStats SchedulerStats SourceCounters"
fi
echo "== ncu: ${NCU:-none} $K skip $SKIP count $COUNT $*" >> "$LOG"
[ -n "$NCU" ] || exit 0
echo '{"n_layer":4,"compress_ratios":[0,4,128,4],"n_hash_layer":1}' > /tmp/q4l.json
[ -f /tmp/q4l.gguf ] || "$B/ds4-quantize" --synthetic --config /tmp/q4l.json --recipe q2 -o /tmp/q4l.gguf --quiet
timeout 400 env "$@" "$NCU" --kernel-name "regex:$K" --launch-skip "$SKIP" --launch-count "$COUNT" \
    $(printf -- "--section %s " $SECTIONS) \
    "$B/cuda_profile" /tmp/q4l.gguf --ctx 4096 --prefill 2048 --chunk 2048 --gen 4 >> "$LOG" 2>&1
