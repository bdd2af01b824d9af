#!/usr/bin/env bash
# Builds the release test binaries and `attn` here (the GPU machine has no Rust) and copies them, with
# the GPU suite script, into .gpu/ (ignored by git). Then, with the device tool, from the repo root:
#   run(command="bash .gpu/gpu-suite.sh", carry=[".gpu"])
# and the results come back as two files from $OUT: gpu-results.tar.gz (everything) and summary.md.
# --baseline REF also builds `attn` at git revision REF (in a temporary worktree) into .gpu/baseline/, and
# the suite then times its flash kernel on the same sweep: an earlier kernel version measured in the same
# session, on the same card, as docs/kernel-notes.md asks.
set -euo pipefail
cd "$(dirname "$0")/.."
baseline=""
if [ "${1:-}" = "--baseline" ]; then
  baseline="${2:?--baseline needs a git revision}"
fi
eval "$(scripts/install-cuda-toolchain.sh)"

rm -rf .gpu
mkdir -p .gpu/tests
cargo build --release --bin attn
cp target/release/attn .gpu/
# Every integration test binary except the bindings drift test (it needs the source tree and libclang),
# the suite's own test (tests/gpu_suite.rs: it runs the suite script from the source tree, on stubs) and
# the emulated driver's CLI test (it needs the emulated driver, which stays here; tests/emulated_driver.rs
# goes: there it checks the real driver against what the emulated one claims).
cargo test --release --no-run --message-format=json 2>/dev/null |
  python3 -c '
import json, shutil, sys
for line in sys.stdin:
    msg = json.loads(line)
    exe = msg.get("executable")
    target = msg.get("target", {})
    if exe and msg.get("profile", {}).get("test") and "test" in target.get("kind", []):
        if target["name"] not in ("bindings", "gpu_suite", "emulated_driver_cli"):
            shutil.copy(exe, ".gpu/tests/" + target["name"])
'
cp scripts/gpu-suite.sh benches/torch_sdpa.py .gpu/
if [ -n "$baseline" ]; then
  worktree="$(mktemp -d)/baseline"
  git worktree add --detach "$worktree" "$baseline"
  (cd "$worktree" && CARGO_TARGET_DIR="$PWD/../target" cargo build --release --bin attn)
  mkdir -p .gpu/baseline
  cp "$worktree/../target/release/attn" .gpu/baseline/
  git rev-parse --short "$baseline" > .gpu/baseline/COMMIT
  git worktree remove --force "$worktree"
  rm -rf "$(dirname "$worktree")"
fi
git rev-parse --short HEAD > .gpu/COMMIT 2>/dev/null || echo unknown > .gpu/COMMIT
git diff --quiet 2>/dev/null || echo "+dirty" >> .gpu/COMMIT
echo "packed into .gpu/: $(ls .gpu/tests | tr '\n' ' ')"
du -sh .gpu
