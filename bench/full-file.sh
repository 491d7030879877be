# Sourced by the scripts that run on the full synthetic q2 file (an H200: the 86.7 GB file
# lives in a tmpfs and on the card). `full_file BIN OUT NAME` sets B (BIN's absolute path), OUT
# and LOG (OUT/NAME), moves to the repository's root, writes the card's line to LOG, refuses
# other cards and builds the file at $F once per machine; the kernel caches are set too.
export DS4_CACHE_DIR=/tmp/ds4c DS4_CUDA_CACHE=/tmp/ds4k
F=/mnt/ds4/flash-q2.gguf
full_file() {
    B=$(cd "$1" && pwd)
    mkdir -p "$2"
    OUT=$(cd "$2" && pwd)
    LOG=$OUT/$3
    cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
    grep -q H200 "$LOG" || { echo "not an H200: the full file does not fit"; exit 3; }
    if [ ! -f $F ]; then
        mkdir -p /mnt/ds4 && mount -t tmpfs -o size=110G,huge=always tmpfs /mnt/ds4
        /usr/bin/time -f "file built in %e s" "$B/ds4-quantize" --synthetic --recipe q2 -o $F \
            --quiet 2>&1 | tail -1 | tee -a "$LOG"
    fi
}
