#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler (nvcc, ptxas, cuobjdump, nvdisasm) and libclang from PyPI
# into a cache folder. No GPU or driver is needed. Idempotent: a second run only prints the environment.
#
#   scripts/install-cuda-toolchain.sh [PREFIX]     (default: $CUDA_TOOLCHAIN_DIR or ~/.cache/cuda-attention/cuda-13.0)
#   eval "$(scripts/install-cuda-toolchain.sh --env)"   sets NVCC, CUDA_HOME, LIBCLANG_PATH, PATH
#
# Pins are verified in ../shared/cuda-toolchain.md: nvidia-nvvm must match nvcc (13.0.88), otherwise
# ptxas 13.0 rejects the PTX version that a newer cicc emits.
set -euo pipefail

env_only=0
if [ "${1:-}" = "--env" ]; then env_only=1; shift; fi
prefix="${1:-${CUDA_TOOLCHAIN_DIR:-$HOME/.cache/cuda-attention/cuda-13.0}}"
python="${PYTHON:-python3}"

packages=(
  nvidia-cuda-nvcc==13.0.88 nvidia-nvvm==13.0.88
  nvidia-cuda-runtime==13.0.96 nvidia-cuda-crt==13.0.88 nvidia-cuda-cccl==13.0.85
  nvidia-cuda-cuobjdump==13.2.51 nvidia-cuda-nvdisasm==13.2.86
  libclang==18.1.1
)
stamp="$prefix/.installed-$(printf '%s\n' "${packages[@]}" | sha256sum | cut -c1-16)"

if [ ! -f "$stamp" ]; then
  if [ "$env_only" = 1 ]; then
    echo "echo 'CUDA toolchain not installed in $prefix: run scripts/install-cuda-toolchain.sh' >&2; false"
    exit 1
  fi
  echo "installing the CUDA 13.0 compiler into $prefix" >&2
  "$python" -m venv "$prefix"
  "$prefix/bin/pip" install --quiet --disable-pip-version-check "${packages[@]}" >&2
  touch "$stamp"
fi

site=$("$prefix/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
cuda="$site/nvidia/cu13"
clang="$site/clang/native"
for tool in nvcc ptxas cuobjdump nvdisasm; do
  [ -x "$cuda/bin/$tool" ] || { echo "missing $cuda/bin/$tool: delete $prefix and rerun" >&2; exit 1; }
done

cat <<ENV
export CUDA_HOME="$cuda"
export NVCC="$cuda/bin/nvcc"
export LIBCLANG_PATH="$clang"
export PATH="$cuda/bin:\$PATH"
ENV
