#!/usr/bin/env bash
# The project's test command: installs the pinned CUDA compiler if needed (so the kernels build and the
# bindings drift test has libclang) and the emulator's sanitizer runtimes, then runs every test in
# release mode, and the tests that need a device (tests/gpu_kernels.rs, the GPU engine's part of
# tests/call_contract.rs, the GPU half of tests/emulator_hopper_probe.rs) once more on the emulated CUDA
# driver (docs/emulated-driver.md), so that the GPU-side host code runs without a GPU. Extra arguments go to
# `cargo test` (e.g. scripts/test.sh --test cpu_reference) and skip the emulated-driver run.
set -euo pipefail
cd "$(dirname "$0")/.."
eval "$(scripts/install-cuda-toolchain.sh)"
scripts/install-emulator-deps.sh
cargo test --release "$@"
if [ "$#" -eq 0 ]; then
  echo "=== tests/gpu_kernels.rs, tests/call_contract.rs and tests/emulator_hopper_probe.rs on the emulated CUDA driver"
  scripts/with-emulated-driver cargo test --release --test gpu_kernels --test call_contract --test emulator_hopper_probe
fi
