#!/bin/bash
# Hardware counters (Nsight Compute, where the machine has it) for the kernels named by
# the regular expression KERNELS, from cuda_profile on the synthetic file bench/h200.sh
# leaves in /mnt/ds4 (run it after h200.sh in the same call):
#   bench/ncu-probe.sh BIN OUT KERNELS [SKIP] [COUNT]
B=$1 OUT=$2 K=$3 SKIP=${4:-2} COUNT=${5:-3}
NCU=$(command -v ncu || ls /usr/local/cuda*/bin/ncu /opt/nvidia/nsight-compute/*/ncu 2>/dev/null | head -1)
LOG=$OUT/ncu-$(echo "$K" | tr -c 'a-z0-9_\n' '_' | cut -c1-40).log
echo "ncu: ${NCU:-none}" > "$LOG"
[ -n "$NCU" ] && [ -f /mnt/ds4/flash-q2.gguf ] || exit 0
export DS4_CACHE_DIR=/tmp/ds4c DS4_CUDA_CACHE=/tmp/ds4k
timeout 200 "$NCU" --kernel-name "regex:$K" --launch-skip "$SKIP" --launch-count "$COUNT" \
    --section SpeedOfLight --section MemoryWorkloadAnalysis --section ComputeWorkloadAnalysis \
    --section WarpStateStats --section Occupancy --section LaunchStats --section InstructionStats \
    "$B/cuda_profile" /mnt/ds4/flash-q2.gguf --ctx 4096 --prefill 2048 --chunk 2048 --gen 4 >> "$LOG" 2>&1
