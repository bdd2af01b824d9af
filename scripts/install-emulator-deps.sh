#!/usr/bin/env bash
# Installs what the CPU emulator's checking mode needs on Debian 12 (CI and developer machines): a C++17
# compiler and gcc 12's ThreadSanitizer and AddressSanitizer runtimes (libtsan2 exports the fiber API the
# emulator uses, although gcc 12's headers do not declare it). The ordinary emulator needs only g++.
# Idempotent: installs nothing when everything is present.
#
#   scripts/install-emulator-deps.sh
set -euo pipefail

packages=(g++ libtsan2 libasan8)
missing=()
for package in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$package" 2>/dev/null || true)
  [ "$status" = "install ok installed" ] || missing+=("$package")
done

if [ "${#missing[@]}" -gt 0 ]; then
  echo "installing ${missing[*]}" >&2
  sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# The fiber API must be there: the checking mode's ThreadSanitizer build calls it.
tsan=$(readlink -f "$(g++ -print-file-name=libtsan.so)")
symbols=$(nm -D "$tsan" 2>/dev/null || true)
if ! grep -q __tsan_switch_to_fiber <<<"$symbols"; then
  echo "warning: $tsan does not export __tsan_switch_to_fiber; the emulator's ThreadSanitizer checks need libtsan2 from gcc 12 or newer" >&2
fi
echo "emulator dependencies: ${packages[*]} present" >&2
