#!/bin/bash
# Builds what bench/h200.sh and the A/B scripts run, on a machine with only a Rust
# toolchain (the kernels are compiled by NVRTC on the GPU machine at run time), into DIR
# (default .devbin, ignored):
#   bench/build-bins.sh [DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.devbin}
mkdir -p "$DIR"
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target-cuda}
cargo build --release -p ds4-cli --bins
cargo build --release -p ds4-cuda --examples
gpu_test=$(cargo test --release -p ds4-cuda --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="gpu" and m.get("executable"): print(m["executable"])')
R=$CARGO_TARGET_DIR/release
for b in ds4-bench ds4-quantize; do strip -o "$DIR/$b" "$R/$b"; done
for e in cuda_check cuda_profile cuda_step cuda_sync; do strip -o "$DIR/$e" "$R/examples/$e"; done
strip -o "$DIR/gpu_test" "$gpu_test"
cp -f tools/demo_data/promessi_sposi.txt "$DIR/"
ls -la "$DIR"
