# Sourced by bench/quick-ab.sh and bench/step-ab.sh once they have set B (the binaries),
# OUT, N (layers) and LOG: the kernel caches, the card in LOG, and the N-layer synthetic q2
# file of the full Flash widths (~2 GB a layer, ratios 0 then 4 and 128 alternating, one hash
# layer) at $QAB, built unless it is there.
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd) LOG=$(cd "$OUT" && pwd)/$(basename "$LOG")
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export DS4_CACHE_DIR=/tmp/ds4c DS4_CUDA_CACHE=/tmp/ds4k
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee -a "$LOG"
QAB=/tmp/qab-$N.gguf
ratios=$(python3 -c "print([0]+[4 if i%2 else 128 for i in range(1,$N)])")
echo "{\"n_layer\":$N,\"compress_ratios\":$ratios,\"n_hash_layer\":1}" > "/tmp/qab-$N.json"
[ -f "$QAB" ] || "$B/ds4-quantize" --synthetic --config "/tmp/qab-$N.json" --recipe q2 \
    -o "$QAB" --quiet 2>&1 | tail -1
