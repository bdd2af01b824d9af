#!/usr/bin/env bash
# Builds the release test binaries and `attn` here (the GPU machine has no Rust) and copies them, with
# the GPU suite script, into .gpu/ (ignored by git). Then, with the device tool, from the repo root:
#   run(command="bash .gpu/gpu-suite.sh", carry=[".gpu"])
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-cuda-toolchain.sh)"

rm -rf .gpu
mkdir -p .gpu/tests
cargo build --release --bin attn
cp target/release/attn .gpu/
# Every integration test binary except the bindings drift test (it needs the source tree and libclang).
cargo test --release --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, shutil, sys
for line in sys.stdin:
    msg = json.loads(line)
    exe = msg.get("executable")
    target = msg.get("target", {})
    if exe and msg.get("profile", {}).get("test") and "test" in target.get("kind", []):
        if target["name"] != "bindings":
            shutil.copy(exe, ".gpu/tests/" + target["name"])
'
cp scripts/gpu-suite.sh benches/torch_sdpa.py .gpu/
git rev-parse --short HEAD > .gpu/COMMIT 2>/dev/null || echo unknown > .gpu/COMMIT
git diff --quiet 2>/dev/null || echo "+dirty" >> .gpu/COMMIT
echo "packed into .gpu/: $(ls .gpu/tests | tr '\n' ' ')"
du -sh .gpu
