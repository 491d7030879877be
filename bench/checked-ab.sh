#!/bin/bash
# A switch's first run on a GPU, in one device call: the CUDA-vs-CPU checks with each SWITCH
# set (gpu_test, and cuda_check on the small, 16-head, 512-dim-head, 32 × 512 and 64 × 512 q2 files — decode steps run the
# captured graph), into OUT/checked-ab.log, then bench/full-ab.sh with the same switches on
# the full file (an H200), whose table ends OUT/full-ab.log:
#   bench/checked-ab.sh BIN OUT SWITCH ...
# A switch whose checks fail is left out of the speed part.
set -u
B=$(cd "$1" && pwd)
mkdir -p "$2"
OUT=$(cd "$2" && pwd)
shift 2
cd "$(dirname "$0")/.." || exit 1
export DS4_CACHE_DIR=/tmp/ds4c DS4_CUDA_CACHE=/tmp/ds4k
L=$OUT/checked-ab.log
q2() {
    echo "$2" > "/tmp/$1.json"
    [ -f "/tmp/$1.gguf" ] || "$B/ds4-quantize" --synthetic --config "/tmp/$1.json" --recipe q2 \
        -o "/tmp/$1.gguf" --quiet
}
q2 cab-small '{"n_layer":6,"n_embd":256,"n_head":4,"head_dim":128,"q_lora_rank":128,"o_lora_rank":64,"o_groups":2,"n_expert":8,"n_expert_used":2,"ff_exp":256,"indexer_heads":4,"indexer_dim":64,"indexer_top_k":32,"sliding_window":64}'
q2 cab-small16 '{"n_layer":4,"n_embd":256,"n_head":16,"head_dim":128,"q_lora_rank":128,"o_lora_rank":64,"o_groups":2,"n_expert":8,"n_expert_used":2,"ff_exp":256,"indexer_heads":64,"indexer_dim":128,"indexer_top_k":32,"sliding_window":64}'
# Heads of 512 (the Flash release's): the decode attention cluster's merge needs hd a
# multiple of 32 · its blocks, so only this file runs attention_split_cl.
q2 cab-hd512 '{"n_layer":4,"n_embd":256,"n_head":8,"head_dim":512,"q_lora_rank":128,"o_lora_rank":64,"o_groups":2,"n_expert":8,"n_expert_used":2,"ff_exp":256,"indexer_heads":4,"indexer_dim":64,"indexer_top_k":32,"sliding_window":64}'
# 32 heads of 512 (the Flash shapes in blocks of 32): the run attention on wgmma.
q2 cab-h32 '{"n_layer":4,"n_embd":256,"n_head":32,"head_dim":512,"q_lora_rank":128,"o_lora_rank":64,"o_groups":2,"n_expert":8,"n_expert_used":2,"ff_exp":256,"indexer_heads":4,"indexer_dim":64,"indexer_top_k":32,"sliding_window":64}'
# 64 heads of 512: the Flash release's heads, two wgmma attention blocks a token.
q2 cab-h64 '{"n_layer":4,"n_embd":256,"n_head":64,"head_dim":512,"q_lora_rank":128,"o_lora_rank":64,"o_groups":2,"n_expert":8,"n_expert_used":2,"ff_exp":256,"indexer_heads":4,"indexer_dim":64,"indexer_top_k":32,"sliding_window":64}'
passed=()
for sw in "$@"; do
    echo "== $sw" | tee -a "$L"
    ok=1
    r=$(cd crates/ds4-cuda && timeout 120 env $sw "$B/gpu_test" --test-threads 1 2>&1 |
        grep -A1 -E "^test |test result|panicked" | grep -v "^--$")
    echo "$r" | tee -a "$L"
    grep -q "test result: ok" <<< "$r" || ok=0
    for f in cab-small cab-small16 cab-hd512 cab-h32 cab-h64; do
        r=$(timeout 100 env $sw "$B/cuda_check" "/tmp/$f.gguf" --tokens 300 --runs 1,64 \
            --cpu-run 64 2>&1 | grep -E "PASS|FAIL|run " | cut -c1-200 | sed "s/^/[$f] /")
        echo "$r" | tee -a "$L"
        grep -q "ALL PASS" <<< "$r" || ok=0
    done
    if [ $ok = 1 ]; then passed+=("$sw"); else echo "== $sw: checks failed, no speed run" | tee -a "$L"; fi
done
# CHECKS_ONLY=1: the checks alone (e.g. of new defaults, with SWITCH DS4_AB=none).
[ -n "${CHECKS_ONLY:-}" ] && exit 0
[ ${#passed[@]} -gt 0 ] && bash bench/full-ab.sh "$B" "$OUT" "${passed[@]}"
