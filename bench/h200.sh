#!/bin/bash
# The checks and speed runs behind bench/CUDA-SPEED.md, in one call on a GPU machine.
#
#   bench/h200.sh BIN OUT [SWITCH ...]
#
# Each SWITCH (e.g. DS4_CUDA_EXP_NG64=1, or "A=0 B=0" for two variables) is one more
# ds4-bench at 2k and 8k with it set, in the same call as the full run, into OUT/ab.log
# (the A/B of a change).
#
# BIN holds release builds of ds4-bench, ds4-quantize, cuda_check, cuda_profile, cuda_step (examples of
# ds4-cuda) and gpu_test (the tests/gpu.rs binary of `cargo test --release -p ds4-cuda --no-run`),
# and promessi_sposi.txt; OUT receives checks.log, profile.log, bench.csv and bench.svg. The
# speed part needs an H200 (the 86.7 GB synthetic q2 file is built in a 110 GB tmpfs) and root
# for the mount; compute-sanitizer is used where the machine has it.
set -u
B=$(cd "$1" && pwd)
OUT=$2
mkdir -p "$OUT"
cd "$(dirname "$0")/.."
export DS4_CACHE_DIR=/tmp/ds4c DS4_CUDA_CACHE=/tmp/ds4k
L=$OUT/checks.log
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$L"
# SPEED_ONLY=1 skips the checks (a rerun of the speed part on a build already checked).
if [ -z "${SPEED_ONLY:-}" ]; then
# GPU against CPU: products of every type, the tiny model, graph replay, fused pairs.
(cd crates/ds4-cuda && timeout 120 "$B/gpu_test" --test-threads 1 --nocapture 2>&1 |
    grep -E "test |result|panicked|worst|differ") | tee -a "$L"
timeout 60 "$B/cuda_check" crates/ds4-engine/tests/data/tiny-v4 --tokens 400 --runs 1,7,64 \
    --cpu-run 16 2>&1 | grep -E "PASS|FAIL|run " | cut -c1-200 | tee -a "$L"
# A small synthetic q2 model under memcheck (300 tokens) then checked over TOKENS tokens:
#   small_q2 NAME TOKENS LABEL CONFIG_JSON
small_q2() {
    echo "$4" > "/tmp/$1.json"
    "$B/ds4-quantize" --synthetic --config "/tmp/$1.json" --recipe q2 -o "/tmp/$1.gguf" --quiet --overwrite
    if command -v compute-sanitizer > /dev/null; then
        timeout 100 compute-sanitizer --tool memcheck --print-limit 5 "$B/cuda_check" "/tmp/$1.gguf" \
            --tokens 300 --runs 1,64 --cpu-run 64 2>&1 | grep -E "ERROR SUMMARY|Invalid|PASS|FAIL" |
            head -12 | sed "s/^/[memcheck $1 q2] /" | tee -a "$L"
    fi
    timeout 100 "$B/cuda_check" "/tmp/$1.gguf" --tokens "$2" --runs 1,64,512 --cpu-run 64 2>&1 |
        grep -E "layer [0-9] \(|PASS|FAIL|run " | cut -c1-200 | sed "s/^/$3/" | tee -a "$L"
}
small_q2 small 1000 "" '{"n_layer":6,"n_embd":256,"n_head":4,"head_dim":128,"q_lora_rank":128,"o_lora_rank":64,"o_groups":2,"n_expert":8,"n_expert_used":2,"ff_exp":256,"indexer_heads":4,"indexer_dim":64,"indexer_top_k":32,"sliding_window":64}'
# 16 heads of 128: the shapes the tensor-core attention takes (the small model's 4 heads don't).
small_q2 small16 600 "[small16] " '{"n_layer":4,"n_embd":256,"n_head":16,"head_dim":128,"q_lora_rank":128,"o_lora_rank":64,"o_groups":2,"n_expert":8,"n_expert_used":2,"ff_exp":256,"indexer_heads":64,"indexer_dim":128,"indexer_top_k":32,"sliding_window":64}'
# 8 heads of 512 (the release's head size): decode's attention cluster merges slices of
# 512 / 8 dims (the 128-dim heads above keep attention_split).
small_q2 hd512 300 "[hd512] " '{"n_layer":4,"n_embd":256,"n_head":8,"head_dim":512,"q_lora_rank":128,"o_lora_rank":64,"o_groups":2,"n_expert":8,"n_expert_used":2,"ff_exp":256,"indexer_heads":4,"indexer_dim":64,"indexer_top_k":32,"sliding_window":64}'
# 32 heads of 512: the run attention on wgmma (attention_wg_kh takes heads in blocks of 32).
small_q2 h32 300 "[h32] " '{"n_layer":4,"n_embd":256,"n_head":32,"head_dim":512,"q_lora_rank":128,"o_lora_rank":64,"o_groups":2,"n_expert":8,"n_expert_used":2,"ff_exp":256,"indexer_heads":4,"indexer_dim":64,"indexer_top_k":32,"sliding_window":64}'
# The same model with its states allocated for 1M tokens, checked at short positions
# (launches sized for the context allocated).
timeout 100 "$B/cuda_check" /tmp/small16.gguf --tokens 600 --runs 1,64 --cpu-run 64 --ctx 1048576 \
    2>&1 | grep -E "PASS|FAIL|run " | cut -c1-200 | sed "s/^/[small16 ctx 1M] /" | tee -a "$L"
# A context at which the ratio-128 layer reads an odd number of rows (64 + 16512 / 128 + 2):
# the tensor-core attention's row table once misaligned its f16 staging (v18).
timeout 100 "$B/cuda_check" /tmp/small16.gguf --tokens 600 --runs 1,64 --cpu-run 64 --ctx 16512 \
    2>&1 | grep -E "PASS|FAIL|run " | cut -c1-200 | sed "s/^/[small16 ctx 16512] /" | tee -a "$L"
echo '{"n_layer":4,"n_expert":16,"indexer_top_k":128,"compress_ratios":[0,4,128,4],"n_hash_layer":1}' > /tmp/fw16.json
"$B/ds4-quantize" --synthetic --config /tmp/fw16.json --recipe f16 -o /tmp/fw16.gguf --quiet
timeout 150 "$B/cuda_check" /tmp/fw16.gguf --tokens 300 --runs 1,64 --cpu-run 300 2>&1 |
    grep -E "layer [0-9] \(|PASS|FAIL|run " | cut -c1-200 | tee -a "$L"
rm -f /tmp/fw16.gguf
fi
grep -q H200 "$L" || { echo "not an H200: no speed run"; exit 3; }
# Speed: the full-size synthetic q2 file in a tmpfs (bench/CUDA-SPEED.md, perf-anchor).
# (A machine still warm from bench/full-ab.sh has it already: a second tmpfs on top would
# not fit beside the first in memory.)
if [ ! -f /mnt/ds4/flash-q2.gguf ]; then
    mkdir -p /mnt/ds4 && mount -t tmpfs -o size=110G,huge=always tmpfs /mnt/ds4
    "$B/ds4-quantize" --synthetic --recipe q2 -o /mnt/ds4/flash-q2.gguf --quiet 2>&1 | tail -1
fi
timeout 120 "$B/cuda_profile" /mnt/ds4/flash-q2.gguf --ctx 8192 --prefill 2048 --chunk 2048 \
    --gen 32 > "$OUT/profile.log" 2>&1
head -30 "$OUT/profile.log"
# The decode step's GPU time alone (the graph replayed back to back, no host work).
# At 2100, where a ratio-4 layer's indexer selects (at 2048 it sees no more than its top-k).
timeout 100 "$B/cuda_step" /mnt/ds4/flash-q2.gguf --ctx 4196 --prefill 2100 --reps 50 --rounds 3 \
    2>&1 | tail -4 | tee "$OUT/step.log"
timeout 200 "$B/ds4-bench" --cuda -m /mnt/ds4/flash-q2.gguf --prompt-file "$B/promessi_sposi.txt" \
    --ctx-start 2048 --ctx-max 16384 --step-incr 2048 --gen-tokens 64 --csv "$OUT/bench.csv" \
    --svg "$OUT/bench.svg" 2>&1 | tail -9
DS4_CUDA_PDL=0 timeout 60 "$B/ds4-bench" --cuda -m /mnt/ds4/flash-q2.gguf \
    --prompt-file "$B/promessi_sposi.txt" --ctx-start 2048 --ctx-max 2048 --step-incr 2048 \
    --gen-tokens 32 2>&1 | tail -1 | sed 's/^/[no PDL] /'
# The A/B runs: the default once more beside each switch, so every ratio is same-call.
if [ $# -gt 2 ]; then
    ab() {
        timeout 90 env "$@" "$B/ds4-bench" --cuda -m /mnt/ds4/flash-q2.gguf \
            --prompt-file "$B/promessi_sposi.txt" --ctx-start 2048 --ctx-max 8192 --step-incr 6144 \
            --gen-tokens 32 2>&1 | grep "ctx "
    }
    for sw in "${@:3}"; do
        echo "== $sw" | tee -a "$OUT/ab.log"
        ab $sw | tee -a "$OUT/ab.log"  # several VAR=value words: one run
    done
    echo "== defaults" | tee -a "$OUT/ab.log"
    ab DS4_AB=none | tee -a "$OUT/ab.log"
fi
