#!/usr/bin/env bash
# Regenerates src/sys/bindings.rs from the FFI headers (attention_params.h, kernel_registry.h,
# emulator_api.h) with exactly the options of
# tests/bindings.rs, in a scratch crate, so it works while the library does not yet compile against
# the old bindings (after adding a field to the header).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
eval "$("$root/scripts/install-cuda-toolchain.sh")"
scratch="$root/target/update-bindings"
mkdir -p "$scratch/src"
bindgen_version=$(grep -E '^bindgen *=' "$root/Cargo.toml" | head -1 | cut -d'"' -f2)
cat > "$scratch/Cargo.toml" <<TOML
[package]
name = "update-bindings"
version = "0.0.0"
edition = "2021"
publish = false
[workspace]
[dependencies]
bindgen = "$bindgen_version"
TOML
# The test file's generator, without its inner doc comments (not allowed in an included file).
grep -v '^//!' "$root/tests/bindings.rs" > "$scratch/src/generator.rs"
cat > "$scratch/src/main.rs" <<'RS'
include!("generator.rs");
fn main() {
    let fresh = generate();
    std::fs::write(root().join(BINDINGS), fresh).expect("cannot write the bindings");
}
RS
CUDA_ATTENTION_ROOT="$root" CARGO_TARGET_DIR="$root/target/update-bindings/target" \
  cargo run --quiet --manifest-path "$scratch/Cargo.toml"
echo "regenerated src/sys/bindings.rs"
