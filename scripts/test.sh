#!/usr/bin/env bash
# The project's test command: installs the pinned CUDA compiler if needed (so the kernels build and the
# bindings drift test has libclang) and the emulator's sanitizer runtimes, then runs every test in
# release mode. Extra arguments go to `cargo test` (e.g. scripts/test.sh --test cpu_reference).
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-cuda-toolchain.sh)"
scripts/install-emulator-deps.sh
exec cargo test --release "$@"
